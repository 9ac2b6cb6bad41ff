"""The policy engine (pure): baselines, detectors, safe-mode hysteresis and the answer hold.

Property tests: detectors are deterministic, hysteresis never leaves sooner than its bound, a change
that holds N rounds is trusted exactly at its N-th round, a flip shorter than N rounds never is.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.config import ConfigError, convert_config
from cctf.policy.baseline import Ewma
from cctf.policy.config import DetectorSettings, PolicyConfig
from cctf.policy.detectors import Detectors
from cctf.policy.engine import PolicyEngine
from cctf.policy.model import DecisionObs, IdentityObs, LkgEvent, Rule, Scope, VoterObs
from cctf.policy.safemode import AnswerHolds, Cause, SafeMode

REGIONS = ("us-east", "eu-west")
VOTERS = (
    ("agent-us-east/r1", "us-east"),
    ("agent-us-east/r2", "us-east"),
    ("agent-us-east/r3", "us-east"),
    ("agent-eu-west/r1", "eu-west"),
    ("agent-eu-west/r2", "eu-west"),
)
A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
NAME = "example.com."


def obs(
    round_: int,
    digests: list[bytes | None],
    *,
    trusted: bytes | None = None,
    ttls: list[int | None] | None = None,
    qname: str = NAME,
) -> DecisionObs:
    ttls = ttls or [300] * len(digests)
    voters = tuple(VoterObs(v, r, d, t) for (v, r), d, t in zip(VOTERS, digests, ttls, strict=True))
    return DecisionObs(qname, "A", round_, trusted is not None, trusted, voters)


def unanimous(round_: int, d: bytes, **kw: object) -> DecisionObs:
    return obs(round_, [d] * 5, trusted=d, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ baseline


def test_ewma_warms_up_floors_variance_and_scores_before_updating() -> None:
    s = DetectorSettings(alpha=0.5, warmup=3, min_std=0.5, threshold=2.0)
    e = Ewma()
    assert not e.observe(10.0, s).alarm  # first sample: no baseline
    assert not e.observe(10.0, s).alarm
    assert not e.observe(100.0, s).alarm  # only 2 samples seen: still warming up
    e = Ewma()
    for _ in range(3):
        e.observe(1.0, s)
    score = e.observe(2.0, s)  # steady series: var 0, floored to 0.5 -> z = 2
    assert (score.mean, score.std, score.z, score.alarm) == (1.0, 0.5, 2.0, True)
    assert e.mean == 1.5  # folded in after scoring


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=60))
def test_ewma_is_deterministic_and_finite(xs: list[float]) -> None:
    s = DetectorSettings()
    a, b = Ewma(), Ewma()
    assert [a.observe(x, s) for x in xs] == [b.observe(x, s) for x in xs]
    assert math.isfinite(a.mean) and a.var >= 0


# ------------------------------------------------------------------------------------ detectors


def rules(alarms: list[object]) -> set[Rule]:
    return {a.rule for a in alarms}  # type: ignore[attr-defined]


def test_disagreement_spike_after_a_steady_baseline_names_its_scopes() -> None:
    d = Detectors(PolicyConfig(), REGIONS)
    for r in range(10):
        assert not d.decision(unanimous(r, A))
    one_off = d.decision(obs(10, [A, A, A, A, B], trusted=A))
    assert Rule.DISAGREEMENT not in rules(one_off)  # 1 of 5: z = 2 < 3.5
    spike = d.decision(obs(11, [A, A, A, B, C], trusted=A))
    (alarm,) = [a for a in spike if a.rule is Rule.DISAGREEMENT]
    assert alarm.scopes == (Scope("us-east", NAME), Scope("eu-west", NAME))
    assert alarm.series == "disagreement:example.com. A"
    assert "value 0.4" in alarm.why and "z " in alarm.why and ">= 3.5" in alarm.why


def test_region_disagreement_and_flapping_scope_the_region() -> None:
    d = Detectors(PolicyConfig(), REGIONS)
    for r in range(12):
        d.decision(unanimous(r, A))
    spike = d.decision(obs(12, [A, A, A, B, B], trusted=A))
    regional = [a for a in spike if a.rule is Rule.REGION_DISAGREEMENT]
    assert [a.scopes for a in regional] == [(Scope("eu-west"),)]
    flaps = []
    for r in range(13, 21):  # eu-west/r2 answers every other round
        d2 = [A, A, A, A, A if r % 2 else None]
        flaps += [a for a in d.decision(obs(r, d2, trusted=A)) if a.rule is Rule.FLAPPING]
    assert flaps and {a.series for a in flaps} == {"flapping:agent-eu-west/r2"}
    assert flaps[0].scopes == (Scope("eu-west"),)


def test_ttl_mismatch_and_answer_change() -> None:
    d = Detectors(PolicyConfig(), REGIONS)
    for r in range(10):
        assert not d.decision(unanimous(r, A))
    ttl = d.decision(unanimous(10, A, ttls=[300, 300, 300, 300, 2]))
    assert rules(ttl) == {Rule.TTL_MISMATCH}
    change = d.decision(unanimous(11, B))
    assert Rule.ANSWER_CHANGE in rules(change)
    assert not any(a.rule is Rule.ANSWER_CHANGE for a in d.decision(unanimous(12, B)))


def test_a_name_that_always_changes_is_no_anomaly() -> None:
    d = Detectors(PolicyConfig(), REGIONS)
    answers = [A, B, C]
    alarms = [a for r in range(40) for a in d.decision(unanimous(r, answers[r % 3]))]
    assert not [a for a in alarms if a.rule is Rule.ANSWER_CHANGE and a.round > 10]


def test_lkg_use_and_identity_drift_rules() -> None:
    d = Detectors(PolicyConfig(), REGIONS)
    assert rules(d.lkg(LkgEvent(NAME, "A", 5, True))) == {Rule.LKG_USE}
    assert not d.lkg(LkgEvent(NAME, "A", 6, True))  # still on LKG: no new alarm
    assert not d.lkg(LkgEvent(NAME, "A", 7, False))
    wl = "spiffe://example.org/web"
    assert not d.identity(IdentityObs(wl, 1, A, 1000))
    assert not d.identity(IdentityObs(wl, 2, B, 2000))  # newer leaf, new key: a rotation
    (drift,) = d.identity(IdentityObs(wl, 3, C, 2000))  # new key, same leaf age: drift
    assert drift.rule is Rule.IDENTITY_DRIFT and drift.scopes[0] == Scope("us-east", wl)
    assert "without a newer leaf" in drift.why


decisions = st.lists(
    st.tuples(
        st.lists(st.sampled_from([A, B, C, None]), min_size=5, max_size=5),
        st.sampled_from([A, B, None]),
        st.lists(st.integers(0, 86_400), min_size=5, max_size=5),
    ),
    max_size=40,
)


@given(decisions)
@settings(max_examples=60)
def test_detectors_are_deterministic_given_inputs(
    seq: list[tuple[list[bytes | None], bytes | None, list[int]]],
) -> None:
    def run() -> list[str]:
        d = Detectors(PolicyConfig(), REGIONS)
        return [
            a.why
            for r, (ds, t, ttl) in enumerate(seq)
            for a in d.decision(obs(r, ds, trusted=t, ttls=ttl))
        ]  # type: ignore[arg-type]

    assert run() == run()


# ------------------------------------------------------------------------------------ safe mode


def test_safe_mode_enter_quiet_leave_and_operator_stickiness() -> None:
    sm = SafeMode(quiet_rounds=3)
    s = Scope("us-east", NAME)
    t = sm.alarm(s, 10, "why")
    assert t is not None and t.entered and t.cause is Cause.ALARM
    assert sm.covers(NAME) and not sm.covers("other.") and sm.alarm(s, 11, "again") is None
    assert sm.tick(13) == []  # 2 rounds since the last alarm
    (left,) = sm.tick(14)
    assert not left.entered and left.cause is Cause.QUIET and not sm.covers(NAME)
    region = Scope("eu-west")
    assert sm.operator(region, True, 20, "maintenance") is not None
    assert sm.covers("anything.") and sm.tick(1000) == []  # manual: never leaves by itself
    assert sm.operator(region, False, 1001, "done") is not None and not sm.active()
    assert sm.operator(region, False, 1002, "again") is None


def test_a_full_scope_table_falls_back_to_the_region() -> None:
    sm = SafeMode(quiet_rounds=3, max_scopes=1)
    sm.alarm(Scope("us-east", "a."), 1, "x")
    t = sm.alarm(Scope("us-east", "b."), 1, "y")
    assert t is not None and t.scope == Scope("us-east") and sm.covers("c.")


alarm_rounds = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from(["a.", "b.", ""])), max_size=40
)


@given(alarm_rounds, st.integers(1, 8))
def test_hysteresis_never_leaves_sooner_than_its_bound(
    events: list[tuple[int, str]], m: int
) -> None:
    sm = SafeMode(quiet_rounds=m)
    entered: dict[Scope, int] = {}
    last_alarm: dict[Scope, int] = {}
    for r in range(0, 80):
        for ar, name in events:
            if ar == r:
                s = Scope("us-east", name)
                t = sm.alarm(s, r, "x")
                if t is not None:
                    entered[t.scope] = r
                last_alarm[s] = r
        for t in sm.tick(r):
            assert not t.entered
            assert r - entered[t.scope] >= m and r - last_alarm[t.scope] >= m
        # and it does leave once quiet for m rounds
        for s, since in entered.items():
            if sm.is_active(s):
                assert r - max(since, last_alarm[s]) < m


# ------------------------------------------------------------------------------------ answer hold


def test_hold_needs_n_rounds_and_resets_on_another_answer() -> None:
    h = AnswerHolds(3)
    k = "example.com. A"
    assert h.apply(k, 1, True, A, guarded=False).trusted
    r2 = h.apply(k, 2, True, B, guarded=True)
    assert (r2.trusted, r2.held, r2.streak) == (False, True, 1)
    assert not h.apply(k, 3, True, C, guarded=True).trusted  # another answer: streak restarts
    assert not h.apply(k, 4, True, C, guarded=True).trusted
    assert not h.apply(
        k, 4, False, None, guarded=True
    ).trusted  # no quorum: neither counts nor resets
    assert h.apply(k, 5, True, C, guarded=True).trusted  # third round of C
    assert h.apply(k, 6, True, A, guarded=False).trusted  # not guarded, nothing pending
    assert not h.apply(k, 7, True, B, guarded=True).trusted
    assert h.apply(k, 8, True, A, guarded=True).trusted  # back to the trusted answer: cleared
    assert not h.pending(k)


@given(st.integers(1, 6), st.integers(0, 5), st.lists(st.booleans(), max_size=6))
def test_a_change_that_holds_n_rounds_is_trusted_at_its_nth_round(
    n: int, before: int, gaps: list[bool]
) -> None:
    eng = PolicyEngine(PolicyConfig(hold_rounds=n, quiet_rounds=max(n, 10)), REGIONS)
    r = 0
    for _ in range(before + 1):
        assert eng.decision(unanimous(r, A)).hold.trusted  # type: ignore[union-attr]
        r += 1
    assert eng.operator(Scope("us-east"), True, "test") is not None
    held = 0
    gaps_iter = iter(gaps)
    while True:
        if next(gaps_iter, False):  # a round with no quorum in between
            assert not eng.decision(obs(r, [None] * 5)).hold.trusted  # type: ignore[union-attr]
            r += 1
            continue
        step = eng.decision(unanimous(r, B))
        held += 1
        r += 1
        assert step.hold is not None
        if held < n:
            assert step.hold.held and not step.hold.trusted
        else:
            assert step.hold.trusted
            break


@given(
    st.integers(2, 5),
    st.lists(st.tuples(st.sampled_from([B, C]), st.integers(1, 4)), max_size=8),
    st.booleans(),
)
def test_a_flip_shorter_than_n_rounds_is_never_trusted_in_safe_mode(
    n: int, flips: list[tuple[bytes, int]], auto: bool
) -> None:
    eng = PolicyEngine(PolicyConfig(hold_rounds=n, quiet_rounds=10, auto_safe_mode=auto), REGIONS)
    r = 0
    for _ in range(8):
        eng.decision(unanimous(r, A))
        r += 1
    eng.operator(Scope("eu-west", NAME), True, "watch")
    for digest, length in flips:
        length = min(length, n - 1)
        for _ in range(length):
            step = eng.decision(unanimous(r, digest))
            assert step.hold is not None and not step.hold.trusted
            r += 1
        step = eng.decision(unanimous(r, A))  # the honest answer is back
        assert step.hold is not None and step.hold.trusted
        r += 1


def test_auto_safe_mode_holds_the_change_that_raised_the_alarm_then_leaves() -> None:
    eng = PolicyEngine(PolicyConfig(auto_safe_mode=True, hold_rounds=3, quiet_rounds=5), REGIONS)
    for r in range(6):
        step = eng.decision(unanimous(r, A))
        assert step.hold is not None and step.hold.trusted and not step.transitions
    step = eng.decision(unanimous(6, B))
    assert [a.rule for a in step.alarms] == [Rule.ANSWER_CHANGE]
    assert {t.scope for t in step.transitions} == {Scope(r, NAME) for r in REGIONS}
    assert step.hold is not None and step.hold.held and eng.effects(NAME).safe_mode
    assert eng.effects(NAME).strict_paths and not eng.effects("other.").safe_mode
    assert not eng.decision(unanimous(7, B)).hold.trusted  # type: ignore[union-attr]
    assert eng.decision(unanimous(8, B)).hold.trusted  # type: ignore[union-attr]
    left = [t for r in (9, 10, 11) for t in eng.decision(unanimous(r, B)).transitions]
    assert {(t.scope, t.entered, t.cause) for t in left} == {
        (Scope(r, NAME), False, Cause.QUIET) for r in REGIONS
    }


def test_policy_config_bounds() -> None:
    cfg = convert_config({"hold_rounds": 2, "quiet_rounds": 4}, PolicyConfig, "policy")
    assert (cfg.hold_rounds, cfg.quiet_rounds, cfg.auto_safe_mode) == (2, 4, False)
    with pytest.raises(ConfigError, match="hold_rounds"):
        convert_config({"hold_rounds": 5, "quiet_rounds": 4}, PolicyConfig, "policy")
    with pytest.raises(ConfigError, match="alpha"):
        convert_config({"disagreement": {"alpha": 0}}, PolicyConfig, "policy")


@given(st.lists(st.booleans(), max_size=50), st.integers(2, 9))
def test_flap_window_counts_changes_like_the_definition(statuses: list[bool], size: int) -> None:
    from cctf.policy.detectors import _EMPTY_WINDOW, _push

    w = _EMPTY_WINDOW
    for i, s in enumerate(statuses):
        last = statuses[max(0, i + 1 - size) : i + 1]
        w = _push(w, s, size)
        bits, length, changes = w
        assert changes == sum(a != b for a, b in itertools.pairwise(last))
        assert length == len(last)
        assert [bool(bits >> j & 1) for j in reversed(range(length))] == last
