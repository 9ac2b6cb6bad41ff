"""``LogMirror``: a follower that re-derives a log from its stored records and checks every head.

A mirror holds one log's tree (leaf hashes only) and the signed head of every record it applied.
:meth:`LogMirror.apply` takes records in stream order and refuses (one :class:`MirrorError` with a
reason code, and the mirror is then *failed*: every later call refuses too, fail closed) unless,
numbered as in ``docs/transparency-log.md`` §8:

1. the mirror has not failed before [``failed``];
2. the record's origin is the log's [``wrong-origin``];
3. ``first_index`` equals the tree size so far: no gap [``gap``], no overlap [``overlap``];
4. the checkpoint note verifies with the log's key (both hybrid halves, origin = the log's)
   [``checkpoint``, the note or body error's own reason in the message];
5. the checkpoint's size is ``first_index + len(entries)`` [``size-mismatch``];
6. the root re-derived from every entry so far equals the checkpoint's root [``root-mismatch``];
7. the previous head is a prefix of this one: an RFC 9162 consistency proof between the two
   sizes, built from the tree and checked with the independent verifier [``inconsistent``].

The mirror never needs the entries again once hashed: it keeps 2 hashes per leaf and, per record,
``(first_index, size, root, note)`` in :attr:`heads`, from which the API serves heads, inclusion and
consistency proofs. Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from cctf.translog.checkpoint import Checkpoint
from cctf.translog.errors import MirrorError, ProofError, TranslogError
from cctf.translog.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, verify_consistency
from cctf.translog.note import NoteVerifier, open_checkpoint
from cctf.translog.record import LogBatch

__all__ = ["Head", "LogMirror"]


@dataclass(frozen=True, slots=True)
class Head:
    """One verified head of the log: the record that produced it starts at ``first_index``."""

    first_index: int
    size: int
    root: bytes
    note: str


class LogMirror:
    """Re-derives one log (origin + note verifier) record by record; see the module doc."""

    def __init__(self, origin: str, verifier: NoteVerifier) -> None:
        self.origin = origin
        self._verifier = verifier
        self._tree = MerkleTree()
        self._heads: list[Head] = []
        self._sizes: list[int] = []
        self._failed: MirrorError | None = None

    @property
    def tree(self) -> MerkleTree:
        """The re-derived tree (read it; appending to it breaks the mirror)."""
        return self._tree

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def root(self) -> bytes:
        return self._tree.root()

    @property
    def heads(self) -> tuple[Head, ...]:
        return tuple(self._heads)

    @property
    def last(self) -> Head | None:
        """The newest verified head (``None`` before the first record)."""
        return self._heads[-1] if self._heads else None

    @property
    def failed(self) -> MirrorError | None:
        return self._failed

    def head_at(self, size: int) -> Head | None:
        """The verified head of exactly ``size`` leaves, if a record ended there."""
        i = bisect.bisect_left(self._sizes, size)
        if i < len(self._sizes) and self._sizes[i] == size:
            return self._heads[i]
        return None

    def record_of(self, index: int) -> Head | None:
        """The head of the record holding leaf ``index`` (its ``first_index`` locates the entry)."""
        i = bisect.bisect_right(self._sizes, index)
        return self._heads[i] if i < len(self._heads) else None

    def _fail(self, reason: str, message: str) -> MirrorError:
        self._failed = MirrorError(reason, message)
        return self._failed

    def _refuse(self, reason: str, message: str) -> MirrorError:
        return MirrorError(reason, message)

    def _steps_2_to_5(
        self, record: LogBatch, fail: Callable[[str, str], MirrorError]
    ) -> Checkpoint:
        if self._failed is not None:  # step 1
            raise MirrorError("failed", f"the mirror failed before: {self._failed}")
        if record.origin != self.origin:  # step 2
            raise fail("wrong-origin", f"record origin {record.origin!r} is not {self.origin!r}")
        size = self._tree.size
        if record.first_index != size:  # step 3
            reason = "gap" if record.first_index > size else "overlap"
            raise fail(reason, f"record starts at index {record.first_index}, the log holds {size}")
        try:  # step 4
            checkpoint = open_checkpoint(record.checkpoint, self._verifier, self.origin)
        except TranslogError as exc:
            raise fail("checkpoint", f"record at {size}: {exc}") from None
        if checkpoint.size != record.size:  # step 5
            raise fail(
                "size-mismatch",
                f"record at {size} holds {len(record.entries)} entries, its checkpoint says "
                f"size {checkpoint.size}",
            )
        return checkpoint

    def check(self, record: LogBatch) -> Checkpoint:
        """Steps 1-6 of :meth:`apply` for a record that would be the next one, WITHOUT applying it
        and without failing the mirror: a :class:`MirrorError` with the same reason codes, the mirror
        unchanged. For records from a path anyone may inject into (the live copy of a log,
        :class:`cctf.ca.follow.CaLogFollower`), whose refusal must not stop the mirror. Step 7
        holds by construction: the root is derived from this tree's leaves plus the record's."""
        checkpoint = self._steps_2_to_5(record, self._refuse)
        root = self._tree.root_after([leaf_hash(entry) for entry in record.entries])
        if root != checkpoint.root_hash:  # step 6
            raise MirrorError(
                "root-mismatch", f"the entries do not re-derive the root of size {record.size}"
            )
        return checkpoint

    def apply(self, record: LogBatch) -> Checkpoint:
        """Check and apply one record (steps in the module doc); its verified checkpoint."""
        checkpoint = self._steps_2_to_5(record, self._fail)
        for entry in record.entries:
            self._tree.append_leaf_hash(leaf_hash(entry))
        root = self._tree.root()
        if root != checkpoint.root_hash:  # step 6
            raise self._fail(
                "root-mismatch", f"the entries do not re-derive the root of size {record.size}"
            )
        prev = self._heads[-1] if self._heads else None
        prev_size, prev_root = (prev.size, prev.root) if prev else (0, EMPTY_ROOT)
        try:  # step 7
            proof = self._tree.consistency_proof(prev_size, record.size)
            verify_consistency(prev_size, record.size, proof, prev_root, root)
        except ProofError as exc:
            raise self._fail(
                "inconsistent", f"head {record.size} is not consistent with {prev_size}: {exc}"
            ) from None
        self._heads.append(Head(record.first_index, record.size, root, record.checkpoint))
        self._sizes.append(record.size)
        return checkpoint

    def check_consistency(self, size1: int, size2: int) -> list[bytes]:
        """A consistency proof between two verified heads of this log, checked before it is
        returned (:class:`MirrorError` ``unknown-head`` for a size that is not a head)."""
        h1, h2 = self.head_at(size1), self.head_at(size2)
        if h1 is None or h2 is None:
            raise MirrorError(
                "unknown-head", f"no stored head of size {size1 if h1 is None else size2}"
            )
        proof = self._tree.consistency_proof(size1, size2)
        verify_consistency(size1, size2, proof, h1.root, h2.root)
        return proof

    def record_signed(self, record: LogBatch, root: bytes) -> None:
        """The writer (:class:`~cctf.translog.logstate.LogState`) appended ``record``'s leaves to
        :attr:`tree` itself and signed its head: keep the head (no re-verification of our own
        signature)."""
        if record.size != self._tree.size:
            raise self._fail("size-mismatch", "the record is not the tree's newest head")
        self._heads.append(Head(record.first_index, record.size, root, record.checkpoint))
        self._sizes.append(record.size)
