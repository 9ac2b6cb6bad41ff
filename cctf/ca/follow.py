"""The coordinator's follower of the CA log: records -> ``LogMirror`` (checked) -> ``CertRegistry``.

:class:`CaLogFollower` reads ``cctf.v1.log.ca`` two ways (design D1: a JetStream publish is also a
core message), so that a revocation is honoured within one round even while the durable reader is
re-created (a nats-server restart, a ``CCTF_LOG`` leader election):

* **durable**: from the first record, following (``cctf.bus.logstream.read_records(follow=True)``:
  an ordered push consumer). Each record is applied to a :class:`~cctf.translog.mirror.LogMirror` of
  the CA log's key (origin ``cctf/v1/log/<kid>``: no gap, no overlap, checkpoint signed by both
  hybrid halves, root re-derived, consistent with the previous head); only then do its entries reach
  the registry. A stored record that fails the mirror stops the follower for good (fail closed: no
  later certificate is registered, ballots of keys whose certificates expire are refused). A read
  failure is retried with bounded backoff, re-reading from the start and skipping what the mirror
  holds; a stored record the mirror already holds must be the very record it applied (same size,
  same signed checkpoint), else the log key signed two different trees: ``diverged``, fail closed.
* **live**: a core subscription on the same subject (``cctf.bus.live``; nats-py re-subscribes at
  once after a reconnect, no consumer to re-create). A live record whose ``first_index`` is the
  mirror's size is checked with :meth:`LogMirror.check` (the same steps as the durable path, the
  mirror left unchanged) and applied only if it passes; a record ahead of the mirror is held (at
  most :data:`MAX_HELD`) until the records before it are applied; a record behind it is a copy of
  one applied already. Anyone able to make a message appear on the subject could send one (a push
  consumer delivering there, a writer's refused publish), so a live record that fails a check is
  refused and counted (:attr:`live_refused`, by reason), never applied and never fatal.
  A live record's **revocations** take effect at once; its **certificates** are registered only
  when its durable copy is read (a certificate counts as logged once it is stored: a publish the
  stream refused is still delivered to core subscribers).
* **catch-up after a reconnect**: a record stored while the connection was away, before nats-py
  re-sent the live subscription, would otherwise wait for the ordered consumer to be re-created
  (seconds). So after each reconnect the follower reads what was stored after the newest record it
  read (``cctf.bus.logstream.records_after``: direct gets, answered by any replica), as the durable
  path does (retried while the stream recovers).

:attr:`ready` is set once every record stored when the follower started has been applied.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Final

from opentelemetry.metrics import Counter

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.live import LiveSubscription, subscribe_live
from cctf.bus.logstream import (
    StoredRecord,
    last_record,
    log_subject,
    read_records,
    reconnects,
    records_after,
)
from cctf.ca.entries import RevokeEntry, decode_entry
from cctf.ca.errors import CaError
from cctf.ca.log import CA_LOG_ID
from cctf.ca.registry import CertRegistry
from cctf.crypto.keys import PublicKeySet
from cctf.translog.errors import MirrorError, TranslogError
from cctf.translog.logstate import log_origin
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier
from cctf.translog.record import LogBatch, decode_batch
from cctf.util.deadline import stop_task

__all__ = ["MAX_HELD", "CaLogFollower"]

_MAX_BACKOFF_S: Final = 2.0
#: Live records ahead of the mirror kept until the records before them are applied.
MAX_HELD: Final = 64
#: The live subscription's client-side buffer (beyond it nats-py drops: the durable copy remains).
_LIVE_PENDING_MSGS: Final = 1024
_LIVE_PENDING_BYTES: Final = 32 * 1024 * 1024
#: How often the reconnect count is looked at, and how often a catch-up is tried after one.
_WATCH_S: Final = 0.05
_CATCH_UP_TRIES: Final = 12
_log = telemetry.get_logger("cctf.ca.follow")


def _is_revocation(entry: bytes) -> bool:
    try:
        return isinstance(decode_entry(entry), RevokeEntry)
    except CaError:
        return False  # refused (and counted) by the registry when its record is stored


@functools.cache
def _live_refused_counter() -> Counter:
    """``cctf_ca_live_records_refused_total{reason}`` (process-wide, made once)."""
    return telemetry.meter("cctf.ca.follow").create_counter(
        "cctf_ca_live_records_refused",
        description="CA log records from the live subscription refused (by reason), never applied",
    )


class CaLogFollower:
    def __init__(self, conn: Connection, registry: CertRegistry, log_key: PublicKeySet) -> None:
        self._conn = conn
        self.registry = registry
        origin = log_origin(log_key.kid)
        self.mirror = LogMirror(origin, NoteVerifier(origin, log_key))
        self.ready = asyncio.Event()
        self.failed: MirrorError | None = None
        self.read_errors = 0
        self.live_applied = 0
        """Records applied from their live copy (before their durable copy was read)."""
        self.live_refused: dict[str, int] = {}
        """Live records refused, by reason (``decode``, a mirror reason, ``held-full``)."""
        self._held: dict[int, LogBatch] = {}
        self._unstored: dict[int, LogBatch] = {}  # size -> applied live, durable copy not read yet
        self._target = -1
        self._live: LiveSubscription | None = None
        self.catch_ups = 0
        """Catch-ups after a reconnect that applied or confirmed at least one record."""
        self._last_seq = 0  # stream sequence of the newest stored record read
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="cctf-ca-follow")
        self._watch_task = loop.create_task(self._watch(), name="cctf-ca-follow-reconnects")

    async def stop(self) -> None:
        await stop_task(self._watch_task, 2.0, what="CA log reconnect watcher")
        await stop_task(self._task, 2.0, what="CA log follower")
        if self._live is not None:
            await self._live.close()

    @property
    def held(self) -> int:
        """Live records held ahead of the mirror."""
        return len(self._held)

    async def _run(self) -> None:
        delay = 0.05
        while self.failed is None:
            try:
                if self._live is None:
                    self._live = await subscribe_live(
                        self._conn,
                        [log_subject(CA_LOG_ID)],
                        self.on_live,
                        pending_msgs=_LIVE_PENDING_MSGS,
                        pending_bytes=_LIVE_PENDING_BYTES,
                    )
                await self._follow()
            except asyncio.CancelledError:
                raise
            except MirrorError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # LogReadError, reconnects: read again from the start
                self.read_errors += 1
                if self.read_errors == 1 or self.read_errors % 20 == 0:
                    _log.warning("ca_log_read_failed", error=repr(exc)[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    def _fail(self, exc: MirrorError) -> None:
        if self.failed is not None:
            return  # the first reason stays
        self.failed = exc
        self._held.clear()
        _log.error("ca_log_refused", error=str(exc)[:300])

    async def _follow(self) -> None:
        last = await last_record(self._conn, CA_LOG_ID, leader=False)
        self._target = 0 if last is None else last.record.size
        self._check_ready()
        async for stored in read_records(self._conn, CA_LOG_ID, follow=True):
            self.on_stored(stored)

    def on_stored(self, stored: StoredRecord) -> None:
        """A record read from the stream (the durable path and the catch-up): :class:`MirrorError`
        when it fails the mirror or is not the record applied at its size (fatal)."""
        self._apply_stored(stored.record)
        self._last_seq = max(self._last_seq, stored.seq)

    async def _watch(self) -> None:
        """After each reconnect, read what was stored after the newest record read (direct gets):
        records stored before the live subscription was re-sent on the new connection reach us no
        other way until the ordered consumer is re-created (seconds)."""
        seen = reconnects(self._conn)
        while self.failed is None:
            await asyncio.sleep(_WATCH_S)
            if reconnects(self._conn) == seen:
                continue
            seen = reconnects(self._conn)
            delay = 0.05
            for _ in range(_CATCH_UP_TRIES):  # the stream may still be recovering: retried
                try:
                    got = await records_after(self._conn, CA_LOG_ID, self._last_seq)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _log.info("ca_log_catch_up_retry", error=repr(exc)[:200])
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF_S)
                    continue
                try:
                    for stored in got:
                        self.on_stored(stored)
                except MirrorError as exc:
                    self._fail(exc)
                    return
                self.catch_ups += bool(got)
                break

    def _check_ready(self) -> None:
        if self._target >= 0 and self.mirror.size >= self._target:
            self.ready.set()

    def _apply_stored(self, record: LogBatch) -> None:
        """A record read from the stream (durable path; every failure is fatal)."""
        if record.size <= self.mirror.size:  # applied before: from its live copy, or a re-read
            head = self.mirror.head_at(record.size)
            if head is None or (head.first_index, head.note) != (
                record.first_index,
                record.checkpoint,
            ):
                raise MirrorError(
                    "diverged",
                    f"the stored record of size {record.size} is not the one applied (the log key "
                    "signed two different trees)",
                )
            live = self._unstored.pop(record.size, None)
            if live is not None:  # now stored: its certificates count as logged
                self._register(live.entries, revocations=False)
            return
        try:
            self.mirror.apply(record)
        except TranslogError as exc:
            raise MirrorError(getattr(exc, "reason", "mirror"), str(exc)) from None
        for entry in record.entries:
            self.registry.add(entry)
        self._drain_held()
        self._check_ready()

    def _register(self, entries: Sequence[bytes], *, revocations: bool) -> None:
        for entry in entries:
            if _is_revocation(entry) is revocations:
                self.registry.add(entry)

    def on_live(self, _subject: str, data: bytes) -> bool:
        """A record's live copy (core delivery): see the module doc."""
        if self.failed is not None:
            return True
        try:
            record = decode_batch(data)
        except TranslogError:
            self._refused("decode")
            return True
        size = self.mirror.size
        if record.first_index < size:
            return True  # a copy of one applied already (the durable path checks it is the same)
        if record.first_index > size:
            if record.first_index not in self._held and len(self._held) >= MAX_HELD:
                self._refused("held-full")
            else:
                self._held[record.first_index] = record
            return True
        self._apply_live(record)
        self._drain_held()
        return True

    def _apply_live(self, record: LogBatch) -> None:
        try:
            self.mirror.check(record)
        except MirrorError as exc:
            self._refused(exc.reason)
            return
        try:
            self.mirror.apply(record)
        except TranslogError as exc:  # cannot happen after check(): the mirror is failed now
            self._fail(MirrorError(getattr(exc, "reason", "mirror"), str(exc)))
            return
        self.live_applied += 1
        self._unstored[record.size] = record
        self._register(record.entries, revocations=True)
        self._check_ready()

    def _drain_held(self) -> None:
        size = self.mirror.size
        for first in [i for i in self._held if i < size]:
            del self._held[first]  # the durable path got there first
        while self.failed is None and (record := self._held.pop(self.mirror.size, None)):
            self._apply_live(record)

    def _refused(self, reason: str) -> None:
        _live_refused_counter().add(1, {"reason": reason})
        n = self.live_refused[reason] = self.live_refused.get(reason, 0) + 1
        if n == 1 or n % 100 == 0:
            _log.warning("ca_log_live_record_refused", reason=reason, count=n)
