"""The safe-mode state in the engine: the record a coordinator stores, its KV key and integrity tag
(pure).

Safe-mode scopes live in the policy engine's memory; without a stored copy an operator's
``cctf safe-mode enter`` (and every automatic scope) would silently end when the coordinator
restarts. The coordinator keeps one record in the coordinators' state bucket ``CCTF_LKG``
(``cctf.bus.kv``, the same grants and replication as the LKG state):

* key ``_policy.<coordinator>`` (:func:`state_key`): ``_`` never starts a coordinator id, so the key
  space never meets the LKG records ``<coordinator>.<QTYPE>.<name>`` (nor their prefix reads);
* value: the MessagePack array ``[1, coordinator, round, saved_ms, scopes, mac]``
  (:class:`PolicyRecord`), ``round`` the highest round the engine saw (``-1``: none), ``scopes`` the
  active scopes ``[region, name, manual, entered, last_alarm, reason]`` (``name`` ``""``: the
  region), and ``mac`` the HMAC-SHA256, under ``SigningKey.derive_secret("cctf-policy-state-v1")``,
  of ``"CCTF-policy-v1" 0x00 key 0x00 msgpack([1, coordinator, round, saved_ms, scopes])``.

A value written without the coordinator's key, or under another key, is refused on load
(:class:`PolicyStateError`): the coordinator then starts with no scope active, as before (logged).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from cctf.bus.kv import check_key
from cctf.bus_schemas.control import MAX_REASON_CHARS, MAX_SCOPE_CHARS
from cctf.bus_schemas.messages import Id, Uint
from cctf.errors import CctfError
from cctf.policy.model import Scope

__all__ = [
    "STATE_LABEL",
    "PolicyRecord",
    "PolicyStateError",
    "ScopeRecord",
    "StoredScope",
    "open_state",
    "seal_state",
    "state_key",
]

STATE_LABEL: Final = "cctf-policy-state-v1"
_DOMAIN: Final = b"CCTF-policy-v1\x00"
#: At most 255 name scopes plus the region scope per region, for up to 64 regions.
MAX_STORED_SCOPES: Final = 256 * 64
_MAX_RECORD: Final = 4 * 1024 * 1024
_ENC: Final = msgspec.msgpack.Encoder()

StoredScope = tuple[Scope, bool, int, int, str]  # (scope, manual, entered, last_alarm, reason)


class PolicyStateError(CctfError):
    """A stored safe-mode record is malformed, not this coordinator's, or moved to another key."""


class ScopeRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    region: Id
    name: Annotated[str, msgspec.Meta(max_length=MAX_SCOPE_CHARS)]
    manual: bool
    entered: Uint
    last_alarm: Uint
    reason: Annotated[str, msgspec.Meta(max_length=2 * MAX_REASON_CHARS)]


class PolicyRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1, le=1)]
    coordinator: Id
    round: Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
    saved_ms: Uint
    scopes: Annotated[list[ScopeRecord], msgspec.Meta(max_length=MAX_STORED_SCOPES)]
    mac: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


_DEC: Final = msgspec.msgpack.Decoder(PolicyRecord)


def state_key(coordinator: str) -> str:
    return check_key(f"_policy.{coordinator}")


def _fields(
    coordinator: str, round_: int, saved_ms: int, scopes: list[ScopeRecord]
) -> list[object]:
    return [1, coordinator, round_, saved_ms, scopes]


def _mac(secret: bytes, kv_key: str, fields: list[object]) -> bytes:
    msg = _DOMAIN + kv_key.encode() + b"\x00" + _ENC.encode(fields)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def seal_state(
    secret: bytes, coordinator: str, round_: int, saved_ms: int, scopes: Sequence[StoredScope]
) -> bytes:
    """The stored value of the engine's snapshot (``PolicyEngine.snapshot``)."""
    records = [
        ScopeRecord(s.region, s.name, manual, entered, last_alarm, reason)
        for s, manual, entered, last_alarm, reason in scopes
    ]
    fields = _fields(coordinator, round_, saved_ms, records)
    return _ENC.encode([*fields, _mac(secret, state_key(coordinator), fields)])


def open_state(secret: bytes, coordinator: str, data: bytes) -> tuple[int, int, list[StoredScope]]:
    """``(round, saved_ms, scopes)`` of a stored value; raises :class:`PolicyStateError`."""
    if len(data) > _MAX_RECORD:
        raise PolicyStateError("safe-mode record too large")
    try:
        rec = _DEC.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PolicyStateError(f"malformed safe-mode record: {exc}") from None
    fields = _fields(rec.coordinator, rec.round, rec.saved_ms, rec.scopes)
    if not hmac.compare_digest(rec.mac, _mac(secret, state_key(coordinator), fields)):
        raise PolicyStateError("integrity tag does not verify (not written by this coordinator)")
    if rec.coordinator != coordinator:
        raise PolicyStateError(f"safe-mode record of {rec.coordinator}, not {coordinator}")
    scopes = [
        (Scope(s.region, s.name), s.manual, s.entered, s.last_alarm, s.reason) for s in rec.scopes
    ]
    return rec.round, rec.saved_ms, scopes
