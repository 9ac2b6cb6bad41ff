"""CA log entries (pure codec): what the CA appends to its transparency log (D4, log-id ``ca``).

Each entry is one MessagePack array (docs/ca.md §4, docs/wire-protocol.md §9)::

    ["CCTF-CA-ENTRY-v1", "cert", der]                                      a certificate, issued
    ["CCTF-CA-ENTRY-v1", "revoke", serial, kid, reason, revoked_ms]        a revocation
    ["CCTF-CA-ENTRY-v1", "join", der]                                      a join certificate
                                                                           (cctf.ca.join)

    der         bin, ≤ 16 KiB: the certificate's DER
    serial      str: lowercase hex of the revoked certificate's serial number, no leading zeros
    kid         str: the hybrid key id its key binding names
    reason      str: one of RevocationReason
    revoked_ms  uint: when the CA revoked it (ms since the epoch; informational: a revocation is
                honoured from the moment a follower reads it)

Decoding is strict: exactly these shapes, and the canonical encoding (re-encoding gives the bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

from cctf.ca.errors import CaError, CaReason
from cctf.ca.profile import MAX_CERT_BYTES

__all__ = [
    "ENTRY_DOMAIN",
    "CertEntry",
    "JoinEntry",
    "RevocationReason",
    "RevokeEntry",
    "decode_entry",
    "encode_entry",
]

ENTRY_DOMAIN: Final = "CCTF-CA-ENTRY-v1"
MAX_ENTRY_BYTES: Final = MAX_CERT_BYTES + 256
_SERIAL: Final = re.compile(r"[1-9a-f][0-9a-f]{0,39}\Z")
_KID: Final = re.compile(r"k[0-9a-f]{32}\Z")
_ENC: Final = msgspec.msgpack.Encoder()


class RevocationReason(StrEnum):
    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    SUPERSEDED = "superseded"
    CESSATION = "cessation"  # the agent was retired


@dataclass(frozen=True, slots=True)
class CertEntry:
    der: bytes


@dataclass(frozen=True, slots=True)
class JoinEntry:
    der: bytes


@dataclass(frozen=True, slots=True)
class RevokeEntry:
    serial: str
    kid: str
    reason: RevocationReason
    revoked_ms: int


Entry = CertEntry | RevokeEntry | JoinEntry


def encode_entry(entry: Entry) -> bytes:
    if isinstance(entry, CertEntry):
        return _ENC.encode([ENTRY_DOMAIN, "cert", entry.der])
    if isinstance(entry, JoinEntry):
        return _ENC.encode([ENTRY_DOMAIN, "join", entry.der])
    return _ENC.encode(
        [ENTRY_DOMAIN, "revoke", entry.serial, entry.kid, entry.reason.value, entry.revoked_ms]
    )


def decode_entry(data: bytes) -> Entry:
    """One log entry; :class:`CaError` ``entry`` for anything but the shapes above."""
    if len(data) > MAX_ENTRY_BYTES:
        raise CaError(CaReason.ENTRY, f"entry of {len(data)} bytes exceeds {MAX_ENTRY_BYTES}")
    try:
        raw = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CaError(CaReason.ENTRY, f"undecodable entry: {exc}") from None
    if not isinstance(raw, list) or len(raw) < 2 or raw[0] != ENTRY_DOMAIN:
        raise CaError(CaReason.ENTRY, "not a CCTF-CA-ENTRY-v1 array")
    entry: Entry
    if raw[1] == "cert" and len(raw) == 3 and isinstance(raw[2], bytes):
        entry = CertEntry(raw[2])
    elif raw[1] == "join" and len(raw) == 3 and isinstance(raw[2], bytes):
        entry = JoinEntry(raw[2])
    elif raw[1] == "revoke" and len(raw) == 6:
        serial, kid, reason, revoked_ms = raw[2:]
        if not (isinstance(serial, str) and _SERIAL.match(serial)):
            raise CaError(CaReason.ENTRY, "revocation serial is not lowercase hex")
        if not (isinstance(kid, str) and _KID.match(kid)):
            raise CaError(CaReason.ENTRY, "revocation kid is not a key id")
        if reason not in tuple(RevocationReason):
            raise CaError(CaReason.ENTRY, "unknown revocation reason")
        if type(revoked_ms) is not int or not 0 <= revoked_ms < 2**63:
            raise CaError(CaReason.ENTRY, "revoked_ms is not a uint")
        entry = RevokeEntry(serial, kid, RevocationReason(reason), revoked_ms)
    else:
        raise CaError(CaReason.ENTRY, "entry is neither a cert, a revoke nor a join entry")
    if encode_entry(entry) != data:
        raise CaError(CaReason.ENTRY, "entry is not in canonical encoding")
    return entry
