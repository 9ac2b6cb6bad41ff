"""The CA's log on the bus: ``cctf.translog.logstate.LogState`` + ``cctf.bus.logstream`` (D4,
log-id ``ca``), as the :class:`~cctf.ca.service.CaLog` the service appends to.

:func:`open_ca_log` resumes the log from its stored records (every root and checkpoint signature
re-checked by the state's mirror; never rewritten) and feeds every stored entry to a
:class:`~cctf.ca.registry.CertRegistry`, so a restarted CA can still list and revoke what it issued.
A record that was not stored (fenced, stopped, full) poisons the state: every later append is
``log`` and the CA must be restarted (it then resumes from the stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cctf.bus.connect import Connection
from cctf.bus.logstream import LogWriter, read_records
from cctf.ca.errors import CaError, CaReason
from cctf.ca.registry import CertRegistry
from cctf.crypto.keys import PublicKeySet, SigningKey
from cctf.translog.errors import TranslogError
from cctf.translog.logstate import LogState, log_origin
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier

__all__ = ["CA_LOG_ID", "TranslogCaLog", "open_ca_log", "read_ca_log"]

CA_LOG_ID: Final = "ca"


class TranslogCaLog:
    def __init__(self, state: LogState, writer: LogWriter) -> None:
        self._state = state
        self._writer = writer

    @property
    def size(self) -> int:
        return self._state.size

    @property
    def state(self) -> LogState:
        return self._state

    async def append(self, entries: Sequence[bytes]) -> int:
        try:
            record = self._state.append(entries)
        except TranslogError as exc:
            raise CaError(CaReason.LOG, f"cannot append: {exc}") from None
        try:
            await self._writer.append(record)
        except TranslogError as exc:
            self._state.poison(str(exc))
            raise CaError(CaReason.LOG, f"the CA log refused the record: {exc}") from None
        return record.first_index

    def close(self) -> None:
        self._writer.close()


async def open_ca_log(
    conn: Connection, key: SigningKey, registry: CertRegistry, **writer_options: float
) -> TranslogCaLog:
    """Resume the CA log signed by ``key`` (module doc); :class:`TranslogError` if a stored record
    does not check out."""
    state = LogState(key)
    last_seq = 0
    async for stored in read_records(conn, CA_LOG_ID, leader=True):
        state.mirror.apply(stored.record)
        for entry in stored.record.entries:
            registry.add(entry)
        last_seq = stored.seq
    writer = LogWriter(conn, CA_LOG_ID, last_seq=last_seq, next_index=state.size, **writer_options)
    return TranslogCaLog(state, writer)


async def read_ca_log(conn: Connection, log_key: PublicKeySet) -> tuple[LogMirror, list[bytes]]:
    """Every stored record of the CA log, each checked by a ``LogMirror`` of ``log_key`` (roots,
    both checkpoint signatures, consistency): the mirror and every entry in log order.
    ``TranslogError`` when the log does not verify or cannot be read."""
    origin = log_origin(log_key.kid)
    mirror = LogMirror(origin, NoteVerifier(origin, log_key))
    entries: list[bytes] = []
    async for stored in read_records(conn, CA_LOG_ID):
        mirror.apply(stored.record)
        entries.extend(stored.record.entries)
    return mirror, entries
