"""Coordinator tests: pure verdict building and config, then the service against real nats-server
processes (single node and a 3-node cluster), real signatures, no mocks of the bus.

Most service tests use a :class:`FakeClock`: the verifier's time window, the rounds and the deadline
task all read the injected clock, so deadlines pass exactly when a test advances it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from wirefactories import (
    START_MS,
    Identity,
    forge_envelope,
    make_ballot,
    make_identity,
    make_key,
    make_trust,
    make_vote,
    make_world,
    seal_ballot,
)

from cctf import telemetry
from cctf.bus.consumer import votes_stream_for
from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.bus_schemas.envelope import decode_envelope, verify_envelope
from cctf.bus_schemas.limits import MAX_ENVELOPE_BYTES
from cctf.bus_schemas.messages import (
    Ballot,
    MessageType,
    Outcome,
    ResolverVote,
    Verdict,
    VoterState,
    VoteStatus,
    answer_digest,
    decode_verdict,
    encode,
    vote_digest,
)
from cctf.bus_schemas.subjects import verdict_subject, vote_subject
from cctf.clock import FakeClock, SystemClock
from cctf.config import convert_config
from cctf.coordinator import tally, tallybook
from cctf.coordinator.config import (
    ConfigError,
    CoordinatorConfig,
    RuleConfig,
    load_coordinator_config,
)
from cctf.coordinator.pipeline.decide import verdict_msg_id
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.service import Coordinator, CoordinatorError
from cctf.coordinator.verdicts import SequenceClock, build_verdict, seal_verdict
from cctf.crypto.keys import save_signing_key
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

HONEST = ("93.184.216.34",)
POISON = (("6.6.6.6",), ("6.6.6.7",), ("6.6.6.8",))
EAST, WEST = "us-east", "eu-west"
ELECTORATE = (
    "agent-us-east/r1",
    "agent-us-east/r2",
    "agent-us-east/r3",
    "agent-eu-west/r1",
    "agent-eu-west/r2",
)
ROUND0 = START_MS // 1000
DEADLINE0 = (ROUND0 + 1) * 1000 + 1500  # deadline of ROUND0 with the default round and grace
NAMES = [
    [n, "A"]
    for n in (
        "example.com.",
        "down.example.",
        "partial.example.",
        "after.example.",
        "before.example.",
        "r0.example.",
        "live.example.",
    )
]


# ------------------------------------------------------------------------------------ pure parts


def _vote(
    agent: str,
    resolver: str,
    *,
    round_: int = ROUND0,
    qname: str = "example.com.",
    answer: Sequence[str] | None = HONEST,
    rcode: int = 0,
) -> ResolverVote:
    region = agent.removeprefix("agent-")
    if answer is None:
        return make_vote(
            agent, region, round_, qname=qname, resolver_id=resolver, status=VoteStatus.TIMEOUT
        )
    return make_vote(
        agent, region, round_, qname=qname, resolver_id=resolver, answer=answer, rcode=rcode
    )


def test_build_verdict_trusted_maps_states_answer_and_digests() -> None:
    rule = tally.QuorumRule(3, 5)
    book = tallybook.TallyBook(rule, ELECTORATE)
    votes = [
        _vote("agent-us-east", "r1", rcode=0),
        _vote("agent-us-east", "r2", answer=POISON[0]),
        _vote("agent-us-east", "r3", answer=None),
        _vote("agent-eu-west", "r1"),
        _vote("agent-eu-west", "r2"),
    ]
    decision = None
    for v in votes:
        _, d = book.add(v.qname, v.qtype, v.round, vote_input(v))
        decision = decision or d
    assert decision is not None
    assert decision.winner == votes[0]  # the tally kept the first vote of the winning group
    verdict = build_verdict(
        decision, ("example.com.", "A", ROUND0), rule, "coord-a", 5_000, 30_000, 42
    )
    assert verdict.outcome is Outcome.TRUSTED
    assert verdict.answer == tuple(HONEST) and verdict.rcode == 0
    assert verdict.answer_digest == answer_digest(0, list(HONEST))
    states = {r.voter: (r.state, r.answer_digest) for r in verdict.voters}
    assert states["agent-us-east/r1"] == (VoterState.AGREE, verdict.answer_digest)
    assert states["agent-us-east/r2"] == (VoterState.DISAGREE, answer_digest(0, list(POISON[0])))
    assert states["agent-us-east/r3"] == (VoterState.UNAVAILABLE, b"")
    assert sorted(verdict.vote_digests) == sorted(vote_digest(v) for v in votes)
    assert (verdict.k, verdict.n, verdict.seq, verdict.coordinator) == (3, 5, 42, "coord-a")
    assert (verdict.issued_ms, verdict.expires_ms) == (5_000, 35_000)
    assert verdict.decided_early is True

    coord = make_identity("coord-a", EAST, role=Role.COORDINATOR)
    subject, data = seal_verdict(coord.key, verdict, WEST)
    assert subject == verdict_subject(WEST, "example.com.", "A")
    assert _open_verdict(coord, subject, data, now_ms=5_001) == verdict


def test_build_verdict_disputed_has_no_answer() -> None:
    rule = tally.QuorumRule(3, 5)
    t = tally.RoundTally(rule, ELECTORATE)
    votes = [
        _vote("agent-us-east", "r1"),
        _vote("agent-us-east", "r2"),
        _vote("agent-us-east", "r3", answer=POISON[0]),
        _vote("agent-eu-west", "r1", answer=POISON[1]),
        _vote("agent-eu-west", "r2", answer=POISON[2]),
    ]
    for v in votes:
        t.add(vote_input(v))
    decision = t.decision()
    assert decision is not None
    verdict = build_verdict(decision, ("example.com.", "A", ROUND0), rule, "c", 1, 1, 1)
    assert verdict.outcome is Outcome.DISPUTED
    assert (verdict.answer, verdict.answer_digest, verdict.rcode) == ((), b"", 0)
    assert {r.state for r in verdict.voters} == {VoterState.DISAGREE}


def test_sequence_clock_strictly_increases_and_survives_restart() -> None:
    clock = FakeClock(1_000)
    seqs = SequenceClock(clock)
    issued = [seqs.next() for _ in range(5)]
    assert issued == [1_000_000 + i for i in range(5)]  # many in one millisecond: counts up
    clock.advance(1)
    assert seqs.next() == 1_001_000  # catches up with the clock
    last = seqs.last
    clock.advance(1)
    restarted = SequenceClock(clock)  # a new process, no memory of `last`
    assert restarted.next() > last
    frozen = SequenceClock(FakeClock(5), last=505_000)  # 0.5 s ahead of the clock: still +1
    assert [frozen.next(), frozen.next()] == [505_001, 505_002]
    # more than max_lead_ms (1 s) ahead: the clock stepped back, the sequence restarts from it
    # (tests/unit/test_tally_rewind.py)
    stepped = SequenceClock(FakeClock(5), last=10**9)
    assert stepped.next() == 5_000 and stepped.rewinds == 1


def _config_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "coordinator": "coord-1",
        "region": EAST,
        "key_file": "coord.key.json",
        "trust_file": "trust.json",
        "nats": {"credentials": "creds.json", "user": "coordinator"},
        "rule": {"k": 3, "n": 5},
        "electorate": list(ELECTORATE),
        "names": NAMES,
    }
    obj.update(over)
    return obj


def test_config_defaults_paths_and_credentials(tmp_path: Path) -> None:
    (tmp_path / "creds.json").write_text(
        json.dumps(
            {
                "urls": ["nats://127.0.0.1:1"],
                "users": {"coordinator": {"user": "coordinator", "password": "pw-secret"}},
            }
        )
    )
    path = tmp_path / "coord.json"
    path.write_text(json.dumps(_config_obj()))
    cfg = load_coordinator_config(path)
    assert cfg.key_file == str(tmp_path / "coord.key.json")
    assert cfg.publish_regions == (EAST,) and cfg.durable_prefix == "coord-1"
    assert (cfg.round_ms, cfg.round_grace_ms, cfg.max_round_lag) == (1000, 1500, 2)
    assert cfg.policy.minimum is SuiteId.HYBRID and cfg.verdict_ttl_ms == 30_000
    assert cfg.metrics_address is None and cfg.quorum == tally.QuorumRule(3, 5)
    resolved = cfg.nats_settings().resolve()
    assert resolved == (["nats://127.0.0.1:1"], "coordinator", "pw-secret")

    inline = _from(
        _config_obj(
            nats={"urls": ["nats://h:4222"], "user": "coordinator", "password": "s3cret"},
            verdict_regions=[EAST, WEST],
            metrics="0.0.0.0:9464",
            min_suite="ed25519",
        )
    )
    assert inline.nats_settings().resolve() == (["nats://h:4222"], "coordinator", "s3cret")
    assert "s3cret" not in repr(inline.nats_settings())
    assert inline.publish_regions == (EAST, WEST) and inline.policy.minimum is SuiteId.ED25519
    address = inline.metrics_address
    assert address is not None and (address.host, address.port) == ("0.0.0.0", 9464)


def _from(obj: dict[str, Any]) -> CoordinatorConfig:
    return convert_config(obj, CoordinatorConfig, "coordinator config")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"electorate": list(ELECTORATE[:4])}, "electorate has 4 voters"),
        ({"electorate": [*ELECTORATE[:4], ELECTORATE[0]]}, "twice"),
        ({"electorate": [*ELECTORATE[:4], "no-slash"]}, "<agent>/<resolver_id>"),
        ({"rule": {"k": 2, "n": 5}}, "2*k > n"),
        ({"rule": {"k": 3}}, "missing required field `n` - at `\\$.rule`"),
        ({"round_ms": "1000"}, "Expected `int`, got `str` - at `\\$.round_ms`"),
        ({"verdict_ttl_ms": 3_600_000}, "verdict_ttl_ms"),
        ({"min_suite": "rsa"}, "min_suite"),
        ({"coordinator": "Bad.Id"}, "invalid coordinator"),
        ({"durable": "a.b"}, "durable"),
        ({"verdict_regions": [EAST, EAST]}, "verdict_regions"),
        ({"names": []}, "names: list at least one"),
        ({"names": [["example.com.", "a"]]}, "invalid qtype"),
        ({"names": [["a..b.", "A"]]}, "empty label"),
        ({"metrics": "9464"}, "host:port"),
        ({"nats": {"user": "coordinator"}}, "nats.urls"),
        ({"nats": {"urls": ["nats://h"], "user": "coordinator"}}, "nats.password"),
        ({"typo_key": 1}, "unknown field `typo_key`"),
    ],
)
def test_config_errors_are_clear(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")) as err:
        _from(_config_obj(**change))
    assert "\n" not in str(err.value)


def test_config_missing_key_and_bad_file(tmp_path: Path) -> None:
    obj = _config_obj()
    del obj["rule"]
    with pytest.raises(ConfigError, match="missing required field `rule`"):
        _from(obj)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_coordinator_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_coordinator_config(tmp_path / "missing.json")


# -------------------------------------------------------------------------- service test harness


def _open_verdict(coord: Identity, subject: str, data: bytes, *, now_ms: int) -> Verdict:
    """Verify a verdict like a client would: signature over the subject, coordinator key, expiry."""
    checked = verify_envelope(
        data,
        subject,
        expected_type=MessageType.VERDICT,
        role=Role.COORDINATOR,
        trust=make_trust(coord),
        policy=SuitePolicy(),
        now_ms=now_ms,
    )
    assert checked.signer.principal == coord.principal
    return decode_verdict(checked.envelope.payload)


async def _until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Harness:
    fabric: NatsFabric
    clock: FakeClock
    admin: Client
    agents: dict[str, Identity]
    coord: Identity
    connect: Any
    verdicts: list[tuple[str, Verdict, Msg]] = field(default_factory=list)
    coordinators: list[Coordinator] = field(default_factory=list)
    agent_nc: dict[str, Client] = field(default_factory=dict)
    regions: tuple[str, ...] = (EAST, WEST)

    @property
    def trust(self) -> Any:
        return make_trust(*self.agents.values(), self.coord)

    async def start_coordinator(self, **kw: Any) -> Coordinator:
        nc = await self.connect(
            self.fabric,
            "coordinator",
            name="test-coordinator",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
        )
        args: dict[str, Any] = {
            "coordinator": self.coord.principal,
            "region": EAST,
            "rule": RuleConfig(k=3, n=5),
            "electorate": list(ELECTORATE),
            "names": [tuple(n) for n in NAMES],
            "verdict_regions": list(self.regions),
            "fetch_timeout_ms": 100,
            "tick_ms": 20,
            "publish_timeout_ms": 1000,
            "max_backoff_ms": 300,
            "signing": "per_verdict",  # these tests open each verdict's own signature
        }
        args.update(kw)
        config = CoordinatorConfig(**args)
        coordinator = Coordinator(
            config, nc, key=self.coord.key, trust=self.trust, clock=self.clock
        )
        await coordinator.start()
        self.coordinators.append(coordinator)
        return coordinator

    async def agent_connection(self, region: str) -> Client:
        if region not in self.agent_nc:
            self.agent_nc[region] = await self.connect(
                self.fabric,
                f"agent-{region}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.1,
            )
        return self.agent_nc[region]

    async def publish(
        self, region: str, data: bytes, *, subject: str | None = None, msg_id: str | None = None
    ) -> None:
        """Publish as the region's agent user (JetStream, acknowledged by the stream)."""
        nc = await self.agent_connection(region)
        js = nc.jetstream()
        agent = self.agents[region]
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a cluster may be electing a stream leader
            try:
                await js.publish(subject or agent.subject, data, timeout=1.0, headers=headers)
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError("could not publish a ballot")

    async def ballot(
        self,
        region: str,
        votes: dict[str, Sequence[str] | None],
        *,
        round_: int | None = None,
        qname: str = "example.com.",
    ) -> bytes:
        """Seal and publish one ballot of ``region``'s agent: resolver -> answer (None: timeout)."""
        agent = self.agents[region]
        r = round_ if round_ is not None else self.clock.now_ms() // 1000
        ballot = make_ballot(
            agent.principal,
            region,
            r,
            votes=[
                _vote(agent.principal, res, round_=r, qname=qname, answer=a)
                for res, a in votes.items()
            ],
        )
        data = seal_ballot(agent, ballot, now_ms=self.clock.now_ms())
        await self.publish(region, data)
        return data

    def verdicts_for(self, qname: str, region: str = EAST) -> list[Verdict]:
        return [v for s, v, _ in self.verdicts if v.qname == qname and s.split(".")[3] == region]

    async def wait_verdict(self, qname: str, region: str = EAST, timeout: float = 10.0) -> Verdict:
        await _until(lambda: bool(self.verdicts_for(qname, region)), timeout, f"verdict {qname}")
        return self.verdicts_for(qname, region)[0]

    async def consumer_infos(self, durable: str) -> list[Any]:
        js = self.admin.jetstream()
        out = []
        for region in self.regions:
            stream, _ = votes_stream_for(region)
            out.append(await js.consumer_info(stream, f"{durable}-{region}"))
        return out

    async def num_ack_pending(self, durable: str) -> int:
        return sum(i.num_ack_pending for i in await self.consumer_infos(durable))

    async def consumer_drained(self, durable: str, timeout: float = 10.0) -> None:
        async def drained() -> bool:
            infos = await self.consumer_infos(durable)
            return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

        deadline = time.monotonic() + timeout
        while not await drained():
            if time.monotonic() > deadline:
                raise AssertionError("consumer still has pending or unacknowledged messages")
            await asyncio.sleep(0.05)


