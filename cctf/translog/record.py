"""The durable log's record: one ``LogBatch`` per signed batch (pure codec, strict and bounded).

Wire form (msgpack, the exact bytes stored in stream ``CCTF_LOG`` on ``cctf.v1.log.<log-id>``)::

    LogBatch = [origin, first_index, entries, checkpoint]
      origin       str   the log's origin line (C2SP tlog-checkpoint), e.g. "cctf/v1/log/k3f…"
      first_index  uint  the index of the first entry, = the tree size before this batch
      entries      array of 1..MAX_BATCH_ENTRIES bin (each <= MAX_ENTRY_BYTES): the log entries
      checkpoint   str   the signed note (cctf.translog.note) of the tree after these entries,
                         i.e. of size first_index + len(entries); <= MAX_CHECKPOINT_NOTE_BYTES

The encoding is canonical (msgspec's, the shortest form of every integer and length): a record that
does not re-encode to the same bytes is refused, so equal records are equal bytes (the writer
compares bytes when the engine reports a duplicate or a fence). A whole record is at most
:data:`MAX_RECORD_BYTES` (the stream's message size less room for headers). Every refusal is one
:class:`~cctf.translog.errors.RecordError` with a reason code; decoding never raises another
exception. The record's signatures and roots are checked by :class:`cctf.translog.mirror.LogMirror`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from cctf.translog.checkpoint import check_origin
from cctf.translog.errors import CheckpointError, RecordError
from cctf.translog.merkle import MAX_TREE_SIZE

__all__ = [
    "MAX_BATCH_ENTRIES",
    "MAX_CHECKPOINT_NOTE_BYTES",
    "MAX_ENTRY_BYTES",
    "MAX_RECORD_BYTES",
    "LogBatch",
    "decode_batch",
    "entries_fit",
    "record_overhead",
]

#: Entries in one record (the coordinator's ``batch_max`` is at most this).
MAX_BATCH_ENTRIES: Final = 8192
#: One entry (a verdict entry holds its payload, at most one envelope).
MAX_ENTRY_BYTES: Final = 512 * 1024
#: The signed checkpoint note of a record (a head on the bus is bounded the same, D3).
MAX_CHECKPOINT_NOTE_BYTES: Final = 16 * 1024
#: One encoded record: NATS's 1 MiB max payload less 8 KiB for the headers.
MAX_RECORD_BYTES: Final = 1024 * 1024 - 8 * 1024

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(type=tuple[str, int, list[bytes], str])


def record_overhead(origin: str, first_index: int) -> int:
    """An upper bound of a record's bytes other than its entries' own msgpack bytes: a record of
    ``entries`` fits when ``record_overhead(...) + sum(len(e) + 5 for e in entries) <=
    MAX_RECORD_BYTES`` (5 = the longest bin header)."""
    return len(_encoder.encode([origin, first_index, [], ""])) + 4 + 3 + MAX_CHECKPOINT_NOTE_BYTES


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One stored record: ``entries`` appended at ``first_index``, and the signed checkpoint of the
    tree after them. Construction validates every bound (:class:`RecordError`)."""

    origin: str
    first_index: int
    entries: tuple[bytes, ...]
    checkpoint: str

    def __post_init__(self) -> None:
        try:
            check_origin(self.origin)
        except CheckpointError as exc:
            raise RecordError("bad-origin", str(exc)) from None
        index = self.first_index
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_TREE_SIZE:
            raise RecordError("bad-index", "first_index is not an integer within 0..2^63-1")
        if not isinstance(self.entries, tuple):
            raise RecordError("bad-entries", "entries is a tuple of bytes")
        if not 1 <= len(self.entries) <= MAX_BATCH_ENTRIES:
            raise RecordError("bad-entries", f"a record holds 1..{MAX_BATCH_ENTRIES} entries")
        for entry in self.entries:
            if not isinstance(entry, bytes):
                raise RecordError("bad-entries", "an entry is bytes")
            if len(entry) > MAX_ENTRY_BYTES:
                raise RecordError("entry-too-large", f"an entry is at most {MAX_ENTRY_BYTES} bytes")
        if index + len(self.entries) > MAX_TREE_SIZE:
            raise RecordError("bad-index", "the record would pass the largest tree size")
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise RecordError("bad-checkpoint", "checkpoint is a non-empty signed note (str)")
        if len(self.checkpoint.encode("utf-8", "surrogatepass")) > MAX_CHECKPOINT_NOTE_BYTES:
            raise RecordError(
                "bad-checkpoint", f"a checkpoint note is at most {MAX_CHECKPOINT_NOTE_BYTES} bytes"
            )

    @property
    def size(self) -> int:
        """The tree size after this record (its checkpoint's size)."""
        return self.first_index + len(self.entries)

    def encode(self) -> bytes:
        """The canonical record bytes; :class:`RecordError` (``too-large``) past
        :data:`MAX_RECORD_BYTES`."""
        try:
            data = _encoder.encode(
                [self.origin, self.first_index, list(self.entries), self.checkpoint]
            )
        except (UnicodeEncodeError, msgspec.EncodeError) as exc:
            raise RecordError("bad-checkpoint", f"a record does not encode: {exc}") from None
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError("too-large", f"a record is at most {MAX_RECORD_BYTES} bytes")
        return data


def decode_batch(data: bytes) -> LogBatch:
    """Decode one record exactly as :meth:`LogBatch.encode` writes it; anything else is one
    :class:`RecordError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordError("bad-type", "a record is bytes")
    data = bytes(data)
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError("too-large", f"a record is at most {MAX_RECORD_BYTES} bytes")
    try:
        origin, first_index, entries, checkpoint = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordError("malformed", f"not a LogBatch record ({str(exc)[:120]})") from None
    batch = LogBatch(origin, first_index, tuple(entries), checkpoint)
    if batch.encode() != data:
        raise RecordError("not-canonical", "the record is not in its canonical encoding")
    return batch


def entries_fit(origin: str, first_index: int, entries: Sequence[bytes]) -> bool:
    """Whether a record of ``entries`` is within :data:`MAX_RECORD_BYTES` whatever its checkpoint
    note (at most :data:`MAX_CHECKPOINT_NOTE_BYTES`)."""
    total = record_overhead(origin, first_index)
    return total + sum(len(e) + 5 for e in entries) <= MAX_RECORD_BYTES
