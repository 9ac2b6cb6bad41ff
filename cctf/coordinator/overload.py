"""Graceful overload (design decision D6): decided keys are signed and published newest round first,
and a round still undecided ``shed_after_rounds`` after its deadline is shed, counted and logged.

The async adapter around the pure :class:`~cctf.coordinator.pipeline.schedule.RoundQueue`:

* :meth:`Scheduler.schedule` queues decisions by round (a decision of a round already shed is shed
  at once);
* :meth:`Scheduler.worker` is one sign-and-publish worker (the service runs ``signing_workers + 2``
  of them, so the signing of one chunk overlaps the publishing of another): it takes up to
  ``schedule_chunk`` decisions of the newest round with work and hands them to the
  :class:`~cctf.coordinator.outbox.Outbox`;
* :meth:`Scheduler.shed_due` (from the deadline loop) sheds the rounds past the horizon: each shed
  verdict is counted as dropped with reason ``shed`` (``cctf_verdicts_dropped_total``), the round
  in ``cctf_rounds_shed_total``, the ballots it releases are acknowledged and counted as expired with
  reason ``shed`` (``cctf_ballots_expired_total``), and one log line ``round_shed`` is written per
  round (rate-limited). Nothing is dropped silently.

Back-pressure: ``pending`` counts decisions queued or being published; while it is at
``max_pending_verdicts`` the ``room`` event is clear and ingest pauses. Output first: ``idle`` is set
while ``pending`` is 0; after an ingest part that decided keys the service's process loop waits on
it (at most ``output_first_ms``) before it verifies the next part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cctf import telemetry
from cctf.coordinator.counters import Counters
from cctf.coordinator.outbox import Outbox
from cctf.coordinator.pipeline.schedule import ROUND_SHED, RoundQueue, shed_horizon
from cctf.coordinator.pipeline.tallies import AnyKey
from cctf.coordinator.tally import Decision

__all__ = ["ROUND_SHED", "Scheduler"]

Item = tuple[AnyKey, Decision]

_log = telemetry.get_logger("cctf.coordinator")


class Scheduler:
    def __init__(
        self,
        *,
        outbox: Outbox,
        counts: Counters,
        release: Callable[[AnyKey], Awaitable[int]],
        log: Callable[..., None],
        room: asyncio.Event,
        stopping: asyncio.Event,
        coordinator: str,
        round_ms: int,
        grace_ms: int,
        shed_after: int,
        chunk: int,
        max_pending: int,
    ) -> None:
        """``release(key)``: settle ``key``, returning how many ballots it acknowledged."""
        self._outbox = outbox
        self._counts = counts
        self._release = release
        self._log = log
        self._room = room
        self._stopping = stopping
        self._coordinator = coordinator
        self._round_ms = round_ms
        self._grace_ms = grace_ms
        self._shed_after = shed_after
        self._chunk = chunk
        self._max_pending = max_pending
        self._queue: RoundQueue[Item] = RoundQueue()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.pending = 0
        #: Set while nothing is queued or being published (the process loop waits on it, bounded,
        #: after a part that decided keys: their verdicts go out before the next part is verified).
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """Late sheds in flight (the service waits for them at stop)."""
        return self._tasks

    def horizon(self, now_ms: int) -> int:
        return shed_horizon(
            now_ms, round_ms=self._round_ms, grace_ms=self._grace_ms, shed_after=self._shed_after
        )

    def schedule(self, decided: list[Item]) -> None:
        by_round: dict[int, list[Item]] = {}
        for item in decided:
            by_round.setdefault(item[0].round, []).append(item)
        for round_, items in by_round.items():
            if self._queue.push(round_, items):
                self.pending += len(items)
                self.idle.clear()
            else:  # a late decision of a round already shed
                task = asyncio.get_running_loop().create_task(self._shed(round_, items))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self.pending >= self._max_pending:
            self._room.clear()
        self._ready.set()

    def wake(self) -> None:
        """At stop: let every worker see ``stopping``."""
        self._ready.set()

    def drain(self) -> int:
        """Forget what is queued (at stop: the held ballots are nak'd for a successor)."""
        items = self._queue.drain()
        self.pending -= len(items)
        if self.pending <= 0:
            self.idle.set()
        return len(items)

    async def worker(self) -> None:
        while not self._stopping.is_set():
            got = self._queue.pop(self._chunk)
            if got is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            _round, decided = got
            try:
                await self._outbox.run(decided)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep serving
                _log.exception("publish_failed", coordinator=self._coordinator)
            finally:
                self._done(len(decided))

    def rewind(self, now_ms: int, due_round: int) -> None:
        """The clock stepped back (``docs/architecture.md``, *Clock step back*): the shed horizon
        follows the clock again (``due_round``: the rounds now due, kept for the caller's log)."""
        del due_round
        self._queue.rewind(self.horizon(now_ms))

    async def shed_due(self, now_ms: int) -> int:
        """Shed every round at or below :meth:`horizon`; returns the number of rounds shed."""
        shed = self._queue.shed(self.horizon(now_ms))
        for round_, items in shed.items():
            self._done(len(items))
            await self._shed(round_, items)
        return len(shed)

    def _done(self, n: int) -> None:
        self.pending -= n
        if self.pending < self._max_pending:
            self._room.set()
        if self.pending <= 0:
            self.idle.set()

    async def _shed(self, round_: int, items: list[Item]) -> None:
        n = self._counts
        n.shed_round()
        ballots = 0
        for key, _decision in items:
            n.drop(ROUND_SHED)
            ballots += await self._release(key)
        n.expire(ROUND_SHED, ballots)
        self._log(
            "round_shed",
            coordinator=self._coordinator,
            round=round_,
            verdicts=len(items),
            ballots=ballots,
            queued=len(self._queue),
        )
