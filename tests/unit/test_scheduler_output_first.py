"""The scheduler's ``idle`` event (output first, ``output_first_ms``): set exactly while no decision
is queued or being published, so the process loop's bounded wait after a part that decided keys
ends when their verdicts went out."""

from __future__ import annotations

import asyncio
from typing import Any

from cctf.coordinator.counters import Counters
from cctf.coordinator.overload import Scheduler
from cctf.coordinator.tally import TallyKey


class _Outbox:
    """The scheduler's one call into the outbox: ``run`` returns once the verdicts went out."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.runs: list[int] = []

    async def run(self, decided: list[Any]) -> None:
        self.runs.append(len(decided))
        await self.gate.wait()


def _scheduler(outbox: _Outbox, stopping: asyncio.Event) -> Scheduler:
    async def release(_key: Any) -> int:
        return 0

    return Scheduler(
        outbox=outbox,  # type: ignore[arg-type]
        counts=Counters(),
        release=release,
        log=lambda *a, **k: None,
        room=asyncio.Event(),
        stopping=stopping,
        coordinator="coord-1",
        round_ms=1000,
        grace_ms=100,
        shed_after=2,
        chunk=2,
        max_pending=100,
    )


def _decided(n: int, round_: int = 7) -> list[Any]:
    return [(TallyKey(f"n{i}.example.", "A", round_), object()) for i in range(n)]


def test_idle_is_clear_from_schedule_until_every_decision_went_out() -> None:
    async def main() -> None:
        stopping = asyncio.Event()
        outbox = _Outbox()
        s = _scheduler(outbox, stopping)
        assert s.idle.is_set()  # nothing scheduled: the process loop never waits
        worker = asyncio.get_running_loop().create_task(s.worker())
        s.schedule(_decided(3))
        assert not s.idle.is_set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert outbox.runs == [2] and not s.idle.is_set()  # one chunk out, one still queued
        outbox.gate.set()
        await asyncio.wait_for(s.idle.wait(), 1.0)
        assert outbox.runs == [2, 1] and s.pending == 0
        stopping.set()
        s.wake()
        await asyncio.wait_for(worker, 1.0)

    asyncio.run(main())


def test_drain_and_shed_set_idle() -> None:
    async def main() -> None:
        stopping = asyncio.Event()
        s = _scheduler(_Outbox(), stopping)  # no worker: what is scheduled stays queued
        s.schedule(_decided(2, round_=7))
        assert not s.idle.is_set()
        assert s.drain() == 2 and s.idle.is_set()
        s.schedule(_decided(2, round_=1))
        assert not s.idle.is_set()
        assert await s.shed_due(10_000) == 1  # round 1 is far past the shed horizon
        assert s.idle.is_set() and s.pending == 0

    asyncio.run(main())
