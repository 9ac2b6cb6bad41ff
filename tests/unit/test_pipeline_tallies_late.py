"""``Counted.unheard``: votes refused ``closed`` for a key this coordinator never held a tally for (its
round closed here without one: a coordinator restarted after the round's deadline, its durable
delivering the ballots of its downtime). The service counts a ballot with only such votes as expired
(``late``) instead of acking it silently: every stored ballot ends in a verdict or a counted expiry.
Votes arriving after a decision of a retained tally are ``closed`` too, but their round has a verdict:
they are not unheard."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.messages import Ballot
from cctf.coordinator.pipeline.tallies import Tallies
from cctf.coordinator.pipeline.verify import Checked
from cctf.coordinator.tally import QuorumRule, TallyKey, VoteInput
from cctf.coordinator.tallybook import TallyBook

VOTERS = [f"agent-{i}/r1" for i in range(5)]
NAMES = ("a.example.", "b.example.")


def checked(round_: int, voter: int, names: tuple[str, ...] = NAMES) -> Checked:
    ballot = Ballot(agent=f"agent-{voter}", region="us-east", round=round_, issued_ms=0, votes=[])
    votes = [
        (TallyKey(n, "A", round_), VoteInput(VOTERS[voter], b"d", f"{n}{round_}{voter}".encode()))
        for n in names
    ]
    return Checked(ballot, votes)


def tallies() -> Tallies:
    return Tallies(TallyBook(QuorumRule(3, 5), VOTERS, retain_rounds=2))


def test_a_round_closed_without_a_tally_leaves_its_votes_unheard() -> None:
    t = tallies()
    t.expire(5)  # round 5 passed its deadline here before any of its ballots arrived
    c = t.count(checked(5, 0))
    assert c.keys == [] and c.ignored == {"closed": 2}
    assert c.unheard == 2


def test_votes_after_a_decision_are_closed_but_not_unheard() -> None:
    t = tallies()
    for voter in range(3):
        assert t.count(checked(7, voter)).unheard == 0
    late = t.count(checked(7, 3))  # decided early by the first three: this one is closed
    assert late.keys == [] and late.ignored == {"closed": 2} and late.unheard == 0
    t.expire(7)
    assert t.count(checked(7, 4)).unheard == 0  # retained after expiry: still has its verdict


def test_an_open_round_counts() -> None:
    c = tallies().count(checked(9, 1))
    assert len(c.keys) == 2 and c.unheard == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("vote"), st.integers(0, 6), st.integers(0, 4)),
            st.tuples(st.just("expire"), st.integers(0, 6), st.just(0)),
        ),
        max_size=40,
    )
)
def test_unheard_counts_exactly_the_votes_of_keys_never_held(
    ops: list[tuple[str, int, int]],
) -> None:
    """Reference: a key is held once one vote opened it and stays held until ``retain_rounds``
    rounds after its expiry; a vote for an expired round of a key never held is unheard."""
    t = tallies()
    opened: set[int] = set()  # rounds with a tally (both names are always voted together)
    expired = -1
    for op, r, voter in ops:
        if op == "expire":
            expired = max(expired, r)
            t.expire(r)
            opened = {x for x in opened if x > expired - 2}  # forgotten beyond retain_rounds
            continue
        c = t.count(checked(r, voter))
        if r <= expired and r not in opened:
            assert c.unheard == 2 and c.keys == [], (ops, r)
        else:
            assert c.unheard == 0, (ops, r)
            if r > expired:
                opened.add(r)
