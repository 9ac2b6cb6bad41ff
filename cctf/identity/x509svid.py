"""X509-SVID validation (pure): ``cryptography``'s X.509 path validation plus every SPIFFE
X509-SVID rule. Numbered steps: docs/identity.md §1 (the implementation follows them in order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from cctf.identity.bundle import TrustBundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.spiffeid import SpiffeId

__all__ = ["MAX_CHAIN_CERTS", "X509Svid", "parse_pem_chain", "verify_x509_svid"]

#: presented certificates (leaf + intermediates) at most
MAX_CHAIN_CERTS: Final = 8
MAX_PEM_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class X509Svid:
    """A validated X509-SVID: metadata only (safe to publish as evidence)."""

    spiffe_id: SpiffeId
    leaf_key_digest: bytes  # SHA-256 of the leaf's SubjectPublicKeyInfo DER
    not_before_ms: int
    not_after_ms: int
    bundle_digest: bytes  # digest of the bundle it validated under


def parse_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Certificates of a PEM chain (leaf first); :class:`IdentityError` ``certificate_malformed``,
    ``chain_empty`` or ``chain_too_long``."""
    raise IdentityError(Reason.CHAIN_INVALID, "not implemented yet")


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    bundle: TrustBundle,
    now_ms: int,
    *,
    trust_domain: str | None = None,
    spiffe_id: str | None = None,
) -> X509Svid:
    """Validate ``chain`` (leaf first, then intermediates) as an X509-SVID under ``bundle``'s X.509
    authorities at ``now_ms``. ``trust_domain`` (default: the bundle's) and ``spiffe_id`` (if
    given, the exact ID expected) restrict the identity. Raises :class:`IdentityError` with the
    first failing step's reason."""
    raise IdentityError(Reason.CHAIN_INVALID, "not implemented yet")
