"""The subscriber SDK: pure verdict verification, and TrustClient against a real nats-server."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from wirefactories import (
    LIFETIME_MS,
    ROUND_MS,
    World,
    flip_byte,
    forge_envelope,
    make_identity,
    make_verdict,
    make_world,
    seal_message,
    seal_verdict,
)

from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import Outcome, Verdict, VoterRecord, VoterState, encode
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.sdk import (
    FetchError,
    NoVerdict,
    TrustClient,
    VerdictRejected,
    verdict_line,
    verdict_to_json,
)
from cctf.client.verify import VerdictVerifier
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

REGION = "us-east"
NAME = "example.com."
OTHER = "other.example."


def coordinator_of(world: World) -> str:
    return world.coordinator.principal


def verdict(world: World, qname: str = NAME, seq: int = 1, **kw: Any) -> Verdict:
    """A valid TRUSTED verdict by the world's coordinator, issued now."""
    now = world.clock.now_ms()
    kw.setdefault("issued_ms", now)
    kw.setdefault("expires_ms", now + LIFETIME_MS)
    return make_verdict(
        qname, round=now // ROUND_MS + seq, coordinator=coordinator_of(world), seq=seq, **kw
    )


def sealed(world: World, v: Verdict, *, region: str = REGION, **kw: Any) -> tuple[str, bytes]:
    subject = verdict_subject(region, v.qname, v.qtype)
    return subject, seal_verdict(
        world.coordinator, v, now_ms=world.clock.now_ms(), subject=subject, **kw
    )


def verifier(world: World, **kw: Any) -> VerdictVerifier:
    return VerdictVerifier(world.trust, world.clock, region=REGION, **kw)


def reason_of(fn: Callable[[], object]) -> Reason:
    with pytest.raises(Rejected) as info:
        fn()
    return info.value.reason


# ---------------------------------------------------------------------------------- pure: verifier


def test_verify_returns_the_verdict() -> None:
    world = make_world()
    v = verdict(world)
    subject, data = sealed(world, v)
    checked = verifier(world).check(data, subject)
    assert checked.verdict == v
    assert checked.kid == world.coordinator.kid
    assert checked.key == (coordinator_of(world), NAME, "A")
    assert not checked.duplicate


def test_exact_duplicate_is_accepted_a_different_message_with_the_same_seq_is_a_rollback() -> None:
    world = make_world()
    vf = verifier(world)
    v = verdict(world, seq=7)
    subject, data = sealed(world, v)
    assert vf.verify(data, subject) == v
    again = vf.check(data, subject)
    assert again.duplicate and again.verdict == v
    # same verdict, new nonce: different bytes, same seq
    _, resealed = sealed(world, v)
    assert reason_of(lambda: vf.verify(resealed, subject)) is Reason.ROLLBACK
    # different content, same seq
    _, changed = sealed(world, verdict(world, seq=7, outcome=Outcome.DISPUTED))
    assert reason_of(lambda: vf.verify(changed, subject)) is Reason.ROLLBACK
    assert vf.last_seq(coordinator_of(world), "EXAMPLE.com", "A") == 7


def test_rollback_lower_seq_and_keys_are_independent() -> None:
    world = make_world()
    vf = verifier(world)
    s5, d5 = sealed(world, verdict(world, seq=5))
    s4, d4 = sealed(world, verdict(world, seq=4))
    vf.verify(d5, s5)
    assert reason_of(lambda: vf.verify(d4, s4)) is Reason.ROLLBACK
    # another name and another qtype have their own sequence
    so, do = sealed(world, verdict(world, OTHER, seq=1))
    assert vf.verify(do, so).seq == 1
    sa, da = sealed(world, verdict(world, seq=1, qtype="AAAA"))
    assert vf.verify(da, sa).seq == 1
    s6, d6 = sealed(world, verdict(world, seq=6))
    assert vf.verify(d6, s6).seq == 6


