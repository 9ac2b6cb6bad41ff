"""Graceful overload (design decision D6): decided keys are signed and published newest round first,
and a round still undecided ``shed_after_rounds`` after its deadline is shed, counted and logged.

The async adapter around the pure :class:`~cctf.coordinator.pipeline.schedule.RoundQueue`:

* :meth:`Scheduler.schedule` queues decisions by round (a decision of a round already shed is shed
  at once);
* :meth:`Scheduler.worker` is one sign-and-publish worker (the service runs ``signing_workers + 2``
  of them, so the signing of one chunk overlaps the publishing of another): it takes up to
  ``schedule_chunk`` decisions of the newest round with work and hands them to the
  :class:`~cctf.coordinator.outbox.Outbox`;
* a decision whose name (``(qname, qtype)``, or ``(kind, subject)``) already had a verdict of a
  NEWER round taken for publication is **superseded**: clients keep the newest verdict per name and
  refuse an older one as a rollback, so it is not signed; it is counted as dropped with reason
  ``superseded`` and its ballots are acknowledged and counted as expired ``superseded``;
* :meth:`Scheduler.shed_due` (from the deadline loop) sheds the rounds past the horizon: each shed
  verdict is counted as dropped with reason ``shed`` (``cctf_verdicts_dropped_total``), the round
  in ``cctf_rounds_shed_total``, the ballots it releases are acknowledged and counted as expired with
  reason ``shed`` (``cctf_ballots_expired_total``), and one log line ``round_shed`` is written per
  round (rate-limited). Nothing is dropped silently.

Back-pressure: ``pending`` counts decisions queued or being published; while it is at
``max_pending_verdicts`` the ``room`` event is clear and ingest pauses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Final

from cctf import telemetry
from cctf.coordinator.counters import Counters
from cctf.coordinator.outbox import Outbox
from cctf.coordinator.pipeline.schedule import ROUND_SHED, RoundQueue, shed_horizon
from cctf.coordinator.pipeline.tallies import AnyKey
from cctf.coordinator.tally import Decision

__all__ = ["ROUND_SHED", "SUPERSEDED", "Scheduler"]

#: The counted reason of a decision not published because a newer round's verdict for the same
#: name was already taken for publication (and of the ballots it releases).
SUPERSEDED: Final = "superseded"
_MAX_NAMES: Final = 1_000_000  # newest round taken per name (cleared beyond: bounded memory)

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
        self._newest: dict[Hashable, int] = {}  # name -> newest round taken for publication
        self.pending = 0

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
        return len(items)

    async def worker(self) -> None:
        while not self._stopping.is_set():
            got = self._queue.pop(self._chunk)
            if got is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            round_, taken = got
            decided, stale = self._fresh(round_, taken)
            try:
                if stale:
                    await self._supersede(stale)
                if decided:
                    await self._outbox.run(decided)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep serving
                _log.exception("publish_failed", coordinator=self._coordinator)
            finally:
                self._done(len(taken))

    def _fresh(self, round_: int, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """``items`` split into those to publish and those whose name already went out for a
        newer round (superseded); notes the former's names as taken for ``round_``."""
        newest = self._newest
        if len(newest) > _MAX_NAMES:
            newest.clear()
        fresh: list[Item] = []
        stale: list[Item] = []
        for item in items:
            name = item[0][:2]
            if newest.get(name, -1) > round_:
                stale.append(item)
                continue
            newest[name] = round_
            fresh.append(item)
        return fresh, stale

    async def _supersede(self, items: list[Item]) -> None:
        n = self._counts
        ballots = 0
        for key, _decision in items:
            n.drop(SUPERSEDED)
            ballots += await self._release(key)
        n.expire(SUPERSEDED, ballots)

    def rewind(self, now_ms: int, due_round: int) -> None:
        """The clock stepped back (``docs/architecture.md``, *Clock step back*): the shed horizon
        follows the clock again, and names taken for a round above ``due_round`` (while the clock
        was ahead) no longer supersede the current rounds' verdicts."""
        self._queue.rewind(self.horizon(now_ms))
        self._newest = {n: r for n, r in self._newest.items() if r <= due_round}

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
