"""Quorum tally for one ``(name, qtype, round)`` (pure); the bounded book of many tallies is
:class:`cctf.coordinator.tallybook.TallyBook`.

The rule is the one in ``docs/architecture.md``, section *Outcomes*. With the counted votes grouped by
answer digest, ``best`` the size of the largest group, ``unavail`` the number of voters that reported
no answer and ``pending`` the number of electorate voters not heard yet:

* **TRUSTED** is settled as soon as a group reaches ``k``; the decision carries that digest.
* A non-TRUSTED outcome is settled when no group can still reach ``k`` (``best + pending < k``). It is
  **DISPUTED** when ``best + unavail + pending < k`` and **UNAVAILABLE** when every completion of the
  pending votes leaves ``best + unavail >= k``.
* Otherwise the tally waits; at the deadline (:meth:`RoundTally.finalize`) pending voters count as
  unavailable, and the plain definition applies.

Choices made here, beyond the architecture page:

* **Early UNAVAILABLE uses the exact completion bound.** The architecture page settles UNAVAILABLE when
  ``best + unavail >= k``. The smallest value ``best + unavail`` can take over every completion is
  ``max(best, 1) + unavail`` when ``pending > 0`` (a pending voter either answers, which makes
  ``best >= 1``, or is unavailable, which adds to ``unavail``), so UNAVAILABLE is settled when that
  bound reaches ``k``. This differs from the page only when nobody has answered yet (``best == 0``) and
  exactly ``k - 1`` voters are unavailable, for example 3-of-4 with two unavailable and two pending:
  every completion is UNAVAILABLE, so the tally decides instead of waiting. (It cannot happen with
  3-of-5.) With this, :meth:`RoundTally.decision` is non-``None`` exactly when every completion of the
  pending votes gives the same outcome and answer, which is the principle stated in the page.
* **Voter states in a decision.** Every electorate voter appears once, sorted by voter id. For TRUSTED,
  ``AGREE`` means the voter's counted vote carries the winning digest, ``DISAGREE`` that it carries
  another digest. For DISPUTED and UNAVAILABLE there is no winning answer, so every voter whose counted
  vote carries a digest is ``DISAGREE`` (nobody is ``AGREE``). ``UNAVAILABLE`` means the counted vote
  carries no digest, or the voter had not been counted when the tally closed (it never voted, or its
  vote arrived after an early decision).
* **Votes after a decision.** Once decided, a tally is closed and its :class:`Decision` never changes.
  A later vote from a voter not counted returns ``CLOSED``; an identical repeat of a counted vote still
  returns ``DUPLICATE``; a conflicting vote from a counted voter still returns ``EQUIVOCATION`` and is
  recorded in :attr:`RoundTally.equivocations`, but not in the already issued decision (whose
  ``equivocations`` lists those seen before it closed). Unknown voters always get ``UNKNOWN_VOTER``.
* **A ballot counts as a whole.** ``add(vote, settle=False)`` counts without deciding and
  :meth:`RoundTally.settle` decides afterwards: the coordinator counts every vote of a ballot that
  holds several voters (an agent's resolvers) before deciding any of its keys, so the decision
  never depends on the order of a ballot's votes (a DNSSEC-bogus vote behind the vote that reached
  ``k`` timeouts is still in the decision, and Last-Known-Good sees it).
* **Identity of a repeat.** Two votes from the same voter are identical when their answer digests are
  equal (``None`` equals ``None``); ``vote_digest`` is not compared. The first vote's ``vote_digest``
  is the one listed in the decision.
* **Refused votes.** A vote whose digest is :data:`REFUSED` (``b""``) is counted (the voter is no
  longer pending) but joins no answer group and is not unavailable: fail closed, it can only make
  DISPUTED more likely (an identity observation with status ``invalid``; the same shape fits a
  DNSSEC ``bogus`` answer). Its voter's state is ``DISAGREE``. Only a tally built with
  ``refusable=True`` takes them (another raises ``ValueError``): it assumes that a *pending* voter may
  be refused too, so every completion includes "all pending voters refused" and early UNAVAILABLE
  needs ``best + unavail >= k`` (the page's plain rule, exact again), not the ``max(best, 1)`` bound
  above (which would settle UNAVAILABLE where a later refusal makes it DISPUTED).

Cost: :meth:`RoundTally.add` is O(1) (per-digest counts and a running maximum; counts only grow, so
the maximum never has to be recomputed); building a decision is O(n log n) and happens once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import msgspec

from cctf.bus_schemas.messages import (  # the wire enums, re-exported
    Outcome,
    ResolverVote,
    VoterState,
    vote_digest,
)

__all__ = [
    "REFUSED",
    "AddResult",
    "Decision",
    "Outcome",
    "QuorumRule",
    "RoundTally",
    "TallyKey",
    "VoteInput",
    "VoterState",
    "plain_outcome",
]


#: The digest of a counted vote that joins no group and is not unavailable (see the module docstring).
REFUSED: bytes = b""
_AGREE = VoterState.AGREE
_DISAGREE = VoterState.DISAGREE
_UNAVAILABLE = VoterState.UNAVAILABLE


class AddResult(enum.StrEnum):
    COUNTED = "counted"
    """The vote is the voter's first and was counted."""
    DUPLICATE = "duplicate"
    """Same answer digest as the voter's counted vote; ignored."""
    EQUIVOCATION = "equivocation"
    """Different answer digest from the voter's counted vote; recorded, ignored."""
    UNKNOWN_VOTER = "unknown_voter"
    """The voter is not in the electorate; ignored."""
    CLOSED = "closed"
    """The tally (or its round) is already decided or expired and this voter was not counted."""
    OVERLOADED = "overloaded"
    """(TallyBook only) the vote would open a tally beyond ``max_open``; ignored."""


