"""The coordinator's live path wiring (design D1): one core subscription per vote region on its
ballot and evidence subjects, feeding :class:`~cctf.coordinator.pipeline.live.LiveIngest`.

Bounded and fair: each region's live copies have a rate budget of their own (the region's
``region_rate``), so a region flooding its subjects gets no more of the coordinator's time on the live
path than on the durable one. When a region's budget runs out, its live subscription is *suspended*
for :data:`SUSPEND_S` (unsubscribed, so the flood no longer even reaches this process) and then
resumed; a region suspended again within :data:`SUSPEND_S` of its resumption is suspended twice as
long each time, up to :data:`MAX_SUSPEND_S`; meanwhile that region's ballots come through its durable consumer only, at the durable
budget's pace. A dropped or missed live copy is never a lost ballot: its durable copy comes through
the stream. Counted: ``live_dropped`` (copies refused), ``live_suspensions``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.live import LiveSubscription, subscribe_live
from cctf.bus.streams import votes_stream_subjects
from cctf.coordinator.pipeline.ingest import RateBudget
from cctf.coordinator.pipeline.live import LiveCopy, LiveIngest
from cctf.util.deadline import stop_tasks

__all__ = ["MAX_SUSPEND_S", "SUSPEND_S", "LivePath"]

#: How long a flooding region's live subscription stays suspended.
SUSPEND_S: Final = 2.0
MAX_SUSPEND_S: Final = 32.0

_log = telemetry.get_logger("cctf.coordinator")


class LivePath:
    def __init__(
        self,
        conn: Connection,
        regions: Sequence[str],
        rates: Mapping[str, float],
        *,
        queue_limit: int,
        batch: int,
        monotonic: Callable[[], float],
        stopping: asyncio.Event,
        on_work: Callable[[], None],
    ) -> None:
        self._conn = conn
        self.regions = tuple(regions)
        self.ingest = LiveIngest(self.regions, limit=queue_limit, batch=batch)
        now = monotonic()
        self._budgets = {r: RateBudget(rates[r], rates[r], now) for r in self.regions}
        self._monotonic = monotonic
        self._stopping = stopping
        self._on_work = on_work
        self._subs: dict[str, LiveSubscription] = {}
        self._suspended: dict[str, asyncio.Task[None]] = {}
        self._resumed: dict[str, float] = {}  # region -> when its live subscription came back
        self._streak: dict[str, int] = {}  # region -> suspensions in a row (flood goes on)
        self.suspensions = 0

    @property
    def dropped(self) -> int:
        return self.ingest.dropped

    async def start(self) -> None:
        for region in self.regions:
            await self._subscribe(region)

    async def _subscribe(self, region: str) -> None:
        self._subs[region] = await subscribe_live(
            self._conn, votes_stream_subjects(region), self._handler(region)
        )

    def take(self) -> list[tuple[str, LiveCopy]]:
        return self.ingest.take()

    def _handler(self, region: str) -> Callable[[str, bytes], bool]:
        budget = self._budgets[region]
        ingest = self.ingest

        def handle(subject: str, data: bytes) -> bool:
            now = self._monotonic()
            if self._stopping.is_set() or region in self._suspended:
                ingest.dropped += 1
                return False
            if budget.available(now) < 1:
                ingest.dropped += 1  # its durable copy comes at the durable budget's pace
                self._suspend(region)
                return False
            if not ingest.offer(region, subject, data):
                return False
            budget.spend(1, now)
            self._on_work()
            return True

        return handle

    def _suspend(self, region: str) -> None:
        if region in self._suspended:
            return
        self.suspensions += 1
        now = self._monotonic()
        again = now - self._resumed.get(region, -1e9) < SUSPEND_S
        streak = self._streak[region] = self._streak.get(region, 0) + 1 if again else 0
        seconds = min(MAX_SUSPEND_S, SUSPEND_S * 2**streak)
        _log.warning("live_path_suspended", region=region, seconds=seconds)
        task = asyncio.get_running_loop().create_task(self._pause(region, seconds))
        self._suspended[region] = task

    async def _pause(self, region: str, seconds: float) -> None:
        try:
            sub = self._subs.pop(region, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.close(), 1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
            while not self._stopping.is_set() and not self._conn.is_closed:
                try:
                    await self._subscribe(region)
                    self._resumed[region] = self._monotonic()
                    break
                except Exception as exc:  # reconnecting: try again shortly
                    _log.warning("live_path_resume_failed", region=region, error=repr(exc)[:300])
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 0.5)
        finally:
            self._suspended.pop(region, None)

    async def stop(self) -> None:
        await stop_tasks(list(self._suspended.values()), 1.0, what="live path resume")
        for sub in list(self._subs.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.close(), 1.0)
        self._subs.clear()
