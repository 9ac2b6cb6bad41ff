"""The live path: core NATS subscriptions on stream subjects (design D1, docs/architecture.md).

A JetStream publish is a core NATS message: every core subscriber of its subject receives it at once,
whether or not the stream that stores it has a leader. :func:`subscribe_live` subscribes to subjects
that streams also record (ballots and evidence for a coordinator, verdicts for a client) and hands
every message to a synchronous handler as ``(subject, data)``. The durable copy of the same message
comes through JetStream; recognising the two as one message is the caller's (pure) business.

Bounded: the subscription's client-side buffer holds at most ``pending_msgs`` / ``pending_bytes``;
beyond it nats-py drops messages (a slow consumer, reported to the connection's ``error_cb``) and
:attr:`LiveSubscription.dropped` counts what the handler refused. A dropped live copy is never a
lost message: its durable copy still comes through the stream. nats-py re-subscribes after a
reconnect by itself, so a subscription outlives a server going away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from nats.aio.msg import Msg

from cctf.bus.connect import Connection

__all__ = [
    "DEFAULT_LIVE_PENDING_BYTES",
    "DEFAULT_LIVE_PENDING_MSGS",
    "LiveSubscription",
    "subscribe_live",
]

DEFAULT_LIVE_PENDING_MSGS: Final = 65_536
DEFAULT_LIVE_PENDING_BYTES: Final = 64 * 1024 * 1024

#: ``handler(subject, data) -> accepted``; ``False`` counts the message as dropped.
LiveHandler = Callable[[str, bytes], bool]


class LiveSubscription:
    """Core subscriptions on some subjects; :meth:`close` unsubscribes (idempotent)."""

    def __init__(self, conn: Connection, subjects: tuple[str, ...]) -> None:
        self.conn = conn
        self.subjects = subjects
        self.received = 0
        self.dropped = 0
        self._subs: list[Any] = []
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        subs, self._subs = self._subs, []
        if self.conn.is_closed:
            return
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def subscribe_live(
    conn: Connection,
    subjects: Sequence[str],
    handler: LiveHandler,
    *,
    pending_msgs: int = DEFAULT_LIVE_PENDING_MSGS,
    pending_bytes: int = DEFAULT_LIVE_PENDING_BYTES,
) -> LiveSubscription:
    """Subscribe to every subject of ``subjects`` (core) and call ``handler`` for each message.
    The subscriptions exist on the server when this returns (flushed). A handler exception is a bug:
    the message counts as dropped and the subscription goes on."""
    live = LiveSubscription(conn, tuple(subjects))

    async def _on_message(msg: Msg) -> None:
        live.received += 1
        try:
            ok = handler(msg.subject, msg.data)
        except Exception:
            ok = False
        if not ok:
            live.dropped += 1
            # let the event loop run (e.g. the caller unsubscribing under a flood) instead of
            # churning through the whole client-side buffer first
            await asyncio.sleep(0)

    try:
        for subject in live.subjects:
            live._subs.append(
                await conn.subscribe(
                    subject,
                    cb=_on_message,
                    pending_msgs_limit=pending_msgs,
                    pending_bytes_limit=pending_bytes,
                )
            )
        await conn.flush(timeout=5)
    except BaseException:
        await live.close()
        raise
    return live
