"""SPIFFE trust bundles (SPIFFE Trust Domain and Bundle §4) and federation state (pure).

A bundle is a JWK Set with optional ``spiffe_sequence`` (uint64) and ``spiffe_refresh_hint``
(seconds). :func:`parse_bundle` checks, in order:

1. size <= ``max_bytes`` (default :data:`MAX_BUNDLE_BYTES`) [``bundle_too_large``]; UTF-8 JSON object
   with a ``keys`` array of at most :data:`MAX_BUNDLE_KEYS` entries [``bundle_malformed``,
   ``too_many_keys``]; ``spiffe_sequence`` an integer 0..2^64-1 and ``spiffe_refresh_hint`` an integer
   0..2^31-1 if present [``bundle_malformed``];
2. each key by its ``use``: ``x509-svid`` -> an X.509 authority, ``x5c`` holds exactly one base64
   DER certificate, and the JWK's key parameters, if given (``kty``), are that certificate's public
   key [``x5c_count``, ``key_malformed``]; ``jwt-svid`` -> a JWT authority, a public JWK
   (``cctf.identity.jwk``) with a ``kid``, unique among the bundle's JWT authorities [``key_malformed``,
   ``duplicate_kid``]; any other or no ``use`` -> ignored (counted in ``ignored``), as the spec says;
3. at least one authority [``empty_bundle``]: an empty key set invalidates the trust domain.

:func:`bundle_digest` is the canonical digest of the key material (docs/identity.md §3): equal for
every encoding of the same authorities, independent of sequence, refresh hint and ignored keys.
:class:`FederationState` is one trust domain's accepted bundle across fetches: sequence never
backwards, empty bundle invalidates, next refresh per hint within bounds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cctf.identity.errors import IdentityError, Reason
from cctf.identity.jwk import VerificationKey, parse_public_jwk
from cctf.identity.spiffeid import check_trust_domain
from cctf.ids import shown

__all__ = [
    "BUNDLE_DIGEST_LABEL",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_KEYS",
    "FederationState",
    "FederationUpdate",
    "TrustBundle",
    "bundle_digest",
    "parse_bundle",
]

MAX_BUNDLE_BYTES: Final = 1 << 20
MAX_BUNDLE_KEYS: Final = 256
MAX_SEQUENCE: Final = (1 << 64) - 1
MAX_REFRESH_HINT_S: Final = (1 << 31) - 1
BUNDLE_DIGEST_LABEL: Final = b"CCTF-bundle-v1"
#: bounds of the next refresh: a hostile hint can neither make agents spin nor stop refreshing
MIN_REFRESH_MS: Final = 1_000
MAX_REFRESH_MS: Final = 86_400_000
#: after a refused fetch, retry within this (or the configured refresh, if shorter)
RETRY_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """A parsed SPIFFE bundle of ``trust_domain``."""

    trust_domain: str
    x509_authorities: tuple[x509.Certificate, ...]
    jwt_authorities: tuple[VerificationKey, ...]
    sequence: int | None = None
    refresh_hint_s: int | None = None
    ignored: int = 0

    @property
    def digest(self) -> bytes:
        return bundle_digest(self)

    @property
    def authority_count(self) -> int:
        return len(self.x509_authorities) + len(self.jwt_authorities)

    def jwt_key(self, kid: str) -> VerificationKey | None:
        return next((k for k in self.jwt_authorities if k.kid == kid), None)


def _fail(reason: Reason, message: str) -> IdentityError:
    return IdentityError(reason, message)


def parse_bundle(
    trust_domain: str, data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES
) -> TrustBundle:
    """Parse and check a SPIFFE bundle of ``trust_domain`` (module docstring, steps 1-3); raises
    :class:`IdentityError`."""
    check_trust_domain(trust_domain)
    where = f"bundle of {trust_domain}"
    if len(data) > max_bytes:
        raise _fail(Reason.BUNDLE_TOO_LARGE, f"{where} is larger than {max_bytes} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail(Reason.BUNDLE_MALFORMED, f"{where} is not UTF-8 JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _fail(Reason.BUNDLE_MALFORMED, f"{where} is not a JWK Set (no keys array)")
    keys: list[Any] = doc["keys"]
    if len(keys) > MAX_BUNDLE_KEYS:
        raise _fail(
            Reason.TOO_MANY_KEYS, f"{where} has {len(keys)} keys (at most {MAX_BUNDLE_KEYS})"
        )
    sequence = _opt_int(doc, "spiffe_sequence", MAX_SEQUENCE, where)
    hint = _opt_int(doc, "spiffe_refresh_hint", MAX_REFRESH_HINT_S, where)
    certs: list[x509.Certificate] = []
    jwts: list[VerificationKey] = []
    ignored = 0
    for i, key in enumerate(keys):
        what = f"{where} key {i}"
        if not isinstance(key, Mapping):
            raise _fail(Reason.KEY_MALFORMED, f"{what} is not a JSON object")
        use = key.get("use")
        if use == "x509-svid":
            certs.append(_x509_authority(key, what))
        elif use == "jwt-svid":
            vk = parse_public_jwk(key, what)
            if vk.kid is None:
                raise _fail(Reason.KEY_MALFORMED, f"{what}: a jwt-svid authority needs a kid")
            if any(k.kid == vk.kid for k in jwts):
                raise _fail(Reason.DUPLICATE_KID, f"{what}: kid {shown(vk.kid)} appears twice")
            jwts.append(vk)
        else:
            ignored += 1
    if not certs and not jwts:
        raise _fail(Reason.EMPTY_BUNDLE, f"{where} has no x509-svid or jwt-svid authority")
    return TrustBundle(trust_domain, tuple(certs), tuple(jwts), sequence, hint, ignored)


def _opt_int(doc: Mapping[str, Any], name: str, top: int, where: str) -> int | None:
    v = doc.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= top:
        raise _fail(Reason.BUNDLE_MALFORMED, f"{where}: {name} must be an integer 0..{top}")
    return v


def _x509_authority(key: Mapping[str, Any], what: str) -> x509.Certificate:
    x5c = key.get("x5c")
    if not isinstance(x5c, list) or len(x5c) != 1:
        n = len(x5c) if isinstance(x5c, list) else 0
        raise _fail(
            Reason.X5C_COUNT, f"{what}: x509-svid authority with {n} x5c certificates, not 1"
        )
    try:
        der = base64.b64decode(x5c[0], validate=True) if isinstance(x5c[0], str) else b""
        cert = x509.load_der_x509_certificate(der)
        cert_spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (binascii.Error, ValueError, TypeError):
        raise _fail(Reason.KEY_MALFORMED, f"{what}: x5c is not a base64 DER certificate") from None
    if "kty" in key:
        # the JWK's own key parameters, when given, must be the certificate's key
        vk = parse_public_jwk({k: v for k, v in key.items() if k not in ("use", "x5c")}, what)
        if vk.spki != cert_spki:
            raise _fail(
                Reason.KEY_MALFORMED, f"{what}: key parameters do not match the x5c certificate"
            )
    return cert


def _canonical_jwt_keys(keys: tuple[VerificationKey, ...]) -> list[list[Any]]:
    rows = {(k.kid or "", k.alg or "", k.spki) for k in keys}
    return [list(r) for r in sorted(rows, key=lambda r: (r[0].encode(), r[1].encode(), r[2]))]


def bundle_digest(bundle: TrustBundle) -> bytes:
    """The canonical digest of a bundle's key material (32 bytes)::

        H("CCTF-bundle-v1" || 0x00 || msgpack([trust_domain, x509, jwt]))
        x509 = sorted, de-duplicated array of bin: each X.509 authority's DER
        jwt  = sorted, de-duplicated array of [kid, alg, spki]: str, str ("" if absent), bin (the
               key's SubjectPublicKeyInfo DER); sorted by UTF-8 kid, then alg, then spki

    Sequence, refresh hint and ignored keys are not part of it (docs/identity.md §3)."""
    ders = sorted({c.public_bytes(serialization.Encoding.DER) for c in bundle.x509_authorities})
    body = [bundle.trust_domain, ders, _canonical_jwt_keys(bundle.jwt_authorities)]
    return hashlib.sha256(BUNDLE_DIGEST_LABEL + b"\x00" + msgspec.msgpack.encode(body)).digest()


@dataclass(frozen=True, slots=True)
class FederationUpdate:
    """The result of one fetch: the new state, and the error that refused the fetch (if any)."""

    state: FederationState
    error: IdentityError | None


@dataclass(frozen=True, slots=True)
class FederationState:
    """One trust domain's federation state (pure; time as ``now_ms``).

    * ``bundle``: the current accepted bundle, ``None`` before the first or after an empty one;
    * ``sequence``: the highest ``spiffe_sequence`` accepted so far (kept across an empty bundle);
    * ``invalid``: why the domain is currently invalid (``empty_bundle``), else ``None``;
    * ``next_refresh_ms``: when to fetch again.

    :meth:`observe` applies one fetched document:

    1. parse (:func:`parse_bundle`); ``empty_bundle`` invalidates the domain (``bundle`` -> ``None``);
       any other refusal leaves ``bundle`` as it was;
    2. ``spiffe_sequence`` lower than the last accepted one, or missing when one was accepted
       [``sequence_rollback``]; equal with a different digest [``sequence_conflict``]: refused,
       state unchanged but for the retry time;
    3. accepted: ``bundle``, ``sequence`` updated, ``invalid`` cleared; next refresh at
       ``now + clamp(hint * 1000 or refresh_ms, 1 s, 1 day)``; after a refusal at
       ``now + clamp(min(refresh_ms, 30 s), 1 s, 1 day)``.
    """

    trust_domain: str
    refresh_ms: int
    bundle: TrustBundle | None = None
    sequence: int | None = None
    invalid: Reason | None = None
    next_refresh_ms: int = 0

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        if not MIN_REFRESH_MS <= self.refresh_ms <= MAX_REFRESH_MS:
            raise ValueError(f"refresh_ms must be {MIN_REFRESH_MS}..{MAX_REFRESH_MS}")

    def due(self, now_ms: int) -> bool:
        return now_ms >= self.next_refresh_ms

    def _retry(self, now_ms: int) -> int:
        return now_ms + _clamp(min(self.refresh_ms, RETRY_MS))

    def observe(self, data: bytes, now_ms: int) -> FederationUpdate:
        """Apply one fetched bundle document (class docstring)."""
        try:
            new = parse_bundle(self.trust_domain, data)
        except IdentityError as exc:
            if exc.reason is Reason.EMPTY_BUNDLE:
                st = replace(self, bundle=None, invalid=Reason.EMPTY_BUNDLE)
            else:
                st = self
            return FederationUpdate(replace(st, next_refresh_ms=self._retry(now_ms)), exc)
        return self.accept(new, now_ms)

    def accept(self, new: TrustBundle, now_ms: int) -> FederationUpdate:
        """Apply an already parsed bundle (steps 2-3)."""
        if new.trust_domain != self.trust_domain:
            raise ValueError("bundle of another trust domain")
        err: IdentityError | None = None
        if self.sequence is not None:
            if new.sequence is None:
                err = IdentityError(
                    Reason.SEQUENCE_ROLLBACK,
                    f"bundle of {self.trust_domain} has no spiffe_sequence after {self.sequence}",
                )
            elif new.sequence < self.sequence:
                err = IdentityError(
                    Reason.SEQUENCE_ROLLBACK,
                    f"bundle of {self.trust_domain}: spiffe_sequence {new.sequence} is below "
                    f"{self.sequence}",
                )
            elif (
                new.sequence == self.sequence
                and self.bundle is not None
                and new.digest != self.bundle.digest
            ):
                err = IdentityError(
                    Reason.SEQUENCE_CONFLICT,
                    f"bundle of {self.trust_domain}: other keys under the same spiffe_sequence "
                    f"{new.sequence}",
                )
        if err is not None:
            return FederationUpdate(replace(self, next_refresh_ms=self._retry(now_ms)), err)
        wait = self.refresh_ms if new.refresh_hint_s is None else new.refresh_hint_s * 1000
        state = replace(
            self,
            bundle=new,
            sequence=new.sequence if new.sequence is not None else self.sequence,
            invalid=None,
            next_refresh_ms=now_ms + _clamp(wait),
        )
        return FederationUpdate(state, None)


def _clamp(ms: int) -> int:
    return max(MIN_REFRESH_MS, min(MAX_REFRESH_MS, ms))
