"""The gateway's request and response bodies (pydantic, for validation and the OpenAPI document).

Response shapes are the SDK's JSON forms (:func:`cctf.client.present.verdict_to_json`,
:meth:`cctf.client.identity.CredentialDecision.to_json`, :func:`cctf.client.identity.workload_to_json`)
described here; models allow extra members, so a field the SDK adds later (e.g. ``dnssec``) passes
through and the published schema stays valid.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_AUDIENCE",
    "MAX_CHAIN_PEM",
    "MAX_TOKEN",
    "CertificateRequest",
    "CredentialResult",
    "Health",
    "PathResult",
    "TokenRequest",
    "TrustVerdict",
    "WorkloadResult",
]

#: Longest PEM chain text accepted (characters); the SDK bounds the number of certificates.
MAX_CHAIN_PEM: Final = 64 * 1024
#: Longest compact JWT accepted (characters).
MAX_TOKEN: Final = 16 * 1024
#: Longest audience accepted.
MAX_AUDIENCE: Final = 512


class CertificateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: str = Field(
        min_length=1,
        max_length=MAX_CHAIN_PEM,
        description="PEM certificate chain, leaf first (the X.509-SVID and its intermediates)",
    )


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        min_length=1, max_length=MAX_TOKEN, description="compact JWT (JWT-SVID or OIDC ID token)"
    )
    audience: str = Field(
        min_length=1, max_length=MAX_AUDIENCE, description="the audience the relying party expects"
    )


class CredentialResult(BaseModel):
    """A local validation decision under quorum-verified key material."""

    model_config = ConfigDict(extra="allow")

    decision: Literal["valid", "invalid"]
    valid: bool
    kind: Literal["certificate", "token"]
    spiffe_id: str | None = Field(description="the SPIFFE ID (valid) or the one claimed (invalid)")
    subject: str | None = Field(
        default=None, description="the token's sub, or the SVID's SPIFFE ID"
    )
    reasons: list[str] = Field(description="reason codes (empty when valid)")
    detail: str = Field(description="one line for humans")
    material: str | None = Field(
        default=None, description="trust domain or issuer whose quorum-verified keys were used"
    )
    key_digest: str | None = Field(default=None, description="digest of those keys (hex)")


class PathResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    state: Literal["holds", "fails", "unavailable"]
    reason: str


class WorkloadResult(BaseModel):
    """A workload decision negotiated from signed verdicts (and the presented credentials)."""

    model_config = ConfigDict(extra="allow")

    workload: str
    outcome: Literal["trusted", "refused", "unavailable"]
    paths: dict[str, PathResult]


class TrustVerdict(BaseModel):
    """A verified DNS verdict (the ``cctf check --json`` object)."""

    model_config = ConfigDict(extra="allow")

    name: str
    qtype: str
    round: int
    outcome: Literal["trusted", "disputed", "unavailable"]
    rcode: int
    answer: list[str]
    agree: list[str]
    disagree: list[str]
    unavailable: list[str]
    seq: int
    coordinator: str
    issued_ms: int
    expires_ms: int
    k: int
    n: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    nats: Literal["connected", "disconnected"]
    region: str
