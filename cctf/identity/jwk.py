"""Public JWKs (RFC 7517) as verification keys (pure): shared by SPIFFE bundles (``jwt-svid``
authorities) and OIDC JWKS.

A key is accepted only if it is a *public* signature key CCTF can verify with:

* ``kty`` ``RSA`` (modulus >= 2048 bits), ``EC`` (``crv`` P-256 / P-384 / P-521) or ``OKP``
  (``crv`` Ed25519); ``oct`` (HMAC secrets) and every other type are refused;
* no private member (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``, ``oth``, ``k``): a published
  private key is refused and never echoed;
* ``alg``, if present, is one of :data:`ALLOWED_ALGS` and fits the key type.

``use`` and ``key_ops`` are judged by the callers (a bundle has its own ``use`` values). Parsing uses
PyJWT's JWK loaders (``jwt.algorithms``) on top of ``cryptography``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt.algorithms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cctf.identity.errors import IdentityError, Reason
from cctf.ids import shown

__all__ = [
    "ALLOWED_ALGS",
    "PublicKey",
    "VerificationKey",
    "alg_fits_key",
    "check_alg",
    "parse_public_jwk",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: Signature algorithms accepted on JWTs. Never ``none``, never HMAC (HS*).
ALLOWED_ALGS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192
MAX_KID_CHARS: Final = 256
_PRIVATE: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_EC_CURVES: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A parsed public key: ``kid`` (``None`` if absent), ``alg`` hint (``None`` if absent), the
    key, and its SubjectPublicKeyInfo DER (``spki``, the digest input)."""

    kid: str | None
    alg: str | None
    key: PublicKey
    spki: bytes

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, alg={self.alg!r}, {type(self.key).__name__})"


def check_alg(alg: object) -> str:
    """``alg`` if allowed; :class:`IdentityError` ``alg_none`` / ``alg_hmac`` / ``alg_not_allowed``."""
    if not isinstance(alg, str):
        raise IdentityError(Reason.ALG_NOT_ALLOWED, "alg is missing or not a string")
    if alg.lower() == "none":
        raise IdentityError(Reason.ALG_NONE, "alg none (unsigned token) is never accepted")
    if alg.upper().startswith("HS"):
        raise IdentityError(
            Reason.ALG_HMAC, f"alg {shown(alg)}: HMAC algorithms are never accepted"
        )
    if alg not in ALLOWED_ALGS:
        raise IdentityError(Reason.ALG_NOT_ALLOWED, f"alg {shown(alg)} is not allowed")
    return alg


def alg_fits_key(alg: str, key: PublicKey) -> bool:
    """True when ``alg`` is a signature algorithm for ``key``'s type (and EC curve)."""
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    if alg.startswith("ES"):
        return (
            isinstance(key, ec.EllipticCurvePublicKey)
            and _EC_CURVES.get(
                {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
                    key.curve.name, ""
                ),
                "",
            )
            == alg
        )
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey)
    return False


def parse_public_jwk(obj: object, what: str = "JWK") -> VerificationKey:
    """A public verification key from a parsed JWK object; :class:`IdentityError` ``key_malformed``
    (or ``alg_*`` for a bad ``alg``)."""
    if not isinstance(obj, Mapping):
        raise IdentityError(Reason.KEY_MALFORMED, f"{what} is not a JSON object")
    kid = obj.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
        raise IdentityError(Reason.KEY_MALFORMED, f"{what}: kid must be a string of 1..256 chars")
    where = what if kid is None else f"{what} {shown(kid)}"
    if any(m in obj for m in _PRIVATE):
        raise IdentityError(Reason.KEY_MALFORMED, f"{where} holds private key material")
    kty = obj.get("kty")
    alg = obj.get("alg")
    if alg is not None:
        check_alg(alg)
    key: Any
    try:
        if kty == "RSA":
            key = jwt.algorithms.RSAAlgorithm.from_jwk(dict(obj))
        elif kty == "EC":
            if obj.get("crv") not in _EC_CURVES:
                raise IdentityError(Reason.KEY_MALFORMED, f"{where}: EC curve not allowed")
            key = jwt.algorithms.ECAlgorithm.from_jwk(dict(obj))
        elif kty == "OKP":
            if obj.get("crv") != "Ed25519":
                raise IdentityError(Reason.KEY_MALFORMED, f"{where}: OKP curve not allowed")
            key = jwt.algorithms.OKPAlgorithm.from_jwk(dict(obj))
        else:
            raise IdentityError(Reason.KEY_MALFORMED, f"{where}: key type {shown(kty)} not allowed")
    except IdentityError:
        raise
    except (jwt.exceptions.PyJWTError, ValueError, TypeError, KeyError, json.JSONDecodeError):
        raise IdentityError(
            Reason.KEY_MALFORMED, f"{where} is not a valid {kty} public key"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise IdentityError(Reason.KEY_MALFORMED, f"{where} is not a public key")
    if isinstance(key, rsa.RSAPublicKey) and not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise IdentityError(
            Reason.KEY_MALFORMED, f"{where}: RSA key of {key.key_size} bits (2048..8192 allowed)"
        )
    if alg is not None and not alg_fits_key(alg, key):
        raise IdentityError(Reason.KEY_MALFORMED, f"{where}: alg {alg} does not fit the key")
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return VerificationKey(kid, alg, key, spki)
