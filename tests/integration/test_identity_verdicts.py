"""Identity verdicts end to end over a real nats-server: five agents' signed evidence (real hybrid
keys) -> the coordinator's vote-stream consumers -> verify -> identity tally -> a signed
IdentityVerdict in every verdict region -> TrustClient.identity_verdict, verified.

The coordinator and the client share a FakeClock: rounds and deadlines move only when a test moves
them. Every verdict here is decided early, by the evidence alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from evidencefactories import (
    DIGEST_A,
    DIGEST_B,
    make_evidence_ballot,
    make_observation,
    seal_evidence,
)
from nats.aio.client import Client
from wirefactories import START_MS, World, make_verdict, make_world, seal_verdict

from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.evidence import EvidenceStatus, IdentityKind, IdentityVerdict, Observation
from cctf.bus_schemas.messages import Outcome, VoterState
from cctf.bus_schemas.subjects import evidence_subject, verdict_subject
from cctf.client.sdk import NoVerdict, TrustClient
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.pipeline.identity import BUNDLE_ROLLBACK
from cctf.coordinator.service import Coordinator
from cctf.devfabric.nats import NatsFabric
from cctf.identity.targets import identity_targets_from

REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
DOMAIN = "example.org"
ISSUER = "https://issuer.example.org"
WORKLOAD = "spiffe://example.org/web"
THIRD = bytes(range(64, 96))

TARGETS = {
    "trust_domains": [{"name": DOMAIN, "bundle_endpoint": "https://127.0.0.1:8443/bundle"}],
    "issuers": [{"issuer": ISSUER, "audiences": ["cctf"]}],
    "workloads": [{"spiffe_id": WORKLOAD, "endpoint": "127.0.0.1:9443", "issuer": ISSUER}],
}


@dataclass
class Fabric:
    fabric: NatsFabric
    world: World
    admin: Client
    connect: Any
    client: TrustClient | None = None
    coordinator: Coordinator | None = None
    agent_nc: dict[str, Client] = field(default_factory=dict)

    @property
    def round(self) -> int:
        return self.world.round

    async def start(self) -> Coordinator:
        nc = await self.connect(self.fabric, "coordinator", max_reconnect_attempts=-1)
        config = CoordinatorConfig(
            coordinator=self.world.coordinator.principal,
            region="us-east",
            rule=RuleConfig(k=3, n=5),
            electorate=[f"agent-{r}/r1" for r in REGIONS],
            names=[("example.com.", "A")],
            verdict_regions=["us-east", "eu-west"],
            identity=identity_targets_from(TARGETS),
            fetch_timeout_ms=100,
            tick_ms=20,
            publish_timeout_ms=1000,
            max_backoff_ms=300,
        )
        self.coordinator = Coordinator(
            config,
            nc,
            key=self.world.coordinator.key,
            trust=self.world.trust,
            clock=self.world.clock,
        )
        await self.coordinator.start()
        client_nc = await self.connect(self.fabric, "client")
        self.client = TrustClient(client_nc, self.world.trust, "us-east", clock=self.world.clock)
        return self.coordinator

    async def publish(self, region: str, data: bytes, *, subject: str | None = None) -> None:
        """Publish as the region's agent user (``admin`` when ``subject`` is another region's)."""
        agent = self.world.agent(region)
        subject = subject or evidence_subject(region, agent.principal)
        if not subject.startswith(f"cctf.v1.evidence.{region}."):
            nc = self.admin
        else:
            if region not in self.agent_nc:
                self.agent_nc[region] = await self.connect(self.fabric, f"agent-{region}")
            nc = self.agent_nc[region]
        await nc.jetstream().publish(subject, data, timeout=5.0)

    def observation(
        self,
        region: str,
        status: EvidenceStatus = EvidenceStatus.OK,
        *,
        kind: IdentityKind = IdentityKind.BUNDLE,
        subject: str = DOMAIN,
        **facts: int | bytes,
    ) -> Observation:
        agent = self.world.agent(region)
        if kind is IdentityKind.BUNDLE:
            facts.setdefault("sequence", 3)
        return make_observation(agent.principal, region, self.round, kind, subject, status, **facts)

    async def evidence(self, region: str, observations: Sequence[Observation], **kw: Any) -> None:
        agent = self.world.agent(region)
        ballot = make_evidence_ballot(agent, self.round, observations)
        data = seal_evidence(agent, ballot, now_ms=self.world.clock.now_ms(), **kw)
        await self.publish(region, data, subject=kw.get("subject"))

    async def verdict(
        self, kind: str, subject: str, round_: int, region: str | None = None, timeout: float = 15.0
    ) -> IdentityVerdict:
        """Poll the client until the verified verdict of ``round_`` is the latest stored."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = await self.client.identity_verdict(kind, subject, region)
                if v.round == round_:
                    return v
            except NoVerdict:
                pass
            assert time.monotonic() < deadline, f"no {kind} verdict for round {round_}"
            await asyncio.sleep(0.05)

    async def until(self, pred: Any, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def all_settled(self, timeout: float = 1.5) -> None:
        """Every delivered evidence message acked or terminated, as the server counts it.

        An ack is a plain publish: the coordinator's counters move when it is sent, the server's
        ``num_ack_pending`` when it is processed, a moment later. The wait stays below ack_wait
        (2 s), so a message never settled is not hidden by its redelivery: it times out.
        """
        assert self.coordinator is not None
        deadline = time.monotonic() + timeout
        while (pending := await self.coordinator.num_ack_pending()) != 0:
            assert time.monotonic() < deadline, f"{pending} evidence message(s) never settled"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def fab(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Fabric]:
    world = make_world(REGIONS)
    world.clock.set(START_MS + 100)
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)
    f = Fabric(nats_single, world, admin, nats_connect)
    try:
        yield f
    finally:
        if f.coordinator is not None:
            await f.coordinator.stop()


