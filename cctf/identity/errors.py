"""The one error root of the identity room, and its reason codes (pure).

Every refusal in :mod:`cctf.identity` (a SPIFFE ID, an X.509-SVID chain, a JWT, a bundle, an OIDC
discovery document or JWKS, a federation update) raises :class:`IdentityError` with a stable
``reason`` code (a :class:`Reason`, lower-case ``[a-z_]``) and a one-line message. The reason code is
what crosses the bus (an ``invalid`` observation's ``detail``) and what relying parties and the
gateway report; the message is for humans and never contains a token, a key or a certificate.
"""

from __future__ import annotations

from enum import StrEnum

from cctf.errors import CctfError

__all__ = ["IdentityError", "Reason"]


class Reason(StrEnum):
    """Stable reason codes (values are the wire/API form). Grouped by the rule that refuses."""

    # SPIFFE ID syntax (spiffeid.py)
    SPIFFE_ID_MALFORMED = "spiffe_id_malformed"  # scheme, query, fragment, port, userinfo, chars
    SPIFFE_ID_TOO_LONG = "spiffe_id_too_long"  # over 2048 bytes
    TRUST_DOMAIN_INVALID = (
        "trust_domain_invalid"  # empty, upper-case, characters outside [a-z0-9.-_]
    )
    PATH_SEGMENT_INVALID = "path_segment_invalid"  # empty, ".", "..", characters, trailing "/"

    # X.509-SVID (x509svid.py)
    CHAIN_EMPTY = "chain_empty"
    CHAIN_TOO_LONG = "chain_too_long"
    CERTIFICATE_MALFORMED = "certificate_malformed"
    URI_SAN_COUNT = "uri_san_count"  # not exactly one URI SAN
    LEAF_IS_CA = "leaf_is_ca"
    LEAF_NO_DIGITAL_SIGNATURE = "leaf_no_digital_signature"
    LEAF_KEY_CERT_SIGN = "leaf_key_cert_sign"
    LEAF_CRL_SIGN = "leaf_crl_sign"
    EXPIRED = "expired"  # certificate notAfter or token exp in the past
    NOT_YET_VALID = "not_yet_valid"  # certificate notBefore or token nbf in the future
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"
    WRONG_SPIFFE_ID = "wrong_spiffe_id"
    UNKNOWN_ISSUER = "unknown_issuer"  # no path to an X.509 authority of the bundle
    CHAIN_INVALID = "chain_invalid"  # any other path-validation failure

    # JWT-SVID / OIDC ID token (tokens.py)
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_TOO_LARGE = "token_too_large"
    ALG_NONE = "alg_none"
    ALG_HMAC = "alg_hmac"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    CRIT_HEADER = "crit_header"
    TYP_INVALID = "typ_invalid"
    KID_MISSING = "kid_missing"  # several candidate keys and no kid
    KID_UNKNOWN = "kid_unknown"  # no key of that kid (or no key for the alg)
    KEY_USE = "key_use"  # JWK use other than "sig" (e.g. "enc"), or key/alg mismatch
    SIGNATURE_INVALID = "signature_invalid"
    AUD_MISSING = "aud_missing"
    AUD_MISMATCH = "aud_mismatch"
    EXP_MISSING = "exp_missing"
    IAT_INVALID = "iat_invalid"  # iat in the future (beyond skew) or not a number
    ISS_MISSING = "iss_missing"
    ISS_MISMATCH = "iss_mismatch"
    SUB_MISSING = "sub_missing"
    SUB_MISMATCH = "sub_mismatch"
    SUB_TRUST_DOMAIN = "sub_trust_domain"  # JWT-SVID sub outside the bundle's trust domain
    CLAIM_INVALID = "claim_invalid"  # a registered claim of the wrong type

    # SPIFFE bundles and federation (bundle.py)
    BUNDLE_MALFORMED = "bundle_malformed"
    BUNDLE_TOO_LARGE = "bundle_too_large"
    EMPTY_BUNDLE = "empty_bundle"
    SEQUENCE_ROLLBACK = "sequence_rollback"  # lower than (or missing after) the last accepted
    SEQUENCE_CONFLICT = "sequence_conflict"  # same sequence, different key material
    KEY_MALFORMED = "key_malformed"  # a JWK that is not a usable public key
    X5C_COUNT = "x5c_count"  # an x509-svid authority without exactly one certificate
    TOO_MANY_KEYS = "too_many_keys"
    DUPLICATE_KID = "duplicate_kid"

    # OIDC issuers (oidc.py)
    DISCOVERY_MALFORMED = "discovery_malformed"
    ISSUER_MISMATCH = "issuer_mismatch"
    JWKS_URI_INVALID = "jwks_uri_invalid"
    JWKS_MALFORMED = "jwks_malformed"
    JWKS_TOO_LARGE = "jwks_too_large"
    EMPTY_JWKS = "empty_jwks"


class IdentityError(CctfError, ValueError):
    """A credential, identifier or key document was refused. ``reason`` is a :class:`Reason`
    value; ``str(error)`` is one line: ``"<reason>: <message>"``."""

    reason: Reason

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = Reason(reason)
        self.detail = " ".join(str(message).split())
        super().__init__(f"{self.reason.value}: {self.detail}")
