"""A CA world for tests: a throwaway hierarchy, agent keys in a trust config, an Issuer, and helpers
that run the agent's side (CSR + signed request) -- all real crypto, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from cctf.ca.client import make_csr, new_tls_key, seal_request
from cctf.ca.issuer import Issued, Issuer, make_test_hierarchy, random_serial
from cctf.ca.registry import CertRegistry
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

TRUST_DOMAIN = "cctf.test"
START_MS = 1_700_000_000_000


@dataclass
class CaAgent:
    agent: str
    region: str
    key: SigningKey
    tls_key: ec.EllipticCurvePrivateKey = field(default_factory=new_tls_key)

    def request(self, now_ms: int, lifetime_ms: int = 0) -> tuple[str, bytes]:
        return seal_request(
            self.key,
            region=self.region,
            agent=self.agent,
            csr=make_csr(self.tls_key, self.agent),
            lifetime_ms=lifetime_ms,
            now_ms=now_ms,
        )


@dataclass
class CaWorld:
    issuer: Issuer
    agents: dict[str, CaAgent]
    trust: TrustConfig

    def issue(self, agent: str, now_ms: int, lifetime_ms: int = 0) -> Issued:
        subject, data = self.agents[agent].request(now_ms, lifetime_ms)
        return self.issuer.issue(data, subject, now_ms=now_ms, serial=random_serial())

    def registry(self) -> CertRegistry:
        return CertRegistry(self.issuer.intermediate, TRUST_DOMAIN, self.trust)


def agent_entry(agent: CaAgent) -> TrustEntry:
    return TrustEntry(Role.AGENT, agent.agent, agent.region, agent.key.public)


def make_ca_world(
    agents: tuple[tuple[str, str], ...] = (
        ("agent-us-east", "us-east"),
        ("agent-eu-west", "eu-west"),
    ),
    *,
    now_ms: int = START_MS,
    extra: tuple[TrustEntry, ...] = (),
    keys: dict[str, SigningKey] | None = None,
) -> CaWorld:
    keys = keys or {}
    members = {a: CaAgent(a, r, keys.get(a) or SigningKey.generate()) for a, r in agents}
    trust = TrustConfig([*(agent_entry(m) for m in members.values()), *extra])
    h = make_test_hierarchy(TRUST_DOMAIN, now_ms=now_ms)
    issuer = Issuer(h.intermediate, h.intermediate_key, TRUST_DOMAIN, trust)
    return CaWorld(issuer, members, trust)