async def _make_harness(fabric: NatsFabric, nats_connect: Any) -> Harness:
    world = make_world((EAST, WEST))
    clock = world.clock
    clock.set(START_MS + 100)
    admin = await nats_connect(fabric, "admin", max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    await ensure_streams(admin.jetstream(), [EAST, WEST], fabric.stream_replicas)
    h = Harness(fabric, clock, admin, dict(world.agents), world.coordinator, nats_connect)

    async def on_verdict(msg: Msg) -> None:
        v = _open_verdict(h.coord, msg.subject, msg.data, now_ms=h.clock.now_ms())
        h.verdicts.append((msg.subject, v, msg))

    await admin.subscribe("cctf.v1.verdict.>", cb=on_verdict)
    await admin.flush()
    return h


@pytest_asyncio.fixture
async def harness(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Harness]:
    h = await _make_harness(nats_single, nats_connect)
    try:
        yield h
    finally:
        for c in h.coordinators:
            await c.stop()


# ------------------------------------------------------------------------------- service: outcomes


async def test_trusted_despite_two_poisoned_voters_decided_early(harness: Harness) -> None:
    h = harness
    coordinator = await h.start_coordinator()
    await h.ballot(EAST, {"r1": HONEST, "r2": POISON[0], "r3": POISON[0]})
    await asyncio.sleep(0.2)
    assert h.verdicts_for("example.com.") == []  # 1 honest, 2 poisoned, 2 pending: undecided
    await h.ballot(WEST, {"r1": HONEST, "r2": HONEST})

    v = await h.wait_verdict("example.com.")
    assert h.clock.now_ms() < DEADLINE0  # decided before the deadline, by the votes alone
    assert v.outcome is Outcome.TRUSTED and v.decided_early
    assert v.answer == tuple(HONEST) and v.rcode == 0
    assert v.answer_digest == answer_digest(0, list(HONEST))
    assert (v.round, v.qtype, v.k, v.n, v.coordinator) == (ROUND0, "A", 3, 5, h.coord.principal)
    states = {r.voter: r.state for r in v.voters}
    assert states == {
        "agent-us-east/r1": VoterState.AGREE,
        "agent-us-east/r2": VoterState.DISAGREE,
        "agent-us-east/r3": VoterState.DISAGREE,
        "agent-eu-west/r1": VoterState.AGREE,
        "agent-eu-west/r2": VoterState.AGREE,
    }
    assert len(v.vote_digests) == 5
    # published, signed for each verdict region, with a per-region Nats-Msg-Id
    west = await h.wait_verdict("example.com.", WEST)
    assert west == v
    ids = sorted(m.headers["Nats-Msg-Id"] for _, _, m in h.verdicts if m.headers)
    assert ids == sorted(
        verdict_msg_id("example.com.", "A", ROUND0, r, v.coordinator) for r in (EAST, WEST)
    )
    js = h.admin.jetstream()
    stored = await js.get_last_msg(
        verdict_stream_name(EAST), verdict_subject(EAST, "example.com.", "A")
    )
    assert _open_verdict(h.coord, stored.subject, stored.data, now_ms=h.clock.now_ms()) == v
    await h.consumer_drained(h.coord.principal)
    st = coordinator.stats()
    assert st.verdicts == {"trusted": 1} and st.votes_accepted == 5 and st.ballots_accepted == 2
    assert st.held_ballots == 0 and st.open_keys == 0


async def test_three_distinct_poisoned_answers_disputed(harness: Harness) -> None:
    h = harness
    await h.start_coordinator()
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": POISON[0]})
    await h.ballot(WEST, {"r1": POISON[1], "r2": POISON[2]})
    v = await h.wait_verdict("example.com.")
    assert v.outcome is Outcome.DISPUTED and v.decided_early
    assert (v.answer, v.answer_digest) == ((), b"")
    assert {r.state for r in v.voters} == {VoterState.DISAGREE}


async def test_unavailable_at_the_deadline_and_ballots_held_until_then(harness: Harness) -> None:
    h = harness
    coordinator = await h.start_coordinator()
    await h.ballot(EAST, {"r1": None, "r2": None}, qname="down.example.")
    await h.ballot(WEST, {"r1": HONEST}, qname="partial.example.")
    await _until(lambda: coordinator.stats().votes_accepted == 3, what="votes counted")
    await asyncio.sleep(0.3)
    assert h.verdicts == []  # 2 unavailable + 3 pending could still reach quorum: wait
    # The ballots stay unacknowledged until the verdicts they feed are published.
    assert await h.num_ack_pending(h.coord.principal) == 2
    assert coordinator.stats().held_ballots == 2

    h.clock.set(DEADLINE0 - 1)
    await asyncio.sleep(0.2)
    assert h.verdicts == []
    h.clock.set(DEADLINE0)  # the deadline task reads the injected clock
    down = await h.wait_verdict("down.example.")
    partial = await h.wait_verdict("partial.example.")
    for v in (down, partial):
        assert v.outcome is Outcome.UNAVAILABLE and not v.decided_early
        assert v.answer == () and v.round == ROUND0
    assert {r.state for r in down.voters} == {VoterState.UNAVAILABLE}
    assert sum(r.state is VoterState.DISAGREE for r in partial.voters) == 1
    await h.consumer_drained(h.coord.principal)
    assert coordinator.stats().held_ballots == 0


async def test_held_ballots_are_kept_alive_beyond_ack_wait(harness: Harness) -> None:
    h = harness
    coordinator = await h.start_coordinator(ack_wait_ms=500)
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST})
    await _until(lambda: coordinator.stats().held_ballots == 1, what="a held ballot")
    await asyncio.sleep(1.6)  # three times ack_wait: refreshed with +WPI, never redelivered
    infos = await h.consumer_infos(h.coord.principal)
    assert sum(i.num_redelivered for i in infos) == 0
    assert sum(i.num_ack_pending for i in infos) == 1
    h.clock.set(DEADLINE0)
    assert (await h.wait_verdict("example.com.")).outcome is Outcome.UNAVAILABLE
    await h.consumer_drained(h.coord.principal)


