"""One generic OpenID Connect issuer model (pure): discovery document and JWKS.

The same rules cover AWS, Azure (Entra ID), GCP and OCI issuers and any standard one (their URL
shapes: docs/identity.md §5). :func:`parse_discovery` checks, in order:

1. size <= :data:`MAX_DISCOVERY_BYTES` [``discovery_malformed``]; a UTF-8 JSON object
   [``discovery_malformed``];
2. ``issuer`` equals the configured issuer URL *exactly* (no normalisation, OIDC Discovery §4.3)
   [``issuer_mismatch``];
3. ``jwks_uri`` an https URL without userinfo or fragment [``jwks_uri_invalid``].

:func:`parse_jwks` checks: size <= :data:`MAX_JWKS_BYTES` [``jwks_too_large``]; a JSON object with a
``keys`` array of at most :data:`MAX_JWKS_KEYS` entries [``jwks_malformed``, ``too_many_keys``];
each key with ``use`` ``sig`` or absent and ``key_ops``, if present, containing ``verify`` is parsed
as a public JWK (``cctf.identity.jwk``) [``key_malformed``]; a key with another ``use`` (``enc``) is
remembered as unusable, so a token naming it is refused with ``key_use``; kids are unique among
usable keys [``duplicate_kid``]; at least one usable key [``empty_jwks``].
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from cctf.identity.errors import IdentityError, Reason
from cctf.identity.jwk import VerificationKey, parse_public_jwk
from cctf.identity.targets import check_https_url
from cctf.ids import shown

__all__ = [
    "JWKS_DIGEST_LABEL",
    "MAX_DISCOVERY_BYTES",
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "Discovery",
    "KeySet",
    "jwks_digest",
    "parse_discovery",
    "parse_jwks",
]

MAX_DISCOVERY_BYTES: Final = 64 * 1024
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_JWKS_KEYS: Final = 64
JWKS_DIGEST_LABEL: Final = b"CCTF-jwks-v1"


@dataclass(frozen=True, slots=True)
class Discovery:
    """The parts of a discovery document CCTF uses."""

    issuer: str
    jwks_uri: str


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's usable signature keys, and the kids of keys refused for their ``use``."""

    keys: tuple[VerificationKey, ...]
    unusable_kids: frozenset[str] = frozenset()

    @property
    def digest(self) -> bytes:
        return jwks_digest(self)


def _load(data: bytes, limit: int, reason_size: Reason, reason: Reason, what: str) -> Any:
    if len(data) > limit:
        raise IdentityError(reason_size, f"{what} is larger than {limit} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise IdentityError(reason, f"{what} is not UTF-8 JSON") from None


def parse_discovery(issuer: str, data: bytes) -> Discovery:
    """Parse the discovery document fetched from ``<issuer>/.well-known/openid-configuration``
    (steps 1-3 above)."""
    what = f"discovery document of {issuer}"
    doc = _load(
        data, MAX_DISCOVERY_BYTES, Reason.DISCOVERY_MALFORMED, Reason.DISCOVERY_MALFORMED, what
    )
    if not isinstance(doc, dict):
        raise IdentityError(Reason.DISCOVERY_MALFORMED, f"{what} is not a JSON object")
    got = doc.get("issuer")
    if got != issuer:
        raise IdentityError(
            Reason.ISSUER_MISMATCH, f"{what} names issuer {shown(got)}, not the configured URL"
        )
    uri = doc.get("jwks_uri")
    try:
        check_https_url(uri if isinstance(uri, str) else "", "jwks_uri")
    except ValueError as exc:
        raise IdentityError(Reason.JWKS_URI_INVALID, f"{what}: {exc}") from None
    assert isinstance(uri, str)
    return Discovery(issuer, uri)


def parse_jwks(data: bytes, *, max_bytes: int = MAX_JWKS_BYTES) -> KeySet:
    """Parse an issuer's JWKS (module docstring)."""
    doc = _load(data, max_bytes, Reason.JWKS_TOO_LARGE, Reason.JWKS_MALFORMED, "JWKS")
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise IdentityError(Reason.JWKS_MALFORMED, "JWKS is not a JWK Set (no keys array)")
    items: list[Any] = doc["keys"]
    if len(items) > MAX_JWKS_KEYS:
        raise IdentityError(
            Reason.TOO_MANY_KEYS, f"JWKS has {len(items)} keys (at most {MAX_JWKS_KEYS})"
        )
    keys: list[VerificationKey] = []
    unusable: set[str] = set()
    for i, item in enumerate(items):
        what = f"JWKS key {i}"
        if not isinstance(item, Mapping):
            raise IdentityError(Reason.KEY_MALFORMED, f"{what} is not a JSON object")
        use = item.get("use")
        ops = item.get("key_ops")
        if (use is not None and use != "sig") or (
            ops is not None and (not isinstance(ops, list) or "verify" not in ops)
        ):
            kid = item.get("kid")
            if isinstance(kid, str):
                unusable.add(kid)
            continue
        vk = parse_public_jwk(item, what)
        if vk.kid is not None and any(k.kid == vk.kid for k in keys):
            raise IdentityError(Reason.DUPLICATE_KID, f"{what}: kid {shown(vk.kid)} appears twice")
        keys.append(vk)
    if not keys:
        raise IdentityError(Reason.EMPTY_JWKS, "JWKS has no usable signature key")
    return KeySet(tuple(keys), frozenset(unusable - {k.kid for k in keys if k.kid is not None}))


def jwks_digest(keyset: KeySet) -> bytes:
    """The canonical digest of an issuer's usable keys (32 bytes)::

        H("CCTF-jwks-v1" || 0x00 || msgpack(keys))
        keys = sorted, de-duplicated array of [kid, alg, spki]: str, str ("" if absent), bin (the
               key's SubjectPublicKeyInfo DER); sorted by UTF-8 kid, then alg, then spki

    Unusable (``use=enc``) keys are not part of it (docs/identity.md §3)."""
    rows = {(k.kid or "", k.alg or "", k.spki) for k in keyset.keys}
    body = [list(r) for r in sorted(rows, key=lambda r: (r[0].encode(), r[1].encode(), r[2]))]
    return hashlib.sha256(JWKS_DIGEST_LABEL + b"\x00" + msgspec.msgpack.encode(body)).digest()