def test_rejected_message_leaves_no_state() -> None:
    world = make_world()
    vf = verifier(world)
    # seq 10 but the verdict has expired: rejected, so seq 5 afterwards is still fine
    s10, d10 = sealed(
        world,
        verdict(world, seq=10, issued_ms=world.clock.now_ms() - 1, expires_ms=world.clock.now_ms()),
    )
    assert reason_of(lambda: vf.verify(d10, s10)) is Reason.EXPIRED
    s5, d5 = sealed(world, verdict(world, seq=5))
    assert vf.verify(d5, s5).seq == 5
    assert len(vf) == 1


def test_state_is_bounded_lru() -> None:
    world = make_world(suite=SuiteId.ED25519)
    vf = VerdictVerifier(world.trust, world.clock, SuitePolicy(SuiteId.ED25519), REGION, capacity=3)
    names = [f"n{i}.example." for i in range(5)]
    for name in names:
        s, d = sealed(world, verdict(world, name, seq=1))
        vf.verify(d, s)
    assert len(vf) == 3
    assert vf.last_seq(coordinator_of(world), names[0], "A") is None
    assert vf.last_seq(coordinator_of(world), names[4], "A") == 1


def _bad_messages(world: World) -> dict[str, tuple[str, bytes, Reason]]:
    """Bad verdict messages (subject, bytes, expected reason), each for ``NAME``/A in REGION."""
    now = world.clock.now_ms()
    good = verdict(world, seq=100)
    subject, data = sealed(world, good)
    stranger = make_identity("coord-x", REGION, role=Role.COORDINATOR)  # not in trust
    agent = world.agent(REGION)  # trusted, but as an agent
    ed_coord = make_identity(
        coordinator_of(world), REGION, role=Role.COORDINATOR, suite=SuiteId.ED25519
    )
    world.extra.append(ed_coord)  # a trusted coordinator key, but below the hybrid policy
    other_subject, other_data = sealed(world, verdict(world, OTHER, seq=100))

    def by(key: Any, v: Verdict = good, subj: str = subject, **kw: Any) -> bytes:
        return seal_message(key, subj, v, now_ms=now, **kw)

    return {
        "tampered": (subject, flip_byte(data, len(data) - 5), Reason.SIGNATURE),
        "unknown_key": (subject, by(stranger.key), Reason.UNKNOWN_KEY),
        "agent_key": (subject, by(agent.key), Reason.UNKNOWN_KEY),
        "ed25519_only": (subject, by(ed_coord.key), Reason.SUITE),
        "expired_verdict": (
            subject,
            by(
                world.coordinator.key,
                verdict(world, seq=100, issued_ms=now - 1_000, expires_ms=now),
            ),
            Reason.EXPIRED,
        ),
        "expired_envelope": (
            subject,
            forge_envelope(
                world.coordinator.key,
                subject,
                encode(good),
                now_ms=now,
                msg_type="verdict",
                iat=now - 2_000,
                exp=now,
            ),
            Reason.EXPIRED,
        ),
        "moved_subject": (subject, other_data, Reason.SIGNATURE),
        "garbage": (subject, b"\x93garbage\x00\xff", Reason.MALFORMED),
        "empty": (subject, b"", Reason.MALFORMED),
        "payload_for_other_name": (
            subject,
            by(world.coordinator.key, verdict(world, OTHER, seq=100)),
            Reason.SUBJECT,
        ),
        "other_coordinator_field": (
            subject,
            by(world.coordinator.key, msgspec.structs.replace(good, coordinator="coord-z")),
            Reason.PRINCIPAL,
        ),
        "other_region": (
            verdict_subject("eu-west", NAME, "A"),
            by(world.coordinator.key, good, verdict_subject("eu-west", NAME, "A")),
            Reason.REGION,
        ),
        "ballot_type": (
            subject,
            forge_envelope(
                world.coordinator.key, subject, encode(good), now_ms=now, msg_type="ballot"
            ),
            Reason.TYPE,
        ),
        "trusted_wrong_digest": (
            subject,
            by(world.coordinator.key, msgspec.structs.replace(good, answer=["10.0.0.1"])),
            Reason.MALFORMED,
        ),
        "voters_not_n": (
            subject,
            by(world.coordinator.key, msgspec.structs.replace(good, n=2, k=2)),
            Reason.MALFORMED,
        ),
        "k_above_n": (
            subject,
            by(world.coordinator.key, msgspec.structs.replace(good, k=4)),
            Reason.MALFORMED,
        ),
        "no_majority_quorum": (
            subject,
            by(world.coordinator.key, msgspec.structs.replace(good, k=1)),
            Reason.MALFORMED,
        ),
        "too_few_agree": (
            subject,
            by(
                world.coordinator.key,
                msgspec.structs.replace(
                    good,
                    voters=[
                        good.voters[0],
                        VoterRecord("agent-a/r2", VoterState.DISAGREE, b"\x01" * 32),
                        VoterRecord("agent-a/r3", VoterState.UNAVAILABLE, b""),
                    ],
                ),
            ),
            Reason.MALFORMED,
        ),
        "disputed_with_answer": (
            subject,
            by(
                world.coordinator.key,
                msgspec.structs.replace(good, outcome=Outcome.DISPUTED),
            ),
            Reason.MALFORMED,
        ),
        "other_subject_garbage": (other_subject, b"\x00" * 40, Reason.MALFORMED),
    }


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "unknown_key",
        "agent_key",
        "ed25519_only",
        "expired_verdict",
        "expired_envelope",
        "moved_subject",
        "garbage",
        "empty",
        "payload_for_other_name",
        "other_coordinator_field",
        "other_region",
        "ballot_type",
        "trusted_wrong_digest",
        "voters_not_n",
        "k_above_n",
        "no_majority_quorum",
        "too_few_agree",
        "disputed_with_answer",
        "other_subject_garbage",
    ],
)
def test_verifier_rejects(case: str) -> None:
    world = make_world()
    subject, data, expected = _bad_messages(world)[case]
    vf = verifier(world)
    assert reason_of(lambda: vf.verify(data, subject)) is expected
    assert len(vf) == 0


