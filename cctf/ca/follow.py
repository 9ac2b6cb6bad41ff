"""The coordinator's follower of the CA log: records -> ``LogMirror`` (checked) -> ``CertRegistry``.

:class:`CaLogFollower` reads ``cctf.v1.log.ca`` from the first record and keeps following
(``cctf.bus.logstream.read_records(follow=True)``: an ordered push consumer, so a new record arrives
within milliseconds of being stored). Each record is first applied to a
:class:`~cctf.translog.mirror.LogMirror` of the CA log's key (origin ``cctf/v1/log/<kid>``: no gap,
no overlap, checkpoint signed by both hybrid halves, root re-derived, consistent with the previous
head); only then do its entries reach the registry. A record that fails the mirror stops the
follower for good (fail closed: no later certificate is registered, ballots of keys whose
certificates expire are refused) and is logged. A read failure (reconnect, leader election) is
retried with bounded backoff, re-reading from the start and skipping what the mirror already holds.

:attr:`ready` is set once every record stored when the follower started has been applied.
"""

from __future__ import annotations

import asyncio
from typing import Final

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.logstream import last_record, read_records
from cctf.ca.log import CA_LOG_ID
from cctf.ca.registry import CertRegistry
from cctf.crypto.keys import PublicKeySet
from cctf.translog.errors import MirrorError, TranslogError
from cctf.translog.logstate import log_origin
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier
from cctf.util.deadline import stop_task

__all__ = ["CaLogFollower"]

_MAX_BACKOFF_S: Final = 2.0
_log = telemetry.get_logger("cctf.ca.follow")


class CaLogFollower:
    def __init__(self, conn: Connection, registry: CertRegistry, log_key: PublicKeySet) -> None:
        self._conn = conn
        self.registry = registry
        origin = log_origin(log_key.kid)
        self.mirror = LogMirror(origin, NoteVerifier(origin, log_key))
        self.ready = asyncio.Event()
        self.failed: MirrorError | None = None
        self.read_errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cctf-ca-follow")

    async def stop(self) -> None:
        await stop_task(self._task, 2.0, what="CA log follower")

    async def _run(self) -> None:
        delay = 0.05
        while self.failed is None:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except MirrorError as exc:
                self.failed = exc
                _log.error("ca_log_refused", error=str(exc)[:300])
                return
            except Exception as exc:  # LogReadError, reconnects: read again from the start
                self.read_errors += 1
                if self.read_errors == 1 or self.read_errors % 20 == 0:
                    _log.warning("ca_log_read_failed", error=repr(exc)[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _follow(self) -> None:
        last = await last_record(self._conn, CA_LOG_ID, leader=False)
        target = 0 if last is None else last.record.size
        if self.mirror.size >= target:
            self.ready.set()
        async for stored in read_records(self._conn, CA_LOG_ID, follow=True):
            record = stored.record
            if record.size <= self.mirror.size:
                continue  # applied before a re-read
            try:
                self.mirror.apply(record)
            except TranslogError as exc:
                raise MirrorError(getattr(exc, "reason", "mirror"), str(exc)) from None
            for entry in record.entries:
                self.registry.add(entry)
            if self.mirror.size >= target:
                self.ready.set()
