"""The coordinator's durable log (design decision D4): resumed before the first batch, one record
per sealed batch.

:meth:`CoordinatorLog.attach` reads every stored record of ``cctf.v1.log.<coordinator>`` from stream
``CCTF_LOG`` (:func:`cctf.bus.logstream.open_log`: every root and signed head re-derived and
checked; a log that does not re-derive, or was written by another key, refuses the start: fail
closed) and hands the re-derived tree to the batch stage, so the next head continues (and is
consistent with) the last stored one: the log is resumed, never rewritten. Each sealed batch is then
stored as one ``LogBatch`` record by the log's one :class:`~cctf.bus.logstream.LogWriter` (which
retries until acknowledged); a fenced, full or refused append is fatal (the stage, and so the
coordinator, stops). :meth:`close` after the batch stage drained its appends (SIGTERM).
"""

from __future__ import annotations

from cctf.bus.connect import Connection
from cctf.bus.logstream import LogWriter, open_log
from cctf.coordinator.batcher import BatchSigner
from cctf.coordinator.pipeline.batchsign import SignedBatch
from cctf.crypto.keys import SigningKey
from cctf.telemetry import get_logger
from cctf.translog.errors import LogWriteError
from cctf.translog.logstate import LogState
from cctf.translog.record import LogBatch

__all__ = ["CoordinatorLog"]

_log = get_logger("cctf.coordinator")


class CoordinatorLog:
    """One coordinator's log: its resumed state and its writer."""

    def __init__(self, conn: Connection, coordinator: str, key: SigningKey) -> None:
        self._conn = conn
        self.coordinator = coordinator
        self._key = key
        self.state: LogState | None = None
        self.writer: LogWriter | None = None

    async def attach(self, batcher: BatchSigner) -> None:
        """Resume the log from the stream and attach it to ``batcher`` (before its first batch).
        Raises a :class:`~cctf.translog.errors.TranslogError` when the stored log does not check."""
        self.state, self.writer = await open_log(self._conn, self.coordinator, self._key)
        batcher.attach_log(self.state.mirror.tree, self.append, (LogWriteError,))
        _log.info(
            "log_resumed",
            coordinator=self.coordinator,
            size=self.state.size,
            root=self.state.root.hex(),
        )

    async def append(self, sealed: SignedBatch) -> None:
        assert self.writer is not None
        record = LogBatch(sealed.origin, sealed.first_index, sealed.entries, sealed.checkpoint)
        await self.writer.append(record)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