def test_ed25519_accepted_only_when_the_policy_allows_it() -> None:
    world = make_world(suite=SuiteId.ED25519)
    subject, data = sealed(world, verdict(world))
    assert reason_of(lambda: verifier(world).verify(data, subject)) is Reason.SUITE
    relaxed = VerdictVerifier(world.trust, world.clock, SuitePolicy(SuiteId.ED25519))
    assert relaxed.verify(data, subject).seq == 1


def test_verdict_expiry_is_checked_apart_from_the_envelope() -> None:
    world = make_world()
    vf = verifier(world)
    v = verdict(world, expires_ms=world.clock.now_ms() + 1_000)  # envelope lives 30 s
    subject, data = sealed(world, v)
    assert vf.verify(data, subject) == v
    world.clock.advance(1_000)
    with pytest.raises(Rejected) as info:
        vf.verify(data, subject)
    assert info.value.reason is Reason.EXPIRED and "verdict expired" in info.value.detail


# ------------------------------------------------------------------------- pure: hypothesis properties

_ED_WORLD = make_world(suite=SuiteId.ED25519)
_ED_POLICY = SuitePolicy(SuiteId.ED25519)
_PROPS = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@_PROPS
@given(
    messages=st.lists(
        st.tuples(st.sampled_from([NAME, OTHER]), st.integers(0, 6), st.integers(0, 1)),
        min_size=1,
        max_size=14,
    ),
    data=st.data(),
)
def test_accepted_seqs_strictly_increase_for_any_arrival_order(
    messages: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """Distinct messages (name, seq, variant) arriving in any order, some repeated: a message is
    accepted iff its seq is above every accepted one for its name, or it is exactly the last
    accepted message again; so the accepted seqs per name strictly increase."""
    world = _ED_WORLD
    distinct = {
        (name, seq, variant): sealed(
            world,
            verdict(world, name, seq=seq, outcome=Outcome.TRUSTED if variant else Outcome.DISPUTED),
        )
        for name, seq, variant in set(messages)
    }
    order = data.draw(st.permutations(messages + messages[: len(messages) // 2]))
    vf = VerdictVerifier(world.trust, world.clock, _ED_POLICY, REGION)
    last: dict[str, tuple[int, bytes]] = {}
    accepted: dict[str, list[int]] = {NAME: [], OTHER: []}
    for item in order:
        name, seq = item[0], item[1]
        subject, raw = distinct[item]
        prev = last.get(name)
        expect_ok = prev is None or seq > prev[0] or (seq, raw) == prev
        try:
            checked = vf.check(raw, subject)
        except Rejected as exc:
            assert not expect_ok, f"{item} wrongly rejected: {exc}"
            assert exc.reason is Reason.ROLLBACK
            continue
        assert expect_ok, f"{item} accepted after {prev}"
        assert checked.duplicate == (prev == (seq, raw))
        if not checked.duplicate:
            accepted[name].append(seq)
            last[name] = (seq, raw)
    for seqs in accepted.values():
        assert all(a < b for a, b in itertools.pairwise(seqs))


_MUTATION_BASE = sealed(_ED_WORLD, verdict(_ED_WORLD, seq=3))


@_PROPS
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(_MUTATION_BASE[1]) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=3,
    )
)
def test_random_byte_mutations_are_never_accepted(flips: list[tuple[int, int]]) -> None:
    subject, data = _MUTATION_BASE
    for position, mask in flips:
        data = flip_byte(data, position, mask)
    if data == _MUTATION_BASE[1]:  # flips that cancel out
        return
    vf = VerdictVerifier(_ED_WORLD.trust, _ED_WORLD.clock, _ED_POLICY, REGION)
    with pytest.raises(Rejected):
        vf.verify(data, subject)


@_PROPS
@given(junk=st.binary(max_size=600))
def test_arbitrary_bytes_are_rejected_not_crashing(junk: bytes) -> None:
    subject = verdict_subject(REGION, NAME, "A")
    vf = VerdictVerifier(_ED_WORLD.trust, _ED_WORLD.clock, _ED_POLICY, REGION)
    with pytest.raises(Rejected):
        vf.verify(junk, subject)


# --------------------------------------------------------------------------------- presentation


def test_verdict_to_json_and_line() -> None:
    world = make_world()
    v = make_verdict(
        NAME,
        round=42,
        k=2,
        n=3,
        voters=[
            VoterRecord("agent-a/r1", VoterState.AGREE, b""),
            VoterRecord("agent-a/r2", VoterState.AGREE, b""),
            VoterRecord("agent-b/r1", VoterState.UNAVAILABLE, b""),
        ],
        coordinator=coordinator_of(world),
        seq=9,
    )
    out = verdict_to_json(v)
    assert out == {
        "name": NAME,
        "qtype": "A",
        "round": 42,
        "outcome": "trusted",
        "rcode": 0,
        "answer": ["93.184.216.34"],
        "agree": ["agent-a/r1", "agent-a/r2"],
        "disagree": [],
        "unavailable": ["agent-b/r1"],
        "seq": 9,
        "coordinator": coordinator_of(world),
        "issued_ms": v.issued_ms,
        "expires_ms": v.expires_ms,
        "k": 2,
        "n": 3,
    }
    json.dumps(out)
    assert verdict_line(v) == "example.com. A round=42 TRUSTED 93.184.216.34 agree=2/3"
    nx = make_verdict(NAME, round=1, rcode=3, answer=[])
    assert verdict_line(nx) == "example.com. A round=1 TRUSTED rcode=NXDOMAIN agree=3/3"
    disputed = make_verdict(NAME, round=1, outcome=Outcome.DISPUTED)
    assert verdict_line(disputed) == "example.com. A round=1 DISPUTED agree=0/3"


# ------------------------------------------------------------------------- NATS: TrustClient


class Bus:
    """A fabric with the verdict streams, a coordinator publisher and a client connection."""

    def __init__(self, fabric: NatsFabric, admin: Client, coord: Client, client_nc: Client):
        self.fabric = fabric
        self.admin = admin
        self.coord = coord
        self.client_nc = client_nc

    async def publish(self, subject: str, data: bytes) -> None:
        await self.coord.jetstream().publish(subject, data)

    async def consumer_count(self, region: str = REGION) -> int:
        info = await self.admin.jetstream().stream_info(verdict_stream_name(region))
        return int(info.state.consumer_count)


@pytest.fixture
async def bus(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Bus]:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [REGION, "eu-west"], 1)
    coord = await nats_connect(nats_single, "coordinator")
    client_nc = await nats_connect(nats_single, "client")
    yield Bus(nats_single, admin, coord, client_nc)


def trust_client(bus: Bus, world: World, **kw: Any) -> TrustClient:
    return TrustClient(bus.client_nc, world.trust, REGION, clock=world.clock, **kw)


async def take(it: AsyncIterator[Verdict], n: int, timeout: float = 10.0) -> list[Verdict]:
    async def run() -> list[Verdict]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(run(), timeout)


async def test_check_returns_the_latest_verified_verdict(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    for seq in (1, 2, 3):
        await bus.publish(*sealed(world, verdict(world, seq=seq)))
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.DISPUTED)))
    latest = await client.check("EXAMPLE.com")
    assert latest.seq == 3 and latest.outcome is Outcome.TRUSTED
    assert (await client.check(NAME)).seq == 3  # the same message again: a harmless duplicate
    assert (await client.check(OTHER)).outcome is Outcome.DISPUTED
    with pytest.raises(NoVerdict):
        await client.check(NAME, "AAAA")
    with pytest.raises(NoVerdict):
        await client.check("missing.example.")
    assert client.rejected == Counter()
    assert client.accepted == 3


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "unknown_key",
        "agent_key",
        "ed25519_only",
        "expired_verdict",
        "moved_subject",
        "garbage",
        "empty",
        "payload_for_other_name",
    ],
)
async def test_check_fails_closed(bus: Bus, case: str) -> None:
    world = make_world()
    subject, data, expected = _bad_messages(world)[case]
    await bus.publish(subject, data)
    client = trust_client(bus, world)
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is expected
    assert client.rejected == Counter({expected.value: 1})


