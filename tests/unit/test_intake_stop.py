"""``Intake.turn(stop_if_left=...)``: a turn stops right after the message that decided keys when
enough is left behind it (the service sends their verdicts before verifying the ballots behind
it), and the rest, processed by later calls, is counted exactly as in one call."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_vote, make_world

from cctf.coordinator.config import NameSet
from cctf.coordinator.counters import Counters
from cctf.coordinator.intake import Intake, Token
from cctf.coordinator.pipeline.acks import AckLedger
from cctf.coordinator.pipeline.live import LiveCopy
from cctf.coordinator.pipeline.tallies import AnyKey, Tallies
from cctf.coordinator.pipeline.verify import VerifyStage
from cctf.coordinator.tally import QuorumRule
from cctf.coordinator.tallybook import TallyBook

REGIONS = ("us-east", "eu-west", "ap-north", "us-west", "ap-south")


def _setup() -> tuple[Intake, list[tuple[str, LiveCopy]], Counters]:
    world = make_world(REGIONS)
    voters = [f"{world.agents[r].principal}/r1" for r in REGIONS]
    book = TallyBook(QuorumRule(3, 5), voters, max_open=100)
    counts = Counters()
    ledger: AckLedger[Token, AnyKey] = AckLedger(max_deliver=5, refresh_ms=600, hold_limit_ms=5_000)
    intake = Intake(
        verify=VerifyStage(world.verifier(), NameSet([("*.stop.test.", "A")])),
        tallies=Tallies(book),
        ledger=ledger,
        verdict_ttl_ms=10_000,
        counts=counts,
        handles={},
        last_vote={},
        log=lambda *a, **k: None,
    )
    names = [f"n{i}.stop.test." for i in range(3)]
    turn: list[tuple[str, LiveCopy]] = []
    for r in REGIONS:
        agent = world.agents[r]
        votes = [make_vote(agent.principal, r, world.round, qname=q) for q in names]
        data = world.sealed(r, world.ballot(r, votes=votes))
        turn.append((r, LiveCopy(r, agent.subject, data)))
    return intake, turn, counts


def test_the_turn_stops_after_the_deciding_ballot() -> None:
    intake, turn, _ = _setup()
    first = intake.turn(turn, 1.0, 0, stop_if_left=0)
    assert first.used == 3  # the 3rd ballot of 3-of-5 decided the three names
    assert sorted(k.qname for k, _ in first.decided) == [f"n{i}.stop.test." for i in range(3)]
    rest = intake.turn(turn[first.used :], 1.0, 0, stop_if_left=0)
    assert rest.used == 2 and rest.decided == []  # votes 4 and 5 decide nothing new


def test_without_stopping_the_whole_turn_is_processed() -> None:
    intake, turn, _ = _setup()
    out = intake.turn(turn, 1.0, 0)
    assert out.used == 5 and len(out.decided) == 3


def test_a_small_rest_is_processed_in_the_same_call() -> None:
    intake, turn, _ = _setup()
    behind = sum(len(d.data) for _r, d in turn[3:])  # the 4th and 5th ballots
    out = intake.turn(turn, 1.0, 0, stop_if_left=behind + 1)
    assert out.used == 5 and len(out.decided) == 3  # too little behind the decision to stop
    intake, turn, _ = _setup()
    assert intake.turn(turn, 1.0, 0, stop_if_left=behind).used == 3


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=8))
def test_split_calls_count_like_one_call(order: list[int]) -> None:
    """Any sequence of the five ballots (repeats are duplicates): the calls that stop early, taken
    together, decide the same keys and count the same ballots and duplicates as one call."""
    a, turn_a, counts_a = _setup()
    b, turn_b, counts_b = _setup()
    whole = a.turn([turn_a[i] for i in order], 1.0, 0)
    left = [turn_b[i] for i in order]
    decided: list[AnyKey] = []
    while left:
        out = b.turn(left, 1.0, 0, stop_if_left=0)
        assert 1 <= out.used <= len(left)
        decided += [k for k, _ in out.decided]
        left = left[out.used :]
    assert sorted(decided) == sorted(k for k, _ in whole.decided)
    assert (counts_b.ballots, counts_b.votes) == (counts_a.ballots, counts_a.votes)