def states(v: IdentityVerdict) -> dict[str, VoterState]:
    return {r.voter: r.state for r in v.voters}


async def test_agreement_trusted_split_view_outvoted_three_views_disputed(fab: Fabric) -> None:
    coordinator = await fab.start()
    r0 = fab.round
    for region in REGIONS:  # all five regions see the same bundle
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_A, sequence=3)])
    v = await fab.verdict("bundle", DOMAIN, r0)
    assert v.outcome is Outcome.TRUSTED and v.facts.key_digest == DIGEST_A
    assert v.facts.sequence == 3 and (v.k, v.n) == (3, 5) and v.decided_early
    west = await fab.verdict("bundle", DOMAIN, r0, region="eu-west")  # every verdict region
    assert west == v

    fab.world.clock.advance(1000)  # split view: ap-south's bundle endpoint serves another bundle
    r1 = fab.round
    await fab.evidence("ap-south", [fab.observation("ap-south", digest=DIGEST_B)])
    for region in REGIONS[:4]:
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_A)])
    v = await fab.verdict("bundle", DOMAIN, r1)
    assert v.outcome is Outcome.TRUSTED and v.facts.key_digest == DIGEST_A  # outvoted
    assert states(v)["agent-ap-south"] is VoterState.DISAGREE

    fab.world.clock.advance(1000)  # three different views: never silently accepted
    r2 = fab.round
    for region, digest in zip(
        REGIONS, [DIGEST_A, DIGEST_A, DIGEST_B, DIGEST_B, THIRD], strict=True
    ):
        await fab.evidence(region, [fab.observation(region, digest=digest)])
    v = await fab.verdict("bundle", DOMAIN, r2)
    assert v.outcome is Outcome.DISPUTED and v.facts_digest == b""
    assert set(states(v).values()) == {VoterState.DISAGREE}

    await fab.until(lambda: coordinator.stats().held_ballots == 0, "settled evidence")
    await fab.all_settled()  # every evidence message acked
    st = coordinator.stats()
    assert st.verdicts == {"trusted": 2, "disputed": 1} and st.ballots_accepted == 15


async def test_invalid_never_counts_and_mtls_jwks_paths(fab: Fabric) -> None:
    await fab.start()
    r0 = fab.round
    invalid = EvidenceStatus.INVALID
    for region in REGIONS[:3]:  # three agents refused what they fetched (rollback / empty)
        obs = fab.observation(region, invalid, detail="bundle_sequence_rollback")
        await fab.evidence(region, [obs])
    for region in REGIONS[3:]:
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_A)])
    v = await fab.verdict("bundle", DOMAIN, r0)
    assert v.outcome is Outcome.DISPUTED  # neither TRUSTED nor UNAVAILABLE
    assert states(v)["agent-us-east"] is VoterState.DISAGREE

    fab.world.clock.advance(1000)
    r1 = fab.round
    for region in REGIONS:
        mtls = fab.observation(region, kind=IdentityKind.MTLS, subject=WORKLOAD)
        jwks = fab.observation(region, kind=IdentityKind.JWKS, subject=ISSUER, keys=2)
        await fab.evidence(region, [mtls, jwks])
    m = await fab.verdict("mtls", WORKLOAD, r1)
    assert m.outcome is Outcome.TRUSTED and m.facts.spiffe_id == WORKLOAD
    j = await fab.verdict("jwks", ISSUER, r1)
    assert j.outcome is Outcome.TRUSTED and j.facts.keys == 2


