"""JWT-SVID and OIDC ID token validation (pure; time as ``now_ms``). Numbered steps:
docs/identity.md §2 (the implementation follows them in order)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cctf.identity.bundle import TrustBundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.oidc import KeySet
from cctf.identity.spiffeid import SpiffeId

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


def verify_jwt_svid(
    token: str,
    bundle: TrustBundle,
    audience: str,
    now_ms: int,
    *,
    leeway_ms: int = DEFAULT_LEEWAY_MS,
) -> Claims:
    """Validate a JWT-SVID under the JWT authorities of ``bundle``: ``audience`` must be among its
    ``aud``; its ``sub`` a SPIFFE ID of the bundle's trust domain. Raises :class:`IdentityError`."""
    raise IdentityError(Reason.TOKEN_MALFORMED, "not implemented yet")


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
    """Validate an OIDC ID token under ``keyset``: ``iss`` equals ``issuer`` exactly; its ``aud``
    lists one of ``audiences`` and no other; ``sub`` equals ``subject`` when given. Raises
    :class:`IdentityError`."""
    raise IdentityError(Reason.TOKEN_MALFORMED, "not implemented yet")
