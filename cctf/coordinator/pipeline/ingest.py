"""Ingest: one bounded queue per vote region, served in turn (fairness), overflow shed (pure).

Each region's queue holds at most ``limit`` deliveries; :meth:`FairQueues.offer` returns what does not
fit (the caller terminates those with reason ``shed``: only the region that sent too much loses
messages). :meth:`FairQueues.take` returns at most ``batch`` deliveries of every region, starting with
the region after the one that started the previous turn, so a flooding region gets one batch per turn
like every other region, however much it sends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["SHED_REASON", "FairQueues"]

H = TypeVar("H")

#: The counted reason of a delivery dropped because its region's queue was full.
SHED_REASON = "shed"


class FairQueues(Generic[H]):
    def __init__(self, regions: Sequence[str], *, limit: int, batch: int) -> None:
        if not regions:
            raise ValueError("at least one region is needed")
        if limit < 1 or batch < 1:
            raise ValueError("limit and batch must be positive")
        self._order = tuple(regions)
        self._queues: dict[str, deque[H]] = {r: deque() for r in regions}
        self._limit = limit
        self._batch = batch
        self._start = 0

    @property
    def regions(self) -> tuple[str, ...]:
        return self._order

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def depth(self, region: str) -> int:
        return len(self._queues[region])

    def room(self, region: str) -> int:
        """How many more deliveries ``region``'s queue takes (the fetcher asks for at most this)."""
        return self._limit - len(self._queues[region])

    def offer(self, region: str, items: Iterable[H]) -> list[H]:
        """Queue ``items`` of ``region``; returns those beyond the limit (to be shed)."""
        queue = self._queues[region]
        shed: list[H] = []
        for item in items:
            if len(queue) < self._limit:
                queue.append(item)
            else:
                shed.append(item)
        return shed

    def take(self) -> list[tuple[str, H]]:
        """One turn: up to ``batch`` deliveries of each region, regions in rotating order."""
        out: list[tuple[str, H]] = []
        n = len(self._order)
        for i in range(n):
            region = self._order[(self._start + i) % n]
            queue = self._queues[region]
            for _ in range(min(self._batch, len(queue))):
                out.append((region, queue.popleft()))
        self._start = (self._start + 1) % n
        return out

    def drain(self) -> list[tuple[str, H]]:
        """Everything still queued (at stop: the caller naks it for redelivery)."""
        out = [(r, item) for r in self._order for item in self._queues[r]]
        for queue in self._queues.values():
            queue.clear()
        return out
