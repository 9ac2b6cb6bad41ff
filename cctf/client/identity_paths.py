"""Each path's state from verified evidence (pure): the inputs of :func:`cctf.identity.negotiator.negotiate`.

Design decision 2 (docs/architecture.md, "Relying parties"), one function per path; each takes only
verified inputs (a verdict that passed the client's verification, a credential decision made under
quorum-verified keys) or the reason why there is none, and returns a
:class:`~cctf.identity.negotiator.PathResult`:

``dns`` (:func:`dns_path`) -- the DNS verdict of the workload's name:
    1. no verdict, a refused one (stale, bad signature, ...), or outcome UNAVAILABLE -> unavailable;
    2. DISPUTED -> fails (``disputed``);
    3. TRUSTED with DNSSEC ``bogus`` -> fails (``dnssec_bogus``; the coordinator never lets a bogus
       vote count, so this is defence in depth);
    4. a Last-Known-Good attestation (TRUSTED repeated while the resolvers time out, issue #8) ->
       unavailable (``dns_lkg``: no live quorum stands behind it), unless ``lkg_holds``;
    5. TRUSTED with ``require_secure`` and a state other than ``secure``: ``insecure`` -> fails
       (``dnssec_insecure``: an unsigned answer where a signed one is required), ``indeterminate`` ->
       unavailable (``dnssec_indeterminate``);
    6. TRUSTED -> holds (reason ``dnssec_<state>``).
``mtls`` (:func:`mtls_path`) -- the coordinator's ``mtls`` identity verdict for the SPIFFE ID, and a
chain the caller presented:
    1. no verdict / refused / UNAVAILABLE -> unavailable;
    2. DISPUTED -> fails (``disputed``: regions saw different identities);
    3. TRUSTED but the quorum's SPIFFE ID is not the workload's -> fails (``wrong_spiffe_id``);
    4. a presented chain: not judged for want of a quorum bundle -> unavailable (its reason);
       invalid -> fails (its reason); valid but for another SPIFFE ID -> fails (``wrong_spiffe_id``);
    5. the quorum's endpoint chain validated under another bundle than the current quorum bundle
       -> unavailable (``bundle_changed``: the next round re-probes under the new bundle);
    6. otherwise -> holds.
``oidc`` (:func:`oidc_path`) -- a token the caller presented:
    1. no token -> unavailable (``no_token``);
    2. not judged for want of a quorum-verified JWKS -> unavailable (its reason);
    3. token invalid under it -> fails (its reason); valid -> holds.
"""

from __future__ import annotations

from typing import Final, Protocol

from cctf.bus_schemas.messages import Outcome
from cctf.identity.negotiator import PathResult, PathState

__all__ = ["CredentialLike", "dns_path", "mtls_path", "oidc_path"]

HOLDS: Final = PathState.HOLDS
FAILS: Final = PathState.FAILS
UNAVAILABLE: Final = PathState.UNAVAILABLE


class CredentialLike(Protocol):
    """What the path rules read of a local credential decision."""

    @property
    def valid(self) -> bool: ...

    @property
    def spiffe_id(self) -> str | None: ...

    @property
    def reasons(self) -> tuple[str, ...]: ...

    @property
    def unavailable(self) -> bool:
        """Invalid only because the quorum-verified keys are not available (not the credential's
        fault: the path is then unavailable, not failed)."""
        ...


def _first(reasons: tuple[str, ...], default: str) -> str:
    return reasons[0] if reasons else default


def dns_path(
    outcome: Outcome | None,
    dnssec: str,
    *,
    missing: str = "no_verdict",
    require_secure: bool,
    lkg: bool = False,
    lkg_holds: bool = False,
) -> PathResult:
    """``outcome``/``dnssec`` of the verified DNS verdict (``None``: none, ``missing`` says why);
    ``lkg``: the verdict is a Last-Known-Good attestation (``Verdict.is_lkg``)."""
    if outcome is None:
        return PathResult(UNAVAILABLE, missing)
    if outcome is Outcome.UNAVAILABLE:
        return PathResult(UNAVAILABLE, "dns_unavailable")
    if outcome is Outcome.DISPUTED:
        return PathResult(FAILS, "disputed")
    if dnssec == "bogus":
        return PathResult(FAILS, "dnssec_bogus")
    if lkg and not lkg_holds:
        return PathResult(UNAVAILABLE, "dns_lkg")
    if require_secure and dnssec != "secure":
        if dnssec == "insecure":
            return PathResult(FAILS, "dnssec_insecure")
        return PathResult(UNAVAILABLE, f"dnssec_{dnssec}")
    return PathResult(HOLDS, f"dnssec_{dnssec}")


def mtls_path(
    outcome: Outcome | None,
    *,
    expected: str,
    seen_spiffe_id: str,
    seen_under: bytes,
    bundle_digest: bytes | None,
    chain: CredentialLike | None,
    missing: str = "no_verdict",
) -> PathResult:
    """The quorum's ``mtls`` verdict (``outcome``, the SPIFFE ID it saw, the digest of the bundle
    its chain validated under), the current quorum bundle's digest (``None``: not known) and the
    decision on a presented chain (``None``: none presented)."""
    if outcome is None:
        return PathResult(UNAVAILABLE, missing)
    if outcome is Outcome.UNAVAILABLE:
        return PathResult(UNAVAILABLE, "mtls_unavailable")
    if outcome is Outcome.DISPUTED:
        return PathResult(FAILS, "disputed")
    if seen_spiffe_id != expected:
        return PathResult(FAILS, "wrong_spiffe_id")
    if chain is not None:
        if chain.unavailable:
            return PathResult(UNAVAILABLE, _first(chain.reasons, "bundle_unavailable"))
        if not chain.valid:
            return PathResult(FAILS, _first(chain.reasons, "chain_invalid"))
        if chain.spiffe_id != expected:
            return PathResult(FAILS, "wrong_spiffe_id")
    if bundle_digest is not None and seen_under and seen_under != bundle_digest:
        return PathResult(UNAVAILABLE, "bundle_changed")
    return PathResult(HOLDS, "chain_valid" if chain is not None else "quorum")


def oidc_path(token: CredentialLike | None) -> PathResult:
    """The decision on a presented token (``None``: no token presented)."""
    if token is None:
        return PathResult(UNAVAILABLE, "no_token")
    if token.unavailable:
        return PathResult(UNAVAILABLE, _first(token.reasons, "jwks_unavailable"))
    if not token.valid:
        return PathResult(FAILS, _first(token.reasons, "token_invalid"))
    return PathResult(HOLDS, "token_valid")
