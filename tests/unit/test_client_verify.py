"""The subscriber's verdict verifier (pure, no servers): every numbered step, rollback, bounded state."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from clientcases import (
    NAME,
    OTHER,
    REGION,
    bad_messages,
    coordinator_of,
    reason_of,
    sealed,
    verdict,
    verifier,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirefactories import World, flip_byte, make_world

from cctf.bus_schemas.envelope import Reason, Rejected, decode_envelope
from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.verify import VerdictTimes, VerdictVerifier, check_times, seq_bounds
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId

_ED_WORLD = make_world(suite=SuiteId.ED25519)
_ED_POLICY = SuitePolicy(SuiteId.ED25519)
_PROPS = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
_ENV = decode_envelope(sealed(_ED_WORLD, verdict(_ED_WORLD))[1])


def accept(vf: VerdictVerifier, world: World, v: Verdict) -> Verdict:
    """Seal ``v`` as its coordinator would and verify it."""
    subject, data = sealed(world, v)
    return vf.verify(data, subject)


def test_verify_returns_the_verdict() -> None:
    world = make_world()
    v = verdict(world)
    subject, data = sealed(world, v)
    checked = verifier(world).check(data, subject)
    assert checked.verdict == v
    assert checked.kid == world.coordinator.kid
    assert checked.key == (coordinator_of(world), NAME, "A")
    assert checked.issued_ms == v.issued_ms
    assert checked.envelope_exp_ms == checked.valid_until_ms == v.expires_ms
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
    assert vf.last_seq(coordinator_of(world), "EXAMPLE.com", "A") == v.seq


def test_rollback_lower_seq_and_keys_are_independent() -> None:
    world = make_world()
    vf = verifier(world)
    s5, d5 = sealed(world, verdict(world, seq=5))
    s4, d4 = sealed(world, verdict(world, seq=4))
    vf.verify(d5, s5)
    assert reason_of(lambda: vf.verify(d4, s4)) is Reason.ROLLBACK
    # another name and another qtype have their own sequence
    so, do = sealed(world, verdict(world, OTHER, seq=1))
    vf.verify(do, so)
    sa, da = sealed(world, verdict(world, seq=1, qtype="AAAA"))
    vf.verify(da, sa)
    s6, d6 = sealed(world, verdict(world, seq=6))
    assert vf.verify(d6, s6).seq % 1000 == 6


def test_rejected_message_leaves_no_state() -> None:
    world = make_world()
    vf = verifier(world)
    now = world.clock.now_ms()
    # seq 10 but the verdict has expired: rejected, so seq 5 afterwards is still fine
    s10, d10 = sealed(world, verdict(world, seq=10, issued_ms=now - 1, expires_ms=now))
    assert reason_of(lambda: vf.verify(d10, s10)) is Reason.EXPIRED
    s5, d5 = sealed(world, verdict(world, seq=5))
    assert vf.verify(d5, s5).seq % 1000 == 5
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
    assert vf.last_seq(coordinator_of(world), names[4], "A") is not None


_CASES = list(bad_messages(make_world()))


@pytest.mark.parametrize("case", _CASES)
def test_verifier_rejects(case: str) -> None:
    world = make_world()
    subject, data, expected = bad_messages(world)[case]
    vf = verifier(world)
    assert reason_of(lambda: vf.verify(data, subject)) is expected
    assert len(vf) == 0


def test_ed25519_accepted_only_when_the_policy_allows_it() -> None:
    world = make_world(suite=SuiteId.ED25519)
    subject, data = sealed(world, verdict(world))
    assert reason_of(lambda: verifier(world).verify(data, subject)) is Reason.SUITE
    relaxed = VerdictVerifier(world.trust, world.clock, SuitePolicy(SuiteId.ED25519))
    assert relaxed.verify(data, subject).outcome is Outcome.TRUSTED


def test_verdict_expiry_is_checked_apart_from_the_envelope() -> None:
    world = make_world()
    vf = verifier(world)
    v = verdict(world, expires_ms=world.clock.now_ms() + 1_000)
    subject, data = sealed(world, v, lifetime_ms=30_000)  # the envelope lives 30 s
    assert vf.verify(data, subject) == v
    world.clock.advance(1_000)
    with pytest.raises(Rejected) as info:
        vf.verify(data, subject)
    assert info.value.reason is Reason.EXPIRED and "verdict expired" in info.value.detail


# ------------------------------------------------------------------ step 14: time, seq and round


def test_payload_validity_beyond_the_envelope_is_refused_not_reported() -> None:
    """A payload saying one year, in a 10-minute envelope: refused (it is never reported valid);
    a payload expiring before its envelope is fine and reported with its own expiry."""
    world = make_world()
    now = world.clock.now_ms()
    long = verdict(world, expires_ms=now + 365 * 86_400_000)
    subject, data = sealed(world, long, lifetime_ms=10 * 60_000)
    assert reason_of(lambda: verifier(world).verify(data, subject)) is Reason.LIFETIME
    short = verdict(world, expires_ms=now + 60_000)
    subject, data = sealed(world, short, lifetime_ms=10 * 60_000)
    checked = verifier(world).check(data, subject)
    assert checked.valid_until_ms == now + 60_000 < checked.envelope_exp_ms


def test_far_future_seq_is_refused_and_later_genuine_verdicts_are_accepted() -> None:
    """The clock-jump lock-out: a seq 10 days ahead must not raise the rollback floor."""
    world = make_world()
    vf = verifier(world)
    genuine = verdict(world, seq=1)
    accept(vf, world, genuine)
    now = world.clock.now_ms()
    jumped = msgspec.structs.replace(verdict(world, seq=2), seq=(now + 10 * 86_400_000) * 1000)
    subject, data = sealed(world, jumped)
    assert reason_of(lambda: vf.verify(data, subject)) is Reason.SEQUENCE
    for _ in range(3):  # later genuine verdicts, each a round later
        world.clock.advance(1_000)
        later = verdict(world, seq=1)
        assert accept(vf, world, later) == later


def test_seq_ahead_within_the_skew_locks_out_for_at_most_the_skew() -> None:
    """A coordinator whose sequence ran ahead by just under the skew (5 s) is accepted; a
    restarted one (seq back at its clock) is a rollback only until the clock passes that seq."""
    world = make_world()
    vf = verifier(world)
    now = world.clock.now_ms()
    ahead = msgspec.structs.replace(verdict(world), seq=(now + 5_000) * 1000 - 1)
    accept(vf, world, ahead)
    world.clock.advance(4_000)
    assert reason_of(lambda: accept(vf, world, verdict(world))) is (Reason.ROLLBACK)
    world.clock.advance(1_000)
    fresh = verdict(world)
    assert accept(vf, world, fresh) == fresh


def test_seq_ahead_of_the_subscribers_clock_is_refused() -> None:
    """Issued within the skew in the future (accepted by step 8) with a seq a further skew
    ahead: seq is within the skew of its issue time, but not of the subscriber's clock."""
    world = make_world()
    now = world.clock.now_ms()
    v = verdict(world, issued_ms=now + 4_000, seq=1)
    v = msgspec.structs.replace(v, seq=(now + 4_000) * 1000 + 4_000_000)
    subject, data = sealed(world, v)
    assert reason_of(lambda: verifier(world).verify(data, subject)) is Reason.SEQUENCE
    ok = msgspec.structs.replace(v, seq=(now + 4_000) * 1000)
    subject, data = sealed(world, ok)
    assert verifier(world).verify(data, subject) == ok