async def test_unacknowledged_ballots_survive_a_coordinator_restart(harness: Harness) -> None:
    h = harness
    first = await h.start_coordinator()
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST})
    await _until(lambda: first.stats().votes_accepted == 2, what="votes counted")
    await first.stop()  # undecided: the ballot is still unacknowledged
    second = await h.start_coordinator(ack_wait_ms=1500)  # same durable consumer
    infos = await h.consumer_infos(h.coord.principal)
    assert {i.config.ack_wait for i in infos} == {1.5}  # the existing durables were updated
    await h.ballot(WEST, {"r1": HONEST})
    v = await h.wait_verdict("example.com.")
    assert v.outcome is Outcome.TRUSTED
    assert sum(r.state is VoterState.AGREE for r in v.voters) == 3
    assert second.stats().ballots_accepted == 2


async def test_a_split_ballot_is_tallied_as_one(harness: Harness) -> None:
    """An agent whose votes exceed one ballot sends several signed ballots for the same round (the
    agent's split, one Nats-Msg-Id per part): the coordinator counts them all, as one voter each."""
    h = harness
    coordinator = await h.start_coordinator()
    east = h.agents[EAST]
    now = h.clock.now_ms()
    names = ("example.com.", "after.example.", "live.example.")
    for part, qname in enumerate(names):
        votes = [_vote(east.principal, r, qname=qname) for r in ("r1", "r2", "r3")]
        ballot = make_ballot(east.principal, EAST, ROUND0, votes=votes)
        data = seal_ballot(east, ballot, now_ms=now)
        await h.publish(EAST, data, msg_id=f"cctf-ballot.{east.principal}.{ROUND0}.{part}")
    for qname in names:
        v = await h.wait_verdict(qname)
        assert v.outcome is Outcome.TRUSTED and v.round == ROUND0
    st = coordinator.stats()
    assert st.ballots_accepted == 3 and st.votes_accepted == 9 and st.rejected == {}
    await h.consumer_drained(h.coord.principal)


