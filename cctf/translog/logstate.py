"""``LogState``: one log's writer-side state (tree + signing key), resumed from its stored records.

Owner: ``logstore`` (issue #9, design decision D4). The coordinator's batch stage (``batch``) and the
CA (``ca``) use it the same way::

    state = LogState.resume(key, stored_records)      # or LogState(key) for a new log
    record = state.append(entries)                    # tree grows, a head is signed
    proofs = [state.inclusion_proof(i, record.size) for i in range(record.first_index, record.size)]
    await writer.append(record)                       # cctf.bus.logstream.LogWriter (durable)

* The log's origin and note key name are both ``cctf/v1/log/<kid>``
  (:func:`cctf.bus_schemas.heads.log_origin`, re-exported), ``kid`` the signing key's id: a log is
  bound to one key (a new key starts a new log).
* The coordinator's batch stage (:class:`cctf.coordinator.pipeline.batchsign.BatchLog`) signs
  its batches itself over ``state.mirror.tree`` (``BatchLog(key, tree=state.mirror.tree)`` after
  :func:`cctf.bus.logstream.open_log`) and stores ``LogBatch(sealed.origin, sealed.first_index,
  sealed.entries, sealed.checkpoint)`` with the writer; :meth:`LogState.append` is the same for
  other logs (the CA's).
* :meth:`LogState.append` adds the entries to the tree, signs ONE checkpoint (C2SP signed note, both
  hybrid halves) for the new size and returns the :class:`~cctf.translog.record.LogBatch` to store.
  It checks the record's size bound BEFORE touching the tree (:class:`RecordTooLargeError`: split
  the batch); :meth:`fits` asks first.
* :meth:`LogState.resume` re-derives the tree from the stored records through a
  :class:`~cctf.translog.mirror.LogMirror` (every root and signature checked; the log is never
  rewritten), so the next head is consistent with the last stored one. A stored record of another
  origin (another key) is refused (``MirrorError`` ``wrong-origin``).
* Once a record was not stored (the writer was fenced or stopped) the tree holds entries the log
  does not: :meth:`poison` it; every later call raises :class:`LogWriteError` ``poisoned``. The
  owner then stops writing and resumes from the stream.

Pure and synchronous (no I/O, no clock); not thread-safe (one writer task per log).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cctf.bus_schemas.heads import LOG_ORIGIN_PREFIX, log_origin
from cctf.crypto.keys import SigningKey
from cctf.ids import check_id
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.errors import LogWriteError, RecordError, RecordTooLargeError
from cctf.translog.merkle import leaf_hash
from cctf.translog.mirror import Head, LogMirror
from cctf.translog.note import NoteVerifier, sign_checkpoint
from cctf.translog.record import MAX_BATCH_ENTRIES, LogBatch, entries_fit

__all__ = ["LOG_ORIGIN_PREFIX", "LogState", "check_log_id", "log_origin"]


def check_log_id(log_id: str) -> str:
    """A log id (the coordinator id, or ``ca``): ``[a-z0-9][a-z0-9-]{0,31}``."""
    return check_id(log_id, "log id")


class LogState:
    """The writer side of one log: see the module doc."""

    def __init__(self, key: SigningKey, *, mirror: LogMirror | None = None) -> None:
        self.origin = log_origin(key.kid)
        self._key = key
        self._mirror = mirror or LogMirror(self.origin, NoteVerifier(self.origin, key.public))
        if self._mirror.origin != self.origin:
            raise RecordError("bad-origin", "the mirror is of another log")
        self._poisoned: str | None = None

    @classmethod
    def resume(cls, key: SigningKey, records: Iterable[LogBatch]) -> LogState:
        """The state after ``records`` (stream order), each re-derived and checked
        (:class:`~cctf.translog.errors.MirrorError`)."""
        state = cls(key)
        for record in records:
            state._mirror.apply(record)
        return state

    @property
    def size(self) -> int:
        return self._mirror.size

    @property
    def root(self) -> bytes:
        return self._mirror.root

    @property
    def last_head(self) -> Head | None:
        """The newest signed head (``None`` for an empty log)."""
        return self._mirror.last

    @property
    def mirror(self) -> LogMirror:
        return self._mirror

    def _check(self) -> None:
        if self._poisoned is not None:
            raise LogWriteError("poisoned", f"the log state is unusable: {self._poisoned}")

    def poison(self, why: str) -> None:
        """Mark the state unusable (a record it made was not stored)."""
        self._poisoned = why

    def fits(self, entries: Sequence[bytes]) -> bool:
        """Whether one record of ``entries`` is within the record bounds."""
        return 1 <= len(entries) <= MAX_BATCH_ENTRIES and entries_fit(
            self.origin, self.size, entries
        )

    def append(self, entries: Sequence[bytes]) -> LogBatch:
        """Append ``entries`` (1..MAX_BATCH_ENTRIES, each bytes) and sign the new head; the record
        to store. :class:`RecordTooLargeError` (tree untouched) when it would not fit."""
        self._check()
        batch = tuple(entries)
        if not self.fits(batch):
            raise RecordTooLargeError(
                "too-large", f"{len(batch)} entries do not fit in one record: split the batch"
            )
        first = self.size
        try:
            tree = self._mirror.tree
            for entry in batch:
                if not isinstance(entry, bytes):
                    raise RecordError("bad-entries", "an entry is bytes")
            for entry in batch:
                tree.append_leaf_hash(leaf_hash(entry))
            size = tree.size
            note = sign_checkpoint(
                Checkpoint(self.origin, size, tree.root()), self.origin, self._key
            )
            record = LogBatch(self.origin, first, batch, note)
            self._mirror.record_signed(record, tree.root())
        except BaseException as exc:
            if self.size != first:
                self.poison(f"append failed half way: {exc}")
            raise
        return record

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` (default: now)."""
        return self._mirror.tree.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return self._mirror.tree.consistency_proof(size1, size2)
