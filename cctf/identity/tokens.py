"""JWT-SVID and OIDC ID token validation (pure; time as ``now_ms``), with PyJWT for the JWS
signature and CCTF's own rules around it. Both verifiers run these steps in order; the first that
fails raises :class:`IdentityError` with its reason code (docs/identity.md §2):

1. a string of at most :data:`MAX_TOKEN_BYTES` [``token_too_large``]; compact JWS: three base64url
   parts, a JSON-object header [``token_malformed``];
2. header ``alg`` in :data:`cctf.identity.jwk.ALLOWED_ALGS` -- never ``none`` [``alg_none``], never
   HMAC [``alg_hmac``] (so "HS256 signed with the public key" is refused before any key is
   touched), nothing else [``alg_not_allowed``]; no ``crit`` header [``crit_header``] (CCTF
   understands no JWS extension); ``typ``, if present, ``JWT`` or ``JOSE`` [``typ_invalid``];
3. key lookup: ``kid`` names one key [``kid_unknown``; a key refused for its JWK ``use``, e.g.
   ``enc``: ``key_use``]; without ``kid`` a JWT-SVID is refused and an ID token is accepted only
   when the key set has exactly one key [``kid_missing``]; ``alg`` fits the key's type/curve and its
   JWK ``alg`` [``alg_not_allowed``];
4. the signature verifies (PyJWT ``decode_complete`` with that one key and that one alg)
   [``signature_invalid``]; the payload is a JSON object [``token_malformed``];
5. ``aud`` present [``aud_missing``], a string or a non-empty list of strings [``claim_invalid``],
   matched [``aud_mismatch``]: a JWT-SVID lists the validator's audience; an ID token lists one of
   the accepted audiences and no other (OIDC Core §3.1.3.7);
6. ``exp`` present [``exp_missing``], a finite number [``claim_invalid``], ``now < exp + leeway``
   [``expired``]; ``nbf``, if present, ``now >= nbf - leeway`` [``not_yet_valid``]; ``iat``, if
   present, ``iat <= now + leeway`` [``iat_invalid``]; leeway at most :data:`MAX_LEEWAY_MS`;
7. ID token: ``iss`` equals the issuer URL exactly [``iss_missing``, ``iss_mismatch``]; ``sub`` a
   string [``sub_missing``], equal to the expected subject when one is given [``sub_mismatch``].
   JWT-SVID: ``sub`` a valid SPIFFE ID [``sub_missing`` or the SPIFFE ID reason] of the bundle's
   trust domain [``sub_trust_domain``].
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from cctf.identity.bundle import TrustBundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.jwk import VerificationKey, alg_fits_key, check_alg
from cctf.identity.oidc import KeySet
from cctf.identity.spiffeid import SpiffeId, parse_spiffe_id
from cctf.ids import shown

__all__ = [
    "DEFAULT_LEEWAY_MS",
    "MAX_LEEWAY_MS",
    "MAX_TOKEN_BYTES",
    "Claims",
    "verify_id_token",
    "verify_jwt_svid",
]

MAX_TOKEN_BYTES: Final = 16 * 1024
DEFAULT_LEEWAY_MS: Final = 30_000
MAX_LEEWAY_MS: Final = 300_000
MAX_AUDIENCES: Final = 16
#: claims beyond this (year 2255) are refused as nonsense rather than overflowing
MAX_TIME_S: Final = 1 << 33
_TYPES: Final = frozenset({"JWT", "JOSE"})


@dataclass(frozen=True, slots=True)
class Claims:
    """The checked claims of a valid token (never the token itself)."""

    subject: str
    issuer: str | None
    audiences: tuple[str, ...]
    expires_ms: int
    issued_ms: int | None
    not_before_ms: int | None
    kid: str | None
    alg: str
    spiffe_id: SpiffeId | None = None  # JWT-SVIDs: the parsed sub
    extra: Mapping[str, Any] = field(default_factory=dict)


def _err(reason: Reason, message: str) -> IdentityError:
    return IdentityError(reason, message)


def _b64json(part: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _err(Reason.TOKEN_MALFORMED, f"token {what} is not base64url JSON") from None


def _header(token: object) -> tuple[str, dict[str, Any]]:
    # 1
    if not isinstance(token, str):
        raise _err(Reason.TOKEN_MALFORMED, "token is not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise _err(Reason.TOKEN_TOO_LARGE, f"token larger than {MAX_TOKEN_BYTES} bytes")
    if not token.isascii() or token.count(".") != 2:
        raise _err(Reason.TOKEN_MALFORMED, "token is not a compact JWS (three base64url parts)")
    head = token.split(".", 1)[0]
    header = _b64json(head, "header")
    if not isinstance(header, dict):
        raise _err(Reason.TOKEN_MALFORMED, "token header is not a JSON object")
    # 2
    alg = check_alg(header.get("alg"))
    if "crit" in header:
        raise _err(Reason.CRIT_HEADER, "token has a crit header (no JWS extension is understood)")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() not in _TYPES):
        raise _err(Reason.TYP_INVALID, f"token typ {shown(typ)} is not JWT or JOSE")
    return alg, header


def _select_key(
    header: Mapping[str, Any],
    alg: str,
    keys: Sequence[VerificationKey],
    unusable: frozenset[str],
    *,
    kid_required: bool,
) -> VerificationKey:
    # 3
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _err(Reason.TOKEN_MALFORMED, "token kid is not a string")
    if kid is not None:
        key = next((k for k in keys if k.kid == kid), None)
        if key is None:
            if kid in unusable:
                raise _err(Reason.KEY_USE, f"key {shown(kid)} is not a signature key (JWK use)")
            raise _err(Reason.KID_UNKNOWN, f"no key with kid {shown(kid)}")
    elif kid_required:
        raise _err(Reason.KID_MISSING, "token has no kid")
    elif len(keys) != 1:
        raise _err(Reason.KID_MISSING, f"token has no kid and the key set has {len(keys)} keys")
    else:
        key = keys[0]
    if not alg_fits_key(alg, key.key) or (key.alg is not None and key.alg != alg):
        raise _err(Reason.ALG_NOT_ALLOWED, f"alg {alg} does not fit key {shown(key.kid)}")
    return key


def _signed_claims(token: str, key: VerificationKey, alg: str) -> dict[str, Any]:
    # 4
    try:
        out = jwt.api_jwt.decode_complete(
            token,
            key=key.key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.exceptions.InvalidSignatureError:
        raise _err(Reason.SIGNATURE_INVALID, "token signature does not verify") from None
    except jwt.exceptions.PyJWTError as exc:
        msg = " ".join(str(exc).split())[:120]
        raise _err(Reason.TOKEN_MALFORMED, f"token refused by the JWS decoder: {msg}") from None
    payload = out.get("payload")
    if not isinstance(payload, dict):
        raise _err(Reason.TOKEN_MALFORMED, "token payload is not a JSON object")
    return payload


def _audiences(claims: Mapping[str, Any]) -> tuple[str, ...]:
    if "aud" not in claims:
        raise _err(Reason.AUD_MISSING, "token has no aud")
    aud = claims["aud"]
    auds = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else ()
    if not auds or len(auds) > MAX_AUDIENCES or not all(isinstance(a, str) and a for a in auds):
        raise _err(Reason.CLAIM_INVALID, "token aud is not a string or a list of 1..16 strings")
    return auds


def _time(claims: Mapping[str, Any], name: str) -> int | None:
    v = claims.get(name)
    if v is None and name not in claims:
        return None
    if (
        not isinstance(v, int | float)
        or isinstance(v, bool)
        or not math.isfinite(v)
        or not 0 <= v <= MAX_TIME_S
    ):
        raise _err(Reason.CLAIM_INVALID, f"token {name} is not a number of seconds")
    return int(v * 1000)


def _check_times(
    claims: Mapping[str, Any], now_ms: int, leeway_ms: int
) -> tuple[int, int | None, int | None]:
    # 6
    if not 0 <= leeway_ms <= MAX_LEEWAY_MS:
        raise ValueError(f"leeway_ms must be 0..{MAX_LEEWAY_MS}")
    if "exp" not in claims:
        raise _err(Reason.EXP_MISSING, "token has no exp")
    exp = _time(claims, "exp")
    assert exp is not None
    if now_ms >= exp + leeway_ms:
        raise _err(Reason.EXPIRED, "token expired")
    nbf = _time(claims, "nbf")
    if nbf is not None and now_ms < nbf - leeway_ms:
        raise _err(Reason.NOT_YET_VALID, "token not valid yet (nbf)")
    iat = _time(claims, "iat")
    if iat is not None and iat > now_ms + leeway_ms:
        raise _err(Reason.IAT_INVALID, "token issued in the future (iat)")
    return exp, iat, nbf


_REGISTERED: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat"})


def _extra(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in _REGISTERED}


def verify_jwt_svid(
    token: str,
    bundle: TrustBundle,
    audience: str,
    now_ms: int,
    *,
    leeway_ms: int = DEFAULT_LEEWAY_MS,
) -> Claims:
    """Validate a JWT-SVID under the JWT authorities of ``bundle`` (module docstring, steps 1-7):
    ``audience`` must be among its ``aud``; its ``sub`` a SPIFFE ID of the bundle's trust domain."""
    alg, header = _header(token)
    if not bundle.jwt_authorities:
        raise _err(Reason.KID_UNKNOWN, f"the bundle of {bundle.trust_domain} has no JWT authority")
    key = _select_key(header, alg, bundle.jwt_authorities, frozenset(), kid_required=True)
    claims = _signed_claims(token, key, alg)
    auds = _audiences(claims)
    if audience not in auds:
        raise _err(Reason.AUD_MISMATCH, f"token aud does not list {shown(audience)}")
    exp, iat, nbf = _check_times(claims, now_ms, leeway_ms)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _err(Reason.SUB_MISSING, "JWT-SVID has no sub")
    sid = parse_spiffe_id(sub)
    if sid.trust_domain != bundle.trust_domain:
        raise _err(
            Reason.SUB_TRUST_DOMAIN,
            f"JWT-SVID sub {shown(sub)} is outside trust domain {bundle.trust_domain!r}",
        )
    iss = claims.get("iss")
    return Claims(
        subject=sub,
        issuer=iss if isinstance(iss, str) else None,
        audiences=auds,
        expires_ms=exp,
        issued_ms=iat,
        not_before_ms=nbf,
        kid=key.kid,
        alg=alg,
        spiffe_id=sid,
        extra=_extra(claims),
    )


