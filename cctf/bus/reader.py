"""Reading JetStream streams as a subscriber: the last message of a subject, and ordered feeds.

The bus calls a relying party needs, and nothing more, so that it works with the ``client`` user's
least-privilege permissions (stream info, direct get, creating its own ephemeral consumers on the
verdict streams, deliveries only under its own inbox prefix, which :func:`cctf.bus.connect.connect`
sets):

* :func:`last_message` — JetStream *direct get* of the last message stored for a subject
  (``$JS.API.DIRECT.GET.<stream>.<subject>``, answered on the connection's inbox).
* :func:`open_ordered_feed` — an ephemeral ordered push consumer (memory storage, no acks, flow
  control, heartbeats) delivering to a fresh inbox, with a bounded client-side buffer. The feed
  never deletes its consumer through the API (a client may not): closing it unsubscribes, and the
  server removes the consumer ``inactive_threshold_s`` after its last subscriber went away.

Every failure to ask the bus is a :class:`ReadError`; a subject with no message is ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from cctf.bus.connect import Connection, jetstream

__all__ = [
    "DELIVER_POLICIES",
    "Deliver",
    "Delivered",
    "OrderedFeed",
    "ReadError",
    "last_message",
    "open_ordered_feed",
]

Deliver = Literal["new", "last_per_subject", "all"]

_DELIVER: Final[dict[str, DeliverPolicy]] = {
    "new": DeliverPolicy.NEW,
    "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
    "all": DeliverPolicy.ALL,
}
#: The accepted ``deliver`` values, sorted.
DELIVER_POLICIES: Final = tuple(sorted(_DELIVER))

#: Default bounds of one feed's client-side buffer (flow control slows the server down first).
DEFAULT_PENDING_MSGS: Final = 1024
DEFAULT_PENDING_BYTES: Final = 32 * 1024 * 1024
#: Seconds after its subscriber went away that the server removes a feed's consumer.
DEFAULT_INACTIVE_THRESHOLD_S: Final = 5.0


class ReadError(Exception):
    """The bus could not be asked (timeout, no responders, permission, connection closed)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__} {exc}".rstrip()


async def last_message(
    conn: Connection, stream: str, subject: str, *, request_timeout_s: float = 2.0
) -> bytes | None:
    """The data of the last message stored on ``subject`` in ``stream`` (direct get), or ``None``
    when the stream holds none. Raises :class:`ReadError`."""
    js = jetstream(conn, timeout=request_timeout_s)
    try:
        raw = await js.get_last_msg(stream, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    except (TimeoutError, nats.errors.Error) as exc:
        raise ReadError(f"cannot read {subject} from {stream}: {_describe(exc)}") from exc
    return raw.data or b""


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message of a feed: the subject it was stored under, its data and stream sequence."""

    subject: str
    data: bytes
    seq: int = 0


def _stream_seq(msg: Msg) -> int:
    try:
        return int(msg.metadata.sequence.stream)
    except (ValueError, AttributeError, TypeError, nats.errors.Error):
        return 0


class OrderedFeed:
    """An open ordered feed (an async iterator of :class:`Delivered` and a context manager).

    Iteration ends when the feed is closed or the connection closes. Caveat of nats-py: when an
    ordered consumer is re-created before its first message, it restarts at stream sequence 1, so a
    ``new`` feed can then also deliver older stored messages.
    """

    def __init__(self, conn: Connection, stream: str, psub: JetStreamContext.PushSubscription):
        self.conn = conn
        self.stream = stream
        self._psub = psub
        self._messages: AsyncIterator[Msg] = psub.messages
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivered:
        if self._closed:
            raise StopAsyncIteration
        try:
            msg = await anext(self._messages)
        except StopAsyncIteration:
            await self.close()
            raise
        return Delivered(msg.subject, msg.data, _stream_seq(msg))

    async def close(self) -> None:
        """Unsubscribe (best effort; the server then removes the consumer). Idempotent."""
        if self._closed:
            return
        self._closed = True
        psub = self._psub
        # nats-py cancels the heartbeat task on unsubscribe but not the ordered consumer's
        # flow-control task, which would otherwise poll until the connection closes.
        jsi = getattr(getattr(psub, "_sub", None), "_jsi", None)
        fctask = getattr(jsi, "_fctask", None)
        if isinstance(fctask, asyncio.Task):
            fctask.cancel()
        if self.conn.is_closed:
            return
        with contextlib.suppress(Exception):
            await psub.unsubscribe()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_ordered_feed(
    conn: Connection,
    stream: str,
    subjects: str,
    *,
    deliver: Deliver = "new",
    pending_msgs: int = DEFAULT_PENDING_MSGS,
    pending_bytes: int = DEFAULT_PENDING_BYTES,
    inactive_threshold_s: float = DEFAULT_INACTIVE_THRESHOLD_S,
    request_timeout_s: float = 2.0,
) -> OrderedFeed:
    """Create an ephemeral ordered consumer on ``stream`` filtered to ``subjects`` and subscribe to
    it (the consumer exists when this returns).

    ``deliver``: ``new`` (published from now on), ``last_per_subject`` (the latest stored message
    of every subject, then new ones) or ``all`` (everything stored, then new ones). Raises
    ``ValueError`` for an unknown ``deliver`` and :class:`ReadError` when the bus refuses.
    """
    try:
        policy = _DELIVER[deliver]
    except KeyError:
        raise ValueError(
            f"deliver must be one of {list(DELIVER_POLICIES)}, not {deliver!r}"
        ) from None
    js = jetstream(conn, timeout=request_timeout_s)
    try:
        psub = await js.subscribe(
            subjects,
            stream=stream,
            ordered_consumer=True,
            deliver_policy=policy,
            pending_msgs_limit=pending_msgs,
            pending_bytes_limit=pending_bytes,
            inactive_threshold=inactive_threshold_s,
        )
    except (TimeoutError, nats.errors.Error) as exc:
        raise ReadError(f"cannot open a feed on {stream} ({subjects}): {_describe(exc)}") from exc
    return OrderedFeed(conn, stream, psub)
