"""The policy stage's hot path (:meth:`SafeModeStage.apply`: each decision handed to the engine as
columns, :meth:`PolicyEngine.observe`, with a cached voter layout; the held decisions replaced in a
copy of the list) gives the records, announcements and judged decisions of the object path it
replaced (one :class:`DecisionObs` per decision through :meth:`PolicyEngine.decision`, kept here as
the reference), for decisions a real ``TallyBook`` makes from any votes: early and at the deadline,
TRUSTED, UNAVAILABLE and DISPUTED, changing answers, unknown TTLs, automatic safe mode on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import START_MS, make_vote

from cctf.bus_schemas.messages import VoteStatus
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.safemode import (
    Record,
    SafeModeStage,
    StageResult,
    _alarm_record,
    _key_fields,
    held_decision,
)
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import Decision, QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.policy.config import DetectorSettings, PolicyConfig

EAST, WEST = "us-east", "eu-west"
VOTERS = [("agent-us-east", EAST, f"r{i}") for i in (1, 2, 3)] + [
    ("agent-eu-west", WEST, f"r{i}") for i in (1, 2)
]
ELECTORATE = [f"{a}/{r}" for a, _, r in VOTERS]
NAMES = ("a.demo.test.", "b.demo.test.")
R0 = START_MS // 1000
LOW = DetectorSettings(alpha=0.5, warmup=1, min_std=0.05, threshold=0.5)  # alarms often


def reference_apply(stage: SafeModeStage, decided: list[tuple[TallyKey, Decision]]) -> StageResult:
    """:meth:`SafeModeStage.apply` before the column path (main 38755c7), verbatim but for the
    observation's name."""
    out = StageResult([])
    for key, decision in decided:
        step = stage.engine.decision(stage.observation(key, decision))
        for alarm in step.alarms:
            out.records.append(_alarm_record(alarm, key))
        hold = step.hold
        if hold is not None and hold.held:
            decision = held_decision(decision)
            out.records.append(
                Record(
                    "answer_held",
                    "held",
                    _key_fields(key) | {"streak": hold.streak, "why": hold.reason},
                )
            )
        elif hold is not None and hold.trusted and hold.streak:
            out.records.append(
                Record("answer_released", "released", _key_fields(key) | {"why": hold.reason})
            )
        out.decided.append((key, decision))
        stage._announce(step.transitions, out)
    return out


# one name's round: the answer most voters give (mostly the same one), and per voter that answer,
# another one, a timeout or nothing sent (counted at the deadline), with its TTL (mostly 300)
name_round = st.tuples(
    st.sampled_from(["192.0.2.1"] * 4 + ["192.0.2.2"]),
    st.lists(
        st.tuples(
            st.sampled_from(["same"] * 6 + ["other", "timeout", "absent"]),
            st.sampled_from([300] * 5 + [5]),
        ),
        min_size=5,
        max_size=5,
    ),
)
rounds = st.lists(st.lists(name_round, min_size=2, max_size=2), min_size=1, max_size=14)


@given(rounds, st.booleans())
@settings(max_examples=40, deadline=None)
def test_the_column_path_judges_as_the_object_path(
    plan: list[list[tuple[str, list[tuple[str, int]]]]], low: bool
) -> None:
    kw = {
        k: LOW
        for k in (
            "disagreement",
            "region_disagreement",
            "flapping",
            "ttl_mismatch",
            "answer_change",
        )
    }
    cfg = PolicyConfig(auto_safe_mode=True, hold_rounds=2, quiet_rounds=3, **(kw if low else {}))
    agents = {"agent-us-east": EAST, "agent-eu-west": WEST}
    fast, ref = (SafeModeStage(cfg, [EAST, WEST], agents, "c", FakeClock(START_MS)) for _ in "ab")
    book = TallyBook(QuorumRule(3, 5), ELECTORATE)
    for i, per_name in enumerate(plan):
        round_ = R0 + i
        decided: list[tuple[TallyKey, Decision]] = []
        for qname, (base, votes) in zip(NAMES, per_name, strict=True):
            for (agent, region, res), (what, ttl) in zip(VOTERS, votes, strict=True):
                if what == "absent":
                    continue
                if what == "timeout":
                    wire = make_vote(
                        agent, region, round_, qname=qname, resolver_id=res,
                        status=VoteStatus.TIMEOUT,
                    )  # fmt: skip
                else:
                    ip = base if what == "same" else "192.0.2.3"
                    wire = make_vote(
                        agent, region, round_, qname=qname, resolver_id=res, answer=[ip], ttl=ttl
                    )
                _r, d = book.add(qname, "A", round_, vote_input(wire))
                if d is not None:
                    decided.append((TallyKey(qname, "A", round_), d))
        decided += book.expire(round_ - 1)  # the rest at the deadline
        got, want = fast.apply(list(decided)), reference_apply(ref, decided)
        assert got.decided == want.decided
        assert got.records == want.records
        assert got.announcements == want.announcements
    assert fast.engine.snapshot() == ref.engine.snapshot()


def test_apply_returns_its_input_when_nothing_is_held() -> None:
    stage = SafeModeStage(PolicyConfig(), [EAST, WEST], {}, "c", FakeClock(START_MS))
    book = TallyBook(QuorumRule(3, 5), ELECTORATE)
    decided = []
    for agent, region, res in VOTERS:
        vi = vote_input(make_vote(agent, region, R0, qname=NAMES[0], resolver_id=res))
        _r, d = book.add(NAMES[0], "A", R0, vi)
        if d is not None:
            decided.append((TallyKey(NAMES[0], "A", R0), d))
    assert stage.apply(decided).decided is decided
