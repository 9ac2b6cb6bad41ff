"""A relying party's world for the SDK identity / gateway tests: a real nats-server with verdict
streams (``clientbus.bus``), the local identity fabric (``idfabric.identity_fabric``: real HTTPS
bundle endpoint, OIDC issuer, workload TLS endpoints) and signed verdicts about them.

:class:`RelyingWorld` publishes what an honest coordinator would sign -- DNS verdicts for workload
names and identity verdicts (``bundle`` / ``jwks`` / ``mtls``) over observations of the world's
agents -- with digests computed on the fabric's real documents (the agents' computation:
:func:`cctf.identity.bundle.bundle_digest`, :func:`cctf.identity.oidc.jwks_digest`). Every publish
is issued at the world clock's now, which moves on by one ms per verdict, so newer verdicts
supersede older ones (the client's rollback rule).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from clientbus import Bus
from clientcases import REGION, sealed, verdict
from cryptography.hazmat.primitives import serialization
from evidencefactories import make_identity_verdict, make_observation, seal_identity_verdict
from wirefactories import LIFETIME_MS, World

from cctf.bus_schemas.evidence import EvidenceStatus, Facts, IdentityKind
from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.bus_schemas.subjects import identity_verdict_subject
from cctf.client.identity import IdentityClient
from cctf.client.sdk import TrustClient
from cctf.devfabric.identity import IdentityFabric
from cctf.identity.bundle import bundle_digest, parse_bundle
from cctf.identity.oidc import jwks_digest, parse_jwks
from cctf.identity.targets import IdentityTargets, identity_targets_from

__all__ = ["RelyingWorld"]


def _json(doc: Any) -> bytes:
    return msgspec.json.encode(doc)


class RelyingWorld:
    def __init__(self, bus: Bus, world: World, fabric: IdentityFabric) -> None:
        self.bus = bus
        self.world = world
        self.fabric = fabric
        self._n = 0

    # ---- digests of the fabric's real material

    @property
    def trust_domain(self) -> str:
        return self.fabric.trust_domain.name

    @property
    def issuer(self) -> str:
        return self.fabric.issuer.issuer_url

    def bundle_digest(self) -> bytes:
        doc = _json(self.fabric.trust_domain.document())
        return bundle_digest(parse_bundle(self.trust_domain, doc))

    def jwks_digest(self) -> bytes:
        return jwks_digest(parse_jwks(_json(self.fabric.issuer.jwks())))

    def targets(self, policy: dict[str, Any] | None = None, **kw: Any) -> IdentityTargets:
        return identity_targets_from(self.fabric.targets_document(policy=policy, **kw))

    def client(self, trust: TrustClient, policy: dict[str, Any] | None = None) -> IdentityClient:
        return trust.identity(self.targets(policy))  # TrustClient's entry to IdentityClient

    # ---- publishing signed verdicts

    def _tick(self) -> int:
        self.world.clock.advance(1)
        self._n += 1
        return self.world.clock.now_ms()

    async def dns(self, name: str, outcome: Outcome = Outcome.TRUSTED, **kw: Any) -> Verdict:
        self._tick()
        v = verdict(self.world, name, seq=self._n, outcome=outcome, **kw)
        await self.bus.publish(*sealed(self.world, v))
        return v

    async def identity(
        self,
        kind: IdentityKind,
        subject: str,
        outcome: Outcome = Outcome.TRUSTED,
        *,
        facts: Facts | None = None,
        status: EvidenceStatus | None = None,
        **fact_args: Any,
    ) -> None:
        """An identity verdict over one observation per agent of the world: ``ok`` ones with
        ``facts`` (default: the honest facts of ``fact_args``), ``timeout`` ones for UNAVAILABLE,
        or all of ``status`` (e.g. ``invalid``: refused votes, the verdict is DISPUTED)."""
        now = self._tick()
        if status is None:
            unavailable = outcome is Outcome.UNAVAILABLE
            status = EvidenceStatus.TIMEOUT if unavailable else EvidenceStatus.OK
        observations = [
            make_observation(
                a.principal,
                a.region,
                self.world.round,
                kind,
                subject,
                status,
                facts=facts if status is EvidenceStatus.OK else None,
                observed_ms=now,
                **({} if facts is not None or status is not EvidenceStatus.OK else fact_args),
            )
            for a in self.world.agents.values()
        ]
        v = make_identity_verdict(
            self.world.coordinator.principal,
            observations,
            outcome=outcome,
            issued_ms=now,
            expires_ms=now + LIFETIME_MS,
            seq=now * 1000 + self._n,
        )
        await self.bus.publish(
            identity_verdict_subject(REGION, kind, subject),
            seal_identity_verdict(self.world.coordinator, v, region=REGION),
        )

    async def bundle(self, outcome: Outcome = Outcome.TRUSTED, digest: bytes | None = None) -> None:
        await self.identity(
            IdentityKind.BUNDLE,
            self.trust_domain,
            outcome,
            digest=self.bundle_digest() if digest is None else digest,
            sequence=self.fabric.trust_domain.sequence,
        )

    async def jwks(self, outcome: Outcome = Outcome.TRUSTED, digest: bytes | None = None) -> None:
        await self.identity(
            IdentityKind.JWKS,
            self.issuer,
            outcome,
            digest=self.jwks_digest() if digest is None else digest,
        )

    async def mtls_refused(self, spiffe_id: str) -> None:
        """Every region saw the endpoint present something else (``invalid`` observations): the
        coordinator's verdict is DISPUTED."""
        await self.identity(
            IdentityKind.MTLS, spiffe_id, Outcome.DISPUTED, status=EvidenceStatus.INVALID
        )

    async def mtls(
        self, spiffe_id: str, outcome: Outcome = Outcome.TRUSTED, *, seen: str | None = None
    ) -> None:
        """The ``mtls`` verdict of a workload: its endpoint presented ``seen`` (default: its own
        SPIFFE ID) with its real leaf, validated under the current bundle."""
        leaf = self.fabric.workload(spiffe_id).issued().cert
        spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        facts = Facts(
            spiffe_id if seen is None else seen,
            hashlib.sha256(spki).digest(),
            self.bundle_digest(),
            0,
            int(leaf.not_valid_before_utc.timestamp() * 1000),
            int(leaf.not_valid_after_utc.timestamp() * 1000),
            0,
        )
        await self.identity(IdentityKind.MTLS, spiffe_id, outcome, facts=facts)
