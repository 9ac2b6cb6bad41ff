"""The log API (wire-protocol.md §9.4), pure: subjects, request/reply codecs, answers from a mirror.

``cctf log serve`` answers core requests on ``cctf.v1.logapi.<log-id>.<op>``; the gateway serves the
same answers over HTTP. Requests and replies are msgpack maps, bounded; a reply is ``{"ok": true,
...}`` or ``{"ok": false, "error": <reason>, "message": <text>}``. :func:`answer` computes every reply
but ``entries`` from a :class:`~cctf.translog.mirror.LogMirror` (whose heads were all verified); the
adapter reads entries from the stream (:func:`plan_entries` says which records). The API is a
convenience, never trusted: a client checks every proof against heads it verified itself
(:func:`check_inclusion_reply`, :func:`check_consistency_reply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from cctf.ids import IdError
from cctf.translog.errors import TranslogError
from cctf.translog.logstate import check_log_id
from cctf.translog.merkle import HASH_SIZE, MAX_PROOF_HASHES, MAX_TREE_SIZE
from cctf.translog.mirror import Head, LogMirror
from cctf.translog.record import MAX_CHECKPOINT_NOTE_BYTES

__all__ = [
    "API_PREFIX",
    "MAX_API_ENTRIES",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "OPS",
    "ApiError",
    "EntriesPlan",
    "answer",
    "api_subject",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_ok",
    "parse_api_subject",
    "plan_entries",
    "reply_hash",
    "reply_note",
    "reply_proof",
    "reply_uint",
]

API_PREFIX: Final = "cctf.v1.logapi"
OPS: Final = ("head", "entries", "inclusion", "consistency")
MAX_REQUEST_BYTES: Final = 4096
MAX_REPLY_BYTES: Final = 1024 * 1024
#: Entries in one ``entries`` reply (fewer when their bytes would pass :data:`ENTRIES_REPLY_BYTES`).
MAX_API_ENTRIES: Final = 256
ENTRIES_REPLY_BYTES: Final = 900 * 1024


class ApiError(TranslogError):
    """A log API request is refused (reasons ``bad-request``, ``unknown-head``, ``out-of-range``,
    ``not-ready``), or a reply is malformed or does not verify (``bad-reply``, the proof's own)."""


def api_subject(log_id: str, op: str) -> str:
    """``cctf.v1.logapi.<log-id>.<op>``."""
    if op not in OPS:
        raise ApiError("bad-request", f"unknown op {op!r}")
    return f"{API_PREFIX}.{check_log_id(log_id)}.{op}"


def parse_api_subject(subject: str) -> tuple[str, str]:
    """``(log_id, op)`` of an API subject; :class:`ApiError` ``bad-request`` else."""
    parts = subject.split(".") if isinstance(subject, str) else []
    if len(parts) != 5 or ".".join(parts[:3]) != API_PREFIX or parts[4] not in OPS:
        raise ApiError("bad-request", "not a log API subject")
    try:
        return check_log_id(parts[3]), parts[4]
    except IdError as exc:
        raise ApiError("bad-request", str(exc)) from None


_enc: Final = msgspec.msgpack.Encoder()


def encode_ok(fields: dict[str, Any]) -> bytes:
    return _enc.encode({"ok": True, **fields})


def encode_error(reason: str, message: str) -> bytes:
    return _enc.encode({"ok": False, "error": reason, "message": message[:300]})


class _Head(msgspec.Struct, forbid_unknown_fields=True):
    """No field."""


class _Entries(msgspec.Struct, forbid_unknown_fields=True):
    start: int
    count: int


class _Inclusion(msgspec.Struct, forbid_unknown_fields=True):
    index: int
    size: int | None = None


class _Consistency(msgspec.Struct, forbid_unknown_fields=True):
    size1: int
    size2: int | None = None


_REQUESTS: Final[dict[str, type[msgspec.Struct]]] = {
    "head": _Head,
    "entries": _Entries,
    "inclusion": _Inclusion,
    "consistency": _Consistency,
}


def _uint(value: int | None, what: str) -> None:
    if value is not None and not 0 <= value <= MAX_TREE_SIZE:
        raise ApiError("bad-request", f"{what} is not within 0..2^63-1")


def decode_request(op: str, data: bytes) -> Any:
    """The request of ``op`` (strict, bounded); :class:`ApiError` ``bad-request``."""
    if op not in _REQUESTS:
        raise ApiError("bad-request", f"unknown op {op!r}")
    if len(data) > MAX_REQUEST_BYTES:
        raise ApiError("bad-request", f"a request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        req = msgspec.msgpack.decode(data or b"\x80", type=_REQUESTS[op])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError("bad-request", f"malformed {op} request ({str(exc)[:100]})") from None
    for name in req.__struct_fields__:
        _uint(getattr(req, name), name)
    return req


def _head(mirror: LogMirror, size: int | None) -> Head:
    head = mirror.last if size is None else mirror.head_at(size)
    if head is None:
        if mirror.last is None:
            raise ApiError("not-ready", "the log holds no head yet")
        raise ApiError("unknown-head", f"no stored head of size {size}")
    return head


def answer(mirror: LogMirror, op: str, data: bytes) -> bytes:
    """The reply to a ``head``, ``inclusion`` or ``consistency`` request (never raises: a refusal
    is an error reply). ``entries`` is the adapter's (:func:`plan_entries`)."""
    try:
        if mirror.failed is not None:
            raise ApiError("not-ready", f"the log does not verify: {mirror.failed}")
        req = decode_request(op, data)
        if op == "head":
            head = _head(mirror, None)
            return encode_ok({"size": head.size, "root": head.root, "checkpoint": head.note})
        if op == "inclusion":
            head = _head(mirror, req.size)
            if not req.index < head.size:
                raise ApiError("out-of-range", f"index {req.index} is not below {head.size}")
            proof = mirror.tree.inclusion_proof(req.index, head.size)
            return encode_ok(
                {
                    "index": req.index,
                    "size": head.size,
                    "root": head.root,
                    "proof": proof,
                    "checkpoint": head.note,
                }
            )
        if op == "consistency":
            h1, h2 = _head(mirror, req.size1), _head(mirror, req.size2)
            if h1.size > h2.size:
                raise ApiError("out-of-range", "size1 is larger than size2")
            proof = mirror.check_consistency(h1.size, h2.size)
            return encode_ok(
                {
                    "size1": h1.size,
                    "size2": h2.size,
                    "root1": h1.root,
                    "root2": h2.root,
                    "proof": proof,
                }
            )
        raise ApiError("bad-request", f"op {op!r} is not answered here")
    except TranslogError as exc:
        return encode_error(exc.reason, str(exc))


@dataclass(frozen=True, slots=True)
class EntriesPlan:
    """Which records hold entries ``start`` .. ``start + count - 1``: their heads in order."""

    start: int
    count: int
    records: tuple[Head, ...]


def plan_entries(mirror: LogMirror, data: bytes) -> EntriesPlan:
    """Parse an ``entries`` request and find the records holding them (:class:`ApiError`)."""
    req = decode_request("entries", data)
    if not 1 <= req.count <= MAX_API_ENTRIES:
        raise ApiError("bad-request", f"count is 1..{MAX_API_ENTRIES}")
    if not req.start < mirror.size:
        raise ApiError("out-of-range", f"start {req.start} is not below {mirror.size}")
    count = min(req.count, mirror.size - req.start)
    heads: list[Head] = []
    index = req.start
    while index < req.start + count:
        head = mirror.record_of(index)
        assert head is not None
        heads.append(head)
        index = head.size
    return EntriesPlan(req.start, count, tuple(heads))


# ---- the client side: decoding and checking replies -----------------------------------------


def decode_reply(data: bytes) -> dict[str, Any]:
    """A reply map with ``ok`` true; an error reply is :class:`ApiError` with its reason."""
    if len(data) > MAX_REPLY_BYTES:
        raise ApiError("bad-reply", f"a reply is at most {MAX_REPLY_BYTES} bytes")
    try:
        reply = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        raise ApiError("bad-reply", "the reply is not msgpack") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ApiError("bad-reply", "the reply is not a log API reply")
    if not reply["ok"]:
        reason = reply.get("error")
        message = reply.get("message")
        raise ApiError(
            reason
            if isinstance(reason, str) and reason.isascii() and len(reason) < 40
            else "error",
            str(message)[:300] if message is not None else "refused",
        )
    return reply


def reply_uint(reply: dict[str, Any], name: str) -> int:
    value = reply.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_SIZE:
        raise ApiError("bad-reply", f"{name} is not a size")
    return value


def reply_hash(reply: dict[str, Any], name: str) -> bytes:
    value = reply.get(name)
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ApiError("bad-reply", f"{name} is not a {HASH_SIZE}-byte hash")
    return value


def reply_proof(reply: dict[str, Any]) -> list[bytes]:
    proof = reply.get("proof")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_HASHES:
        raise ApiError("bad-reply", "proof is not a list of at most 64 hashes")
    if not all(isinstance(p, bytes) and len(p) == HASH_SIZE for p in proof):
        raise ApiError("bad-reply", "a proof hash is not 32 bytes")
    return list(proof)


def reply_note(reply: dict[str, Any]) -> str:
    note = reply.get("checkpoint")
    if not isinstance(note, str) or len(note) > MAX_CHECKPOINT_NOTE_BYTES:
        raise ApiError("bad-reply", "checkpoint is not a signed note")
    return note