async def test_a_verdict_that_cannot_be_published_is_given_up_in_bounded_time(
    harness: Harness,
) -> None:
    """One verdict region has no verdict stream: every publish there fails. The verdict is retried
    until it expires, then given up: it went out on the live path (core), so it is counted as
    ``verdicts_unstored``, not dropped; its ballots are acknowledged, nothing stays held."""
    h = harness
    coordinator = await h.start_coordinator(
        verdict_regions=[EAST, "ap-south"], verdict_ttl_ms=1_500, publish_timeout_ms=200
    )
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST})
    v = await h.wait_verdict("example.com.")  # the region that works got it
    assert v.outcome is Outcome.TRUSTED
    await asyncio.sleep(0.5)
    assert coordinator.stats().held_ballots == 1  # still retrying the other region
    # counted as soon as it went out (subscribers have it), not once stored
    assert coordinator.stats().verdicts == {"trusted": 1}
    h.clock.advance(1_500)  # the verdict's expiry (on the injected clock)
    await _until(lambda: coordinator.stats().verdicts_unstored == 1, 15, "given up")
    assert coordinator.stats().verdicts_dropped == {}
    await h.consumer_drained(h.coord.principal)
    st = coordinator.stats()
    assert st.held_ballots == 0 and st.open_keys == 0 and st.publish_retries >= 1
    assert st.acked == 1 and st.verdicts == {"trusted": 1}  # counted once


