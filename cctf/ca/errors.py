"""The CA's one error root, with a stable reason code per failure (docs/ca.md §5)."""

from __future__ import annotations

from enum import StrEnum

from cctf.errors import CctfError

__all__ = ["CaError", "CaReason"]


class CaReason(StrEnum):
    """Why the CA refused a request, or why a certificate or log entry was refused."""

    REQUEST = "request"  # the cert-request envelope failed verification (detail says which step)
    SUBJECT = "subject"  # request subject is not cctf.v1.ca.{issue,join}.<region>.<agent>
    PRINCIPAL = "principal_mismatch"  # subject / key / payload name different agents or regions
    REPLAY = "replay"  # the request's (kid, nonce) was seen before
    CSR = "csr"  # the CSR does not parse, its signature fails, or its key is not ECDSA P-256
    LIFETIME = "lifetime"  # requested lifetime out of [MIN_LIFETIME_MS, the CA's maximum]
    CERT = "cert"  # a certificate does not follow the agent profile (docs/ca.md §2)
    ISSUER = "issuer"  # a certificate was not issued by the configured intermediate
    BINDING = "binding"  # the key-binding extension is missing, malformed or names other keys
    ENTRY = "entry"  # a CA log entry does not decode
    LOG = "log"  # the certificate could not be appended to the CA log (nothing handed out)
    CONFIG = "config"  # CA files (certificate, key) missing or inconsistent
    REVOKED = "revoked"  # the requesting key was revoked (key_compromise / cessation): no new cert
    JOIN = "join"  # a first-certificate request with no valid, unused join certificate (join.py)


class CaError(CctfError):
    """A CA operation or check failed. ``reason`` is stable; ``detail`` is for humans (one line)."""

    def __init__(self, reason: CaReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
