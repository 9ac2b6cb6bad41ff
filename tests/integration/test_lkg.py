"""LKG attestations end to end: a real coordinator on a real nats-server (its state in the KV bucket
``CCTF_LKG``), real signatures, verdicts checked by the subscriber's verifier and ``TrustClient``.

The coordinator and every verifier read one :class:`FakeClock`: a test moves it round by round, so
caps and lifetimes are exercised without waiting. Each round an agent of each region publishes one
ballot (us-east r1..r3, eu-west r1..r2: 3-of-5); ``None`` is a resolver that timed out.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from wirefactories import START_MS, Identity, make_ballot, make_vote, make_world, seal_ballot

from cctf import telemetry
from cctf.bus.connect import jetstream
from cctf.bus.kv import LKG_BUCKET, Bucket, kv_stream_name
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.messages import DnssecState, Outcome, Verdict, VoteStatus
from cctf.client.sdk import TrustClient, VerdictRejected
from cctf.client.verify import VerdictVerifier
from cctf.clock import FakeClock
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.lkgconfig import LkgConfig, LkgNameCap
from cctf.coordinator.lkgstate import record_key
from cctf.coordinator.service import Coordinator
from cctf.crypto.trust import TrustConfig
from cctf.devfabric.nats import NatsFabric

EAST, WEST = "us-east", "eu-west"
ELECTORATE = [
    "agent-us-east/r1",
    "agent-us-east/r2",
    "agent-us-east/r3",
    "agent-eu-west/r1",
    "agent-eu-west/r2",
]
NAME, OTHER = "www.example.com.", "api.example.com."
HONEST = ("www.example.com. A 192.0.2.1",)
FORGED = ("www.example.com. A 203.0.113.66",)
FORGED2 = ("www.example.com. A 203.0.113.67",)
R0 = START_MS // 1000
Answer = Sequence[str] | None | str  # "bogus": a DNSSEC-bogus SERVFAIL


async def until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Lab:
    fabric: NatsFabric
    clock: FakeClock
    admin: Client
    agents: dict[str, Identity]
    coord: Identity
    connect: Any
    verdicts: list[Verdict] = field(default_factory=list)
    coordinators: list[Coordinator] = field(default_factory=list)
    agent_nc: dict[str, Client] = field(default_factory=dict)
    verifier: VerdictVerifier | None = None

    @property
    def trust(self) -> TrustConfig:
        return TrustConfig([a.entry for a in self.agents.values()] + [self.coord.entry])

    async def start(self, **lkg: Any) -> Coordinator:
        nc = await self.connect(self.fabric, "coordinator", max_reconnect_attempts=-1)
        config = CoordinatorConfig(
            coordinator=self.coord.principal,
            region=EAST,
            rule=RuleConfig(k=3, n=5),
            electorate=ELECTORATE,
            names=[(NAME, "A"), (OTHER, "A")],
            fetch_timeout_ms=100,
            tick_ms=20,
            lkg=LkgConfig(store_every_ms=0, **lkg),
            signing="per_verdict",  # verdicts opened with their own signature
        )
        c = Coordinator(config, nc, key=self.coord.key, trust=self.trust, clock=self.clock)
        await c.start()
        self.coordinators.append(c)
        return c

    async def stop_all(self) -> None:
        for c in self.coordinators:
            await c.stop()
        self.coordinators.clear()

    async def _publish(self, region: str, data: bytes) -> None:
        if region not in self.agent_nc:
            self.agent_nc[region] = await self.connect(self.fabric, f"agent-{region}")
        # ensure_streams returned with every replica in place: no "no responders" retry needed
        await self.agent_nc[region].jetstream().publish(self.agents[region].subject, data)

    async def round(
        self, r: int, east: Sequence[Answer], west: Sequence[Answer], qname: str = NAME
    ) -> Verdict:
        """Set the clock into round ``r``, publish both regions' ballots, return its verdict."""
        self.clock.set(max(self.clock.now_ms(), r * 1000 + 100))
        for region, answers in ((EAST, east), (WEST, west)):
            agent = self.agents[region]
            votes = []
            for i, a in enumerate(answers, 1):
                kw: dict[str, Any] = {"qname": qname, "resolver_id": f"r{i}"}
                if a is None:
                    kw["status"] = VoteStatus.TIMEOUT
                elif a == "bogus":
                    kw.update(status=VoteStatus.SERVFAIL, dnssec=DnssecState.BOGUS, ede=[6])
                else:
                    kw["answer"] = a
                votes.append(make_vote(agent.principal, region, r, **kw))
            ballot = make_ballot(agent.principal, region, r, votes=votes)
            await self._publish(region, seal_ballot(agent, ballot, now_ms=self.clock.now_ms()))
        await until(lambda: any(v.round == r and v.qname == qname for v in self.verdicts), f"r{r}")
        return next(v for v in self.verdicts if v.round == r and v.qname == qname)

    async def stored(self) -> list[tuple[str, bytes]]:
        bucket = await Bucket.bind(jetstream(self.admin), LKG_BUCKET)
        return await bucket.items(self.coord.principal, limit=100)

    async def wait_stored(self, n: int) -> list[tuple[str, bytes]]:
        """The coordinator's records once there are ``n`` (its writer is asynchronous)."""
        deadline = time.monotonic() + 60
        while len(got := await self.stored()) != n:
            assert time.monotonic() < deadline, f"{len(got)} records stored, not {n}"
            await asyncio.sleep(0.05)
        return got


