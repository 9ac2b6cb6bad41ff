"""The bounded book of many quorum tallies, keyed by ``(qname, qtype, round)`` (pure).

:class:`TallyBook` holds the tallies of rounds not yet expired ("live", open or
already decided) up to ``max_open``; a vote that would open a tally beyond that returns
``OVERLOADED``. :meth:`TallyBook.expire` finalizes live tallies up to a round and moves them to a
retention area kept for ``retain_rounds`` rounds (so late repeats and equivocations are still
classified), then forgets them. Votes for any round at or below the highest expired round never
open a tally: without a retained tally they return ``CLOSED``. So a key is decided, and its decision
emitted, at most once, and the book holds at most ``(retain_rounds + 1) * max_open`` tallies.
:meth:`TallyBook.rewind` (the clock stepped back) reopens the expired rounds that were empty and
keeps the others closed (``cctf.coordinator.rewind``), so that still holds.

Each tally is a :class:`cctf.coordinator.tally.RoundTally` (its rule and choices are that module's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cctf.coordinator.rewind import ExpiryHorizon
from cctf.coordinator.tally import (
    AddResult,
    Decision,
    QuorumRule,
    RoundTally,
    TallyKey,
    VoteInput,
    _Electorate,
    _is_int,
)

__all__ = ["TallyBook"]

_COUNTED = AddResult.COUNTED


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
        """Add a vote. The decision is returned exactly once, with the vote that settles it (or by
        :meth:`settle_at` for votes added with ``settle=False``)."""
        return self.add_at(TallyKey(qname, qtype, round_), vote)

    def add_at(
        self, key: TallyKey, vote: VoteInput, settle: bool = True
    ) -> tuple[AddResult, Decision | None]:
        """:meth:`add` for a key already built (the hot path: the verify stage builds each vote's
        key once). ``settle=False``: counted without deciding, :meth:`settle_at` decides."""
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
        result = tally.add(vote, settle)
        if result is _COUNTED:
            # COUNTED only happens while open, and a tally closes once: this emits exactly once.
            return result, tally._decision
        return result, None

    def settle_at(self, key: TallyKey) -> Decision | None:
        """Decide ``key``'s open tally if its votes settle it (``RoundTally.settle``): the
        decision, returned once, or ``None``."""
        tally = self._tallies.get(key)
        return tally.settle() if tally is not None else None

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