async def test_unconfigured_subjects_and_pinning_are_refused(fab: Fabric) -> None:
    coordinator = await fab.start()
    r0 = fab.round
    other = "other.example"
    for region in REGIONS:
        await fab.evidence(region, [fab.observation(region, subject=other)])
    await fab.until(
        lambda: coordinator.stats().rejected.get("unconfigured_name", 0) == 5, "refusals"
    )
    assert fab.client is not None
    with pytest.raises(NoVerdict):
        await fab.client.identity_verdict("bundle", other)

    # pinning: us-east's agent cannot speak for eu-west, on eu-west's subject (its key is us-east's)
    east = fab.world.agent("us-east")
    forged_subject = evidence_subject("eu-west", "agent-eu-west")
    ballot = make_evidence_ballot(east, r0, [fab.observation("us-east")])
    data = seal_evidence(east, ballot, now_ms=fab.world.clock.now_ms(), subject=forged_subject)
    await fab.admin.jetstream().publish(forged_subject, data)  # the agent user may not (NATS)
    # nor inside its own ballot, with an observation of another agent
    spoofed = make_observation("agent-eu-west", "us-east", r0, IdentityKind.BUNDLE, DOMAIN)
    await fab.evidence("us-east", [spoofed])
    await fab.until(
        lambda: (
            coordinator.stats().rejected.get(Reason.PRINCIPAL.value, 0) == 1
            and coordinator.stats().rejected.get(Reason.REGION.value, 0) == 1
        ),
        "pinning refusals",
    )
    with pytest.raises(NoVerdict):
        await fab.client.identity_verdict("bundle", DOMAIN)
    await fab.all_settled()


async def test_a_trusted_bundle_verdict_never_goes_back_in_sequence(fab: Fabric) -> None:
    coordinator = await fab.start()
    r0 = fab.round
    for region in REGIONS[:3]:
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_A, sequence=5)])
    v = await fab.verdict("bundle", DOMAIN, r0)
    assert v.facts.sequence == 5
    fab.world.clock.advance(1000)  # a quorum reports an older bundle (lower spiffe_sequence)
    for region in REGIONS[:3]:
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_B, sequence=4)])
    await fab.until(
        lambda: coordinator.stats().verdicts_dropped.get(BUNDLE_ROLLBACK, 0) == 1, "refusal"
    )
    assert fab.client is not None
    latest = await fab.client.identity_verdict("bundle", DOMAIN)
    assert latest == v  # nothing newer was issued
    await fab.until(lambda: coordinator.stats().held_ballots == 0, "settled evidence")


async def test_decided_at_the_round_deadline_when_agents_stay_silent(fab: Fabric) -> None:
    coordinator = await fab.start()
    r0 = fab.round
    await fab.evidence("us-east", [fab.observation("us-east", digest=DIGEST_A)])
    await fab.evidence("us-west", [fab.observation("us-west", digest=DIGEST_A)])
    await fab.evidence("eu-west", [fab.observation("eu-west", EvidenceStatus.TIMEOUT)])
    await fab.until(lambda: coordinator.stats().votes_accepted == 3, "three votes")
    assert fab.client is not None
    with pytest.raises(NoVerdict):  # 2 agree, 2 pending: could still be TRUSTED
        await fab.client.identity_verdict("bundle", DOMAIN)
    fab.world.clock.set((r0 + 1) * 1000 + 1500)  # the round's deadline (round_ms + grace)
    v = await fab.verdict("bundle", DOMAIN, r0)
    assert v.outcome is Outcome.UNAVAILABLE and not v.decided_early
    assert states(v)["agent-ap-south"] is VoterState.UNAVAILABLE
    await fab.until(lambda: coordinator.stats().held_ballots == 0, "settled evidence")


async def test_dns_verdict_streams_pass_over_identity_verdicts_without_rejecting(
    fab: Fabric,
) -> None:
    """Identity verdicts share the region's verdict stream: a DNS verdict stream skips them (they
    are read by identity_verdict), it neither yields nor counts them as rejected."""
    await fab.start()
    r0 = fab.round
    for region in REGIONS:
        await fab.evidence(region, [fab.observation(region, digest=DIGEST_A)])
    await fab.verdict("bundle", DOMAIN, r0)
    client = fab.client
    assert client is not None
    js = fab.admin.jetstream()
    agent = fab.world.agent("us-east")  # a genuinely bad message on a DNS subject is still counted
    bad = seal_evidence(agent, make_evidence_ballot(agent, r0, []), now_ms=fab.world.clock.now_ms())
    await js.publish(verdict_subject("us-east", "bad.example.", "A"), bad)
    now = fab.world.clock.now_ms()  # then a genuine DNS verdict, after both in stream order
    sentinel = make_verdict("example.com.", "A", r0, issued_ms=now, seq=now * 1000 + 1,
                            coordinator=fab.world.coordinator.principal)  # fmt: skip
    await js.publish(
        verdict_subject("us-east", "example.com.", "A"),
        seal_verdict(fab.world.coordinator, sentinel, now_ms=now),
    )
    async with await client.stream(deliver="all") as stream:
        got = await asyncio.wait_for(anext(stream), 10)
    assert got == sentinel
    assert dict(client.rejected) == {Reason.TYPE.value: 1}, client.rejected