async def _lab(fabric: NatsFabric, nats_connect: Any) -> AsyncIterator[Lab]:
    world = make_world((EAST, WEST))
    world.clock.set(START_MS + 100)
    admin = await nats_connect(fabric, "admin")
    await ensure_streams(admin.jetstream(), [EAST, WEST], fabric.stream_replicas, timeout_s=60)
    h = Lab(fabric, world.clock, admin, dict(world.agents), world.coordinator, nats_connect)
    h.verifier = VerdictVerifier(h.trust, h.clock, region=EAST)

    async def on_verdict(msg: Msg) -> None:  # every verdict passes the subscriber's checks
        if msg.subject.split(".")[3] == EAST:
            assert h.verifier is not None
            h.verdicts.append(h.verifier.verify(msg.data, msg.subject))

    await admin.subscribe("cctf.v1.verdict.>", cb=on_verdict)
    await admin.flush()
    try:
        yield h
    finally:
        await h.stop_all()


@pytest_asyncio.fixture
async def lab(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Lab]:
    async for h in _lab(nats_single, nats_connect):
        yield h


@pytest_asyncio.fixture
async def lab3(nats_cluster: NatsFabric, nats_connect: Any) -> AsyncIterator[Lab]:
    """The same on a 3-node cluster: streams and the LKG bucket R3."""
    async for h in _lab(nats_cluster, nats_connect):
        yield h


OUTAGE: tuple[Answer, ...] = (None, None, None)
UP = (HONEST, HONEST, HONEST)


async def test_an_outage_after_trusted_is_attested_each_round_then_trusted_again(lab: Lab) -> None:
    buf = io.StringIO()
    telemetry.configure_logging(json=True, level="info", stream=buf)
    try:
        await _outage_and_back(lab)
    finally:
        telemetry.configure_logging()
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if '"lkg_' in line]
    events = [e for e in lines if e["event"].startswith("lkg_")]  # not the policy's lkg_use alarm
    episodes = [(e["event"], e.get("reason")) for e in events if e["event"] != "lkg_state_loaded"]
    assert episodes == [("lkg_started", None), ("lkg_ended", "trusted")]  # one line each
    assert events[-1]["attestations"] == 2 and events[-1]["qname"] == NAME
    text = telemetry.prometheus_text()
    assert "cctf_lkg_verdicts_total" in text and "cctf_lkg_names" in text
    assert any(
        line.startswith("cctf_lkg_episodes_total{")
        and 'event="ended"' in line
        and 'reason="trusted"' in line
        for line in text.splitlines()
    )


