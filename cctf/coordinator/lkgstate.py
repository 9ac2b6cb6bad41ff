"""LKG state in the engine: the record stored per key, its KV key and its integrity tag (pure).

One KV entry per ``(coordinator, qname, qtype)`` in the bucket ``CCTF_LKG`` (``cctf.bus.kv``):

* key ``<coordinator>.<QTYPE>.<name tokens>`` (:func:`record_key`; the name encoded by
  :func:`cctf.bus.kv.name_key`, e.g. ``coord-1.A.www.example.com``): each coordinator keeps its own
  state; one started in its place (same id and key, after a crash or on another host) reads it back;
* value: the MessagePack array ``[1, basis_round, basis_ms, answer_digest, tag, verdict, mac]``
  (:class:`LkgRecord`), ``verdict`` being the encoded fresh TRUSTED verdict of ``basis_round``
  (issued at ``basis_ms``), ``tag`` its DNSSEC state, and ``mac`` the HMAC-SHA256, under a secret
  derived from the coordinator's signing key (``SigningKey.derive_secret("cctf-lkg-state-v1")``),
  of ``"CCTF-lkg-v1" 0x00 key 0x00 msgpack([1, basis_round, basis_ms, answer_digest, tag, verdict])``.

So a value written by anyone without the coordinator's key (the bucket is writable by the
``coordinator`` NATS user, which every coordinator shares), or moved to another key, is refused on
load (:func:`open_record` raises :class:`LkgStateError`) and never becomes an attestation. The
verdict inside is decoded strictly and must be TRUSTED, of this key and coordinator, and agree with
the record's fields.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Final

import msgspec

from cctf.bus.kv import KvError, check_key, name_from_key, name_key
from cctf.bus_schemas.messages import Digest, Outcome, PayloadError, Verdict, decode_verdict
from cctf.coordinator.pipeline.lkg import Basis, LkgKey
from cctf.errors import CctfError

__all__ = [
    "MAC_LABEL",
    "LkgRecord",
    "LkgStateError",
    "open_record",
    "parse_record_key",
    "record_key",
    "seal_record",
]

MAC_LABEL: Final = "cctf-lkg-state-v1"
_DOMAIN: Final = b"CCTF-lkg-v1\x00"
_MAX_RECORD: Final = 64 * 1024
_ENC: Final = msgspec.msgpack.Encoder()

Tag = Annotated[str, msgspec.Meta(max_length=32)]
Payload = Annotated[bytes, msgspec.Meta(max_length=_MAX_RECORD)]
Uint = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class LkgStateError(CctfError):
    """A stored LKG record is malformed, not ours, or does not match its key."""


class LkgRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1, le=1)]
    basis_round: Uint
    basis_ms: Uint
    answer_digest: Digest
    tag: Tag
    verdict: Payload
    mac: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


_DEC: Final = msgspec.msgpack.Decoder(LkgRecord)


def record_key(coordinator: str, key: LkgKey) -> str:
    qname, qtype = key
    return check_key(f"{coordinator}.{qtype}.{name_key(qname)}")


def parse_record_key(coordinator: str, kv_key: str) -> LkgKey:
    """The ``(qname, qtype)`` of one of ``coordinator``'s record keys (``LkgStateError`` else)."""
    parts = kv_key.split(".", 2)
    if len(parts) != 3 or parts[0] != coordinator or not parts[1]:
        raise LkgStateError(f"key {kv_key[:80]!r} is not one of {coordinator}'s")
    try:
        return name_from_key(parts[2]), parts[1]
    except KvError as exc:
        raise LkgStateError(str(exc)) from None


def _mac(secret: bytes, kv_key: str, fields: list[object]) -> bytes:
    msg = _DOMAIN + kv_key.encode() + b"\x00" + _ENC.encode(fields)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def seal_record(secret: bytes, kv_key: str, basis: Basis[bytes]) -> bytes:
    """The stored value of ``basis`` (its payload: the encoded fresh verdict) under ``kv_key``."""
    fields: list[object] = [1, basis.round, basis.basis_ms, basis.answer_digest, basis.tag]
    fields.append(basis.payload)
    return _ENC.encode([*fields, _mac(secret, kv_key, fields)])


def open_record(
    secret: bytes, coordinator: str, kv_key: str, data: bytes
) -> tuple[LkgKey, Basis[bytes], Verdict]:
    """Check and decode one stored value; raises :class:`LkgStateError` with the reason."""
    key = parse_record_key(coordinator, kv_key)
    if len(data) > _MAX_RECORD:
        raise LkgStateError("record too large")
    try:
        rec = _DEC.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise LkgStateError(f"malformed record: {exc}") from None
    fields: list[object] = [1, rec.basis_round, rec.basis_ms, rec.answer_digest, rec.tag]
    fields.append(rec.verdict)
    if not hmac.compare_digest(rec.mac, _mac(secret, kv_key, fields)):
        raise LkgStateError("integrity tag does not verify (not written by this coordinator)")
    try:
        v = decode_verdict(rec.verdict)
    except PayloadError as exc:
        raise LkgStateError(str(exc)) from None
    if (
        v.outcome is not Outcome.TRUSTED
        or (v.qname, v.qtype) != key
        or v.coordinator != coordinator
        or v.round != rec.basis_round
        or v.issued_ms != rec.basis_ms
        or v.answer_digest != rec.answer_digest
        or v.dnssec.value != rec.tag
    ):
        raise LkgStateError("the stored verdict does not match its record")
    basis = Basis(rec.basis_round, rec.basis_ms, rec.answer_digest, rec.tag, rec.verdict)
    return key, basis, v