async def test_start_fails_clearly_without_the_votes_stream(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    world = make_world((EAST, WEST))
    nc = await nats_connect(nats_single, "coordinator")
    config = CoordinatorConfig(
        coordinator="coord-x",
        region=EAST,
        rule=RuleConfig(k=3, n=5),
        electorate=list(ELECTORATE),
        names=[("example.com.", "A")],
    )
    coordinator = Coordinator(
        config, nc, key=world.coordinator.key, trust=world.trust, clock=world.clock
    )
    with pytest.raises(CoordinatorError, match="CCTF_VOTES"):
        await coordinator.start()
    await coordinator.stop()


# ---------------------------------------------------------------------------- service: rejections


async def test_rejected_messages_are_acked_counted_logged_and_harmless(harness: Harness) -> None:
    h = harness
    ed_agent = make_identity("agent-ed", EAST, suite=SuiteId.ED25519)
    h.agents["ed"] = ed_agent
    buf = io.StringIO()
    telemetry.configure_logging(json=True, level="info", stream=buf)
    try:
        coordinator = await h.start_coordinator()
        east = h.agents[EAST]
        now = h.clock.now_ms()

        def east_ballot(**kw: Any) -> Ballot:
            return make_ballot(east.principal, EAST, ROUND0, **kw)

        valid = seal_ballot(east, east_ballot(), now_ms=now)
        # signed by an attacker's key but claiming the east agent's key id
        forged = forge_envelope(
            make_key(SuiteId.HYBRID, "attacker"),
            east.subject,
            encode(east_ballot()),
            now_ms=now,
            kid=east.kid,
            nonce=os.urandom(16),
        )
        tampered = bytearray(seal_ballot(east, east_ballot(), now_ms=now))
        tampered[tampered.index(HONEST[0].encode()) + 1] ^= 0x01  # one byte of an answer
        old_round = seal_ballot(east, make_ballot(east.principal, EAST, ROUND0 - 5), now_ms=now)
        moved = seal_ballot(east, east_ballot(), now_ms=now)
        ed_only = seal_ballot(
            ed_agent, make_ballot(ed_agent.principal, EAST, ROUND0, resolvers=("r1",)), now_ms=now
        )
        wrong_region = seal_ballot(
            east,
            make_ballot(
                east.principal, WEST, ROUND0, votes=[make_vote(east.principal, WEST, ROUND0)]
            ),
            now_ms=now,
        )
        await h.publish(EAST, ed_only, subject=ed_agent.subject)  # ed25519-only: downgrade
        for data in (
            forged,
            bytes(tampered),
            old_round,
            os.urandom(MAX_ENVELOPE_BYTES + 1_000),  # oversize (the stream still takes it)
            b"\x00garbage\xff" * 10,  # malformed
            wrong_region,
        ):
            await h.publish(EAST, data)
        await h.publish(EAST, moved, subject=vote_subject(EAST, "agent-evil"))  # another subject
        await h.publish(EAST, valid)
        await h.publish(EAST, valid)  # the same message again: a duplicate, not a replay
        # a different message reusing the valid ballot's nonce: a replay
        env = decode_envelope(valid)
        await h.publish(
            EAST,
            forge_envelope(
                east.key,
                east.subject,
                encode(east_ballot(resolvers=("r1",))),
                now_ms=now,
                kid=east.kid,
                nonce=env.nonce,
            ),
        )

        await h.consumer_drained(h.coord.principal)
        # drained: every durable copy is settled; a live copy (core NATS) may still be on its way
        await _until(
            lambda: sum(coordinator.stats().duplicates.values()) >= 12, what="the live copies"
        )
        st = coordinator.stats()
        assert st.rejected == {
            "signature": 3,
            "replay": 1,
            "round": 1,
            "suite": 1,
            "oversize": 1,
            "malformed": 1,
            "region_mismatch": 1,
        }, st.rejected
        assert st.ballots_accepted == 1 and st.votes_accepted == 3
        # 11 stored messages, each seen twice (its live and its durable copy), 10 distinct ones:
        # every second copy and the valid ballot's twin are duplicates, never counted again
        assert sum(st.duplicates.values()) == 12, st.duplicates
        await asyncio.sleep(0.2)
        # 3 honest votes from the one valid ballot: TRUSTED; nothing from the rejected ones
        assert [v.outcome for v in h.verdicts_for("example.com.")] == [Outcome.TRUSTED]

        # still working: a fresh name decided by later valid ballots
        await h.ballot(WEST, {"r1": POISON[0], "r2": POISON[0]}, qname="after.example.")
        await h.ballot(EAST, {"r1": POISON[0]}, qname="after.example.")
        v = await h.wait_verdict("after.example.")
        assert v.outcome is Outcome.TRUSTED and v.answer == tuple(POISON[0])
        assert len(h.verdicts) == 4  # two keys, two regions each

        lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
        rejected = [e for e in lines if e.get("event") == "vote_rejected"]
        assert {e["reason"] for e in rejected} == set(st.rejected)
        assert all(
            e["subject"].startswith("cctf.v1.vote.us-east.") and e["detail"] for e in rejected
        )
        assert all(e["level"] == "warning" for e in rejected)
        password = h.fabric.users["coordinator"].password
        assert password not in buf.getvalue()
    finally:
        telemetry.configure_logging()

    text = telemetry.prometheus_text()
    for reason in (
        "signature",
        "replay",
        "round",
        "suite",
        "oversize",
        "malformed",
        "region_mismatch",
    ):
        assert f'reason="{reason}"' in text
    assert "cctf_messages_rejected_total{" in text
    assert "cctf_votes_accepted_total" in text
    assert "cctf_verdicts_total{" in text and 'outcome="trusted"' in text
    assert "cctf_decision_latency_milliseconds_bucket" in text
    depths = {
        line.split('queue="')[1].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("cctf_coordinator_queue_depth{")
    }  # the work waiting now, by queue (every coordinator of the process summed)
    assert set(depths) == set(coordinator.queue_depths()) and all(v >= 0 for v in depths.values())


async def test_equivocation_is_recorded_and_first_vote_stands(harness: Harness) -> None:
    h = harness
    coordinator = await h.start_coordinator()
    await h.ballot(EAST, {"r1": HONEST})
    await h.ballot(EAST, {"r1": POISON[0], "r2": HONEST})  # r1 changes its answer
    await _until(lambda: coordinator.stats().equivocations == 1, what="equivocation")
    await h.ballot(WEST, {"r1": HONEST})
    v = await h.wait_verdict("example.com.")
    assert v.outcome is Outcome.TRUSTED and v.answer == tuple(HONEST)
    states = {r.voter: r.state for r in v.voters}
    assert states["agent-us-east/r1"] is VoterState.AGREE  # the first vote stands
    assert coordinator.stats().votes_accepted == 3
    assert "cctf_equivocations_total" in telemetry.prometheus_text()


# ---------------------------------------------------------------------------- service: resilience


async def test_survives_a_nats_server_restart(harness: Harness) -> None:
    h = harness
    coordinator = await h.start_coordinator()
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname="before.example.")
    assert (await h.wait_verdict("before.example.")).outcome is Outcome.TRUSTED

    await asyncio.to_thread(h.fabric.servers[0].restart)
    h.clock.advance(1000)  # next round
    await h.ballot(EAST, {"r1": HONEST, "r2": HONEST}, qname="after.example.")
    await h.ballot(WEST, {"r1": HONEST}, qname="after.example.")
    v = await h.wait_verdict("after.example.", timeout=20)
    assert v.outcome is Outcome.TRUSTED and v.round == ROUND0 + 1
    assert coordinator.failed is None
    assert coordinator._conn.stats["reconnects"] >= 1  # it really lost its server
    await h.consumer_drained(h.coord.principal)