async def _outage_and_back(lab: Lab) -> None:
    c = await lab.start()
    fresh = await lab.round(R0, UP, (HONEST, HONEST))
    assert fresh.outcome is Outcome.TRUSTED and not fresh.is_lkg
    lkg1 = await lab.round(R0 + 1, OUTAGE, (None, None))
    lkg2 = await lab.round(R0 + 2, (None, HONEST, None), (None, HONEST))  # 2 of 5 still answer
    for n, v in enumerate((lkg1, lkg2), 1):
        assert v.outcome is Outcome.TRUSTED and v.is_lkg
        assert (v.answer, v.answer_digest, v.voters) == (
            fresh.answer,
            fresh.answer_digest,
            fresh.voters,
        )
        assert (v.basis_round, v.basis_ms) == (R0, fresh.issued_ms)
        assert v.round == R0 + n and v.staleness_ms == v.issued_ms - fresh.issued_ms
        assert v.issued_ms < v.expires_ms <= v.issued_ms + 30_000
    assert c.stats().lkg_names == 1 and c.stats().lkg_verdicts == 2
    back = await lab.round(R0 + 3, UP, (HONEST, HONEST))
    assert back.outcome is Outcome.TRUSTED and not back.is_lkg
    assert c.stats().lkg_names == 0
    assert c.stats().verdicts == {"trusted": 4}


async def test_never_trusted_names_get_no_lkg(lab: Lab) -> None:
    c = await lab.start()
    v = await lab.round(R0, OUTAGE, (None, None), qname=OTHER)
    assert v.outcome is Outcome.UNAVAILABLE and not v.is_lkg
    await lab.round(R0 + 1, UP, (HONEST, HONEST))  # another name trusted meanwhile
    v = await lab.round(R0 + 2, OUTAGE, (None, None), qname=OTHER)
    assert v.outcome is Outcome.UNAVAILABLE and c.stats().lkg_verdicts == 0


@pytest.mark.parametrize(
    ("east", "west", "outcome"),
    [
        ((HONEST, FORGED, None), (None, None), Outcome.UNAVAILABLE),  # another answer in it
        (("bogus", None, None), (None, None), Outcome.UNAVAILABLE),  # DNSSEC bogus in it
        ((HONEST, FORGED, FORGED), (HONEST, FORGED2), Outcome.DISPUTED),  # a disagreement
    ],
    ids=["disagreement", "bogus", "disputed"],
)
async def test_no_lkg_on_disagreement_bogus_or_disputed_and_it_forgets(
    lab: Lab, east: Sequence[Answer], west: Sequence[Answer], outcome: Outcome
) -> None:
    c = await lab.start()
    await lab.round(R0, UP, (HONEST, HONEST))
    assert (await lab.round(R0 + 1, OUTAGE, (None, None))).is_lkg  # an episode runs
    v = await lab.round(R0 + 2, east, west)
    assert v.outcome is outcome and not v.is_lkg and v.answer == ()
    after = await lab.round(R0 + 3, OUTAGE, (None, None))  # the basis is forgotten
    assert after.outcome is Outcome.UNAVAILABLE and not after.is_lkg
    assert c.stats().lkg_names == 0
    await lab.wait_stored(0)  # and deleted from the engine


async def test_the_cap_is_never_exceeded_then_fails_closed(lab: Lab) -> None:
    c = await lab.start(
        max_staleness_ms=60_000, names=[LkgNameCap(name=NAME, max_staleness_ms=4_000)]
    )
    fresh = await lab.round(R0, UP, (HONEST, HONEST))
    seen = []
    for r in range(R0 + 1, R0 + 7):
        seen.append(await lab.round(r, OUTAGE, (None, None)))
    attested = [v for v in seen if v.is_lkg]
    assert [v.round for v in attested] == [R0 + 1, R0 + 2, R0 + 3]  # issued before basis + 4 s
    assert all(v.expires_ms <= fresh.issued_ms + 4_000 for v in attested)
    assert all(v.outcome is Outcome.UNAVAILABLE for v in seen[3:])  # fail closed at the cap
    assert c.stats().lkg_names == 0
    # a client with a stricter cap than the coordinator's refuses attestations beyond its own
    assert attested[-1].expires_ms - attested[-1].basis_ms == 4_000