def test_round_must_be_the_deployments() -> None:
    """Rounds are checked against ``round_ms``: a verifier with another round length refuses."""
    world = make_world()
    v = verdict(world)
    subject, data = sealed(world, v)
    fast = verifier(world, times=VerdictTimes(round_ms=200))
    with pytest.raises(Rejected) as info:
        fast.verify(data, subject)
    assert info.value.reason is Reason.ROUND and "round_ms=200" in info.value.detail
    slow = VerdictVerifier(world.trust, world.clock, times=VerdictTimes(round_ms=2_000))
    v2 = verdict(world, round=world.clock.now_ms() // 2_000)
    assert accept(slow, world, v2) == v2


def test_verdict_times_validation() -> None:
    with pytest.raises(ValueError, match="round_ms"):
        VerdictTimes(round_ms=0)
    with pytest.raises(ValueError, match="round_ms"):
        VerdictTimes(max_decision_delay_ms=-1)
    assert VerdictTimes(round_ms=1_500).default_max_age_ms() == 3_000


S = 5_000  # TimePolicy().max_skew_ms
R = 1_000
M = VerdictTimes().max_decision_delay_ms


@settings(max_examples=300)
@given(
    iat_off=st.integers(-20_000, 6_000),
    seq_off=st.integers(-3_000_000, 12_000_000),
    round_off=st.integers(-80, 12),
    life=st.integers(1, 60_000),
    extra_life=st.integers(-5, 5),
)
def test_check_times_agrees_with_the_documented_rule(
    iat_off: int, seq_off: int, round_off: int, life: int, extra_life: int
) -> None:
    """Step 14 accepts exactly the documented ranges (docs/wire-protocol.md §5.4)."""
    now = 1_700_000_000_000
    iat = now + iat_off
    env_exp = iat + life
    v = verdict(
        _ED_WORLD,
        issued_ms=iat,
        expires_ms=max(iat + 1, env_exp + extra_life),
        round=iat // R + round_off,
    )
    v = msgspec.structs.replace(v, seq=iat * 1000 + seq_off)
    env = msgspec.structs.replace(_ENV, iat=iat, exp=env_exp)
    low, high = seq_bounds(iat, now, S)
    expected: Reason | None = None
    if v.expires_ms > env_exp:
        expected = Reason.LIFETIME
    elif now >= v.expires_ms:
        expected = Reason.EXPIRED
    elif not (iat * 1000 <= v.seq < (min(iat, now) + S) * 1000):
        expected = Reason.SEQUENCE
    elif not (
        v.round * R <= min(iat, now) + S and iat < (v.round + 1) * R + M  # the round's window
    ):
        expected = Reason.ROUND
    try:
        check_times(v, env, now, S, VerdictTimes(round_ms=R))
    except Rejected as exc:
        assert exc.reason is expected, exc
    else:
        assert expected is None
        assert low <= v.seq < high and v.seq < (now + S) * 1000  # never ahead of the clock
        assert v.expires_ms <= env_exp  # never valid beyond the envelope


@_PROPS
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3_000), st.integers(-2_000_000, 30 * 86_400_000 * 1000)),
        min_size=1,
        max_size=8,
    )
)
def test_no_sequence_of_messages_locks_out_a_later_genuine_verdict(
    steps: list[tuple[int, int]],
) -> None:
    """Whatever seqs (far future included) the verifier was shown, a genuine verdict issued the
    skew after the last one it accepted is accepted."""
    world = make_world(suite=SuiteId.ED25519)
    vf = VerdictVerifier(world.trust, world.clock, _ED_POLICY, REGION)
    for advance, seq_off in steps:
        world.clock.advance(advance)
        v = verdict(world)
        v = msgspec.structs.replace(v, seq=v.issued_ms * 1000 + seq_off)
        try:
            accept(vf, world, v)
        except Rejected as exc:
            assert exc.reason in (Reason.SEQUENCE, Reason.ROLLBACK)
    world.clock.advance(S)
    genuine = verdict(world, seq=0)
    assert accept(vf, world, genuine) == genuine


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


# ---------------------------------------------------------------------- step 15: maximum age


def test_max_age_refuses_an_older_verdict_as_the_current_answer() -> None:
    world = make_world()
    vf = verifier(world)
    v = verdict(world)
    subject, data = sealed(world, v)
    world.clock.advance(2_000)
    assert vf.check(data, subject, max_age_ms=2_000).verdict == v  # exactly two rounds: fine
    world.clock.advance(1)
    with pytest.raises(Rejected) as info:
        vf.check(data, subject, max_age_ms=2_000)
    assert info.value.reason is Reason.STALE and "2001 ms ago" in info.value.detail
    assert vf.check(data, subject).verdict == v  # streams pass no max age: still valid


def test_stale_rejection_leaves_no_state() -> None:
    world = make_world()
    vf = verifier(world)
    old = verdict(world, seq=9)
    subject, data = sealed(world, old)
    world.clock.advance(5_000)
    assert reason_of(lambda: vf.check(data, subject, max_age_ms=2_000)) is Reason.STALE
    assert len(vf) == 0
