"""Identity verdicts of several coordinators, k-of-m at the client, over a real nats-server.

Three coordinators (``c1``-``c3``: own keys and durables, ``per_coordinator_subjects``, the same
``identity:`` allow-list) decide the same five agents' signed evidence; each publishes its identity
verdict on its own subject ``...<subject-token>.<kind>.<coordinator>``. A
``TrustClient(coordinators=2-of-3)`` uses a verdict only when two of them signed the same statement:
a coordinator stopped costs nothing while two remain; a verdict signed by one (rogue) coordinator
key alone is never used; one coordinator alone fails closed (``coordinator_quorum``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from evidencefactories import (
    DIGEST_B,
    make_evidence_ballot,
    make_identity_verdict,
    make_observation,
    seal_evidence,
    seal_identity_verdict,
)
from wirefactories import START_MS, Identity, World, make_identity, make_world

from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.evidence import IdentityKind, IdentityVerdict
from cctf.bus_schemas.messages import Outcome
from cctf.bus_schemas.subjects import evidence_subject, identity_verdict_subject
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.sdk import NoVerdict, TrustClient, VerdictRejected
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric
from cctf.identity.targets import identity_targets_from

REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
DOMAIN = "example.org"
COORDS = ("c1", "c2", "c3")
TARGETS = {
    "trust_domains": [{"name": DOMAIN, "bundle_endpoint": "https://127.0.0.1:8443/bundle"}],
    "issuers": [],
    "workloads": [],
}


class Fabric:
    def __init__(self, fabric: NatsFabric, connect: Any, admin: Any) -> None:
        self.world: World = make_world(REGIONS)
        self.world.clock.set(START_MS + 100)
        self.coords: dict[str, Identity] = {
            c: make_identity(c, "us-east", role=Role.COORDINATOR) for c in COORDS
        }
        self.world.extra.extend(self.coords.values())
        self.fabric, self.connect, self.admin = fabric, connect, admin
        self.running: dict[str, Coordinator] = {}
        self.agent_nc: dict[str, Any] = {}

    async def start(self, name: str) -> None:
        nc = await self.connect(self.fabric, "coordinator", max_reconnect_attempts=-1)
        config = CoordinatorConfig(
            coordinator=name,
            region="us-east",
            rule=RuleConfig(k=3, n=5),
            electorate=[f"agent-{r}/r1" for r in REGIONS],
            names=[("example.com.", "A")],
            identity=identity_targets_from(TARGETS),
            per_coordinator_subjects=True,
            fetch_timeout_ms=100,
            tick_ms=20,
            publish_timeout_ms=1000,
            max_backoff_ms=300,
        )
        c = Coordinator(
            config, nc, key=self.coords[name].key, trust=self.world.trust, clock=self.world.clock
        )
        await c.start()
        self.running[name] = c

    async def evidence(self, region: str, digest: bytes | None = None) -> None:
        agent = self.world.agent(region)
        facts: dict[str, Any] = {"sequence": 3}
        if digest is not None:
            facts["digest"] = digest
        obs = make_observation(
            agent.principal, region, self.world.round, IdentityKind.BUNDLE, DOMAIN, **facts
        )
        data = seal_evidence(
            agent, make_evidence_ballot(agent, self.world.round, [obs]), now_ms=self.now
        )
        if region not in self.agent_nc:
            self.agent_nc[region] = await self.connect(self.fabric, f"agent-{region}")
        await (
            self.agent_nc[region]
            .jetstream()
            .publish(evidence_subject(region, agent.principal), data, timeout=5.0)
        )

    @property
    def now(self) -> int:
        return self.world.clock.now_ms()


@pytest_asyncio.fixture
async def fab(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Fabric]:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)
    f = Fabric(nats_single, nats_connect, admin)
    try:
        yield f
    finally:
        for c in f.running.values():
            await c.stop()


async def _used(client: TrustClient, round_: int, timeout: float = 15.0) -> IdentityVerdict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = await client.identity_verdict("bundle", DOMAIN)
            if v.round == round_:
                return v
        except (NoVerdict, VerdictRejected):
            pass
        assert time.monotonic() < deadline, f"no combined identity verdict for round {round_}"
        await asyncio.sleep(0.05)


async def test_two_of_three_used_rogue_alone_never_one_alone_fails_closed(fab: Fabric) -> None:
    for c in COORDS:
        await fab.start(c)
    client_nc = await fab.connect(fab.fabric, "client")
    policy = CoordinatorPolicy(2, COORDS)
    client = TrustClient(
        client_nc, fab.world.trust, "us-east", clock=fab.world.clock, coordinators=policy
    )
    r0 = fab.world.round
    for region in REGIONS[:3]:
        await fab.evidence(region)
    v = await _used(client, r0)
    assert v.outcome is Outcome.TRUSTED and v.coordinator in COORDS
    # each coordinator's verdict is on its own subject (the plain subject holds none)
    for c in COORDS:
        subject = identity_verdict_subject("us-east", "bundle", DOMAIN, c)
        msg = await fab.admin.jetstream().get_last_msg(verdict_stream_name("us-east"), subject)
        assert msg.subject == subject

    # a rogue: c3's key alone signs other facts for a newer round; never used
    rogue_round = r0 + 1
    forged_obs = [
        make_observation(
            fab.world.agent(r).principal,
            r,
            rogue_round,
            IdentityKind.BUNDLE,
            DOMAIN,
            digest=DIGEST_B,
            sequence=3,
        )
        for r in REGIONS
    ]
    now = fab.now
    forged = make_identity_verdict(
        "c3", forged_obs, k=3, issued_ms=now, expires_ms=now + 30_000, seq=now * 1000 + 999
    )
    assert forged.outcome is Outcome.TRUSTED
    subject = identity_verdict_subject("us-east", "bundle", DOMAIN, "c3")
    await fab.admin.jetstream().publish(
        subject, seal_identity_verdict(fab.coords["c3"], forged, subject=subject), timeout=5.0
    )
    used = await client.identity_verdict("bundle", DOMAIN)
    assert used.round == r0 and used.facts_digest == v.facts_digest  # the 2-of-3 statement

    # one coordinator stopped: the two others still make the quorum for the next round
    await fab.running.pop("c1").stop()
    fab.world.clock.advance(1000)
    r1 = fab.world.round
    for region in REGIONS[:3]:
        await fab.evidence(region)
    v1 = await _used(client, r1)
    assert v1.outcome is Outcome.TRUSTED and v1.coordinator in ("c2", "c3")

    # a client that requires all three now fails closed: c1 has no verdict of round r1
    strict = TrustClient(
        client_nc,
        fab.world.trust,
        "us-east",
        clock=fab.world.clock,
        coordinators=CoordinatorPolicy(3, COORDS),
    )
    with pytest.raises(VerdictRejected) as info:
        await strict.identity_verdict("bundle", DOMAIN)
    assert info.value.reason is Reason.COORDINATOR_QUORUM