async def test_check_fails_closed_once_the_verdict_expires(bus: Bus) -> None:
    world = make_world()
    v = verdict(world, seq=1)
    await bus.publish(*sealed(world, v))
    client = trust_client(bus, world)
    assert (await client.check(NAME)) == v
    assert (await client.check(NAME, cached=True)) == v
    world.clock.set(v.expires_ms)
    for cached in (False, True):
        with pytest.raises(VerdictRejected) as info:
            await client.check(NAME, cached=cached)
        assert info.value.reason is Reason.EXPIRED


async def test_check_rollback(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    now = world.clock.now_ms()
    await bus.publish(*sealed(world, verdict(world, seq=5, expires_ms=now + 2_000)))
    assert (await client.check(NAME)).seq == 5
    # an older verdict becomes the stream's latest: never handed out; the newer known one is
    await bus.publish(*sealed(world, verdict(world, seq=4)))
    assert (await client.check(NAME)).seq == 5
    assert client.rejected == Counter({"rollback": 1})
    # once the newer one has expired there is nothing valid to fall back on: fail closed
    world.clock.advance(2_000)
    await bus.publish(*sealed(world, verdict(world, seq=3)))
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.ROLLBACK
    assert client.rejected == Counter({"rollback": 2})
    await bus.publish(*sealed(world, verdict(world, seq=6)))
    assert (await client.check(NAME)).seq == 6


async def test_verdicts_yields_in_order_and_cleans_up(bus: Bus) -> None:
    world = make_world()
    sent = [verdict(world, NAME, seq=1), verdict(world, OTHER, seq=1), verdict(world, seq=2)]
    for v in sent:
        await bus.publish(*sealed(world, v))
    client = trust_client(bus, world)
    it = client.verdicts(deliver="all")
    assert await take(it, 3) == sent
    assert await bus.consumer_count() == 1
    await it.aclose()
    assert await bus.consumer_count() == 0

    fresh = trust_client(bus, world)  # no state: the first message would be accepted
    latest = fresh.verdicts(deliver="last_per_subject")
    assert await take(latest, 2) == [sent[1], sent[2]]  # one per subject, stream order
    # live: a new verdict arrives on the open iterator
    pending = asyncio.ensure_future(anext(latest))
    await asyncio.sleep(0.2)
    newer = verdict(world, OTHER, seq=2)
    await bus.publish(*sealed(world, newer))
    assert await asyncio.wait_for(pending, 10) == newer
    await latest.aclose()
    assert await bus.consumer_count() == 0
    # the iterators fed the cache
    assert fresh.cached(OTHER) == newer
    assert client.cached(OTHER) == sent[1]


async def test_deliver_new_only_sees_later_verdicts(bus: Bus) -> None:
    world = make_world()
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    client = trust_client(bus, world)
    async with await client.stream(deliver="new") as vs:
        later = verdict(world, seq=2)
        await bus.publish(*sealed(world, later))
        assert await take(vs, 1) == [later]


async def test_cancelling_the_consumer_task_removes_the_subscription(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    got: list[Verdict] = []

    async def consume() -> None:
        async for v in client.verdicts(deliver="all"):
            got.append(v)

    task = asyncio.create_task(consume())
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.05)
    assert [v.seq for v in got] == [1]
    assert await bus.consumer_count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await bus.consumer_count() == 0


async def test_verdicts_skip_count_and_keep_going(bus: Bus) -> None:
    world = make_world()
    bad = _bad_messages(world)
    first = verdict(world, seq=100)
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(*sealed(world, first))
    kinds = [
        "tampered",
        "unknown_key",
        "agent_key",
        "ed25519_only",
        "expired_verdict",
        "moved_subject",
        "garbage",
        "payload_for_other_name",
        "other_subject_garbage",
    ]
    for kind in kinds:
        subject, data, _ = bad[kind]
        await bus.publish(subject, data)
    await bus.publish(*sealed(world, verdict(world, seq=99)))  # rollback after 100
    last = verdict(world, seq=101)
    await bus.publish(*sealed(world, last))

    client = trust_client(bus, world)
    it = client.verdicts(deliver="all")
    got = await take(it, 3)
    await it.aclose()
    assert [v.seq for v in got] == [1, 100, 101]
    assert got[-1] == last
    assert client.rejected == Counter(
        {
            "signature": 2,  # tampered, moved
            "unknown_key": 2,  # unknown coordinator key, agent key
            "suite": 1,
            "expired": 1,
            "malformed": 2,  # garbage on two subjects
            "subject": 1,
            "rollback": 1,
        }
    )


async def test_other_region_stream_uses_its_own_state(bus: Bus) -> None:
    world = make_world()
    v_us = verdict(world, seq=5)
    v_eu = verdict(world, seq=1)
    await bus.publish(*sealed(world, v_us))
    await bus.publish(*sealed(world, v_eu, region="eu-west"))
    client = trust_client(bus, world)
    assert (await client.check(NAME)).seq == 5
    it = client.verdicts("eu-west", deliver="all")
    assert await take(it, 1) == [v_eu]  # seq 1 < 5 is fine: another region, another sequence
    await it.aclose()
    assert client.cached(NAME, region="eu-west") == v_eu


async def test_connect_classmethod_and_close(bus: Bus) -> None:
    world = make_world()
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    user = bus.fabric.users["client"]
    client = await TrustClient.connect(
        bus.fabric.urls,
        user.name,
        user.password,
        world.trust,
        REGION,
        clock=world.clock,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
    )
    async with client:
        assert (await client.check(NAME)).seq == 1
        vs = await client.stream(deliver="all")
        assert await take(vs, 1) != []
    assert client.nc.is_closed
    # the open stream ended with the client
    with pytest.raises(StopAsyncIteration):
        await anext(vs)
    with pytest.raises(FetchError):
        await client.check(NAME)


async def test_check_without_stream_is_a_fetch_error(bus: Bus) -> None:
    world = make_world()
    client = TrustClient(
        bus.client_nc, world.trust, "ap-south", clock=world.clock, request_timeout=0.5
    )
    with pytest.raises(FetchError):
        await client.check(NAME)


# ------------------------------------------------------------------------------------------ CLI


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_files(bus: Bus, tmp_path: Path) -> tuple[World, list[str]]:
    """A world on the real clock (the CLI reads the system clock) and the common CLI options."""
    world = make_world(start_ms=time.time_ns() // 1_000_000)
    creds = bus.fabric.write_credentials(tmp_path / "creds.json")
    trust = tmp_path / "trust.json"
    world.trust.save(trust)
    return world, ["--credentials", str(creds), "--trust", str(trust), "--region", REGION]


async def test_cli_check_exit_codes(bus: Bus, cli_files: tuple[World, list[str]]) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.UNAVAILABLE)))
    tampered_subject, tampered = sealed(world, verdict(world, "bad.example.", seq=1))
    await bus.publish(tampered_subject, flip_byte(tampered, len(tampered) - 3))

    rc, out, _ = await run_cli("check", "example.com", *opts)
    assert rc == 0
    assert out.strip().startswith("example.com. A round=") and "TRUSTED 93.184.216.34" in out
    rc, out, _ = await run_cli("check", OTHER, *opts, "--json")
    assert rc == 3
    assert json.loads(out)["outcome"] == "unavailable"
    rc, _, err = await run_cli("check", "missing.example", *opts)
    assert rc == 1 and "no verdict" in err
    rc, _, err = await run_cli("check", "bad.example", *opts)
    assert rc == 1 and "rejected (signature)" in err
    rc, _, err = await run_cli("check", "example.com", *opts, "--user", "nobody")
    assert rc == 1 and "nobody" in err


async def test_cli_watch(bus: Bus, cli_files: tuple[World, list[str]]) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(verdict_subject(REGION, NAME, "A"), b"garbage")
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.DISPUTED)))
    await bus.publish(*sealed(world, verdict(world, seq=2)))
    rc, out, err = await run_cli("watch", *opts, "--deliver", "all", "--count", "3", "--json")
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["name"], x["seq"], x["outcome"]) for x in lines] == [
        (NAME, 1, "trusted"),
        (OTHER, 1, "disputed"),
        (NAME, 2, "trusted"),
    ]
    assert "verdict_rejected" in err and "malformed" in err
    rc, out, _ = await run_cli("watch", *opts, "--deliver", "last_per_subject", "--count", "1")
    assert rc == 0
    assert out.splitlines() == [
        f"{OTHER} A round={world.clock.now_ms() // ROUND_MS + 1} DISPUTED agree=0/3"
    ]


def test_cli_help_documents_exit_codes() -> None:
    from cctf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, Any] = sub.choices  # type: ignore[assignment]
    check_help = choices["check"].format_help()
    assert "3    the latest verified verdict is DISPUTED or UNAVAILABLE" in check_help
    assert "exit codes" in choices["watch"].format_help()
