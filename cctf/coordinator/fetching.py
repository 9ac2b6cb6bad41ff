"""Fetching: one region's durable consumer -> the fair queues (the service's bus adapter loop).

Per region (:meth:`RegionFetcher.run`, one task each): fetch at most the room left in the region's
queue (never more than ``fetch_batch``), at most ``fetch_max_bytes`` of deliveries (estimated from
the largest delivery of the region's last fetch; the first assumes the largest envelope allowed) and
at most what its rate budget allows (a region sending
more than its rate is left in its stream, counted as ``throttled``); a failed fetch is logged and
retried with bounded exponential backoff; a closed connection fails the service. Deliveries the
queue cannot take are terminated with the shed reason (counted).

The byte bound was found by ``benchmarks/load.py`` (3,000 names, ballot parts of ~160 KB): after a
stall, the fetches of 256 parts per region asked for ~200 MB at once, nats-server's buffer for the
coordinator's connection passed its ``max_pending`` (64 MB) and it cut the connection as a slow
consumer; verdicts published meanwhile were lost to the client's reconnect buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from cctf.bus.connect import Connection
from cctf.bus.consumer import ConsumerSpec, Delivery, RegionConsumer
from cctf.bus_schemas.limits import MAX_ENVELOPE_BYTES
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.counters import Counters
from cctf.coordinator.deadlines import sleep_or_stop
from cctf.coordinator.pipeline.ingest import SHED_REASON, FairQueues, RateBudget
from cctf.coordinator.stats import CoordinatorError

__all__ = ["RegionFetcher", "region_fetchers"]

_MAX_DETAIL: Final = 300


class RegionFetcher:
    def __init__(
        self,
        *,
        conn: Connection,
        consumer: RegionConsumer,
        queues: FairQueues[Delivery],
        budget: RateBudget,
        counts: Counters,
        fetch_batch: int,
        fetch_max_bytes: int,
        fetch_timeout_s: float,
        max_backoff_s: float,
        monotonic: Callable[[], float],
        stopping: asyncio.Event,
        space: asyncio.Event,
        work: asyncio.Event,
        term: Callable[[Delivery, str], Awaitable[None]],
        log: Callable[..., None],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.consumer = consumer
        self._conn = conn
        self._queues = queues
        self._budget = budget
        self._counts = counts
        self._batch = fetch_batch
        self._max_bytes = fetch_max_bytes
        self._largest = MAX_ENVELOPE_BYTES  # of the last fetch's deliveries: the size estimate
        self._timeout = fetch_timeout_s
        self._max_backoff = max_backoff_s
        self._monotonic = monotonic
        self._stopping = stopping
        self._space = space
        self._work = work
        self._term = term
        self._log = log
        self._fail = fail

    def max_count(self) -> int:
        """Deliveries the next fetch asks for at most by the byte bound (at least one)."""
        return max(1, self._max_bytes // self._largest)

    async def run(self) -> None:
        region = self.consumer.spec.region
        budget, failures = self._budget, 0
        while not self._stopping.is_set():
            if self._conn.is_closed:
                self._fail(CoordinatorError("the NATS connection is closed"))
                return
            room = min(self._queues.room(region), self._batch)
            if room <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            wait = budget.wait_s(self._monotonic())
            if wait > 0:  # this region sent more than its rate: leave the rest in its stream
                self._counts.throttled[region] = self._counts.throttled.get(region, 0) + 1
                await sleep_or_stop(self._stopping, min(wait, 1.0))
                continue
            room = min(room, max(1, budget.available(self._monotonic())), self.max_count())
            try:
                got = await self.consumer.fetch(room, self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._log("fetch_failed", region=region, error=repr(exc)[:_MAX_DETAIL])
                await sleep_or_stop(
                    self._stopping, min(0.05 * 2 ** min(failures, 6), self._max_backoff)
                )
                continue
            failures = 0
            if not got:
                continue
            budget.spend(len(got), self._monotonic())
            self._largest = max(1, max(len(d.data) for d in got))
            for d in self._queues.offer(region, got):
                await self._term(d, SHED_REASON)
            self._work.set()


def region_fetchers(
    conn: Connection,
    c: CoordinatorConfig,
    rates: Mapping[str, int],
    *,
    queues: FairQueues[Delivery],
    counts: Counters,
    monotonic: Callable[[], float],
    stopping: asyncio.Event,
    space: asyncio.Event,
    work: asyncio.Event,
    term: Callable[[Delivery, str], Awaitable[None]],
    log: Callable[..., None],
    fail: Callable[[BaseException], None],
) -> list[RegionFetcher]:
    """One fetcher per vote region of ``rates`` (its ballots per second), each with its durable
    consumer (``c``'s durable prefix, ack wait, max ack pending and max deliver) and rate budget."""
    out: list[RegionFetcher] = []
    for region, rate in rates.items():
        spec = ConsumerSpec(
            durable=c.durable_prefix,
            region=region,
            ack_wait_s=c.ack_wait_ms / 1000,
            max_ack_pending=c.max_ack_pending,
            max_deliver=c.max_deliver,
            description=f"CCTF coordinator {c.coordinator}",
        )
        out.append(
            RegionFetcher(
                conn=conn,
                consumer=RegionConsumer(conn, spec),
                queues=queues,
                budget=RateBudget(rate, rate, monotonic()),
                counts=counts,
                fetch_batch=c.fetch_batch,
                fetch_max_bytes=c.fetch_max_bytes,
                fetch_timeout_s=c.fetch_timeout_ms / 1000,
                max_backoff_s=c.max_backoff_ms / 1000,
                monotonic=monotonic,
                stopping=stopping,
                space=space,
                work=work,
                term=term,
                log=log,
                fail=fail,
            )
        )
    return out
