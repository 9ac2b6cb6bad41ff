"""The expiry horizon of a tally book, and what stays closed when the clock steps back (pure).

A coordinator finalizes the tallies of every round whose deadline has passed by its clock
(``TallyBook.expire``). When that clock runs ahead (minutes, say) and is then set back, the highest
expired round lies far ahead of the new current round. Without a rewind every ballot of the rounds
in between would be ``CLOSED`` and the coordinator would publish nothing until its clock caught up
with the rounds it had already expired (the ``clock-skew`` chaos finding).

:class:`ExpiryHorizon` keeps the rule "a key is decided, and its decision emitted, at most once"
across such a step back:

* ``through`` is the highest expired round; a round ``<= through`` never opens a tally.
* It remembers the last ``memory`` **non-empty** expired rounds (rounds in which at least one tally
  had opened, i.e. rounds for which some verdict may have been published). Empty expired rounds
  published nothing, so reopening them is safe.
* :meth:`rewind` lowers ``through`` to the round the clock now says, and keeps every remembered
  non-empty round above it closed (``ahead``): those rounds were decided while the clock was ahead,
  and deciding them again could publish a second, different verdict for one key and round. Each
  entry of ``ahead`` is dropped once ``through`` passes it again.

So after a step back the coordinator decides the current rounds at once; the only rounds it will
not decide are the ones it already decided while ahead (fail closed for those keys when the clock
reaches them). Bound: a clock that was ahead for more than ``memory`` non-empty rounds forgets the
oldest of them; the default (4096 rounds, about 68 minutes at 1 s rounds) is documented in
``docs/architecture.md``. Memory: at most ``memory`` integers.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEFAULT_MEMORY", "ExpiryHorizon"]

#: How many non-empty expired rounds are remembered for a rewind.
DEFAULT_MEMORY = 4096


class ExpiryHorizon:
    """``through`` plus the rounds that stay closed above it after a rewind."""

    __slots__ = ("_ahead", "_memory", "_recent", "through")

    def __init__(self, memory: int = DEFAULT_MEMORY) -> None:
        if not isinstance(memory, int) or isinstance(memory, bool) or memory < 1:
            raise ValueError(f"memory must be a positive integer, got {memory!r}")
        self.through = -1
        self._memory = memory
        self._recent: dict[int, None] = {}  # insertion-ordered: oldest first
        self._ahead: set[int] = set()

    def closed(self, round_: int) -> bool:
        """No new tally may open for ``round_``."""
        return round_ <= self.through or round_ in self._ahead

    @property
    def ahead(self) -> frozenset[int]:
        """The rounds above ``through`` kept closed by the last rewind."""
        return frozenset(self._ahead)

    def expired(self, up_to: int, nonempty: Iterable[int]) -> None:
        """``expire(up_to)`` finalized the rounds ``nonempty``; ``up_to > through``."""
        recent = self._recent
        for r in nonempty:
            recent[r] = None
        while len(recent) > self._memory:
            del recent[next(iter(recent))]
        self.through = up_to
        if self._ahead:
            self._ahead = {r for r in self._ahead if r > up_to}

    def rewind(self, to_round: int) -> int:
        """The clock now says ``to_round`` is the highest due round (``< through``).

        Lowers ``through`` to it and keeps every remembered non-empty round above it closed;
        returns how many rounds stay closed. A no-op (returns 0) when ``to_round >= through``.
        """
        if to_round >= self.through:
            return 0
        self.through = to_round
        self._ahead = {r for r in self._recent if r > to_round}
        return len(self._ahead)
