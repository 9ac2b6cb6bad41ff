"""Tests for cctf.coordinator.tally: a brute-force reference over every completion, plus examples."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.coordinator.tally import (
    REFUSED,
    AddResult,
    Decision,
    Outcome,
    QuorumRule,
    RoundTally,
    TallyKey,
    VoteInput,
    VoterState,
    plain_outcome,
)
from cctf.coordinator.tallybook import TallyBook

DIGESTS = (b"digest-x", b"digest-y", b"digest-z")
HONEST = b"honest"


def voter_ids(n: int) -> list[str]:
    return [f"agent-{i % 3}/r{i}" for i in range(n)]


# --- the reference ---------------------------------------------------------------------------------


def reference_plain(k: int, vector: Sequence[bytes | None]) -> tuple[Outcome, bytes | None]:
    """Plain definition over a complete vector (None = unavailable, b"" = refused: neither a group
    nor unavailable), written independently."""
    groups = Counter(d for d in vector if d)
    unavail = sum(1 for d in vector if d is None)
    for digest, size in groups.items():
        if size >= k:
            return Outcome.TRUSTED, digest
    best = max(groups.values(), default=0)
    if best + unavail >= k:
        return Outcome.UNAVAILABLE, None
    return Outcome.DISPUTED, None


def completions(
    counted: tuple[bytes | None, ...], pending: int, refusable: bool = False
) -> Iterator[tuple[bytes | None, ...]]:
    """Every completion: each pending voter is unavailable, (``refusable``) refused, answers an
    existing digest, or answers a fresh one (fresh digests numbered canonically: every way of
    sharing them is produced once)."""
    existing = sorted({d for d in counted if d})

    def rec(
        i: int, fresh: int, acc: tuple[bytes | None, ...]
    ) -> Iterator[tuple[bytes | None, ...]]:
        if i == pending:
            yield counted + acc
            return
        yield from rec(i + 1, fresh, (*acc, None))
        if refusable:
            yield from rec(i + 1, fresh, (*acc, REFUSED))
        for d in existing:
            yield from rec(i + 1, fresh, (*acc, d))
        for j in range(fresh + 1):
            yield from rec(i + 1, max(fresh, j + 1), (*acc, b"fresh-%d" % j))

    yield from rec(0, 0, ())


@functools.cache
def reference_settled(
    k: int, counted: tuple[bytes | None, ...], pending: int, refusable: bool = False
) -> tuple[Outcome, bytes | None] | None:
    """The common (outcome, answer) of every completion, or None when completions disagree."""
    results = {reference_plain(k, v) for v in completions(counted, pending, refusable)}
    return next(iter(results)) if len(results) == 1 else None


def canonical(counted: Sequence[bytes | None]) -> tuple[bytes | None, ...]:
    # The cache key: sorted so that equal multisets share an entry (None first).
    return tuple(sorted(counted, key=lambda d: (d is not None, d or b"")))


def test_completion_enumeration_is_complete() -> None:
    # 3 pending voters, nothing counted: 1 + 3 (fresh) ... counted by hand: choices per voter are
    # {None, fresh-new, fresh-used...}: restricted growth strings over {None} + fresh labels.
    got = set(completions((), 3))
    assert (None, None, None) in got
    assert (b"fresh-0", b"fresh-1", b"fresh-2") in got
    assert (b"fresh-0", None, b"fresh-0") in got
    assert all(v[0] in (None, b"fresh-0") for v in got)
    assert len(got) == len(list(completions((), 3)))  # no repeats
    # Sum over answering subsets of Bell numbers: C(3,0)B0 + C(3,1)B1 + C(3,2)B2 + C(3,3)B3 = 15.
    assert len(got) == 1 + 3 * 1 + 3 * 2 + 5


# --- strategies ------------------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn, max_n: int = 7) -> QuorumRule:
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(n // 2 + 1, n))
    return QuorumRule(k, n)


VoteEvent = tuple[int, bytes | None]  # (voter index, digest); index == n means an unknown voter


@st.composite
def scenarios(draw: st.DrawFn, max_n: int = 7) -> tuple[QuorumRule, list[str], list[VoteInput]]:
    rule = draw(rules(max_n))
    voters = voter_ids(rule.n)
    ndig = draw(st.integers(1, len(DIGESTS)))
    refused = st.just(REFUSED) if draw(st.booleans()) else st.nothing()
    digest = st.one_of(st.none(), st.sampled_from(DIGESTS[:ndig]), refused)
    events = draw(st.lists(st.tuples(st.integers(0, rule.n), digest), max_size=2 * rule.n + 2))
    votes = [
        VoteInput(
            voter=voters[i] if i < rule.n else "stranger/r9",
            digest=d,
            vote_digest=b"vote-%d" % seq,
        )
        for seq, (i, d) in enumerate(events)
    ]
    return rule, voters, votes


def expected_decision(
    rule: QuorumRule,
    voters: list[str],
    counted: dict[str, VoteInput],
    equivocators: set[str],
    outcome: Outcome,
    answer: bytes | None,
    early: bool,
) -> Decision:
    states = []
    for v in sorted(voters):
        vote = counted.get(v)
        if vote is None or vote.digest is None:
            states.append((v, VoterState.UNAVAILABLE))
        elif outcome is Outcome.TRUSTED and vote.digest == answer:
            states.append((v, VoterState.AGREE))
        else:
            states.append((v, VoterState.DISAGREE))
    return Decision(
        outcome=outcome,
        answer_digest=answer,
        voters=tuple(states),
        vote_digests=tuple(sorted(v.vote_digest for v in counted.values())),
        decided_early=early,
        equivocations=tuple(sorted(equivocators)),
        voter_digests=tuple(
            (counted[v].digest or b"") if v in counted else b"" for v in sorted(voters)
        ),
        winner=None,  # the scenarios give no ResolverVote; the winner is tested in test_pipeline_*
        counted_votes=(None,) * len(voters),
    )


# --- RoundTally against the reference --------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.booleans())
def test_matches_brute_force_at_every_step(
    scenario: tuple[QuorumRule, list[str], list[VoteInput]], refusable: bool
) -> None:
    rule, voters, votes = scenario
    # ``refusable``: pending voters may be refused too (needed when any vote is refused).
    refusable = refusable or any(v.digest == REFUSED for v in votes)
    tally = RoundTally(rule, reversed(voters), refusable=refusable)
    counted: dict[str, VoteInput] = {}
    equivocators: set[str] = set()
    settled: Decision | None = None

    def check() -> None:
        nonlocal settled
        ref = reference_settled(
            rule.k,
            canonical([v.digest for v in counted.values()]),
            rule.n - len(counted),
            refusable,
        )
        got = tally.decision()
        if settled is not None:
            assert got == settled  # once returned, stays the same
            return
        if ref is None:
            assert got is None
        else:
            want = expected_decision(rule, voters, counted, equivocators, *ref, early=True)
            assert got == want
            settled = got
        assert tally.pending == rule.n - len(counted)
        assert tally.counted == len(counted)

    check()
    for vote in votes:
        result = tally.add(vote)
        if vote.voter not in voters:
            assert result is AddResult.UNKNOWN_VOTER
        elif vote.voter in counted:
            if counted[vote.voter].digest == vote.digest:
                assert result is AddResult.DUPLICATE
            else:
                assert result is AddResult.EQUIVOCATION
                equivocators.add(vote.voter)
        elif settled is not None:
            assert result is AddResult.CLOSED
        else:
            assert result is AddResult.COUNTED
            counted[vote.voter] = vote
        check()
    assert set(tally.equivocations) == equivocators

    final = tally.finalize()
    assert tally.finalize() is final
    assert tally.decision() is final
    if settled is not None:
        assert final == settled
    else:
        vector = [counted[v].digest if v in counted else None for v in voters]
        outcome, answer = reference_plain(rule.k, vector)
        assert final == expected_decision(
            rule, voters, counted, equivocators, outcome, answer, early=False
        )
    # Either way, the outcome is the plain definition with pending voters unavailable.
    vector = [counted[v].digest if v in counted else None for v in voters]
    assert (final.outcome, final.answer_digest) == reference_plain(rule.k, vector)
    assert tally.add(VoteInput(voters[0], b"late", b"late")) in (
        AddResult.CLOSED,
        AddResult.EQUIVOCATION,
        AddResult.DUPLICATE,
    )
    assert tally.decision() is final


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_order_independence(
    scenario: tuple[QuorumRule, list[str], list[VoteInput]], data: st.DataObject
) -> None:
    rule, voters, votes = scenario
    firsts: dict[str, VoteInput] = {}
    for v in votes:
        if v.voter in voters:
            firsts.setdefault(v.voter, v)
    one_each = list(firsts.values())
    shuffled = data.draw(st.permutations(one_each))

    refusable = any(v.digest == REFUSED for v in votes)

    def run(seq: Sequence[VoteInput]) -> Decision:
        t = RoundTally(rule, voters, refusable=refusable)
        for v in seq:
            t.add(v)
        return t.finalize()

    a, b = run(one_each), run(shuffled)
    assert (a.outcome, a.answer_digest) == (b.outcome, b.answer_digest)
    vector = [firsts[v].digest if v in firsts else None for v in voters]
    assert (a.outcome, a.answer_digest) == reference_plain(rule.k, vector)


@settings(max_examples=200, deadline=None)
@given(rules(), st.data())
def test_equivocation_and_duplicates_do_not_change_counts(
    rule: QuorumRule, data: st.DataObject
) -> None:
    voters = voter_ids(rule.n)
    tally = RoundTally(rule, voters)
    voter = data.draw(st.sampled_from(voters))
    first = data.draw(st.one_of(st.none(), st.sampled_from(DIGESTS)))
    other = data.draw(st.one_of(st.none(), st.sampled_from(DIGESTS)).filter(lambda d: d != first))
    assert tally.add(VoteInput(voter, first, b"v1")) is AddResult.COUNTED
    state = (tally.counted, tally.best, tally.unavailable, tally.decision())
    assert tally.add(VoteInput(voter, first, b"v2")) is AddResult.DUPLICATE
    assert tally.add(VoteInput(voter, other, b"v3")) is AddResult.EQUIVOCATION
    assert tally.add(VoteInput(voter, other, b"v4")) is AddResult.EQUIVOCATION
    assert (tally.counted, tally.best, tally.unavailable, tally.decision()) == state
    assert tally.equivocations == (voter,)
    final = tally.finalize()
    assert final.vote_digests == (b"v1",)
    assert dict(final.voters)[voter] in (
        VoterState.UNAVAILABLE if first is None else VoterState.AGREE,
        VoterState.DISAGREE,
    )
    if final.decided_early:
        assert final.equivocations == ()  # rule.k == 1: settled before the equivocation
    else:
        assert final.equivocations == (voter,)


# --- plain examples --------------------------------------------------------------------------------


def run_3_of_5(digests: Sequence[bytes | None], *, refusable: bool = False) -> RoundTally:
    voters = voter_ids(5)
    tally = RoundTally(QuorumRule(3, 5), voters, refusable=refusable)
    for i, (v, d) in enumerate(zip(voters, digests, strict=False)):
        tally.add(VoteInput(v, d, b"vote-%d" % i))
    return tally


def states(d: Decision) -> list[VoterState]:
    """Voter states in the order the votes were cast by run_3_of_5."""
    by_voter = dict(d.voters)
    assert list(by_voter) == sorted(by_voter)
    return [by_voter[v] for v in voter_ids(5)]


def test_two_poisoned_distinct_is_trusted_honest() -> None:
    d = run_3_of_5([b"evil-1", b"evil-2", HONEST, HONEST, HONEST]).finalize()
    assert d.outcome is Outcome.TRUSTED
    assert d.answer_digest == HONEST
    assert d.decided_early
    assert states(d) == [VoterState.DISAGREE] * 2 + [VoterState.AGREE] * 3
    assert len(d.vote_digests) == 5


def test_trusted_decides_early_and_closes() -> None:
    tally = run_3_of_5([HONEST, HONEST, HONEST])
    d = tally.decision()
    assert d is not None and d.outcome is Outcome.TRUSTED and d.decided_early
    assert states(d) == [VoterState.AGREE] * 3 + [VoterState.UNAVAILABLE] * 2
    assert tally.add(VoteInput(voter_ids(5)[3], HONEST, b"late")) is AddResult.CLOSED
    assert tally.decision() is d


def test_three_poisoned_distinct_is_disputed() -> None:
    tally = run_3_of_5([b"evil-1", b"evil-2", b"evil-3"])
    assert tally.decision() is None  # both pending voters could still side with evil-1
    tally.add(VoteInput(voter_ids(5)[3], HONEST, b"vote-3"))
    d = tally.decision()
    assert d is not None
    assert d.outcome is Outcome.DISPUTED
    assert d.answer_digest is None
    assert d.decided_early
    assert states(d) == [VoterState.DISAGREE] * 4 + [VoterState.UNAVAILABLE]


def test_three_poisoned_distinct_two_silent_is_unavailable_at_deadline() -> None:
    # best 1 + unavailable 2 reaches 3: had the silent voters sided with a leader, quorum would hold.
    d = run_3_of_5([b"evil-1", b"evil-2", b"evil-3"]).finalize()
    assert d.outcome is Outcome.UNAVAILABLE
    assert not d.decided_early


def test_five_unavailable_is_unavailable() -> None:
    tally = run_3_of_5([None] * 5)
    d = tally.decision()
    assert d is not None and d.outcome is Outcome.UNAVAILABLE and d.answer_digest is None
    assert {s for _, s in d.voters} == {VoterState.UNAVAILABLE}


def test_three_unavailable_two_honest_is_unavailable() -> None:
    d = run_3_of_5([None, None, None, HONEST, HONEST]).finalize()
    assert d.outcome is Outcome.UNAVAILABLE
    assert d.answer_digest is None


def test_waits_while_quorum_possible() -> None:
    tally = run_3_of_5([None, None, HONEST])
    assert tally.decision() is None  # the two pending voters could still make HONEST reach 3
    tally.add(VoteInput(voter_ids(5)[3], None, b"late"))
    d = tally.decision()
    assert d is not None and d.outcome is Outcome.UNAVAILABLE and d.decided_early


def test_three_unavailable_settles_early() -> None:
    # best = 0, unavail = 3, pending = 2: no group can reach 3 and every completion is UNAVAILABLE.
    d = run_3_of_5([None, None, None]).decision()
    assert d is not None and d.outcome is Outcome.UNAVAILABLE


def test_silent_electorate_at_deadline_is_unavailable() -> None:
    d = run_3_of_5([]).finalize()
    assert d.outcome is Outcome.UNAVAILABLE
    assert not d.decided_early
    assert d.vote_digests == ()


def test_nobody_answered_corner_decides_early() -> None:
    # 3-of-4, two unavailable, two pending: every completion is UNAVAILABLE.
    voters = voter_ids(4)
    tally = RoundTally(QuorumRule(3, 4), voters)
    tally.add(VoteInput(voters[0], None, b"a"))
    assert tally.decision() is None
    tally.add(VoteInput(voters[1], None, b"b"))
    d = tally.decision()
    assert d is not None and d.outcome is Outcome.UNAVAILABLE


def test_plain_outcome() -> None:
    rule = QuorumRule(3, 5)
    assert plain_outcome(rule, 3, 0) is Outcome.TRUSTED
    assert plain_outcome(rule, 2, 1) is Outcome.UNAVAILABLE
    assert plain_outcome(rule, 1, 1) is Outcome.DISPUTED


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 1), (2, 1), (2, 4), (1, 3), (0, 0), (-1, 1), (True, 1)])
def test_quorum_rule_rejects(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="quorum"):
        QuorumRule(k, n)


@given(st.integers(1, 50), st.data())
def test_quorum_rule_accepts_exactly_majorities(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(-2, n + 2))
    if 1 <= k <= n and 2 * k > n:
        assert QuorumRule(k, n).k == k
    else:
        with pytest.raises(ValueError):
            QuorumRule(k, n)


def test_quorum_rule_default() -> None:
    assert QuorumRule.default() == QuorumRule() == QuorumRule(3, 5)


def test_electorate_validation() -> None:
    with pytest.raises(ValueError, match="n=5"):
        RoundTally(QuorumRule(3, 5), voter_ids(4))
    with pytest.raises(ValueError, match="unique"):
        RoundTally(QuorumRule(3, 5), ["a/1", "a/1", "a/2", "a/3", "a/4"])
    with pytest.raises(ValueError, match="n=5"):
        TallyBook(QuorumRule(3, 5), voter_ids(6))
    with pytest.raises(ValueError):
        TallyBook(QuorumRule(3, 5), voter_ids(5), max_open=0)
    with pytest.raises(ValueError):
        TallyBook(QuorumRule(3, 5), voter_ids(5), retain_rounds=-1)


def test_unknown_voter_is_ignored() -> None:
    tally = RoundTally(QuorumRule(1, 1), ["a/1"])
    assert tally.add(VoteInput("b/1", HONEST, b"x")) is AddResult.UNKNOWN_VOTER
    assert tally.counted == 0 and tally.decision() is None
    book = TallyBook(QuorumRule(1, 1), ["a/1"], max_open=1)
    assert book.add("n.", "A", 1, VoteInput("b/1", HONEST, b"x")) == (
        AddResult.UNKNOWN_VOTER,
        None,
    )
    assert book.live == 0  # no tally opened for an unknown voter


# --- TallyBook -------------------------------------------------------------------------------------


@st.composite
def book_ops(draw: st.DrawFn) -> tuple[QuorumRule, list[tuple[object, ...]]]:
    rule = draw(rules(max_n=5))
    vote = st.tuples(
        st.just("vote"),
        st.integers(0, 2),  # name
        st.integers(0, 4),  # round
        st.integers(0, rule.n - 1),
        st.one_of(st.none(), st.sampled_from(DIGESTS[:2])),
    )
    expire = st.tuples(st.just("expire"), st.integers(0, 5))
    ops: list[tuple[object, ...]] = draw(st.lists(st.one_of(vote, vote, vote, expire), max_size=60))
    return rule, ops


@settings(max_examples=300, deadline=None)
@given(book_ops(), st.integers(1, 6), st.integers(0, 3))
def test_book_emits_each_decision_once_and_stays_bounded(
    scenario: tuple[QuorumRule, list[tuple[object, ...]]], max_open: int, retain: int
) -> None:
    rule, ops = scenario
    voters = voter_ids(rule.n)
    book = TallyBook(rule, voters, max_open=max_open, retain_rounds=retain)
    emitted: dict[TallyKey, Decision] = {}
    opened: set[TallyKey] = set()
    floor = -1
    for seq, op in enumerate(ops):
        if op[0] == "expire":
            up_to = op[1]
            assert isinstance(up_to, int)
            out = book.expire(up_to)
            for key, final in out:
                assert key not in emitted
                assert key.round <= up_to
                assert not final.decided_early
                emitted[key] = final
            floor = max(floor, up_to)
            # Every opened key at or below the floor has been decided and emitted.
            assert {k for k in opened if k.round <= floor} <= set(emitted)
        else:
            _, name, round_, vi, digest = op
            assert isinstance(name, int) and isinstance(round_, int) and isinstance(vi, int)
            assert digest is None or isinstance(digest, bytes)
            key = TallyKey(f"n{name}.example.", "A", round_)
            existed = book.get(*key) is not None
            live_before = book.live
            result, d = book.add(*key, VoteInput(voters[vi], digest, b"v%d" % seq))
            if not existed:
                if round_ <= floor:
                    assert result is AddResult.CLOSED
                elif live_before >= max_open:
                    assert result is AddResult.OVERLOADED
                    assert book.get(*key) is None
                else:
                    assert result is AddResult.COUNTED
                    opened.add(key)
            if d is not None:
                assert result is AddResult.COUNTED
                assert key not in emitted
                assert d.decided_early
                emitted[key] = d
                tally = book.get(*key)
                assert tally is not None and tally.decision() is d
        assert book.live <= max_open
        assert book.held <= (retain + 1) * max_open
        assert set(emitted) <= opened
    book.expire(10)
    for _key, d in book.expire(10**6):
        raise AssertionError(f"decision emitted twice: {d}")
    assert book.live == 0


def test_book_lifecycle() -> None:
    voters = voter_ids(5)
    book = TallyBook(QuorumRule(3, 5), voters, max_open=2, retain_rounds=2)

    def vote(i: int, d: bytes | None, tag: str = "") -> VoteInput:
        return VoteInput(voters[i], d, f"{i}{tag}".encode())

    # Early TRUSTED is emitted by the vote that settles it, once.
    assert book.add("a.", "A", 1, vote(0, HONEST)) == (AddResult.COUNTED, None)
    assert book.add("a.", "A", 1, vote(1, HONEST)) == (AddResult.COUNTED, None)
    result, d = book.add("a.", "A", 1, vote(2, HONEST))
    assert result is AddResult.COUNTED and d is not None and d.outcome is Outcome.TRUSTED
    assert book.add("a.", "A", 1, vote(3, HONEST)) == (AddResult.CLOSED, None)
    assert book.add("a.", "A", 1, vote(2, HONEST, "again")) == (AddResult.DUPLICATE, None)
    assert book.add("a.", "A", 1, vote(2, b"evil", "x")) == (AddResult.EQUIVOCATION, None)
    book_tally = book.get("a.", "A", 1)
    assert book_tally is not None and book_tally.equivocations == (voters[2],)
    assert d.equivocations == ()

    # A second key; the third is refused while both are live (decided ones count too).
    assert book.add("b.", "AAAA", 1, vote(0, HONEST)) == (AddResult.COUNTED, None)
    assert book.add("c.", "A", 2, vote(0, HONEST)) == (AddResult.OVERLOADED, None)
    assert book.live == 2

    # Expiry finalizes the undecided key only.
    out = book.expire(1)
    assert [(k, dd.outcome) for k, dd in out] == [(TallyKey("b.", "AAAA", 1), Outcome.UNAVAILABLE)]
    assert not out[0][1].decided_early
    assert book.live == 0 and book.held == 2
    assert book.expire(1) == []

    # Late votes for expired rounds never open or re-decide a tally.
    assert book.add("b.", "AAAA", 1, vote(1, HONEST)) == (AddResult.CLOSED, None)
    assert book.add("b.", "AAAA", 1, vote(0, HONEST, "again")) == (AddResult.DUPLICATE, None)
    assert book.add("new.", "A", 0, vote(0, HONEST)) == (AddResult.CLOSED, None)
    assert book.add("new.", "A", 1, vote(0, HONEST)) == (AddResult.CLOSED, None)
    assert book.get("new.", "A", 1) is None

    # Now there is room again.
    assert book.add("c.", "A", 2, vote(0, HONEST)) == (AddResult.COUNTED, None)

    # Retained for retain_rounds rounds after expiry, then forgotten; still CLOSED afterwards.
    book.expire(2)
    assert book.get("a.", "A", 1) is not None
    book.expire(3)
    assert book.get("a.", "A", 1) is None
    assert book.get("c.", "A", 2) is not None
    assert book.add("a.", "A", 1, vote(2, HONEST, "again")) == (AddResult.CLOSED, None)
    assert book.add("a.", "A", 1, vote(4, HONEST)) == (AddResult.CLOSED, None)
    book.expire(100)
    assert book.held == 0
    assert book.expired_through == 100


def test_book_rejects_negative_round() -> None:
    book = TallyBook(QuorumRule(1, 1), ["a/1"])
    with pytest.raises(ValueError, match="round"):
        book.add("a.", "A", -1, VoteInput("a/1", HONEST, b"v"))


def unlabel(r: tuple[Outcome, bytes | None]) -> tuple[Outcome, bytes | None]:
    """Fresh digests are interchangeable: forget their numbering."""
    outcome, answer = r
    return outcome, b"fresh" if answer is not None and answer.startswith(b"fresh-") else answer


def test_completions_cover_every_assignment_for_small_cases() -> None:
    # Cross-check the canonical enumeration against the naive one (every pending voter picks any of
    # existing + `pending` fresh digests or None) on the (outcome, answer) sets it produces.
    for k, n in [(1, 1), (2, 3), (3, 4), (3, 5)]:
        for counted_n in range(n + 1):
            for counted in itertools.product([None, b"digest-x", b"digest-y"], repeat=counted_n):
                pending = n - counted_n
                existing = sorted({d for d in counted if d is not None})
                fresh = [b"fresh-%d" % j for j in range(pending)]
                naive = {
                    reference_plain(k, counted + rest)
                    for rest in itertools.product([None, *existing, *fresh], repeat=pending)
                }
                canon = {reference_plain(k, v) for v in completions(counted, pending)}
                assert {unlabel(r) for r in canon} == {unlabel(r) for r in naive}


def test_refused_votes_join_no_group_and_are_not_unavailable() -> None:
    # three refused, two timeouts: with refused counted as unavailable this would be UNAVAILABLE
    d = run_3_of_5([REFUSED, REFUSED, REFUSED, None, None], refusable=True).finalize()
    assert d.outcome is Outcome.DISPUTED
    assert states(d) == [VoterState.DISAGREE] * 3 + [VoterState.UNAVAILABLE] * 2
    assert d.voter_digests == (b"",) * 5
    # one agreeing group still wins over refusals
    d = run_3_of_5([REFUSED, HONEST, REFUSED, HONEST, HONEST], refusable=True).finalize()
    assert (d.outcome, d.answer_digest) == (Outcome.TRUSTED, HONEST)
    with pytest.raises(ValueError, match="refusable"):  # a plain tally takes no refused vote
        run_3_of_5([REFUSED])


def test_refusable_tally_waits_where_a_pending_refusal_could_dispute() -> None:
    voters = voter_ids(4)
    plain = RoundTally(QuorumRule(3, 4), voters)
    refusable = RoundTally(QuorumRule(3, 4), voters, refusable=True)
    for t in (plain, refusable):
        t.add(VoteInput(voters[0], None, b"a"))
        t.add(VoteInput(voters[1], None, b"b"))
    # two pending: answer or unavailable only -> UNAVAILABLE either way; refusable -> undecided
    d = plain.decision()
    assert d is not None and d.outcome is Outcome.UNAVAILABLE
    assert refusable.decision() is None
    refusable.add(VoteInput(voters[2], REFUSED, b"c"))
    refusable.add(VoteInput(voters[3], REFUSED, b"d"))
    d = refusable.decision()
    assert d is not None and d.outcome is Outcome.DISPUTED


def test_book_passes_refusable_to_its_tallies() -> None:
    voters = voter_ids(4)
    book = TallyBook(QuorumRule(3, 4), voters, refusable=True)
    book.add("a.", "A", 1, VoteInput(voters[0], None, b"a"))
    assert book.add("a.", "A", 1, VoteInput(voters[1], None, b"b")) == (AddResult.COUNTED, None)
