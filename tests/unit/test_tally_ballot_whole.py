"""One ballot is counted as a whole: when a ballot holds several voters' votes (an agent's
resolvers), every vote of it is counted before any key is decided, so a decision never depends on
the order of a ballot's votes. The case that showed it: 3-of-5, a west ballot of two timeouts, then
an east ballot (timeout, DNSSEC-bogus, timeout); counted vote by vote, the east ballot's first
timeout made three and decided UNAVAILABLE before its bogus vote, which then came too late
(``closed``), so the round looked clean and Last-Known-Good attested it."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.messages import Ballot
from cctf.coordinator.pipeline.tallies import Tallies
from cctf.coordinator.pipeline.verify import Checked
from cctf.coordinator.tally import REFUSED, Outcome, QuorumRule, TallyKey, VoteInput, VoterState
from cctf.coordinator.tallybook import TallyBook

EAST = [f"agent-east/r{i}" for i in (1, 2, 3)]
WEST = [f"agent-west/r{i}" for i in (1, 2)]
KEY = TallyKey("www.example.", "A", 7)
Vote = bytes | None  # an answer digest, None (timeout) or REFUSED (bogus)


def ballot(voters: list[str], digests: list[Vote], keys: tuple[TallyKey, ...] = (KEY,)) -> Checked:
    b = Ballot(agent="agent", region="us-east", round=7, issued_ms=0, votes=[])
    votes = [
        (key, VoteInput(v, d, f"{key.qname}{v}".encode()))
        for key in keys
        for v, d in zip(voters, digests, strict=True)
    ]
    return Checked(b, votes)


def tallies() -> Tallies:
    return Tallies(TallyBook(QuorumRule(3, 5), EAST + WEST, refusable=True))


def test_a_bogus_vote_behind_the_third_timeout_is_in_the_decision() -> None:
    for order in itertools.permutations(range(3)):
        t = tallies()
        assert t.count(ballot(WEST, [None, None])).decided == []
        east = [EAST[i] for i in order]
        digests: list[Vote] = [[None, REFUSED, None][i] for i in order]
        ((key, decision),) = t.count(ballot(east, digests)).decided
        assert key == KEY and decision.outcome is Outcome.UNAVAILABLE
        states = dict(decision.voters)
        assert states[EAST[1]] is VoterState.DISAGREE, order  # the bogus vote is counted


def test_a_single_voter_ballot_still_decides_at_its_vote() -> None:
    t = tallies()
    for v in EAST[:2]:
        assert t.count(ballot([v], [b"a"])).decided == []
    ((_, decision),) = t.count(ballot([WEST[0]], [b"a"])).decided
    assert decision.outcome is Outcome.TRUSTED


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"b", None, REFUSED]), min_size=5, max_size=5),
    st.integers(1, 4),
    st.permutations(range(5)),
    st.randoms(use_true_random=False),
)
def test_the_decision_does_not_depend_on_the_order_inside_a_ballot(
    digests: list[Vote], cut: int, voters_order: list[int], rnd: object
) -> None:
    """Two ballots (the voters split at ``cut``, in a random order): the decision, its outcome,
    answer and voter states, is the same for every order of each ballot's votes, and each key is
    decided exactly once."""
    voters = [(EAST + WEST)[i] for i in voters_order]
    pairs = list(zip(voters, digests, strict=True))
    parts = [pairs[:cut], pairs[cut:]]
    keys = (KEY, TallyKey("api.example.", "A", 7))
    seen = None
    for shuffle in range(3):
        t = tallies()
        decisions = []
        for part in parts:
            part = list(part)
            if shuffle:
                rnd.shuffle(part)  # type: ignore[attr-defined]
            vs, ds = [p[0] for p in part], [p[1] for p in part]
            decisions += t.count(ballot(vs, ds, keys)).decided
        decisions += t.expire(7)
        assert sorted(k.qname for k, _ in decisions) == sorted(k.qname for k in keys)
        got = {k: (d.outcome, d.answer_digest, sorted(d.voters)) for k, d in decisions}
        assert seen is None or got == seen
        seen = got
