"""Quorum tally for one ``(name, qtype, round)`` and a bounded book of many tallies (pure).

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
* **Identity of a repeat.** Two votes from the same voter are identical when their answer digests are
  equal (``None`` equals ``None``); ``vote_digest`` is not compared. The first vote's ``vote_digest``
  is the one listed in the decision.
* **Book bounds.** :class:`TallyBook` holds the tallies of rounds not yet expired ("live", open or
  already decided) up to ``max_open``; a vote that would open a tally beyond that returns
  ``OVERLOADED``. :meth:`TallyBook.expire` finalizes live tallies up to a round and moves them to a
  retention area kept for ``retain_rounds`` rounds (so late repeats and equivocations are still
  classified), then forgets them. Votes for any round at or below the highest expired round never
  open a tally: without a retained tally they return ``CLOSED``. So a key is decided, and its decision
  emitted, at most once, and the book holds at most ``(retain_rounds + 1) * max_open`` tallies.
  :meth:`TallyBook.rewind` (the clock stepped back) reopens the expired rounds that were empty and
  keeps the others closed (``cctf.coordinator.rewind``), so that still holds.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from cctf.bus_schemas.messages import (  # the wire enums, re-exported
    Outcome,
    ResolverVote,
    VoterState,
    vote_digest,
)
from cctf.coordinator.rewind import ExpiryHorizon

__all__ = [
    "REFUSED",
    "AddResult",
    "Decision",
    "Outcome",
    "QuorumRule",
    "RoundTally",
    "TallyBook",
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


@dataclass(frozen=True, slots=True)
class Decision:
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


def _pair(voter: str, state: VoterState) -> tuple[str, VoterState]:
    pair = (voter, state)
    shared = _PAIRS.get(pair)
    if shared is None:
        if len(_PAIRS) >= _SHARED_LIMIT:
            _PAIRS.clear()
        shared = _PAIRS[pair] = pair
    return shared


def _shared(voters: tuple[tuple[str, VoterState], ...]) -> tuple[tuple[str, VoterState], ...]:
    shared = _VOTERS.get(voters)
    if shared is None:
        if len(_VOTERS) >= _SHARED_LIMIT:
            _VOTERS.clear()
        shared = _VOTERS[voters] = voters
    return shared


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

    def add(self, vote: VoteInput) -> AddResult:
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
                if size >= self._k:  # _settle's first rule, inlined
                    self._decide(Outcome.TRUSTED, digest, early=True)
                    return _COUNTED
        if self._best + self._n - len(inputs) < self._k:  # no group can still reach k
            self._settle()
        return _COUNTED

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


class TallyBook:
    """Tallies keyed by ``(qname, qtype, round)``, bounded; see the module docstring."""

    __slots__ = (
        "_electorate",
        "_horizon",
        "_live",
        "_live_rounds",
        "_max_open",
        "_refusable",
        "_retain_rounds",
        "_retained_rounds",
        "_rule",
        "_tallies",
    )

    def __init__(
        self,
        rule: QuorumRule,
        electorate: Iterable[str],
        max_open: int = 100_000,
        retain_rounds: int = 2,
        *,
        refusable: bool = False,
    ) -> None:
        if not _is_int(max_open) or max_open < 1:
            raise ValueError(f"max_open must be a positive integer, got {max_open!r}")
        if not _is_int(retain_rounds) or retain_rounds < 0:
            raise ValueError(f"retain_rounds must be a non-negative integer, got {retain_rounds!r}")
        self._rule = rule
        self._electorate = _Electorate(rule, electorate)
        self._refusable = refusable
        self._max_open = max_open
        self._retain_rounds = retain_rounds
        self._tallies: dict[tuple[str, str, int], RoundTally] = {}
        self._live_rounds: dict[int, list[TallyKey]] = {}
        self._retained_rounds: dict[int, list[TallyKey]] = {}
        self._live = 0
        self._horizon = ExpiryHorizon()

    @property
    def live(self) -> int:
        """Tallies of rounds not yet expired (open or decided); at most ``max_open``."""
        return self._live

    @property
    def held(self) -> int:
        """All tallies in memory: live plus retained after expiry."""
        return len(self._tallies)

    @property
    def expired_through(self) -> int:
        """The highest round passed to :meth:`expire` (``-1`` before the first call), or the
        round of the last :meth:`rewind` since."""
        return self._horizon.through

    def get(self, qname: str, qtype: str, round_: int) -> RoundTally | None:
        """The tally for a key, while held."""
        return self._tallies.get((qname, qtype, round_))

    def holds(self, key: TallyKey) -> bool:
        """Whether the tally of ``key`` is held (:meth:`get` without building the key)."""
        return key in self._tallies

    def add(
        self, qname: str, qtype: str, round_: int, vote: VoteInput
    ) -> tuple[AddResult, Decision | None]:
        """Add a vote. The decision is returned exactly once, with the vote that settles it."""
        return self.add_at(TallyKey(qname, qtype, round_), vote)

    def add_at(self, key: TallyKey, vote: VoteInput) -> tuple[AddResult, Decision | None]:
        """:meth:`add` for a key already built (the hot path: the verify stage builds each vote's
        key once)."""
        tally = self._tallies.get(key)
        if tally is None:
            round_ = key.round
            if not _is_int(round_) or round_ < 0:
                raise ValueError(f"round must be a non-negative integer, got {round_!r}")
            if self._horizon.closed(round_):
                return AddResult.CLOSED, None
            if vote.voter not in self._electorate.members:
                return AddResult.UNKNOWN_VOTER, None
            if self._live >= self._max_open:
                return AddResult.OVERLOADED, None
            tally = self._open(key)
        result = tally.add(vote)
        if result is _COUNTED:
            # COUNTED only happens while open, and a tally closes once: this emits exactly once.
            return result, tally._decision
        return result, None

    def _open(self, key: TallyKey) -> RoundTally:
        tally = RoundTally._with(self._rule, self._electorate, self._refusable)
        self._tallies[key] = tally
        keys = self._live_rounds.get(key.round)
        if keys is None:
            self._live_rounds[key.round] = [key]
        else:
            keys.append(key)
        self._live += 1
        return tally

    def open_empty(self, qname: str, qtype: str, round_: int) -> bool:
        """Open a tally with no vote, so that the round's expiry decides it (UNAVAILABLE: every
        voter timed out). ``False`` when it is held already, its round closed, or the book full."""
        if not _is_int(round_) or round_ < 0 or (qname, qtype, round_) in self._tallies:
            return False
        if self._horizon.closed(round_) or self._live >= self._max_open:
            return False
        self._open(TallyKey(qname, qtype, round_))
        return True

    def expire(self, up_to_round: int) -> list[tuple[TallyKey, Decision]]:
        """Finalize every live tally with ``round <= up_to_round``.

        Returns the decisions not returned by :meth:`add` before (tallies that had not settled
        early), in round order and then in the order their keys were first seen. Expired tallies are
        retained for ``retain_rounds`` rounds (rounds ``> up_to_round - retain_rounds``), then
        forgotten; votes for expired rounds never open a new tally.
        """
        if not _is_int(up_to_round):
            raise ValueError(f"up_to_round must be an integer, got {up_to_round!r}")
        out: list[tuple[TallyKey, Decision]] = []
        if up_to_round > self._horizon.through:
            rounds = sorted(r for r in self._live_rounds if r <= up_to_round)
            for r in rounds:
                keys = self._live_rounds.pop(r)
                for key in keys:
                    tally = self._tallies[key]
                    if not tally.closed:
                        out.append((key, tally.finalize()))
                self._live -= len(keys)
                self._retained_rounds[r] = keys
            self._horizon.expired(up_to_round, rounds)
        self._forget(lambda r: r <= self._horizon.through - self._retain_rounds)
        return out

    def rewind(self, to_round: int) -> int:
        """The clock stepped back: ``to_round`` (below :attr:`expired_through`) is due now.

        Rounds above it that were expired empty may open again; the non-empty ones stay closed
        (``cctf.coordinator.rewind``), their retained tallies forgotten. Returns how many rounds
        stay closed; 0 (nothing changed) unless ``to_round < expired_through``."""
        if not _is_int(to_round) or to_round >= self._horizon.through:
            return 0
        kept = self._horizon.rewind(to_round)
        self._forget(lambda r: r > to_round)
        return kept

    def _forget(self, drop: Callable[[int], bool]) -> None:
        for r in [r for r in self._retained_rounds if drop(r)]:
            for key in self._retained_rounds.pop(r):
                del self._tallies[key]