_COUNTED = AddResult.COUNTED
_DUPLICATE = AddResult.DUPLICATE
_EQUIVOCATION = AddResult.EQUIVOCATION
_UNKNOWN_VOTER = AddResult.UNKNOWN_VOTER
_CLOSED = AddResult.CLOSED


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class QuorumRule:
    """``k``-of-``n``: an answer is trusted when ``k`` of the ``n`` electorate voters report it."""

    k: int = 3
    n: int = 5

    def __post_init__(self) -> None:
        if not _is_int(self.k) or not _is_int(self.n):
            raise ValueError(f"quorum k and n must be integers, got k={self.k!r} n={self.n!r}")
        if not 1 <= self.k <= self.n:
            raise ValueError(f"quorum needs 1 <= k <= n, got k={self.k} n={self.n}")
        if 2 * self.k <= self.n:
            raise ValueError(
                f"quorum needs 2*k > n so two answers cannot both reach it, got k={self.k} n={self.n}"
            )

    @classmethod
    def default(cls) -> QuorumRule:
        """The deployment default, 3-of-5."""
        return cls(3, 5)


class VoteInput(NamedTuple):
    """One voter's vote as the tally sees it (a named tuple: the verify stage builds one per vote,
    and a tuple is several times cheaper to build than a frozen dataclass)."""

    voter: str
    """Voter id ``"<agent>/<resolver_id>"``."""
    digest: bytes | None
    """Answer digest when the resolver answered; ``None`` when it was unavailable; :data:`REFUSED`
    (``b""``) when it was counted but refused (joins no group, is not unavailable)."""
    vote_digest: bytes | None
    """Digest of the whole signed vote (listed in the decision when counted). ``None``: the
    :func:`~cctf.bus_schemas.messages.vote_digest` of ``vote``, computed by the tally only if the
    vote is counted (a vote for a key already decided, e.g. ballots 4 and 5 of a 3-of-5 round, is
    refused ``closed`` without it); ``vote`` is then required."""
    vote: ResolverVote | None = None
    """The vote itself; the first counted vote of the winning group becomes ``Decision.winner``."""

    def resolved(self) -> VoteInput:
        """This input with its ``vote_digest`` computed (what the tally counts)."""
        if self.vote_digest is not None:
            return self
        if self.vote is None:
            raise ValueError("a vote input without a vote digest needs its vote")
        return self._replace(vote_digest=vote_digest(self.vote))


