"""The clock stepped back: ``TallyBook.rewind`` / ``ExpiryHorizon`` and ``SequenceClock`` (pure).

The property: across any sequence of votes, expiries and rewinds, a key is decided (its decision
emitted) at most once; a round that had no tally when it expired opens again after a rewind below
it, a round that had one never does.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.clock import FakeClock
from cctf.coordinator.rewind import ExpiryHorizon
from cctf.coordinator.tally import AddResult, QuorumRule, TallyKey, VoteInput
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import SequenceClock

VOTERS = [f"agent-{i}/r{i}" for i in range(3)]
HONEST = b"honest"


def vote(i: int, tag: str = "") -> VoteInput:
    return VoteInput(VOTERS[i], HONEST, f"{i}{tag}".encode())


def test_rewind_reopens_empty_rounds_only() -> None:
    book = TallyBook(QuorumRule(2, 3), VOTERS)
    assert book.add("a.", "A", 5, vote(0)) == (AddResult.COUNTED, None)
    assert [k for k, _d in book.expire(300)] == [TallyKey("a.", "A", 5)]  # the clock jumped ahead
    assert book.add("a.", "A", 3, vote(0)) == (AddResult.CLOSED, None)  # stuck: the finding
    assert book.rewind(2) == 1  # round 5 had a tally: it stays closed
    assert book.expired_through == 2
    assert book.add("a.", "A", 3, vote(0)) == (AddResult.COUNTED, None)  # empty round: reopened
    assert book.add("a.", "A", 5, vote(1)) == (AddResult.CLOSED, None)
    assert book.add("b.", "A", 5, vote(1)) == (AddResult.CLOSED, None)  # round granularity
    assert book.add("a.", "A", 2, vote(1)) == (AddResult.CLOSED, None)  # still below the horizon
    result, d = book.add("a.", "A", 3, vote(1))
    assert result is AddResult.COUNTED and d is not None  # decided at once again
    assert book.expire(3) == []
    assert book.add("a.", "A", 5, vote(2)) == (AddResult.CLOSED, None)
    assert book.expire(6) == []  # passed round 5 again: nothing emitted twice
    assert book.add("a.", "A", 7, vote(0)) == (AddResult.COUNTED, None)
    assert book.rewind(10) == 0 and book.expired_through == 6  # not a step back: no-op
    assert book.rewind(True) == 0  # not a round


def test_second_rewind_keeps_rounds_passed_again_closed() -> None:
    book = TallyBook(QuorumRule(2, 3), VOTERS)
    book.add("a.", "A", 5, vote(0))
    book.expire(100)
    book.rewind(2)
    book.expire(50)  # the clock passes round 5 again (closed: nothing opened)
    assert book.rewind(1) == 1
    assert book.add("a.", "A", 5, vote(1)) == (AddResult.CLOSED, None)


def test_horizon_memory_is_bounded() -> None:
    h = ExpiryHorizon(memory=3)
    h.expired(10, [1, 2, 3, 4, 5])
    assert h.rewind(0) == 3 and h.ahead == frozenset({3, 4, 5})  # 1 and 2 were forgotten
    assert not h.closed(1) and h.closed(0) and h.closed(4)
    h.expired(4, [])
    assert h.ahead == frozenset({5})
    with pytest.raises(ValueError, match="memory"):
        ExpiryHorizon(memory=0)


@st.composite
def ops(draw: st.DrawFn) -> list[tuple[object, ...]]:
    v = st.tuples(st.just("vote"), st.integers(0, 2), st.integers(0, 6), st.integers(0, 2))
    e = st.tuples(st.just("expire"), st.integers(0, 8))
    r = st.tuples(st.just("rewind"), st.integers(-1, 8))
    return draw(st.lists(st.one_of(v, v, v, e, r), max_size=80))


@settings(max_examples=300, deadline=None)
@given(ops(), st.sampled_from((2, 3)), st.integers(0, 2))
def test_each_key_decided_at_most_once_across_rewinds(
    script: list[tuple[object, ...]], k: int, retain: int
) -> None:
    book = TallyBook(QuorumRule(k, 3), VOTERS, 50, retain)
    emitted: set[TallyKey] = set()
    nonempty: set[int] = set()  # rounds that had a tally when expired (model)
    through = -1
    for n, op in enumerate(script):
        if op[0] == "expire":
            up_to = op[1]
            assert isinstance(up_to, int)
            if up_to > through:
                live = (TallyKey(f"n{i}.", "A", r) for i in range(3) for r in range(7))
                nonempty |= {
                    kk.round
                    for kk in live
                    if through < kk.round <= up_to and book.get(*kk) is not None
                }
                through = up_to
            for key, _d in book.expire(up_to):
                assert key not in emitted, key
                emitted.add(key)
        elif op[0] == "rewind":
            to = op[1]
            assert isinstance(to, int)
            kept = book.rewind(to)
            if to < through:
                assert kept == len({r for r in nonempty if r > to})
                through = to
            else:
                assert kept == 0
        else:
            _, name, round_, vi = op
            assert isinstance(name, int) and isinstance(round_, int) and isinstance(vi, int)
            key = TallyKey(f"n{name}.", "A", round_)
            existed = book.get(*key) is not None
            result, d = book.add(*key, vote(vi, str(n)))
            if not existed:
                closed = round_ <= through or round_ in nonempty
                assert (result is AddResult.CLOSED) == closed, (key, result, through, nonempty)
            if d is not None:
                assert key not in emitted, key
                emitted.add(key)
        assert book.expired_through == through
    for key, _d in book.expire(100):
        assert key not in emitted, key


def test_sequence_restarts_from_the_clock_after_a_step_back() -> None:
    clock = FakeClock(1_000_000)
    seq = SequenceClock(clock)
    assert seq.next() == 1_000_000_000
    assert seq.next() == 1_000_000_001  # same millisecond: counts up
    clock.advance(300_000)
    ahead = seq.next()
    assert ahead == 1_300_000_000
    clock.set(1_000_500)  # set back by 5 minutes
    assert seq.next() == 1_000_500_000 and seq.rewinds == 1
    assert seq.next() == 1_000_500_001 and seq.rewinds == 1
    # a burst that runs ahead of the clock by less than max_lead_ms keeps counting up
    burst = SequenceClock(FakeClock(5), last=5_000 + 999_000)
    assert burst.next() == 5_000 + 999_001 and burst.rewinds == 0


def test_expire_rounds_decides_silent_rounds_after_the_basis_only() -> None:
    from cctf.coordinator.pipeline.expiry import expire_rounds
    from cctf.coordinator.pipeline.tallies import Tallies
    from cctf.coordinator.tally import Outcome

    book = TallyBook(QuorumRule(2, 3), VOTERS)
    tallies = Tallies(book)
    expire_rounds(tallies, 9)
    assert book.add("b.", "A", 10, vote(0))[0] is AddResult.COUNTED  # round 10 had a ballot
    out = expire_rounds(tallies, 10, [(("a.", "A"), 9), (("b.", "A"), 9), (("c.", "A"), 10)])
    # a. (basis 9) silent in round 10: decided UNAVAILABLE; b. had a ballot; c.'s basis is 10
    assert out.silent == 1 and {(k[0], d.outcome) for k, d in out.decided} == {
        ("a.", Outcome.UNAVAILABLE),
        ("b.", Outcome.UNAVAILABLE),
    }
    # rounds in which the agents voted (on other names) are no outage: nothing opened for a.
    voted = set(range(395, 401))
    out = expire_rounds(tallies, 397, [(("a.", "A"), 9)], round_silent=lambda r: r not in voted)
    assert out.silent == 0 and out.decided == []
    out = expire_rounds(tallies, 400, [(("a.", "A"), 9)], lookback=2)  # a jump: 3 rounds at most
    assert out.silent == 3 and sorted(k[2] for k, _d in out.decided) == [398, 399, 400]
    out = expire_rounds(tallies, 12, [(("a.", "A"), 9)])  # the clock stepped back
    assert (out.rewound_from, out.kept_closed, out.decided) == (400, 3, [])
    assert expire_rounds(tallies, 12).decided == []  # nothing new due


def test_round_queue_rewind_lets_current_rounds_through_again() -> None:
    from cctf.coordinator.pipeline.schedule import RoundQueue

    q: RoundQueue[str] = RoundQueue()
    assert q.shed(600) == {}  # the clock ran ahead: everything up to 600 counts as shed
    assert not q.push(10, ["a"])  # a current round would be shed at once: the finding
    q.rewind(8)  # the clock stepped back: the horizon follows it
    assert q.shed_through == 8 and q.push(10, ["a"]) and q.pop(5) == (10, ["a"])
    assert not q.push(8, ["b"])  # at or below the horizon: still shed
