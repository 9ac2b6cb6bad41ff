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
import hashlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from nats.aio.msg import Msg

from cctf.bus.connect import Connection
from cctf.bus.reader import Delivered, OrderedFeed
from cctf.util.deadline import stop_task

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


#: Digests a :class:`MergedFeed` remembers to recognise the second copy of a message.
MERGED_SEEN_LIMIT: Final = 65_536
#: The weight of a durable copy in a remembered message's count (live copies count 1 each).
_DURABLE: Final = 1 << 32


class MergedFeed:
    """The live copy (core subscription) and the durable copy (an ordered JetStream feed) of the
    same subjects as ONE feed of :class:`cctf.bus.reader.Delivered`, each message once.

    A message is yielded from whichever copy arrives first and its second copy is recognised ON
    ARRIVAL by the SHA-256 of its bytes (the last :data:`MERGED_SEEN_LIMIT` digests) and dropped
    there, so the queue holds each message once and a burst of second copies never waits behind
    the reader (it would overrun the ordered feed's buffer: a slow consumer). A stream-leader
    election delays nothing: the live copy is there at once, the ordered feed catches up (and
    brings what the live path missed, e.g. during a reconnect). The queue is bounded
    (``pending_msgs``): a live copy that does not fit is dropped and not remembered, so its durable
    copy still comes and is yielded; the durable pump waits for room (the ordered feed's own
    buffer and flow control hold the rest). Ends when the ordered feed ends (the connection
    closed) or on :meth:`close`.

    The queue is a plain deque with one waiter future per side (the reader waiting for a message,
    the pump waiting for room): an ``asyncio.Queue``'s bookkeeping per message (``full``, unfinished
    tasks, the getters' deque) was a tenth of the subscriber's transport cost (issue #9).
    """

    def __init__(self, durable: OrderedFeed, *, pending_msgs: int = 4096) -> None:
        if pending_msgs < 1:
            raise ValueError("pending_msgs must be positive")
        self._durable = durable
        self._live: LiveSubscription | None = None
        self._limit = pending_msgs
        self._out: deque[Delivered] = deque()
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Future[None] | None = None  # the reader waits for a message
        self._room: asyncio.Future[None] | None = None  # the pump waits for room
        self._ended = False  # the ordered feed ended (after what is queued)
        # digest -> copies seen: live copies + _DURABLE * durable copies (an int: no GC-tracked
        # object per remembered message)
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        #: Called for a durable copy of a message the stream already delivered (the same signed
        #: bytes stored twice: someone published them again, a replay): it is not yielded again.
        self.on_repeat: Callable[[Delivered], None] | None = None
        self._closed = False
        self.live_dropped = 0
        #: Second copies (and live retries) recognised and dropped on arrival.
        self.repeats = 0
        self.error = ""
        self._pump = self._loop.create_task(self._pump_durable())

    @property
    def queued(self) -> int:
        """Messages waiting for the reader."""
        return len(self._out)

    def _first_copy(self, live: bool, item: Delivered) -> bool:
        """Whether ``item`` is the first copy of its message (remembered); else it is counted."""
        digest = hashlib.sha256(item.data).digest()
        seen = self._seen
        counts = seen.get(digest)
        if counts is not None:  # the other copy of a message already queued (or a retry)
            self.repeats += 1
            if live:
                seen[digest] = counts + 1
            else:
                seen[digest] = counts = counts + _DURABLE
                if counts >= 2 * _DURABLE and self.on_repeat is not None:
                    self.on_repeat(item)
            return False
        seen[digest] = 1 if live else _DURABLE
        if len(seen) > MERGED_SEEN_LIMIT:
            seen.popitem(last=False)
        return True

    def _push(self, item: Delivered) -> None:
        self._out.append(item)
        if self._reader is not None:
            self._wake_reader()

    def _wake_pump(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    def offer_live(self, subject: str, data: bytes) -> bool:
        """The live subscription's handler."""
        if self._closed:
            return False
        if len(self._out) >= self._limit:  # not remembered: the durable copy will be the first one
            self.live_dropped += 1
            return False
        item = Delivered(subject, data)
        if self._first_copy(True, item):
            self._push(item)
        return True

    async def _pump_durable(self) -> None:
        try:
            async for msg in self._durable:
                if self._first_copy(False, msg):
                    while len(self._out) >= self._limit and not self._closed:
                        self._room = room = self._loop.create_future()
                        await room
                    self._push(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the feed failed: end the merged feed (the caller sees the end)
            self.error = repr(exc)[:300]
        self._ended = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._reader
        if waiter is not None:
            self._reader = None
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> MergedFeed:
        return self

    async def __anext__(self) -> Delivered:
        out = self._out
        while not self._closed:
            if out:
                item = out.popleft()
                if self._room is not None:
                    self._wake_pump()
                return item
            if self._ended:
                await self.close()
                break
            self._reader = waiter = self._loop.create_future()
            await waiter
        raise StopAsyncIteration

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_reader()
        self._wake_pump()
        await stop_task(self._pump, 2.0, what="merged feed pump")
        if self._live is not None:
            await self._live.close()
        await self._durable.close()


async def open_merged_feed(
    conn: Connection,
    subjects: str,
    durable: Callable[[], Awaitable[OrderedFeed]],
    *,
    pending_msgs: int = 4096,
) -> MergedFeed:
    """Subscribe (core) to ``subjects`` first, then open the ordered feed (``durable()``), so no
    message falls between the two; merge them (:class:`MergedFeed`, whose queue holds
    ``pending_msgs`` messages)."""
    holder: list[MergedFeed] = []
    early: list[Delivered] = []

    def handler(subject: str, data: bytes) -> bool:
        if holder:
            return holder[0].offer_live(subject, data)
        if len(early) >= 4096:
            return False
        early.append(Delivered(subject, data))
        return True

    live = await subscribe_live(conn, (subjects,), handler, pending_msgs=16_384)
    try:
        feed = await durable()
    except BaseException:
        await live.close()
        raise
    merged = MergedFeed(feed, pending_msgs=pending_msgs)
    merged._live = live
    for item in early:
        merged.offer_live(item.subject, item.data)
    holder.append(merged)
    return merged