class Decision(msgspec.Struct, frozen=True, gc=False):
    """A tally's decision. Untracked by the cyclic GC (``gc=False``: it holds enums, bytes, tuples of
    strings and untracked votes, so it can be in no cycle); a book holds one per decided key until
    its round is pruned, which every collection would otherwise scan again."""

    outcome: Outcome
    answer_digest: bytes | None
    """The winning digest for TRUSTED, else ``None``."""
    voters: tuple[tuple[str, VoterState], ...]
    """Every electorate voter with its state, sorted by voter id (see the module docstring)."""
    vote_digests: tuple[bytes, ...]
    """``vote_digest`` of every counted vote, sorted."""
    decided_early: bool
    """``True`` when settled by a vote before the deadline, ``False`` when settled by finalize()."""
    equivocations: tuple[str, ...]
    """Voters that had equivocated when the decision was made, sorted."""
    voter_digests: tuple[bytes, ...] = ()
    """Answer digest of each voter's counted vote, in the order of ``voters`` (``b""``: none)."""
    winner: ResolverVote | None = None
    """For TRUSTED: the first counted vote carrying the winning digest (its rcode and answer are
    the verdict's), when the votes were given with ``VoteInput.vote``."""
    counted_votes: tuple[ResolverVote | None, ...] = ()
    """``VoteInput.vote`` of each voter's counted vote, in the order of ``voters`` (``None``: not
    counted, or given without its vote); the verdict's DNSSEC state is read from these."""


def plain_outcome(rule: QuorumRule, best: int, unavail: int) -> Outcome:
    """The outcome of a complete vote vector (no voter pending) from its two counts.

    ``best`` is the size of the largest answer group, ``unavail`` the number of voters without an
    answer (including, at the deadline, voters that never voted).
    """
    if best >= rule.k:
        return Outcome.TRUSTED
    if best + unavail >= rule.k:
        return Outcome.UNAVAILABLE
    return Outcome.DISPUTED


class _Electorate:
    __slots__ = ("members", "ordered")

    def __init__(self, rule: QuorumRule, electorate: Iterable[str]) -> None:
        voters = list(electorate)
        for voter in voters:
            if not isinstance(voter, str) or not voter:
                raise ValueError(f"voter ids must be non-empty strings, got {voter!r}")
        members = frozenset(voters)
        if len(members) != len(voters):
            raise ValueError("electorate voter ids must be unique")
        if len(members) != rule.n:
            raise ValueError(
                f"electorate has {len(members)} voters but the quorum rule has n={rule.n}"
            )
        self.members = members
        self.ordered: tuple[str, ...] = tuple(sorted(members))


#: Decisions share their ``(voter, state)`` pairs and ``voters`` tuples (a few distinct values per
#: electorate): fewer objects for the cyclic GC to scan in every decision a book holds (bounded).
_PAIRS: dict[tuple[str, VoterState], tuple[str, VoterState]] = {}
_VOTERS: dict[tuple[tuple[str, VoterState], ...], tuple[tuple[str, VoterState], ...]] = {}
_SHARED_LIMIT = 4096
_S = TypeVar("_S", bound=tuple[object, ...])


def _intern(cache: dict[_S, _S], value: _S) -> _S:
    """The one shared instance equal to ``value`` (``cache`` cleared when it reaches its bound)."""
    shared = cache.get(value)
    if shared is None:
        if len(cache) >= _SHARED_LIMIT:
            cache.clear()
        shared = cache[value] = value
    return shared


def _pair(voter: str, state: VoterState) -> tuple[str, VoterState]:
    return _intern(_PAIRS, (voter, state))


def _shared(voters: tuple[tuple[str, VoterState], ...]) -> tuple[tuple[str, VoterState], ...]:
    return _intern(_VOTERS, voters)


