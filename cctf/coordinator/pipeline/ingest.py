"""Ingest: one bounded queue per vote region, served in turn (fairness), overflow shed (pure).

Each region's queue holds at most ``limit`` deliveries; :meth:`FairQueues.offer` returns what does not
fit (the caller terminates those with reason ``shed``: only the region that sent too much loses
messages). :meth:`FairQueues.take` returns at most ``batch`` deliveries of every region, starting with
the region after the one that started the previous turn, so a flooding region gets one batch per turn
like every other region, however much it sends. Within a region the newest delivery is served first
(design decision D6, *Graceful overload*: when the coordinator falls behind, the newest round's
ballots are verified and tallied before older ones, which may then be too late and are shed). :class:`RateBudget` caps how many deliveries per
second the coordinator fetches from one region at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["SHED_REASON", "FairQueues", "RateBudget"]

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
        """One turn: up to ``batch`` deliveries of each region (newest first), regions in rotating
        order."""
        out: list[tuple[str, H]] = []
        n = len(self._order)
        for i in range(n):
            region = self._order[(self._start + i) % n]
            queue = self._queues[region]
            for _ in range(min(self._batch, len(queue))):
                out.append((region, queue.pop()))
        self._start = (self._start + 1) % n
        return out

    def drain(self) -> list[tuple[str, H]]:
        """Everything still queued (at stop: the caller naks it for redelivery)."""
        out = [(r, item) for r in self._order for item in self._queues[r]]
        for queue in self._queues.values():
            queue.clear()
        return out


class RateBudget:
    """A token bucket per region: at most ``rate`` deliveries per second are fetched from one region
    (with bursts up to ``burst``). What a region sends beyond it stays in its stream, whose engine
    bounds (per-subject and per-stream discard-new) then refuse the excess at the publisher: one
    agent cannot decide how much work the coordinator does, whatever it sends."""

    def __init__(self, rate: float, burst: float, now_s: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self._at:
            self._tokens = min(self._burst, self._tokens + (now_s - self._at) * self._rate)
            self._at = now_s

    def available(self, now_s: float) -> int:
        self._refill(now_s)
        return int(self._tokens)

    def spend(self, n: int, now_s: float) -> None:
        self._refill(now_s)
        self._tokens -= n  # may go negative by a partial batch; repaid before the next fetch

    def wait_s(self, now_s: float) -> float:
        """Seconds until at least one delivery may be fetched (0 when one may now)."""
        self._refill(now_s)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate
