"""Deadlines: the coordinator's periodic tick (round expiry, shedding, held ballots), as one object.

Every ``tick`` (:meth:`Deadlines.run`, one task of the service):

1. every round whose deadline ``(r + 1) * round_ms + grace`` has passed is finalized
   (:meth:`Deadlines.expire_due`: the tallies' expiry, the silent-round rule of the LKG stage,
   ``cctf.coordinator.pipeline.expiry``); their decisions go through the policy stage to the
   scheduler, and the safe-mode hysteresis ticks once per new due round; a clock that stepped back
   is detected, counted and logged;
2. rounds still undecided ``shed_after_rounds`` after their deadline are shed (D6, the scheduler);
3. held ballots past ``max_hold_ms`` are terminated (``hold_expired``) and the others' ack deadline
   is extended (``+WPI``) before the server would redeliver them;
4. counters are flushed (terms counted outside a turn).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from cctf import telemetry
from cctf.bus.consumer import Delivery
from cctf.clock import Clock
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.control import SafeModeControl
from cctf.coordinator.counters import Counters
from cctf.coordinator.intake import Token
from cctf.coordinator.lkggate import LkgGate
from cctf.coordinator.overload import Scheduler
from cctf.coordinator.pipeline.acks import HOLD_EXPIRED, AckLedger
from cctf.coordinator.pipeline.expiry import expire_rounds
from cctf.coordinator.pipeline.tallies import AnyKey, Tallies
from cctf.coordinator.tally import Decision

__all__ = ["Deadlines", "sleep_or_stop"]

_log = telemetry.get_logger("cctf.coordinator")


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stopping`` is set, whichever comes first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class Deadlines:
    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        clock: Clock,
        monotonic: Callable[[], float],
        tallies: Tallies,
        lkg: LkgGate | None,
        scheduler: Scheduler,
        safe_mode: SafeModeControl,
        counts: Counters,
        ledger: AckLedger[Token, AnyKey],
        handles: dict[Token, Delivery],
        schedule: Callable[[list[tuple[AnyKey, Decision]]], None],
        term: Callable[[Delivery, str], Awaitable[None]],
        log: Callable[..., None],
        stopping: asyncio.Event,
    ) -> None:
        self._c = config
        self._clock = clock
        self._monotonic = monotonic
        self._tallies = tallies
        self._lkg = lkg
        self._scheduler = scheduler
        self._safe_mode = safe_mode
        self._counts = counts
        self._ledger = ledger
        self._handles = handles
        self._schedule = schedule
        self._term = term
        self._log = log
        self._stopping = stopping
        self._tick_s = (config.tick_ms or min(100, config.round_ms // 4) or 1) / 1000

    def due_round(self, now_ms: int) -> int:
        """The highest round whose deadline ``(r + 1) * round_ms + grace`` is ``<= now_ms``."""
        return (now_ms - self._c.round_grace_ms) // self._c.round_ms - 1

    async def run(self) -> None:
        """Steps 1-4 of the module doc every tick until stopping (never raises on a bug: logs)."""
        while not self._stopping.is_set():
            try:
                self.expire_due()
                await self._scheduler.shed_due(self._clock.now_ms())
                due = self._ledger.due(int(self._monotonic() * 1000))
                for token in due.expired:
                    d = self._handles.pop(token, None)
                    if d is not None:
                        await self._term(d, HOLD_EXPIRED)
                for token in due.refresh:
                    d = self._handles.get(token)
                    if d is not None:
                        with contextlib.suppress(Exception):
                            await d.in_progress()
                self._counts.flush()  # terms counted outside a batch (shed, hold_expired)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep serving
                _log.exception("deadline_failed", coordinator=self._c.coordinator)
            await sleep_or_stop(self._stopping, self._tick_s)

    def _silent_keys(self, due: int) -> list[tuple[tuple[str, str], int]]:
        """Keys the silent-round rule may decide this round (``pipeline.expiry`` step 2): voted
        on within ``lkg.silent_window_ms`` and with an LKG basis, at most ``lkg.silent_max_keys``,
        the most recently voted first."""
        lkg, recent = self._lkg, self._tallies.recent
        if lkg is None or recent is None:
            return []
        out: list[tuple[tuple[str, str], int]] = []
        stage = lkg.stage
        for key in recent.since(due - recent.window, self._c.lkg.silent_max_keys):
            basis = stage.basis(key)
            if basis is not None:
                out.append((key, basis.round))
        return out

    def expire_due(self) -> int:
        """Finalize every round whose deadline has passed; schedule their verdicts."""
        up_to = self.due_round(self._clock.now_ms())
        before = self._tallies.expired_through
        silent = self._silent_keys(up_to) if up_to > before else ()
        recent = self._tallies.recent
        out = expire_rounds(
            self._tallies,
            up_to,
            silent,
            self._c.max_round_lag,
            recent.round_silent if recent is not None else lambda _r: True,
        )
        if out.rewound_from is not None:  # the clock stepped back: decide the current rounds
            self._scheduler.rewind(self._clock.now_ms(), up_to)
            self._counts.clock_rewinds += 1
            _log.warning(
                "clock_stepped_back",
                coordinator=self._c.coordinator,
                expired_through=out.rewound_from,
                due_round=up_to,
                rounds_kept_closed=out.kept_closed,
            )
        if out.silent:  # keys whose round got no ballot at all: decided UNAVAILABLE (LKG)
            self._counts.silent_keys += out.silent
            self._log("silent_round", due_round=up_to, keys=out.silent)
        if out.rewound_from is not None or up_to <= before:
            return 0
        decided = out.decided
        self._safe_mode.tick(up_to)
        if decided:
            self._schedule(decided)
        return len(decided)
