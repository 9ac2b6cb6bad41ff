"""X509-SVID validation (pure): ``cryptography``'s X.509 path validation (its RFC 5280 / CA/B
profile verifier) plus every SPIFFE X509-SVID rule. :func:`verify_x509_svid` runs these steps in
order; the first that fails raises :class:`IdentityError` with its reason code (docs/identity.md §1):

1. 1..:data:`MAX_CHAIN_CERTS` certificates presented (leaf first) [``chain_empty``,
   ``chain_too_long``]; the bundle has an X.509 authority and is of the expected trust domain
   [``unknown_issuer``, ``wrong_trust_domain``];
2. the leaf has exactly one URI SAN [``uri_san_count``] (other SAN types are allowed);
3. that URI is a valid SPIFFE ID (``cctf.identity.spiffeid``) [``spiffe_id_too_long``,
   ``spiffe_id_malformed``, ``trust_domain_invalid``, ``path_segment_invalid``];
4. its trust domain is the expected one [``wrong_trust_domain``] and, when an ID is expected, it is
   exactly that ID [``wrong_spiffe_id``];
5. the leaf is not a CA [``leaf_is_ca``]; its keyUsage is present with digitalSignature
   [``leaf_no_digital_signature``] and without keyCertSign [``leaf_key_cert_sign``] or cRLSign
   [``leaf_crl_sign``];
6. every presented certificate is valid at ``now_ms`` [``expired``, ``not_yet_valid``];
7. a path from the leaf through the presented intermediates to an X.509 authority of the bundle
   (cryptography's client verifier; CA certificates under its web-PKI CA profile, the leaf under a
   SPIFFE profile: any EKU, no unknown critical extension) [``unknown_issuer`` when no path reaches
   an authority, ``expired`` for an authority out of validity, ``chain_invalid`` otherwise];
8. result: the SPIFFE ID, SHA-256 of the leaf's SubjectPublicKeyInfo DER, the leaf's validity and
   the bundle's digest -- metadata only, fit for evidence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from cctf.identity.bundle import TrustBundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.spiffeid import SpiffeId, parse_spiffe_id
from cctf.ids import shown

__all__ = [
    "MAX_CHAIN_CERTS",
    "MAX_PEM_BYTES",
    "X509Svid",
    "leaf_key_digest",
    "parse_der_chain",
    "parse_pem_chain",
    "verify_x509_svid",
]

#: presented certificates (leaf + intermediates) at most; also the verifier's chain depth bound
MAX_CHAIN_CERTS: Final = 8
MAX_PEM_BYTES: Final = 64 * 1024
MAX_CERT_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class X509Svid:
    """A validated X509-SVID: metadata only (safe to publish as evidence)."""

    spiffe_id: SpiffeId
    leaf_key_digest: bytes  # SHA-256 of the leaf's SubjectPublicKeyInfo DER
    not_before_ms: int
    not_after_ms: int
    bundle_digest: bytes  # digest of the bundle it validated under


def _count(n: int) -> None:
    if n == 0:
        raise IdentityError(Reason.CHAIN_EMPTY, "no certificate presented")
    if n > MAX_CHAIN_CERTS:
        raise IdentityError(
            Reason.CHAIN_TOO_LONG, f"{n} certificates presented (at most {MAX_CHAIN_CERTS})"
        )


def parse_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Certificates of a PEM chain (leaf first); :class:`IdentityError` ``certificate_malformed``,
    ``chain_empty`` or ``chain_too_long``."""
    if len(data) > MAX_PEM_BYTES:
        raise IdentityError(Reason.CHAIN_TOO_LONG, f"PEM chain larger than {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN" not in data:
        _count(0)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise IdentityError(Reason.CERTIFICATE_MALFORMED, "not a PEM certificate chain") from None
    _count(len(certs))
    return certs


def parse_der_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    """Certificates from DER blobs (leaf first), e.g. a TLS peer's presented chain."""
    _count(len(ders))
    out = []
    for i, der in enumerate(ders):
        if len(der) > MAX_CERT_BYTES:
            raise IdentityError(Reason.CERTIFICATE_MALFORMED, f"certificate {i} is too large")
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise IdentityError(
                Reason.CERTIFICATE_MALFORMED, f"certificate {i} is not DER X.509"
            ) from None
    return out


def leaf_key_digest(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo DER."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension):
        raise IdentityError(
            Reason.CERTIFICATE_MALFORMED, "leaf certificate has malformed or duplicate extensions"
        ) from None


def _uri_sans(leaf: x509.Certificate) -> list[str]:
    san = _ext(leaf, x509.SubjectAlternativeName)
    if not isinstance(san, x509.SubjectAlternativeName):
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _spiffe_leaf_policy() -> ExtensionPolicy:
    # The leaf's SPIFFE rules (steps 2-5) are checked before; here: no unknown critical
    # extension (always enforced by the verifier), and any (or no) EKU, as the X509-SVID spec
    # allows leaves without serverAuth/clientAuth.
    return ExtensionPolicy.permit_all()


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    bundle: TrustBundle,
    now_ms: int,
    *,
    trust_domain: str | None = None,
    spiffe_id: str | None = None,
) -> X509Svid:
    """Validate ``chain`` (leaf first, then intermediates) as an X509-SVID under ``bundle``'s X.509
    authorities at ``now_ms`` (module docstring, steps 1-8). ``trust_domain`` (default: the
    bundle's) and ``spiffe_id`` (if given, the exact ID expected) restrict the identity."""
    # 1
    _count(len(chain))
    expected_td = bundle.trust_domain if trust_domain is None else trust_domain
    if bundle.trust_domain != expected_td:
        raise IdentityError(
            Reason.WRONG_TRUST_DOMAIN,
            f"bundle is of trust domain {bundle.trust_domain!r}, not {expected_td!r}",
        )
    if not bundle.x509_authorities:
        raise IdentityError(
            Reason.UNKNOWN_ISSUER, f"the bundle of {bundle.trust_domain} has no X.509 authority"
        )
    leaf = chain[0]
    # 2
    uris = _uri_sans(leaf)
    if len(uris) != 1:
        raise IdentityError(
            Reason.URI_SAN_COUNT, f"leaf has {len(uris)} URI SANs; an X509-SVID has exactly one"
        )
    # 3
    sid = parse_spiffe_id(uris[0])
    # 4
    if sid.trust_domain != expected_td:
        raise IdentityError(
            Reason.WRONG_TRUST_DOMAIN,
            f"leaf {shown(str(sid))} is not in trust domain {expected_td!r}",
        )
    if spiffe_id is not None and str(sid) != spiffe_id:
        raise IdentityError(
            Reason.WRONG_SPIFFE_ID, f"leaf is {shown(str(sid))}, expected {shown(spiffe_id)}"
        )
    # 5
    bc = _ext(leaf, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        raise IdentityError(Reason.LEAF_IS_CA, "leaf certificate is a CA (basicConstraints cA)")
    ku = _ext(leaf, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage) or not ku.digital_signature:
        raise IdentityError(
            Reason.LEAF_NO_DIGITAL_SIGNATURE, "leaf keyUsage lacks digitalSignature"
        )
    if ku.key_cert_sign:
        raise IdentityError(Reason.LEAF_KEY_CERT_SIGN, "leaf keyUsage asserts keyCertSign")
    if ku.crl_sign:
        raise IdentityError(Reason.LEAF_CRL_SIGN, "leaf keyUsage asserts cRLSign")
    # 6
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    for i, cert in enumerate(chain):
        what = "leaf" if i == 0 else f"intermediate {i}"
        if now < cert.not_valid_before_utc:
            raise IdentityError(
                Reason.NOT_YET_VALID,
                f"{what} is valid from {cert.not_valid_before_utc.isoformat()}",
            )
        if now > cert.not_valid_after_utc:
            raise IdentityError(
                Reason.EXPIRED, f"{what} expired at {cert.not_valid_after_utc.isoformat()}"
            )
    # 7
    verifier = (
        PolicyBuilder()
        .store(Store(list(bundle.x509_authorities)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_CERTS)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_spiffe_leaf_policy()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        text = " ".join(str(exc).split())
        if "candidates exhausted" in text and (
            "signature does not match" in text or "no interior errors" in text
        ):
            raise IdentityError(
                Reason.UNKNOWN_ISSUER,
                f"no path to an X.509 authority of {bundle.trust_domain} ({text[:160]})",
            ) from None
        if "not valid at validation time" in text:
            raise IdentityError(Reason.EXPIRED, "an authority is outside its validity") from None
        raise IdentityError(Reason.CHAIN_INVALID, text[:200]) from None
    # 8
    return X509Svid(
        spiffe_id=sid,
        leaf_key_digest=leaf_key_digest(leaf),
        not_before_ms=_ms(leaf.not_valid_before_utc),
        not_after_ms=_ms(leaf.not_valid_after_utc),
        bundle_digest=bundle.digest,
    )