async def test_lkg_survives_a_coordinator_restart(lab: Lab) -> None:
    await restart_keeps_lkg(lab)


@pytest.mark.cluster
async def test_lkg_survives_a_coordinator_restart_on_a_cluster(lab3: Lab) -> None:
    info = await lab3.admin.jetstream().stream_info(kv_stream_name(LKG_BUCKET))
    assert info.config.num_replicas == 3
    await restart_keeps_lkg(lab3)


async def restart_keeps_lkg(lab: Lab) -> None:
    await lab.start()
    fresh = await lab.round(R0, UP, (HONEST, HONEST))
    ((key, _),) = await lab.wait_stored(1)
    assert key == record_key(lab.coord.principal, (NAME, "A")) == "coord-us-east.A.www.example.com"
    await lab.stop_all()  # coordinator gone; a new process starts with an empty memory
    c2 = await lab.start()
    assert c2.stats().lkg_loaded == 1
    v = await lab.round(R0 + 1, OUTAGE, (None, None))
    assert v.is_lkg and (v.basis_round, v.basis_ms, v.answer) == (R0, fresh.issued_ms, fresh.answer)


async def test_a_forged_stored_state_is_refused(lab: Lab) -> None:
    await lab.start()
    await lab.round(R0, UP, (HONEST, HONEST))
    await lab.wait_stored(1)
    await lab.stop_all()
    # someone with write access to the bucket (but not the coordinator's key) rewrites the state
    bucket = await Bucket.bind(jetstream(lab.admin), LKG_BUCKET)
    ((key, value),) = await lab.stored()
    forged = value.replace(b"192.0.2.1", b"192.0.2.9")  # same length: only the MAC can tell
    assert forged != value
    await bucket.put(key, forged)
    c2 = await lab.start()
    assert c2.stats().lkg_loaded == 0
    v = await lab.round(R0 + 1, OUTAGE, (None, None))
    assert v.outcome is Outcome.UNAVAILABLE and not v.is_lkg


async def test_trust_client_shows_lkg_and_refuses_it_by_policy(lab: Lab) -> None:
    await lab.start()
    await lab.round(R0, UP, (HONEST, HONEST))
    await lab.round(R0 + 1, OUTAGE, (None, None))
    nc = await lab.connect(lab.fabric, "client")
    accepting = TrustClient(nc, lab.trust, EAST, lab.clock)
    got = await accepting.check(NAME)
    assert got.outcome is Outcome.TRUSTED and got.is_lkg and got.basis_round == R0
    refusing = TrustClient(nc, lab.trust, EAST, lab.clock, accept_lkg=False)
    with pytest.raises(VerdictRejected) as info:
        await refusing.check(NAME)
    assert info.value.reason is Reason.LKG
    assert refusing.rejected["lkg"] == 1


async def test_disabled_lkg_keeps_unavailable(lab: Lab) -> None:
    c = await lab.start(enabled=False)
    await lab.round(R0, UP, (HONEST, HONEST))
    v = await lab.round(R0 + 1, OUTAGE, (None, None))
    assert v.outcome is Outcome.UNAVAILABLE and c.stats().lkg_verdicts == 0


