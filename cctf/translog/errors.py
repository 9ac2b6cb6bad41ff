"""The one error root of the transparency log, with a reason code on every refusal."""

from __future__ import annotations

from cctf.errors import CctfError

__all__ = ["CheckpointError", "NoteError", "ProofError", "TranslogError"]


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