def verify_id_token(
    token: str,
    keyset: KeySet,
    issuer: str,
    audiences: Sequence[str],
    now_ms: int,
    *,
    subject: str | None = None,
    leeway_ms: int = DEFAULT_LEEWAY_MS,
) -> Claims:
    """Validate an OIDC ID token under ``keyset`` (module docstring, steps 1-7): ``iss`` equals
    ``issuer`` exactly; its ``aud`` lists one of ``audiences`` and no other; ``sub`` equals
    ``subject`` when given."""
    if isinstance(audiences, str) or not audiences:
        raise ValueError("audiences: a non-empty sequence of strings")
    alg, header = _header(token)
    key = _select_key(header, alg, keyset.keys, keyset.unusable_kids, kid_required=False)
    claims = _signed_claims(token, key, alg)
    auds = _audiences(claims)
    accepted = set(audiences)
    if not accepted.intersection(auds):
        raise _err(Reason.AUD_MISMATCH, "token aud lists none of the accepted audiences")
    if not accepted.issuperset(auds):
        raise _err(Reason.AUD_MISMATCH, "token aud lists an audience that is not accepted")
    exp, iat, nbf = _check_times(claims, now_ms, leeway_ms)
    if "iss" not in claims:
        raise _err(Reason.ISS_MISSING, "token has no iss")
    if claims["iss"] != issuer:
        raise _err(Reason.ISS_MISMATCH, f"token iss {shown(claims['iss'])} is not the issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _err(Reason.SUB_MISSING, "token has no sub")
    if subject is not None and sub != subject:
        raise _err(Reason.SUB_MISMATCH, f"token sub {shown(sub)} is not {shown(subject)}")
    return Claims(
        subject=sub,
        issuer=issuer,
        audiences=auds,
        expires_ms=exp,
        issued_ms=iat,
        not_before_ms=nbf,
        kid=key.kid,
        alg=alg,
        extra=_extra(claims),
    )
