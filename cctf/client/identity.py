"""``IdentityClient``: what a relying party does with quorum-verified identity (a thin adapter over
:class:`~cctf.client.sdk.TrustClient` and the pure rules of :mod:`cctf.identity`).

Key material (design decision 1)
    A trust domain's SPIFFE bundle and an OIDC issuer's JWKS are used ONLY when their canonical digest
    equals ``facts.key_digest`` of the TRUSTED identity verdict for that trust domain / issuer:
    :class:`cctf.client.material.MaterialStore` (numbered steps there), cached per digest.

Credentials
    :meth:`validate_certificate` and :meth:`validate_token` validate locally against that material
    and return a :class:`CredentialDecision` (``valid`` / ``invalid`` with reason codes; ``unavailable``
    marks an invalid decision caused by missing material, not by the credential). They raise only
    :class:`~cctf.client.sdk.FetchError` (the bus cannot be asked); a bad credential is a decision.

Workloads
    :meth:`workload` builds each path's :class:`~cctf.identity.negotiator.PathResult` with the pure
    rules of :mod:`cctf.client.identity_paths` and lets :func:`cctf.identity.negotiator.negotiate`
    decide under the workload's policy (``cctf.identity.targets.WorkloadTarget.policy``). Tokens and
    chains are never logged or kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography import x509

from cctf.bus_schemas.evidence import IdentityKind
from cctf.bus_schemas.messages import Verdict
from cctf.client.errors import FetchError
from cctf.client.identity_paths import dns_path, mtls_path, oidc_path
from cctf.client.material import (
    DEFAULT_MATERIAL_CACHE,
    Fetcher,
    Material,
    MaterialStore,
    NoMaterial,
)
from cctf.client.safemode import SafeModeStatus
from cctf.client.sdk import NoVerdict, TrustClient, TrustClientError, VerdictRejected
from cctf.identity.errors import IdentityError
from cctf.identity.errors import Reason as IdReason
from cctf.identity.negotiator import (
    Negotiated,
    Path,
    PathResult,
    configured_paths,
    negotiate,
    policy_from_spec,
    stricter,
)
from cctf.identity.spiffeid import SpiffeId, parse_spiffe_id
from cctf.identity.targets import IdentityTargets, WorkloadTarget
from cctf.identity.tokens import MAX_TOKEN_BYTES, Claims, verify_id_token, verify_jwt_svid
from cctf.identity.x509svid import parse_pem_chain, verify_x509_svid

__all__ = [
    "DEFAULT_MATERIAL_CACHE",
    "CredentialDecision",
    "IdentityClient",
    "Material",
    "UnknownWorkload",
    "WorkloadDecision",
    "workload_to_json",
]

#: How long a verified safe-mode state is reused for workload decisions.
_SAFE_STATE_TTL_MS = 1_000


class UnknownWorkload(TrustClientError, LookupError):
    """The SPIFFE ID is not one of the configured workloads."""


@dataclass(frozen=True, slots=True)
class CredentialDecision:
    """A local decision on a presented X.509-SVID chain or JWT."""

    kind: Literal["certificate", "token"]
    valid: bool
    spiffe_id: str | None
    reasons: tuple[str, ...]
    detail: str
    subject: str | None = None
    material: str | None = None
    key_digest: bytes | None = None
    unavailable: bool = False

    @property
    def decision(self) -> Literal["valid", "invalid"]:
        return "valid" if self.valid else "invalid"

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "valid": self.valid,
            "kind": self.kind,
            "spiffe_id": self.spiffe_id,
            "subject": self.subject,
            "reasons": list(self.reasons),
            "detail": self.detail,
            "material": self.material,
            "key_digest": None if self.key_digest is None else self.key_digest.hex(),
        }


@dataclass(frozen=True, slots=True)
class WorkloadDecision:
    """A negotiated workload decision and the policy it was taken under."""

    workload: str
    negotiated: Negotiated
    policy: str
    checked_ms: int = 0
    credentials: tuple[CredentialDecision, ...] = field(default=())
    safe_mode: bool = False
    """The workload's DNS name or SPIFFE ID was in safe mode: every configured path was required."""


