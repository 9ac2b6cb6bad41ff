"""The coordinator's policy stage (pure): decisions from a real TallyBook go through the stage; a
held decision builds a verdict the subscriber's verifier accepts as UNAVAILABLE; announcements seal
and verify; operator commands and identity evidence reach the engine."""

from __future__ import annotations

from wirefactories import START_MS, make_identity, make_trust, make_vote

from cctf.bus_schemas.control import Action, SafeModeCause, SafeModeCommand, SafeModeState
from cctf.bus_schemas.messages import Outcome, VoterState
from cctf.client.verify import VerdictVerifier
from cctf.client.verify_control import AnnouncementVerifier
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.safemode import SafeModeStage, seal_announcement
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import build_verdict, seal_verdict
from cctf.crypto.trust import Role
from cctf.policy.config import PolicyConfig

EAST, WEST = "us-east", "eu-west"
VOTERS = [
    ("agent-us-east", EAST, "r1"),
    ("agent-us-east", EAST, "r2"),
    ("agent-us-east", EAST, "r3"),
    ("agent-eu-west", WEST, "r1"),
    ("agent-eu-west", WEST, "r2"),
]
ELECTORATE = [f"{a}/{r}" for a, _, r in VOTERS]
NAME = "www.demo.test."
RULE = QuorumRule(3, 5)
COORD = make_identity("coord-a", EAST, role=Role.COORDINATOR)
R0 = START_MS // 1000


def decide(
    book: TallyBook,
    stage: SafeModeStage,
    round_: int,
    answers: list[str],
    ttls: list[int] | None = None,
) -> list:
    decided = []
    for (agent, region, res), ans, ttl in zip(VOTERS, answers, ttls or [300] * 5, strict=True):
        vote = make_vote(agent, region, round_, qname=NAME, resolver_id=res, answer=[ans], ttl=ttl)
        key = TallyKey(NAME, "A", round_)
        vi = vote_input(vote)
        _r, d = book.add(NAME, "A", round_, vi)
        if d is not None:
            decided.append((key, d))
    return stage.apply(decided).decided if decided else []


def test_held_decisions_are_valid_unavailable_verdicts_and_announced() -> None:
    clock = FakeClock(START_MS)
    cfg = PolicyConfig(auto_safe_mode=True, hold_rounds=2, quiet_rounds=4)
    stage = SafeModeStage(
        cfg, [EAST, WEST], {"agent-us-east": EAST, "agent-eu-west": WEST}, "coord-a", clock
    )
    book = TallyBook(RULE, ELECTORATE)
    for i in range(7):
        ((_k, d),) = decide(book, stage, R0 + i, ["192.0.2.10"] * 5)
        assert d.outcome is Outcome.TRUSTED
    key = TallyKey(NAME, "A", R0 + 7)
    clock.set((R0 + 7) * 1000 + 100)
    decided = []
    for agent, region, res in VOTERS:
        vi = vote_input(
            make_vote(agent, region, R0 + 7, qname=NAME, resolver_id=res, answer=["6.6.6.6"])
        )
        _r, d = book.add(NAME, "A", R0 + 7, vi)
        if d is not None:
            decided.append((key, d))
    result = stage.apply(decided)
    ((_k, held),) = result.decided
    assert held.outcome is Outcome.UNAVAILABLE and held.winner is None
    assert {s for _v, s in held.voters} <= {VoterState.DISAGREE, VoterState.UNAVAILABLE}
    verdict = build_verdict(
        held, key, RULE, "coord-a", clock.now_ms(), 30_000, clock.now_ms() * 1000
    )
    subject, data = seal_verdict(COORD.key, verdict, EAST)
    clock.advance(10)
    checked = VerdictVerifier(make_trust(COORD), clock, region=EAST).verify(data, subject)
    assert checked.outcome is Outcome.UNAVAILABLE and not checked.answer
    events = [r.event for r in result.records]
    assert events[:2] == ["alarm", "answer_held"] and events.count("safe_mode_entered") == 2
    entered = [a for a in result.announcements if a.state is SafeModeState.ENTERED]
    assert {a.region for a in entered} == {EAST, WEST}
    verifier = AnnouncementVerifier(make_trust(COORD), clock)
    for a in entered:
        subj, raw = seal_announcement(COORD.key, a)
        got = verifier.verify(raw, subj)
        assert got.rule == "answer_change" and got.active == [NAME] and "z " in got.reason


def test_commands_status_and_identity_drift() -> None:
    clock = FakeClock(START_MS)
    stage = SafeModeStage(PolicyConfig(auto_safe_mode=True), [EAST], {}, "coord-a", clock)
    cmd = SafeModeCommand(
        operator="ops",
        region=EAST,
        scope="",
        action=Action.ENTER,
        reason="drill",
        issued_ms=START_MS,
    )
    out = stage.command(cmd)
    (a,) = out.announcements
    assert (a.state, a.cause, a.active, a.reason) == (
        SafeModeState.ENTERED,
        SafeModeCause.OPERATOR,
        [""],
        "operator ops: drill",
    )
    (again,) = stage.command(cmd).announcements  # nothing changes: a status answer
    assert again.state is SafeModeState.STATUS and again.seq > a.seq
    (status,) = stage.status(SafeModeCause.REFRESH)
    assert status.active == [""] and status.cause is SafeModeCause.REFRESH
    wl = "spiffe://example.org/web"
    assert not stage.identity(wl, R0, b"k" * 32, 1000).records
    drift = stage.identity(wl, R0 + 1, b"j" * 32, 1000)
    assert [r.label for r in drift.records if r.event == "alarm"] == ["identity_drift"]
    assert any(t.scope == wl for t in drift.announcements)
    left = stage.command(
        SafeModeCommand(
            operator="ops",
            region=EAST,
            scope="",
            action=Action.LEAVE,
            reason="done",
            issued_ms=START_MS,
        )
    )
    assert left.announcements[0].state is SafeModeState.LEFT and left.announcements[0].active == [
        wl
    ]


def test_ttl_mismatch_reads_the_counted_votes() -> None:
    clock = FakeClock(START_MS)
    stage = SafeModeStage(PolicyConfig(), [EAST], {}, "coord-a", clock)
    book = TallyBook(RULE, ELECTORATE)
    records = []
    for i in range(12):
        ttls = [300, 300, 2, 300, 300] if i == 11 else None
        key = TallyKey(NAME, "A", R0 + i)
        decided = []
        for (agent, region, res), ttl in zip(VOTERS, ttls or [300] * 5, strict=True):
            vote = make_vote(
                agent, region, R0 + i, qname=NAME, resolver_id=res, answer=["192.0.2.10"], ttl=ttl
            )
            _r, d = book.add(NAME, "A", R0 + i, vote_input(vote))
            if d is not None:  # decided early, at the third vote: its TTLs are the counted ones
                decided.append((key, d))
        records += stage.apply(decided).records
    alarms = [r for r in records if r.event == "alarm"]
    assert [r.label for r in alarms] == ["ttl_mismatch"] and alarms[0].fields["round"] == R0 + 11
