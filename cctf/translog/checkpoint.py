"""C2SP ``tlog-checkpoint`` bodies (https://c2sp.org/tlog-checkpoint), strict and bounded.

A checkpoint body is UTF-8 text of newline-terminated, non-empty lines::

    <origin>\\n                 the log's identity, a schema-less URL (1..255 bytes)
    <tree size>\\n              ASCII decimal, no sign, no leading zero (except "0"), <= 2^63-1
    <base64 root hash>\\n       standard base64 (RFC 4648 §4, padded) of the 32-byte root
    [<extension line>\\n]...    0..16 opaque lines, each 1..1024 bytes

No ASCII control character other than the line feeds; at most 8 KiB in all. The signatures are
a signed note around this body (:mod:`cctf.translog.note`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from cctf.translog.errors import CheckpointError, TranslogError
from cctf.translog.merkle import HASH_SIZE, MAX_TREE_SIZE

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_EXTENSION_LINES",
    "Checkpoint",
    "check_note_text",
    "check_origin",
    "parse_checkpoint",
]

MAX_CHECKPOINT_BYTES: Final = 8192
MAX_ORIGIN_BYTES: Final = 255
MAX_EXTENSION_LINES: Final = 16
MAX_EXTENSION_BYTES: Final = 1024

_SIZE_RE: Final = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def check_note_text(text: str, what: str, error: type[TranslogError] = CheckpointError) -> None:
    """C2SP signed-note: no ASCII control character except newline (0x7f DEL refused too)."""
    if _CONTROL_RE.search(text):
        raise error("control-character", f"{what} holds an ASCII control character")


@dataclass(frozen=True)
class Checkpoint:
    """One tree head: the log's origin, its size and root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError("bad-size", "the tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("bad-size", "the tree size is not within 0..2^63-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("bad-root-hash", f"the root hash must be {HASH_SIZE} bytes")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise CheckpointError(
                "too-many-extensions", f"at most {MAX_EXTENSION_LINES} extension lines"
            )
        for line in self.extensions:
            _check_line(line, "an extension line", MAX_EXTENSION_BYTES)
        if len(self.encode()) > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                "too-large", f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes"
            )

    def encode(self) -> bytes:
        """The exact body bytes (the note text a log signs)."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root_hash).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines).encode("utf-8")


def _check_line(line: object, what: str, limit: int) -> str:
    if not isinstance(line, str) or not line:
        raise CheckpointError("empty-line", f"{what} must be a non-empty string")
    if "\n" in line:
        raise CheckpointError("bad-line", f"{what} must not contain a newline")
    check_note_text(line, what)
    if len(line.encode("utf-8", "surrogatepass")) > limit:
        raise CheckpointError("line-too-long", f"{what} is longer than {limit} bytes")
    return line


def _check_origin(origin: object) -> None:
    _check_line(origin, "the origin line", MAX_ORIGIN_BYTES)
    assert isinstance(origin, str)
    if origin != origin.strip():
        raise CheckpointError("bad-origin", "the origin line has leading or trailing spaces")


def check_origin(origin: object) -> str:
    """``origin`` if it is a valid origin line (1..255 bytes, no control character, no newline, no
    leading or trailing space), else :class:`CheckpointError`."""
    _check_origin(origin)
    assert isinstance(origin, str)
    return origin


def parse_checkpoint(body: bytes) -> Checkpoint:
    """Parse a checkpoint body exactly as :meth:`Checkpoint.encode` writes it; anything else is
    one :class:`CheckpointError` (never another exception)."""
    if not isinstance(body, bytes):
        raise CheckpointError("bad-type", "a checkpoint body is bytes")
    if len(body) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError("too-large", f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("bad-utf8", "a checkpoint is UTF-8 text") from None
    if not text.endswith("\n"):
        raise CheckpointError("no-final-newline", "a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("too-few-lines", "a checkpoint has an origin, size and root line")
    origin, size_line, root_line, *extensions = lines
    if not _SIZE_RE.fullmatch(size_line):
        raise CheckpointError("bad-size", "the tree size line is not a canonical decimal")
    try:
        root = base64.b64decode(root_line, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("bad-root-hash", "the root hash line is not base64") from None
    if base64.b64encode(root).decode() != root_line:
        raise CheckpointError("bad-root-hash", "the root hash line is not canonical base64")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))
