"""Schedule: decided keys waiting to be signed and published, newest round first, with shedding
(pure; rounds and times are numbers passed in). Design decision D6, ``docs/architecture.md``,
section *Graceful overload*.

Rules:

* **Newest rounds win.** :meth:`RoundQueue.pop` returns work of the highest round that has any, in
  the order it was pushed within that round. So when a round holds more work than the coordinator
  can sign and publish in time, the newest round's verdicts still go out with bounded lag while
  older rounds wait.
* **Shedding.** A round still undecided (its decisions not all taken for publication)
  ``shed_after`` rounds after its deadline is **shed**: :meth:`RoundQueue.shed` removes
  every item of the rounds at or below the horizon and returns them grouped by round. The caller
  settles each shed key (its ballots are acknowledged and counted as expired with reason
  ``shed``), counts the round (``cctf_rounds_shed_total``) and logs it: nothing is silently dropped.
  :func:`shed_horizon` is the highest round that is shed at a given time.
* A round at or below the horizon that receives work later (a late decision) is shed at once:
  :meth:`RoundQueue.push` returns ``False`` and the caller sheds it the same way.

Cost: push O(1) amortised, pop O(items + log rounds), shed O(items shed + rounds).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from typing import Final, Generic, TypeVar

__all__ = ["ROUND_SHED", "RoundQueue", "shed_horizon"]

T = TypeVar("T")

#: The counted reason of a ballot (and a verdict) given up because its round was shed.
ROUND_SHED: Final = "shed"


def shed_horizon(now_ms: int, *, round_ms: int, grace_ms: int, shed_after: int) -> int:
    """The highest round shed at ``now_ms``: round ``r``'s deadline is ``(r + 1) * round_ms +
    grace_ms``; it is shed once ``shed_after`` more rounds have passed
    (``(r + 1 + shed_after) * round_ms + grace_ms <= now_ms``). ``-1`` or less: none yet."""
    if round_ms < 1 or grace_ms < 0 or shed_after < 0:
        raise ValueError("round_ms >= 1, grace_ms >= 0 and shed_after >= 0 are needed")
    return (now_ms - grace_ms) // round_ms - 1 - shed_after


class RoundQueue(Generic[T]):
    """Items grouped by round; the newest round is served first; old rounds are shed."""

    __slots__ = ("_heap", "_len", "_rounds", "_shed_through")

    def __init__(self) -> None:
        self._rounds: dict[int, deque[T]] = {}
        self._heap: list[int] = []  # -round of every round in _rounds (max-heap)
        self._len = 0
        self._shed_through = -1

    def __len__(self) -> int:
        return self._len

    @property
    def rounds(self) -> list[int]:
        """Rounds with queued work, newest first."""
        return sorted(self._rounds, reverse=True)

    @property
    def shed_through(self) -> int:
        """The highest horizon passed to :meth:`shed` (``-1`` before)."""
        return self._shed_through

    def depth(self, round_: int) -> int:
        queue = self._rounds.get(round_)
        return len(queue) if queue is not None else 0

    def push(self, round_: int, items: Iterable[T]) -> bool:
        """Queue ``items`` of ``round_``; ``False`` (nothing queued) when that round is already
        shed: the caller sheds the items itself."""
        if round_ <= self._shed_through:
            return False
        queue = self._rounds.get(round_)
        if queue is None:
            queue = self._rounds[round_] = deque()
            heapq.heappush(self._heap, -round_)
        before = len(queue)
        queue.extend(items)
        self._len += len(queue) - before
        if not queue:
            self._drop(round_)
        return True

    def pop(self, limit: int) -> tuple[int, list[T]] | None:
        """Up to ``limit`` items of the newest round with work, and that round; ``None`` if empty."""
        if limit < 1:
            raise ValueError("limit must be positive")
        while self._heap:
            round_ = -self._heap[0]
            queue = self._rounds.get(round_)
            if queue is None:  # a stale heap entry (round emptied or shed)
                heapq.heappop(self._heap)
                continue
            out = [queue.popleft() for _ in range(min(limit, len(queue)))]
            self._len -= len(out)
            if not queue:
                self._drop(round_)
            return round_, out
        return None

    def rewind(self, horizon: int) -> None:
        """The clock stepped back: rounds above ``horizon`` are no longer shed at once."""
        self._shed_through = min(self._shed_through, horizon)

    def shed(self, horizon: int) -> dict[int, list[T]]:
        """Remove every item of the rounds ``<= horizon``; returns them by round (oldest first).
        Later pushes for those rounds are refused."""
        if horizon <= self._shed_through:
            return {}
        self._shed_through = horizon
        out: dict[int, list[T]] = {}
        for round_ in sorted(r for r in self._rounds if r <= horizon):
            items = list(self._rounds[round_])
            self._len -= len(items)
            self._drop(round_)
            out[round_] = items
        self._heap = [-r for r in self._rounds]  # forget stale entries of shed rounds
        heapq.heapify(self._heap)
        return out

    def drain(self) -> list[T]:
        """Everything still queued, newest round first (at stop)."""
        out = [item for r in self.rounds for item in self._rounds[r]]
        self._rounds.clear()
        self._heap.clear()
        self._len = 0
        return out

    def _drop(self, round_: int) -> None:
        del self._rounds[round_]
        if self._heap and -self._heap[0] == round_:
            heapq.heappop(self._heap)
        # otherwise a stale entry stays in the heap until pop reaches it