@pytest.mark.cluster
async def test_the_rules_and_expiry_on_a_cluster(lab3: Lab) -> None:
    """On a 3-node cluster (R3 streams and bucket): never-trusted, bogus, the cap, and an
    attestation that is not re-issued expires at the client (fail closed)."""
    lab = lab3
    c = await lab.start(names=[LkgNameCap(name=NAME, max_staleness_ms=5_000)])
    assert not (await lab.round(R0, OUTAGE, (None, None), qname=OTHER)).is_lkg  # never trusted
    fresh = await lab.round(R0 + 1, UP, (HONEST, HONEST))
    lkg = await lab.round(R0 + 2, OUTAGE, (None, None))
    assert lkg.is_lkg and lkg.basis_ms == fresh.issued_ms
    assert lkg.expires_ms == fresh.issued_ms + 5_000  # min(now + 30 s, basis + cap)
    nc = await lab.connect(lab.fabric, "client")
    client = TrustClient(nc, lab.trust, EAST, lab.clock, max_age_ms=60_000)
    assert (await client.check(NAME)).is_lkg
    lab.clock.set(lkg.expires_ms)  # no newer round: the last attestation runs out
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.EXPIRED
    at_cap = await lab.round(R0 + 6, OUTAGE, (None, None))
    assert at_cap.outcome is Outcome.UNAVAILABLE and not at_cap.is_lkg  # fail closed at the cap
    await lab.round(R0 + 7, UP, (HONEST, HONEST))
    assert (await lab.round(R0 + 8, (None, "bogus", None), (None, None))).outcome is not (
        Outcome.TRUSTED
    )
    assert not (await lab.round(R0 + 9, OUTAGE, (None, None))).is_lkg  # forgotten after bogus
    assert c.stats().lkg_names == 0


async def test_lkg_when_no_ballot_arrives_at_all_then_fails_closed_at_the_cap(lab: Lab) -> None:
    """Votes stop altogether: not one ballot for a round. Its deadline still decides the names with
    a basis UNAVAILABLE (every voter timed out), so LKG attests them each round, until the cap,
    where it fails closed; a name never trusted gets nothing."""
    cap = 10_000
    c = await lab.start(
        max_staleness_ms=60_000, names=[LkgNameCap(name=NAME, max_staleness_ms=cap)]
    )
    fresh = await lab.round(R0, UP, (HONEST, HONEST))
    for r in range(R0 + 1, R0 + 12):  # the agents are silent: only the clock moves
        lab.clock.set((r + 1) * 1000 + 1600)  # past round r's deadline (grace 1.5 s)
        await until(
            lambda r=r: any(v.round == r and v.qname == NAME for v in lab.verdicts), f"r{r}"
        )
        got = next(v for v in lab.verdicts if v.round == r and v.qname == NAME)
        if not got.is_lkg:  # failed closed at the cap: the basis is forgotten
            break
    lab.clock.set((r + 2) * 1000 + 1600)  # one more silent round: no basis, no verdict
    await asyncio.sleep(0.5)
    seen = {v.round: v for v in lab.verdicts if v.qname == NAME and v.round > R0}
    assert max(seen) == r
    stale = {r: seen[r].issued_ms - fresh.issued_ms for r in seen}
    attested = [r for r, v in sorted(seen.items()) if v.is_lkg]
    assert attested == [r for r in sorted(seen) if stale[r] < cap] and len(attested) >= 5, stale
    for r in attested:
        v = seen[r]
        assert v.outcome is Outcome.TRUSTED and v.answer == fresh.answer
        assert (v.basis_round, v.basis_ms) == (R0, fresh.issued_ms)
        assert v.expires_ms <= fresh.issued_ms + cap
        assert v.voters == fresh.voters  # an attestation repeats its basis
    closed = [v for r, v in sorted(seen.items()) if stale[r] >= cap]
    assert closed and all(v.outcome is Outcome.UNAVAILABLE and not v.is_lkg for v in closed)
    assert not any(v.qname == OTHER for v in lab.verdicts)  # never trusted: no basis, nothing
    assert min(seen) == R0 + 1  # nothing decided for rounds older than the basis
    assert c.stats().silent_keys == len(seen) and c.stats().lkg_names == 0
