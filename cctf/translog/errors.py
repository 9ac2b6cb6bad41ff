"""The one error root of the transparency log, with a reason code on every refusal."""

from __future__ import annotations

from cctf.errors import CctfError

__all__ = [
    "CheckpointError",
    "LogFencedError",
    "LogWriteError",
    "MirrorError",
    "NoteError",
    "ProofError",
    "RecordError",
    "RecordTooLargeError",
    "TranslogError",
]


class TranslogError(CctfError):
    """Root of every transparency-log refusal. ``reason`` is a stable, machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ProofError(TranslogError):
    """An inclusion or consistency proof does not verify, or is malformed."""


class CheckpointError(TranslogError):
    """A checkpoint body is malformed or out of bounds."""


class NoteError(TranslogError):
    """A signed note is malformed, or lacks a verified signature from a required key."""


class RecordError(TranslogError):
    """A stored log record (``LogBatch``) is malformed or out of bounds."""


class MirrorError(TranslogError):
    """A log's stored records do not re-derive to its signed checkpoints (a gap, an overlap, a
    wrong origin, a checkpoint whose size or root is not the tree's, a bad signature)."""


class LogWriteError(TranslogError):
    """A record could not be appended to the durable log (stopped before it was acknowledged, the
    stream is full, an out-of-order append)."""


class LogFencedError(LogWriteError):
    """Another writer appended to this log: the engine refused our record (expected last subject
    sequence) or stored a different record under our message id. Fail closed: stop writing."""


class RecordTooLargeError(LogWriteError):
    """A record is larger than the stream accepts (split the batch)."""
