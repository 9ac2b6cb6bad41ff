"""Tests for cctf.coordinator.verify.BallotVerifier: the coordinator's pure ballot checks."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wirefactories import (
    LIFETIME_MS,
    ROUND_MS,
    World,
    forge_envelope,
    make_ballot,
    make_identity,
    make_key,
    make_vote,
    make_world,
    seal_ballot,
)

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import Reason, Rejected, seal
from cctf.bus_schemas.messages import Ballot, MessageType, VoteStatus, encode, peek_round
from cctf.bus_schemas.subjects import evidence_subject, verdict_subject, vote_subject
from cctf.coordinator.replay import Admission, ReplayCache
from cctf.coordinator.verify import RoundPolicy
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId

US, EU = "us-east", "eu-west"


@pytest.fixture
def world() -> World:
    return make_world((US, EU))


def rejected(world: World, data: bytes, subject: str) -> Reason:
    with pytest.raises(Rejected) as info:
        world.verifier().verify(data, subject)
    return info.value.reason


def test_a_valid_hybrid_ballot_passes(world: World) -> None:
    agent = world.agent(US)
    assert agent.suite is SuiteId.HYBRID
    ballot = world.ballot(US)
    assert len(ballot.votes) == 3
    assert world.verifier().verify(world.sealed(US, ballot), agent.subject) == ballot


def test_a_ballot_with_mixed_vote_statuses_passes(world: World) -> None:
    agent = world.agent(US)
    votes = [
        make_vote(agent.principal, US, world.round, resolver_id="r1"),
        make_vote(agent.principal, US, world.round, resolver_id="r2", status=VoteStatus.TIMEOUT),
        make_vote(
            agent.principal, US, world.round, resolver_id="r3", status=VoteStatus.ANSWER, rcode=3
        ),
        make_vote(agent.principal, US, world.round, resolver_id="r4", status=VoteStatus.ERROR),
    ]
    ballot = world.ballot(US, votes=votes)
    assert world.verifier().verify(world.sealed(US, ballot), agent.subject) == ballot
    empty = world.ballot(US, votes=[])
    assert world.verifier().verify(world.sealed(US, empty), agent.subject) == empty


def test_forged_signature_claiming_a_known_key_id(world: World) -> None:
    agent = world.agent(US)
    mallory = make_key(SuiteId.HYBRID, "mallory")
    forged = forge_envelope(
        mallory,
        agent.subject,
        encode(world.ballot(US)),
        now_ms=world.clock.now_ms(),
        kid=agent.kid,
    )
    assert rejected(world, forged, agent.subject) is Reason.SIGNATURE


def test_the_identical_envelope_again_is_a_duplicate_not_a_replay(world: World) -> None:
    agent = world.agent(US)
    data = world.sealed(US)
    verifier = world.verifier()
    verifier.verify(data, agent.subject)
    for _ in range(2):  # e.g. its live and its durable copy: the same message, recognised
        with pytest.raises(Rejected) as info:
            verifier.verify(data, agent.subject)
        assert info.value.reason is Reason.DUPLICATE
    # the same ballot sealed again (fresh nonce) is a new message, not a replay
    verifier.verify(world.sealed(US), agent.subject)


def test_round_freshness_window(world: World) -> None:
    agent = world.agent(US)
    lag = RoundPolicy().max_round_lag
    current = world.round
    for round_no in (current - lag, current, current + 1):
        ballot = make_ballot(agent.principal, US, round_no)
        world.verifier().verify(world.sealed(US, ballot), agent.subject)
    for round_no in (current - lag - 1, current - 1000, 0, current + 2):
        ballot = make_ballot(agent.principal, US, round_no)  # freshly signed, old/future round
        assert rejected(world, world.sealed(US, ballot), agent.subject) is Reason.ROUND
    # the window moves with the clock
    data = world.sealed(US)
    world.clock.advance((lag + 1) * ROUND_MS)
    assert rejected(world, data, agent.subject) is Reason.ROUND


def test_ballot_moved_to_another_subject_fails_signature(world: World) -> None:
    us, eu = world.agent(US), world.agent(EU)
    data = world.sealed(US)
    for subject in (eu.subject, vote_subject(EU, us.principal), vote_subject(US, eu.principal)):
        assert rejected(world, data, subject) is Reason.SIGNATURE


def test_ed25519_ballot_under_a_hybrid_minimum_policy(world: World) -> None:
    legacy = make_identity("agent-legacy", US, suite=SuiteId.ED25519)
    world.extra.append(legacy)
    ballot = make_ballot(legacy.principal, US, world.round)
    data = seal_ballot(legacy, ballot, now_ms=world.clock.now_ms())
    assert rejected(world, data, legacy.subject) is Reason.SUITE
    lenient = world.verifier(policy=SuitePolicy(SuiteId.ED25519))
    assert lenient.verify(data, legacy.subject) == ballot


def test_regional_pinning_at_the_coordinator(world: World) -> None:
    """An agent whose key is registered in us-east claims eu-west: refused on either subject."""
    agent = world.agent(US)
    now = world.clock.now_ms()
    claims_eu = make_ballot(agent.principal, EU, world.round)  # ballot and votes say eu-west
    on_own_subject = seal_ballot(agent, claims_eu, now_ms=now)
    assert agent.subject == f"cctf.v1.vote.{US}.{agent.principal}"
    assert rejected(world, on_own_subject, agent.subject) is Reason.REGION
    eu_subject = vote_subject(EU, agent.principal)
    on_eu_subject = seal_ballot(agent, claims_eu, now_ms=now, subject=eu_subject)
    assert rejected(world, on_eu_subject, eu_subject) is Reason.REGION
    # a correct us-east ballot signed for the eu-west subject: subject region != key region
    honest = make_ballot(agent.principal, US, world.round)
    on_eu = seal_ballot(agent, honest, now_ms=now, subject=eu_subject)
    assert rejected(world, on_eu, eu_subject) is Reason.REGION


def test_payload_agent_must_be_the_key_principal(world: World) -> None:
    us = world.agent(US)
    now = world.clock.now_ms()
    other_agent = make_ballot("agent-other", US, world.round)
    assert rejected(world, seal_ballot(us, other_agent, now_ms=now), us.subject) is (
        Reason.PRINCIPAL
    )
    # and the subject's agent too: us-east's key, signing for another agent's subject in us-east
    subject = vote_subject(US, "agent-other")
    data = seal_ballot(us, other_agent, now_ms=now, subject=subject)
    assert rejected(world, data, subject) is Reason.PRINCIPAL
    own_payload = seal_ballot(us, world.ballot(US), now_ms=now, subject=subject)
    assert rejected(world, own_payload, subject) is Reason.PRINCIPAL


def test_vote_inside_the_ballot_must_match_it(world: World) -> None:
    agent = world.agent(US)
    r = world.round
    for stray, reason in (
        (make_vote(agent.principal, US, r - 1, resolver_id="r9"), Reason.ROUND),
        (make_vote(agent.principal, US, r + 1, resolver_id="r9"), Reason.ROUND),
        (make_vote("agent-eu-west", US, r, resolver_id="r9"), Reason.PRINCIPAL),
        (make_vote(agent.principal, EU, r, resolver_id="r9"), Reason.REGION),
    ):
        ballot = world.ballot(US)
        ballot = msgspec.structs.replace(ballot, votes=[*ballot.votes, stray])
        assert rejected(world, world.sealed(US, ballot), agent.subject) is reason


def test_wrong_answer_digest_is_malformed(world: World) -> None:
    agent = world.agent(US)
    r = world.round
    for bad in (
        make_vote(agent.principal, US, r, digest=b"\x00" * 32),
        make_vote(agent.principal, US, r, digest=b""),
        make_vote(agent.principal, US, r, answer=["10.0.0.1"], digest=make_vote().answer_digest),
        make_vote(agent.principal, US, r, status=VoteStatus.TIMEOUT, digest=b"\x01" * 32),
    ):
        ballot = world.ballot(US, votes=[make_vote(agent.principal, US, r), bad])
        assert rejected(world, world.sealed(US, ballot), agent.subject) is Reason.MALFORMED


def test_garbage_and_oversized_data(world: World) -> None:
    agent = world.agent(US)
    for garbage in (b"", b"\x00", b"\xc1", b"hello", b"\x99" + b"\x00" * 8, world.sealed(US)[:-1]):
        assert rejected(world, garbage, agent.subject) is Reason.MALFORMED
    assert rejected(world, b"\x00" * (L.MAX_ENVELOPE_BYTES + 1), agent.subject) is Reason.OVERSIZE
    # a correctly signed envelope whose payload is not a ballot
    for payload in (b"", b"\xc1", encode(make_vote()), b"\x95" + b"\x00" * 4):
        data = seal(
            agent.key,
            agent.subject,
            MessageType.BALLOT,
            payload,
            now_ms=world.clock.now_ms(),
            lifetime_ms=LIFETIME_MS,
        )
        assert rejected(world, data, agent.subject) is Reason.MALFORMED


def test_coordinator_key_cannot_sign_ballots(world: World) -> None:
    coord = world.coordinator
    subject = vote_subject(coord.region, coord.principal)
    ballot = make_ballot(coord.principal, coord.region, world.round)
    data = seal_ballot(coord, ballot, now_ms=world.clock.now_ms(), subject=subject)
    with pytest.raises(Rejected, match="belongs to a coordinator") as info:
        world.verifier().verify(data, subject)
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_unknown_agent_key(world: World) -> None:
    stranger = make_identity("agent-stranger", US)
    data = seal_ballot(stranger, now_ms=world.clock.now_ms())
    assert rejected(world, data, stranger.subject) is Reason.UNKNOWN_KEY


def test_ballots_only_on_vote_subjects(world: World) -> None:
    agent = world.agent(US)
    now = world.clock.now_ms()
    for subject in (
        evidence_subject(US, agent.principal),
        verdict_subject(US, "example.com", "A"),
        "cctf.v1.vote.us-east.>",
        "not a subject",
    ):
        data = seal_ballot(agent, world.ballot(US), now_ms=now, subject=subject)
        assert rejected(world, data, subject) is Reason.SUBJECT


def test_time_checks_apply_to_ballots(world: World) -> None:
    agent = world.agent(US)
    data = world.sealed(US)
    world.clock.advance(LIFETIME_MS)
    assert rejected(world, data, agent.subject) is Reason.EXPIRED
    future = seal_ballot(agent, now_ms=world.clock.now_ms() + 60_000)
    assert rejected(world, future, agent.subject) is Reason.NOT_YET_VALID


def test_replay_cache_capacity_exhaustion_fails_closed(world: World) -> None:
    agent = world.agent(US)
    cache = ReplayCache(capacity=2, slack_ms=0)
    verifier = world.verifier(replay=cache)
    verifier.verify(world.sealed(US), agent.subject)
    verifier.verify(world.sealed(US), agent.subject)
    assert len(cache) == 2
    valid = world.sealed(US)
    with pytest.raises(Rejected, match="replay cache holds 2") as info:
        verifier.verify(valid, agent.subject)
    assert info.value.reason is Reason.REPLAY
    assert len(cache) == 2
    # once the remembered envelopes expire their slots free up
    world.clock.advance(LIFETIME_MS)
    fresh = world.sealed(US)
    assert verifier.verify(fresh, agent.subject).round == world.round
    assert len(cache) == 1


def test_replay_entries_are_forgotten_after_expiry(world: World) -> None:
    agent = world.agent(US)
    cache = ReplayCache()
    verifier = world.verifier(replay=cache)
    first = world.sealed(US)
    verifier.verify(first, agent.subject)
    world.clock.advance(LIFETIME_MS - 1)  # still valid: the same message is recognised
    with pytest.raises(Rejected) as info:
        verifier.verify(first, agent.subject)
    assert info.value.reason is Reason.DUPLICATE
    world.clock.advance(1 + 5_000)  # past exp + the cache's slack
    verifier.verify(world.sealed(US), agent.subject)
    assert len(cache) == 1  # the first nonce is gone
    with pytest.raises(Rejected) as info:  # ...and the old envelope is still refused
        verifier.verify(first, agent.subject)
    assert info.value.reason is Reason.EXPIRED


def test_replay_cache_unit() -> None:
    cache = ReplayCache(capacity=3, slack_ms=10)
    assert cache.admit(b"n", b"d1", expires_ms=100, now_ms=0) is Admission.FRESH
    assert cache.admit(b"n", b"d1", expires_ms=100, now_ms=1) is Admission.DUPLICATE
    assert cache.admit(b"n", b"d2", expires_ms=100, now_ms=2) is Admission.REPLAY
    assert cache.check_and_add(b"a", expires_ms=100, now_ms=0)
    assert not cache.check_and_add(b"a", expires_ms=100, now_ms=50)
    assert not cache.check_and_add(b"a", expires_ms=100, now_ms=109)
    assert cache.check_and_add(b"a", expires_ms=200, now_ms=110)  # forgotten at exp + slack
    with pytest.raises(ValueError):
        ReplayCache(capacity=0)


def test_forged_envelopes_do_not_consume_replay_slots(world: World) -> None:
    """The signature is checked before the nonce is remembered: forgeries cannot fill the cache."""
    agent = world.agent(US)
    cache = ReplayCache(capacity=1)
    verifier = world.verifier(replay=cache)
    forged = forge_envelope(
        make_key(SuiteId.HYBRID, "mallory"),
        agent.subject,
        encode(world.ballot(US)),
        now_ms=world.clock.now_ms(),
        kid=agent.kid,
    )
    for _ in range(3):
        with pytest.raises(Rejected):
            verifier.verify(forged, agent.subject)
    assert len(cache) == 0
    verifier.verify(world.sealed(US), agent.subject)


# ----------------------------------------------------------------------------------- mutation fuzz

_WORLD = make_world((US, EU))
_AGENT = _WORLD.agent(US)
_VALID = seal_ballot(_AGENT, now_ms=_WORLD.clock.now_ms(), nonce=b"\x42" * 16)
_BALLOT = _WORLD.verifier().verify(_VALID, _AGENT.subject)


def _edit(kind: str, pos: int, value: int, span: int) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        p = pos % (len(data) + 1)
        if kind == "set" and p < len(data):
            return data[:p] + bytes([value]) + data[p + 1 :]
        if kind == "xor" and p < len(data):
            return data[:p] + bytes([data[p] ^ (value or 1)]) + data[p + 1 :]
        if kind == "insert":
            return data[:p] + bytes([value]) * span + data[p:]
        if kind == "delete":
            return data[:p] + data[p + span :]
        if kind == "truncate":
            return data[:p]
        if kind == "duplicate":
            return data[:p] + data[p : p + span] + data[p:]
        return data

    return apply


_edits = st.builds(
    _edit,
    st.sampled_from(["set", "xor", "insert", "delete", "truncate", "duplicate"]),
    st.integers(0, len(_VALID)),
    st.integers(0, 255),
    st.integers(1, 40),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(_edits, min_size=1, max_size=4))
@example(edits=[_edit("set", 0, _VALID[0], 1)])  # an identity edit
def test_random_mutations_never_pass_unless_unchanged(
    edits: list[Callable[[bytes], bytes]],
) -> None:
    data = _VALID
    for edit in edits:
        data = edit(data)
    verifier = _WORLD.verifier()  # fresh replay cache: the original must pass
    if data == _VALID:
        assert verifier.verify(data, _AGENT.subject) == _BALLOT
        return
    with pytest.raises(Rejected) as info:
        verifier.verify(data, _AGENT.subject)
    assert isinstance(info.value.reason, Reason)


@settings(max_examples=150, deadline=None)
@given(
    subject=st.sampled_from(
        [_AGENT.subject, vote_subject(EU, _AGENT.principal), vote_subject(US, "agent-eu-west")]
    ),
    round_shift=st.integers(-5, 5),
    region=st.sampled_from([US, EU]),
    agent=st.sampled_from([_AGENT.principal, "agent-eu-west"]),
)
def test_only_fully_consistent_ballots_pass(
    subject: str, round_shift: int, region: str, agent: str
) -> None:
    """The agent signs whatever it likes for whatever subject: only the pinned, fresh one passes."""
    ballot: Ballot = make_ballot(agent, region, _WORLD.round + round_shift)
    data = seal_ballot(_AGENT, ballot, now_ms=_WORLD.clock.now_ms(), subject=subject)
    ok = (
        subject == _AGENT.subject
        and region == US
        and agent == _AGENT.principal
        and -RoundPolicy().max_round_lag <= round_shift <= 1
    )
    verifier = _WORLD.verifier()
    if ok:
        assert verifier.verify(data, subject) == ballot
    else:
        with pytest.raises(Rejected) as info:
            verifier.verify(data, subject)
        assert info.value.reason in {Reason.REGION, Reason.PRINCIPAL, Reason.ROUND}


def test_a_different_message_reusing_a_nonce_is_a_replay(world: World) -> None:
    agent = world.agent(US)
    now = world.clock.now_ms()
    nonce = b"\x42" * L.NONCE_BYTES

    def sealed(**kw: object) -> bytes:
        ballot = make_ballot(agent.principal, US, world.round, **kw)  # type: ignore[arg-type]
        return forge_envelope(
            agent.key, agent.subject, encode(ballot), now_ms=now, kid=agent.kid, nonce=nonce
        )

    first, other = sealed(), sealed(resolvers=("r1",))
    assert first != other
    verifier = world.verifier()
    verifier.verify(first, agent.subject)
    with pytest.raises(Rejected) as info:
        verifier.verify(other, agent.subject)
    assert info.value.reason is Reason.REPLAY
    with pytest.raises(Rejected) as info:  # and the first one again is still only a duplicate
        verifier.verify(first, agent.subject)
    assert info.value.reason is Reason.DUPLICATE


def test_a_stale_ballot_is_refused_before_its_votes_are_decoded(world: World) -> None:
    """Step 10a: a signed ballot of a round outside the window is refused ``round`` from its head,
    its votes not decoded: the same votes in a fresh round are refused ``malformed`` (step 11), so
    the stale one never reached the decoder."""
    agent = world.agent(US)
    now = world.clock.now_ms()
    stale = world.round - RoundPolicy().max_round_lag - 1

    def sealed(round_: int) -> bytes:
        payload = msgspec.msgpack.encode(
            [agent.principal, US, round_, now, [["not", "a", "vote"]] * 3]
        )
        return forge_envelope(agent.key, agent.subject, payload, now_ms=now, kid=agent.kid)

    assert rejected(world, sealed(world.round), agent.subject) is Reason.MALFORMED
    assert rejected(world, sealed(stale), agent.subject) is Reason.ROUND
    assert rejected(world, sealed(world.round + 2), agent.subject) is Reason.ROUND


@given(round_=st.integers(0, 2**44), n=st.integers(0, 3))  # issued_ms = round * 1000 fits a uint64
@settings(max_examples=60, deadline=None)
def test_peek_round_reads_the_round_of_every_ballot(round_: int, n: int) -> None:
    ballot = make_ballot(_AGENT.principal, US, round_, resolvers=tuple(f"r{i}" for i in range(n)))
    assert peek_round(encode(ballot)) == ballot.round


@given(st.binary(max_size=256))
@example(msgspec.msgpack.encode(["a", "r"]))
@example(msgspec.msgpack.encode({"round": 1}))
@example(msgspec.msgpack.encode(["a", "r", -1, 0, []]))
@example(b"\x94\xa1a\xa1r\x05" + b"\x91" * 100_000 + b"\x90")  # deep nesting after the head
def test_peek_round_never_raises(data: bytes) -> None:
    """Any bytes: an int or ``None`` (a negative or odd head is left to step 13 / step 11)."""
    got = peek_round(data)
    assert got is None or isinstance(got, int)