@pytest.mark.cluster
async def test_cluster_node_killed_mid_run_still_yields_verdicts(
    nats_cluster: NatsFabric, nats_connect: Any
) -> None:
    h = await _make_harness(nats_cluster, nats_connect)
    try:
        coordinator = await h.start_coordinator()
        await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname="r0.example.")
        assert (await h.wait_verdict("r0.example.", timeout=20)).outcome is Outcome.TRUSTED

        nc = coordinator._conn
        victim = next(s for s in nats_cluster.servers if s.client_url == nc.connected_url.geturl())

        def trusted_rounds() -> set[int]:
            return {
                v.round for v in h.verdicts_for("live.example.") if v.outcome is Outcome.TRUSTED
            }

        # Ballots keep coming, one round per 250 ms of real time; the coordinator's node is killed
        # after the second round. Rounds whose ballots were in flight during the fail-over may be
        # lost (stale by the time JetStream recovers), later rounds must be decided again.
        killer: asyncio.Task[Any] | None = None
        kill_round = ROUND0 + 2
        deadline = time.monotonic() + 45
        while len({r for r in trusted_rounds() if r > kill_round}) < 3:
            assert time.monotonic() < deadline, f"no verdicts after the kill: {trusted_rounds()}"
            h.clock.advance(1000)
            await h.ballot(EAST, {"r1": HONEST, "r2": HONEST}, qname="live.example.")
            await h.ballot(WEST, {"r1": HONEST, "r2": POISON[0]}, qname="live.example.")
            if h.clock.now_ms() // 1000 == kill_round:
                killer = asyncio.create_task(asyncio.to_thread(victim.kill))
            await asyncio.sleep(0.25)
        assert killer is not None
        await killer
        outcomes = {v.outcome for v in h.verdicts_for("live.example.")}
        assert Outcome.DISPUTED not in outcomes
        assert coordinator.failed is None
        assert not victim.running
        assert coordinator._conn.stats["reconnects"] >= 1  # the coordinator lost its node
    finally:
        for c in h.coordinators:
            await c.stop()