def workload_to_json(d: WorkloadDecision) -> dict[str, Any]:
    """``{"workload", "outcome", "reason", "policy", "paths": {"dns"|"mtls"|"oidc": {"state",
    "reason"}}}`` (the gateway's and ``cctf workload --json``'s object)."""
    n = d.negotiated
    return {
        "workload": d.workload,
        "outcome": n.outcome.value,
        "reason": n.reason,
        "policy": d.policy,
        "safe_mode": d.safe_mode,
        "paths": {p.value: {"state": r.state.value, "reason": r.reason} for p, r in n.paths},
    }


class IdentityClient:
    """Workload and credential decisions from quorum-verified identity (module docstring)."""

    def __init__(
        self,
        trust: TrustClient,
        targets: IdentityTargets,
        *,
        fetch: Fetcher | None = None,
        cache_size: int = DEFAULT_MATERIAL_CACHE,
        require_dnssec: bool = False,
        dns_lkg_holds: bool = False,
        safe_mode_paths: bool = True,
    ) -> None:
        """``require_dnssec``: the dns path holds only for a DNSSEC-secure answer;
        ``dns_lkg_holds``: a Last-Known-Good DNS attestation counts as holding (default: the
        path is unavailable while only LKG stands behind it); ``safe_mode_paths``: safe mode's
        stricter path rules: while the region's verified safe-mode state covers a workload's DNS
        name or SPIFFE ID, every path configured for it is required (docs/policy.md)."""
        self.safe_mode_paths = safe_mode_paths
        self._safe_state: tuple[int, SafeModeStatus | None, bool] | None = None
        self.trust = trust
        self.targets = targets
        self.require_dnssec = require_dnssec
        self.dns_lkg_holds = dns_lkg_holds
        self.materials = MaterialStore(trust, targets, fetch=fetch, cache_size=cache_size)

    # ---- plumbing the gateway uses

    @property
    def region(self) -> str:
        return self.trust.region

    def connected(self) -> bool:
        return bool(self.trust.nc.is_connected)

    async def verdict(self, name: str, qtype: str = "A") -> Verdict:
        """The verified DNS verdict (``TrustClient.check``)."""
        return await self.trust.check(name, qtype)

    def _now_ms(self) -> int:
        return self.trust.clock.now_ms()

    async def material(self, kind: IdentityKind, subject: str) -> Material:
        """Quorum-verified material (:meth:`cctf.client.material.MaterialStore.material`)."""
        return await self.materials.material(kind, subject)

    # ---- credentials

    async def validate_certificate(
        self, chain_pem: str | bytes, *, expected: str | None = None
    ) -> CredentialDecision:
        """Validate an X.509-SVID chain (PEM, leaf first) under its trust domain's quorum bundle
        (``expected``: the exact SPIFFE ID required)."""
        data = chain_pem.encode() if isinstance(chain_pem, str) else chain_pem
        try:
            chain = parse_pem_chain(data)
            claimed = _claimed_spiffe_id(chain[0])
        except IdentityError as exc:
            return _invalid("certificate", exc, None)
        td = claimed.trust_domain
        sid = str(claimed)
        if self.targets.trust_domain(td) is None:
            return CredentialDecision(
                "certificate",
                False,
                sid,
                ("trust_domain_not_configured",),
                f"trust domain {td} is not configured",
                subject=sid,
            )
        try:
            material = await self.material(IdentityKind.BUNDLE, td)
        except NoMaterial as exc:
            return CredentialDecision(
                "certificate",
                False,
                sid,
                (exc.reason,),
                exc.detail,
                subject=sid,
                material=td,
                unavailable=True,
            )
        try:
            svid = verify_x509_svid(chain, material.bundle, self._now_ms(), spiffe_id=expected)
        except IdentityError as exc:
            return _invalid("certificate", exc, sid, material)
        sid = str(svid.spiffe_id)
        return CredentialDecision(
            "certificate",
            True,
            sid,
            (),
            "valid X.509-SVID",
            subject=sid,
            material=td,
            key_digest=material.digest,
        )

    async def validate_token(
        self,
        token: str,
        audience: str,
        *,
        issuer: str | None = None,
        subject: str | None = None,
    ) -> CredentialDecision:
        """Validate a JWT: an OIDC ID token of a configured issuer (under its quorum JWKS), else a
        JWT-SVID (under its trust domain's quorum bundle). ``issuer``/``subject`` pin the expected
        ``iss``/``sub`` (a workload's)."""
        try:
            iss, sub = _routing_claims(token)
        except IdentityError as exc:
            return _invalid("token", exc, None)
        if issuer is not None:
            iss = issuer
        issuer_target = self.targets.issuer(iss) if iss is not None else None
        material: Material | None = None
        try:
            if issuer_target is not None:
                if audience not in issuer_target.audiences:
                    return CredentialDecision(
                        "token",
                        False,
                        None,
                        ("audience_not_configured",),
                        f"audience is not one configured for {issuer_target.issuer}",
                        subject=sub,
                        material=issuer_target.issuer,
                    )
                material = await self.material(IdentityKind.JWKS, issuer_target.issuer)
                claims = verify_id_token(
                    token,
                    material.keyset,
                    issuer_target.issuer,
                    [audience],
                    self._now_ms(),
                    subject=subject,
                )
            else:
                td = _spiffe_trust_domain(sub)
                if td is None:
                    return CredentialDecision(
                        "token",
                        False,
                        None,
                        ("issuer_not_configured",),
                        "neither an ID token of a configured issuer nor a JWT-SVID",
                        subject=sub,
                    )
                if self.targets.trust_domain(td) is None:
                    return CredentialDecision(
                        "token",
                        False,
                        sub,
                        ("trust_domain_not_configured",),
                        f"trust domain {td} is not configured",
                        subject=sub,
                    )
                material = await self.material(IdentityKind.BUNDLE, td)
                claims = verify_jwt_svid(token, material.bundle, audience, self._now_ms())
                if subject is not None and claims.subject != subject:
                    raise IdentityError(IdReason.SUB_MISMATCH, "sub is not the expected subject")
        except NoMaterial as exc:
            return CredentialDecision(
                "token", False, None, (exc.reason,), exc.detail, subject=sub, unavailable=True
            )
        except IdentityError as exc:
            return _invalid("token", exc, None, material, subject=sub)
        return _valid_token(claims, material)

    # ---- workloads

    def _target(self, spiffe_id: str) -> WorkloadTarget:
        target = self.targets.workload(spiffe_id)
        if target is None:
            raise UnknownWorkload(f"workload {spiffe_id[:200]!r} is not configured")
        return target

    async def workload(
        self, spiffe_id: str, *, token: str | None = None, chain: str | bytes | None = None
    ) -> WorkloadDecision:
        """The negotiated decision for a configured workload (raises :class:`UnknownWorkload`,
        :class:`FetchError`)."""
        target = self._target(spiffe_id)
        results: dict[Path, PathResult] = {
            Path.DNS: await self._dns(target),
            Path.MTLS: await self._mtls(target, chain),
            Path.OIDC: await self._oidc(target, token),
        }
        policy = policy_from_spec(target.policy)
        strict = self.safe_mode_paths and await self._in_safe_mode(target)
        if strict:
            policy = stricter(policy, configured_paths(target))
        return WorkloadDecision(
            spiffe_id, negotiate(policy, results), str(policy), self._now_ms(), safe_mode=strict
        )

    async def _in_safe_mode(self, target: WorkloadTarget) -> bool:
        """Whether the region's verified safe-mode state covers the workload (its DNS name or
        SPIFFE ID). Nothing ever announced: no. The state cannot be read or verified (expired,
        refused, no k-of-m quorum, the bus): yes, fail towards the stricter rules. Cached 1 s."""
        now = self._now_ms()
        if self._safe_state is None or not 0 <= now - self._safe_state[0] < _SAFE_STATE_TTL_MS:
            status: SafeModeStatus | None = None
            unknown = False
            try:
                status = await self.trust.safe_mode()
            except NoVerdict:
                pass
            except (VerdictRejected, FetchError):
                unknown = True
            self._safe_state = (now, status, unknown)
        _, status, unknown = self._safe_state
        if unknown:
            return True
        if status is None:
            return False
        return status.covers(target.spiffe_id) or (
            target.dns_name is not None and status.covers(target.dns_name)
        )

    async def _dns(self, target: WorkloadTarget) -> PathResult:
        if target.dns_name is None:
            return dns_path(None, "", missing="not_configured", require_secure=False)
        try:
            v = await self.trust.check(target.dns_name, target.qtype)
        except NoVerdict:
            return dns_path(None, "", missing="no_verdict", require_secure=self.require_dnssec)
        except VerdictRejected as exc:
            return dns_path(
                None, "", missing=f"verdict_{exc.reason.value}", require_secure=self.require_dnssec
            )
        return dns_path(
            v.outcome,
            v.dnssec.value,
            require_secure=self.require_dnssec,
            lkg=v.is_lkg,
            lkg_holds=self.dns_lkg_holds,
        )

    async def _mtls(self, target: WorkloadTarget, chain: str | bytes | None) -> PathResult:
        if target.endpoint is None and chain is None:
            return mtls_path(
                None,
                expected=target.spiffe_id,
                seen_spiffe_id="",
                seen_under=b"",
                bundle_digest=None,
                chain=None,
                missing="not_configured",
            )
        presented = (
            None
            if chain is None
            else await self.validate_certificate(chain, expected=target.spiffe_id)
        )
        try:
            v = await self.trust.identity_verdict(IdentityKind.MTLS, target.spiffe_id)
        except NoVerdict:
            v, missing = None, "no_verdict"
        except VerdictRejected as exc:
            v, missing = None, f"verdict_{exc.reason.value}"
        bundle_digest: bytes | None = None
        try:
            bundle = await self.materials.trusted_verdict(IdentityKind.BUNDLE, target.trust_domain)
            bundle_digest = bundle.facts.key_digest
        except NoMaterial:
            pass
        if v is None:
            return mtls_path(
                None,
                expected=target.spiffe_id,
                seen_spiffe_id="",
                seen_under=b"",
                bundle_digest=bundle_digest,
                chain=presented,
                missing=missing,
            )
        return mtls_path(
            v.outcome,
            expected=target.spiffe_id,
            seen_spiffe_id=v.facts.spiffe_id,
            seen_under=v.facts.bundle_digest,
            bundle_digest=bundle_digest,
            chain=presented,
        )

    async def _oidc(self, target: WorkloadTarget, token: str | None) -> PathResult:
        if target.issuer is None:
            return PathResult(oidc_path(None).state, "not_configured")
        if token is None:
            return oidc_path(None)
        audience = self.targets.audience_of(target)
        assert audience is not None  # an issuer has at least one audience
        decision = await self.validate_token(
            token, audience, issuer=target.issuer, subject=target.expected_subject
        )
        return oidc_path(decision)


