"""What a coordinator and a subscriber keep for a while is invisible to the cyclic GC.

A young collection scans every tracked object allocated since the last one that is still alive, in
one pause; an older one scans every tracked survivor again. A coordinator keeps its counted votes
and decisions until their round is pruned, its policy state per name, and a subscriber caches its
verified verdicts: if those were tracked, every collection would scan them (measured: 15 - 33 ms
pauses of a coordinator, the 100-name latency p99 of ``make bench``). These tests fail as soon as
one of them holds a tracked object again (a list, a dataclass, a mutable default), after the one
collection that untracks tuples of atomic values.
"""

from __future__ import annotations

import enum
import gc
from typing import Any

import msgspec
import pytest
from wirefactories import START_MS, make_ballot, make_verdict, make_vote

from cctf.bus_schemas.messages import decode_ballot, decode_verdict, encode
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import Decision, QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.policy.baseline import Ewma
from cctf.policy.config import PolicyConfig
from cctf.policy.detectors import Detectors
from cctf.policy.model import DecisionObs, VoterObs
from cctf.policy.safemode import AnswerHolds

RULE = QuorumRule(2, 3)
VOTERS = ("agent-a/r1", "agent-b/r1", "agent-c/r1")
ROUND = START_MS // 1000


def tracked_within(obj: Any, depth: int = 6) -> list[str]:
    """Every object reachable from ``obj`` through struct fields, tuples, lists and dicts that the
    cyclic GC tracks, as ``path: type`` (the empty list when there is none; enum members, shared
    for the whole process, are left out)."""
    out: list[str] = []

    def walk(o: Any, path: str, d: int) -> None:
        if isinstance(o, enum.Enum):  # a member is one module-level object for the process
            return
        if gc.is_tracked(o):
            out.append(f"{path}: {type(o).__name__}")
        if d == 0:
            return
        if isinstance(o, msgspec.Struct):
            for name in o.__struct_fields__:
                walk(getattr(o, name), f"{path}.{name}", d - 1)
        elif isinstance(o, tuple | list):
            for i, item in enumerate(o):
                walk(item, f"{path}[{i}]", d - 1)
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(k, f"{path}<key {k!r}>", d - 1)
                walk(v, f"{path}[{k!r}]", d - 1)
        elif hasattr(o, "__slots__"):
            for name in o.__slots__:
                walk(getattr(o, name, None), f"{path}.{name}", d - 1)

    walk(obj, type(obj).__name__, depth)
    return out


def test_decoded_votes_and_ballots_are_untracked_and_immutable() -> None:
    votes = [
        make_vote("agent-a", "us-east", ROUND, answer=("192.0.2.1", "192.0.2.2"), ede=(6, 22)),
        make_vote("agent-a", "us-east", ROUND, qname="b.example.", answer=()),
    ]
    ballot = decode_ballot(encode(make_ballot(votes=votes)))
    gc.collect()
    assert tracked_within(ballot.votes[0]) == []
    assert tracked_within(ballot.votes[1]) == []
    assert not gc.is_tracked(ballot)
    assert isinstance(ballot.votes[0].answer, tuple) and isinstance(ballot.votes[0].ede, tuple)


def _decide(book: TallyBook, key: TallyKey) -> Decision:
    decision = None
    for agent in ("agent-a", "agent-b"):
        ballot = make_ballot(votes=[make_vote(agent, "us-east", key.round, qname=key.qname)])
        vote = decode_ballot(encode(ballot)).votes[0]
        _, d = book.add(key.qname, key.qtype, key.round, vote_input(vote))
        decision = decision or d
    assert decision is not None
    return decision


def test_a_decision_and_its_verdict_are_untracked_and_immutable() -> None:
    book = TallyBook(RULE, VOTERS, refusable=True)
    key = TallyKey("example.com.", "A", ROUND)
    decision = _decide(book, key)
    other = _decide(book, TallyKey("b.example.com.", "A", ROUND))
    verdict = Decider(RULE, "coord-1", 30_000, FakeClock(START_MS + 10)).verdict(key, decision)
    gc.collect()
    # the (voter, state) pairs hold enum members, so stay tracked: one shared tuple per electorate
    # state (tally._shared), not one per decision
    assert decision.voters is other.voters
    assert [p for p in tracked_within(decision) if not p.startswith("Decision.voters")] == []
    assert tracked_within(verdict) == []
    # the verdict shares the winning vote's answer tuple: no copy, and nothing a holder can change
    assert decision.winner is not None and verdict.answer is decision.winner.answer
    with pytest.raises(AttributeError):
        verdict.answer.append("203.0.113.66")  # type: ignore[attr-defined]


def test_a_verified_verdict_a_subscriber_caches_is_untracked() -> None:
    verdict = decode_verdict(encode(make_verdict(vote_digests=[b"\x01" * 32, b"\x02" * 32])))
    gc.collect()
    assert tracked_within(verdict) == []
    assert isinstance(verdict.voters, tuple) and isinstance(verdict.vote_digests, tuple)


def test_the_policy_state_per_name_is_untracked() -> None:
    detectors = Detectors(PolicyConfig(), ["us-east"])
    for round_ in range(ROUND, ROUND + 3):
        obs = DecisionObs(
            qname="example.com.",
            qtype="A",
            round=round_,
            trusted=True,
            digest=b"\x01" * 32,
            voters=tuple(VoterObs(v, "us-east", b"\x01" * 32, 300) for v in VOTERS),
        )
        detectors.decision(obs)
    holds = AnswerHolds(2)
    holds.apply("example.com./A", ROUND, True, b"\x01" * 32, False)
    gc.collect()
    names = list(detectors._names.values())  # the state kept per name
    assert names and all(tracked_within(n, depth=2) == [] for n in names)
    assert not gc.is_tracked(Ewma())
    assert all(not gc.is_tracked(h) for h in holds._holds._d.values())