# ------------------------------------------------------------------------------------------- CLI


def test_cli_runs_serves_metrics_and_stops_on_sigterm(
    nats_single: NatsFabric, tmp_path: Path
) -> None:
    world = make_world((EAST, WEST))
    coord = world.coordinator
    save_signing_key(tmp_path / "coord.key.json", coord.key)
    make_trust(*world.agents.values()).save(tmp_path / "trust.json")
    nats_single.write_credentials(tmp_path / "creds.json")

    async def setup() -> None:
        from cctf.bus.connect import connect

        nc = await connect(
            nats_single.urls, nats_single.users["admin"], name="setup", for_tests=True
        )
        await ensure_streams(nc.jetstream(), [EAST, WEST], 1)
        await nc.close()

    asyncio.run(setup())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config_obj(
        coordinator=coord.principal,
        metrics=f"127.0.0.1:{port}",
        round_ms=1000,
        round_grace_ms=500,
        signing="per_verdict",  # the verdicts are opened with their own signature below
    )
    (tmp_path / "coord.json").write_text(json.dumps(cfg))
    log_fh = (tmp_path / "coordinator.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cctf",
            "coordinator",
            "run",
            "--config",
            str(tmp_path / "coord.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_fh,
        cwd=tmp_path,
    )
    try:

        async def drive() -> Verdict:
            from cctf.bus.connect import connect

            got: list[Verdict] = []
            admin = await connect(
                nats_single.urls, nats_single.users["admin"], name="t", for_tests=True
            )
            agent_nc = await connect(
                nats_single.urls, nats_single.users[f"agent-{EAST}"], name="a", for_tests=True
            )

            async def cb(msg: Msg) -> None:
                got.append(
                    _open_verdict(coord, msg.subject, msg.data, now_ms=SystemClock().now_ms())
                )

            await admin.subscribe("cctf.v1.verdict.>", cb=cb)
            js = admin.jetstream()
            await _wait_consumer(js, coord.principal)
            east = world.agents[EAST]
            clock = SystemClock()
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                now = clock.now_ms()
                ballot = make_ballot(east.principal, EAST, now // 1000)
                data = seal_ballot(east, ballot, now_ms=now)
                await agent_nc.jetstream().publish(east.subject, data, timeout=2)
                await asyncio.sleep(0.3)
            await admin.close()
            await agent_nc.close()
            assert got, "no verdict from the CLI coordinator"
            return got[0]

        verdict = asyncio.run(drive())
        assert verdict.outcome is Outcome.TRUSTED and verdict.coordinator == coord.principal
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "cctf_votes_accepted_total" in text
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        log = (tmp_path / "coordinator.log").read_text()
        assert proc.returncode == 0, log[-2000:]
        assert '"event": "coordinator_started"' in log and '"event": "coordinator_stopped"' in log
        assert nats_single.users["coordinator"].password not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_fh.close()


def test_cli_reports_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "coord.json"
    path.write_text(json.dumps(_config_obj(rule={"k": 1, "n": 5})))
    proc = subprocess.run(
        [sys.executable, "-m", "cctf", "coordinator", "run", "--config", str(path)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"2*k > n" in proc.stderr


async def _wait_consumer(js: Any, durable: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(Exception):
            for region in (EAST, WEST):
                await js.consumer_info(votes_stream_for(region)[0], f"{durable}-{region}")
            return
        if time.monotonic() > deadline:
            raise AssertionError("the CLI coordinator never created its consumer")
        await asyncio.sleep(0.1)