def _claimed_spiffe_id(leaf: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID a leaf claims (only to pick the trust domain's bundle; the validation under
    that bundle, :func:`cctf.identity.x509svid.verify_x509_svid`, decides)."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        uris = []
    if len(uris) != 1:
        raise IdentityError(IdReason.URI_SAN_COUNT, f"leaf has {len(uris)} URI SANs, not one")
    return parse_spiffe_id(uris[0])


def _routing_claims(token: str) -> tuple[str | None, str | None]:
    """``iss`` and ``sub`` of a JWT read WITHOUT verification, only to pick the keys to verify it
    with (the verification under them decides)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise IdentityError(IdReason.TOKEN_TOO_LARGE, f"token over {MAX_TOKEN_BYTES} bytes")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise IdentityError(IdReason.TOKEN_MALFORMED, "not a compact JWT") from None
    iss, sub = claims.get("iss"), claims.get("sub")
    return (iss if isinstance(iss, str) else None, sub if isinstance(sub, str) else None)


def _spiffe_trust_domain(sub: str | None) -> str | None:
    if sub is None or not sub.startswith("spiffe://"):
        return None
    try:
        return parse_spiffe_id(sub).trust_domain
    except IdentityError:
        return None


def _valid_token(claims: Claims, material: Material | None) -> CredentialDecision:
    assert material is not None
    spiffe = str(claims.spiffe_id) if claims.spiffe_id is not None else None
    if spiffe is None and claims.subject.startswith("spiffe://"):
        spiffe = claims.subject
    return CredentialDecision(
        "token",
        True,
        spiffe,
        (),
        "valid token",
        subject=claims.subject,
        material=material.subject,
        key_digest=material.digest,
    )


def _invalid(
    kind: Literal["certificate", "token"],
    exc: IdentityError,
    spiffe_id: str | None,
    material: Material | None = None,
    *,
    subject: str | None = None,
) -> CredentialDecision:
    return CredentialDecision(
        kind,
        False,
        spiffe_id,
        (exc.reason.value,),
        exc.detail,
        subject=subject if subject is not None else spiffe_id,
        material=None if material is None else material.subject,
        key_digest=None if material is None else material.digest,
    )