class RoundTally:
    """The tally of one ``(name, qtype, round)``; see the module docstring for the rule.

    State: each counted voter's :class:`VoteInput` (insertion order = counting order: the winner is
    the first counted vote of the winning group), the size of each answer group, the running
    maximum; the vote digests are read from the inputs when the decision is built (a lazy
    ``vote_digest`` is computed then, once per counted vote). Three containers per tally (the book
    holds up to ``max_open`` of them, and the cyclic GC scans every one)."""

    __slots__ = (
        "_best",
        "_best_digest",
        "_closed",
        "_decision",
        "_electorate",
        "_equivocators",
        "_groups",
        "_inputs",
        "_k",
        "_members",
        "_n",
        "_refusable",
        "_rule",
        "_unavail",
    )

    def __init__(
        self, rule: QuorumRule, electorate: Iterable[str], *, refusable: bool = False
    ) -> None:
        self._setup(rule, _Electorate(rule, electorate), refusable)

    @classmethod
    def _with(cls, rule: QuorumRule, electorate: _Electorate, refusable: bool) -> RoundTally:
        tally = cls.__new__(cls)
        tally._setup(rule, electorate, refusable)
        return tally

    def _setup(self, rule: QuorumRule, electorate: _Electorate, refusable: bool) -> None:
        self._rule = rule
        self._k = rule.k
        self._n = rule.n
        self._refusable = refusable
        self._electorate = electorate
        self._members = electorate.members
        self._inputs: dict[str, VoteInput] = {}
        #: once decided: each counted voter's answer digest (the inputs are dropped: their votes
        #: live on in the decision; a dict of bytes is not tracked by the cyclic GC)
        self._closed: dict[str, bytes | None] | None = None
        self._groups: dict[bytes, int] = {}
        self._best = 0
        self._best_digest: bytes | None = None
        self._unavail = 0
        self._equivocators: set[str] | None = None  # made at the first equivocation
        self._decision: Decision | None = None

    # --- queries -------------------------------------------------------------------------------

    @property
    def rule(self) -> QuorumRule:
        return self._rule

    @property
    def electorate(self) -> tuple[str, ...]:
        """The electorate voter ids, sorted."""
        return self._electorate.ordered

    @property
    def counted(self) -> int:
        """Number of voters whose vote is counted."""
        return len(self._inputs) if self._closed is None else len(self._closed)

    @property
    def pending(self) -> int:
        """Number of electorate voters not counted yet."""
        return self._n - self.counted

    @property
    def unavailable(self) -> int:
        """Number of counted votes without an answer digest."""
        return self._unavail

    @property
    def best(self) -> int:
        """Size of the largest answer group among the counted votes."""
        return self._best

    @property
    def closed(self) -> bool:
        """``True`` once decided (early or by :meth:`finalize`)."""
        return self._decision is not None

    @property
    def equivocations(self) -> tuple[str, ...]:
        """Every voter seen equivocating, including after the decision, sorted."""
        return tuple(sorted(self._equivocators)) if self._equivocators else ()

    def decision(self) -> Decision | None:
        """The settled decision, or ``None`` while the pending votes could still change it."""
        return self._decision

    # --- updates -------------------------------------------------------------------------------

    def add(self, vote: VoteInput, settle: bool = True) -> AddResult:
        """Count ``vote``. ``settle=False``: count it without deciding (:meth:`settle` decides once
        every vote of one ballot is in, so a decision never depends on the order of a ballot's
        votes)."""
        voter = vote.voter
        if voter not in self._members:
            return _UNKNOWN_VOTER
        closed = self._closed
        if closed is not None:  # decided: repeats are still classified, others are closed
            if voter not in closed:
                return _CLOSED
            if closed[voter] == vote.digest:
                return _DUPLICATE
            if self._equivocators is None:
                self._equivocators = set()
            self._equivocators.add(voter)
            return _EQUIVOCATION
        inputs = self._inputs
        first = inputs.get(voter)
        if first is not None:
            if first.digest == vote.digest:
                return _DUPLICATE
            if self._equivocators is None:
                self._equivocators = set()
            self._equivocators.add(voter)
            return _EQUIVOCATION
        if self._decision is not None:
            return _CLOSED
        digest = vote.digest
        if digest == REFUSED and not self._refusable:
            raise ValueError("a REFUSED vote needs a tally built with refusable=True")
        if vote.vote_digest is None and vote.vote is None:
            raise ValueError("a vote input without a vote digest needs its vote")
        inputs[voter] = vote
        if digest is None:
            self._unavail += 1
        elif digest:  # an answer (not REFUSED)
            groups = self._groups
            size = groups.get(digest, 0) + 1
            groups[digest] = size
            if size > self._best:
                self._best = size
                self._best_digest = digest
                if size >= self._k and settle:  # _settle's first rule, inlined
                    self._decide(Outcome.TRUSTED, digest, early=True)
                    return _COUNTED
        if settle and self._best + self._n - len(inputs) < self._k:  # no group can still reach k
            self._settle()
        return _COUNTED

    def settle(self) -> Decision | None:
        """Decide now if the votes counted so far settle the tally (the rules of :meth:`add`);
        returns the decision if THIS call made it (so each decision is returned once)."""
        if self._decision is not None or self._closed is not None:
            return None
        self._settle()
        return self._decision

    def _settle(self) -> None:
        k = self._k
        best = self._best
        if best >= k:
            self._decide(Outcome.TRUSTED, self._best_digest, early=True)
            return
        pending = self._n - len(self._inputs)
        if best + pending >= k:
            return  # some group could still reach k
        unavail = self._unavail
        if best + unavail + pending < k:
            self._decide(Outcome.DISPUTED, None, early=True)
        elif max(best, 0 if self._refusable or not pending else 1) + unavail >= k:
            self._decide(Outcome.UNAVAILABLE, None, early=True)

    def finalize(self) -> Decision:
        """Decide at the deadline: pending voters count as unavailable. Idempotent."""
        if self._decision is not None:
            return self._decision
        unavail = self._unavail + self.pending
        outcome = plain_outcome(self._rule, self._best, unavail)
        answer = self._best_digest if outcome is Outcome.TRUSTED else None
        return self._decide(outcome, answer, early=False)

    def _decide(self, outcome: Outcome, answer: bytes | None, *, early: bool) -> Decision:
        inputs = self._inputs
        get = inputs.get
        trusted = outcome is Outcome.TRUSTED
        states: list[tuple[str, VoterState]] = []
        voter_digests: list[bytes] = []
        counted_votes: list[ResolverVote | None] = []
        for voter in self._electorate.ordered:
            vi = get(voter)
            if vi is None:  # not counted
                states.append(_pair(voter, _UNAVAILABLE))
                voter_digests.append(b"")
                counted_votes.append(None)
                continue
            digest = vi.digest
            if digest is None:
                state = _UNAVAILABLE
                voter_digests.append(b"")
            else:
                state = _AGREE if trusted and digest == answer else _DISAGREE
                voter_digests.append(digest)
            states.append(_pair(voter, state))
            counted_votes.append(vi.vote)
        winner = None
        if answer is not None:  # the first counted vote of the winning group
            for vi in inputs.values():
                if vi.digest == answer:
                    winner = vi.vote
                    break
        decision = Decision(
            outcome=outcome,
            answer_digest=answer,
            voters=_shared(tuple(states)),
            vote_digests=tuple(
                sorted(
                    [
                        vi.vote_digest if vi.vote_digest is not None else vote_digest(vi.vote)  # type: ignore[arg-type]
                        for vi in inputs.values()
                    ]
                )
            ),
            decided_early=early,
            equivocations=tuple(sorted(self._equivocators)) if self._equivocators else (),
            voter_digests=tuple(voter_digests),
            winner=winner,
            counted_votes=tuple(counted_votes),
        )
        self._decision = decision
        self._closed = {voter: vi.digest for voter, vi in inputs.items()}
        self._inputs = {}
        return decision


class TallyKey(NamedTuple):
    qname: str
    qtype: str
    round: int
