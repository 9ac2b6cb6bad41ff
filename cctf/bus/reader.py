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
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
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
    """The bus could not be asked (timeout, no responders, permission, connection closed).
    ``transient``: worth retrying (a timeout, no responders, no stream leader yet: a loaded or
    starting cluster); otherwise the bus refused (a missing stream, a bad request)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


#: Errors of a JetStream request that a retry may not meet again.
_TRANSIENT: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)


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


class Delivered(msgspec.Struct, frozen=True, gc=False):
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

    def __init__(
        self,
        conn: Connection,
        stream: str,
        psub: JetStreamContext.PushSubscription,
        *,
        stream_seq: bool = True,
    ) -> None:
        self.conn = conn
        self._with_seq = stream_seq
        self.stream = stream
        self._psub = psub
        self._messages: AsyncIterator[Msg] = psub.messages
        self._closed = False
        # nats-py's buffer of this subscription, when it has the expected shape (else None: every
        # message then goes through the iterator)
        sub = getattr(psub, "_sub", None)
        ok = isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue) and isinstance(
            getattr(sub, "_pending_size", None), int
        )
        self._buffer: Any = sub if ok else None

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivered:
        if self._closed:
            raise StopAsyncIteration
        msg = self._buffered()
        if msg is None:
            try:
                msg = await anext(self._messages)
            except StopAsyncIteration:
                await self.close()
                raise
        return Delivered(msg.subject, msg.data, _stream_seq(msg) if self._with_seq else 0)

    def _buffered(self) -> Msg | None:
        """A message nats-py already holds for this feed, taken at once: what its iterator does
        (``Subscription.messages``: ``task_done``, pending bytes) without the task and the wait
        it creates per message to notice an unsubscription (a third of a small message's cost in
        a burst). ``None`` when the buffer is empty: the iterator waits."""
        sub = self._buffer
        if sub is None:
            return None
        queue: asyncio.Queue[Msg] = sub._pending_queue
        if queue.empty():
            return None
        msg = queue.get_nowait()
        queue.task_done()
        sub._pending_size -= len(msg.data)
        return msg

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
    stream_seq: bool = True,
) -> OrderedFeed:
    """Create an ephemeral ordered consumer on ``stream`` filtered to ``subjects`` and subscribe to
    it (the consumer exists when this returns).

    ``deliver``: ``new`` (published from now on), ``last_per_subject`` (the latest stored message
    of every subject, then new ones) or ``all`` (everything stored, then new ones).
    ``stream_seq=False``: every :attr:`Delivered.seq` is 0 (its reply subject is not parsed). Raises
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
        raise ReadError(
            f"cannot open a feed on {stream} ({subjects}): {_describe(exc)}",
            transient=isinstance(exc, _TRANSIENT),
        ) from exc
    return OrderedFeed(conn, stream, psub, stream_seq=stream_seq)
