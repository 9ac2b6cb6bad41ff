"""cctf.util.deadline.stop_task / stop_tasks: the one bounded stop of a component's tasks.

A task that swallows its cancel (what Python 3.11's ``wait_for`` inside nats-py does when the cancel
arrives with the result) must neither hang the stop nor be lost: it is cancelled again while the
stop waits, and abandoned with one log line if it still runs at the deadline.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from cctf.util.deadline import RECANCEL_S, detached_count, stop_task, stop_tasks


async def _swallow_cancels(times: int, started: asyncio.Event) -> str:
    """Sleep, ignoring the first ``times`` cancels; return normally on a later one."""
    started.set()
    swallowed = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed += 1
            if swallowed > times:
                return "unwound"


async def _never_stops(release: asyncio.Event, started: asyncio.Event) -> None:
    started.set()
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue  # swallows every cancel until released


async def test_a_cooperative_task_stops_and_its_failure_is_not_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("clean-up failed")

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    assert await stop_task(task, 1.0) is True
    assert task.done()
    with pytest.raises(RuntimeError):  # still there for whoever asks, but not raised by the stop
        task.result()


async def test_a_swallowed_cancel_is_cancelled_again_within_the_grace() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_swallow_cancels(2, started))
    await started.wait()
    t0 = time.monotonic()
    with capture_logs() as logs:
        assert await stop_task(task, 5.0, what="test") is True
    # three cancels: the first at once, two more one re-cancel period apart each
    assert time.monotonic() - t0 < 2 * RECANCEL_S + 2.0  # generous: a loaded machine
    assert task.result() == "unwound"
    assert not [e for e in logs if e["event"] == "task_stuck"]


async def test_a_task_that_swallows_every_cancel_is_abandoned_at_the_deadline_and_logged() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_never_stops(release, started), name="stubborn")
    await started.wait()
    before = detached_count()
    t0 = time.monotonic()
    with capture_logs() as logs:
        assert await stop_task(task, 0.3, what="test") is False
    assert 0.25 <= time.monotonic() - t0 < 3.0
    assert not task.done()
    stuck = [e for e in logs if e["event"] == "task_stuck"]
    assert stuck == [
        {"event": "task_stuck", "log_level": "error", "what": "test", "task": "stubborn",
         "grace_s": 0.3}
    ]  # fmt: skip
    assert detached_count() == before + 1  # kept referenced until it ends
    release.set()
    await asyncio.wait({task}, timeout=2.0)
    await asyncio.sleep(0)
    assert task.done() and detached_count() == before


async def test_stop_tasks_shares_one_deadline_and_returns_only_the_stuck() -> None:
    started1, started2, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    good = asyncio.create_task(_swallow_cancels(1, started1), name="good")
    bad = asyncio.create_task(_never_stops(release, started2), name="bad")
    done = asyncio.create_task(asyncio.sleep(0), name="done")
    await asyncio.gather(started1.wait(), started2.wait(), done)
    t0 = time.monotonic()
    with capture_logs():
        stuck = await stop_tasks([good, None, bad, done], 0.4)
    assert stuck == [bad]
    assert time.monotonic() - t0 < 3.0  # one deadline for all, not one per task
    assert good.result() == "unwound" and not done.cancelled()
    release.set()
    await asyncio.wait({bad}, timeout=2.0)


async def test_nothing_to_stop() -> None:
    assert await stop_task(None, 0.1) is True
    assert await stop_tasks([], 0.1) == []


async def test_cancelling_the_stopper_abandons_the_task_and_propagates() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_never_stops(release, started))
    await started.wait()
    before = detached_count()
    stopper = asyncio.create_task(stop_task(task, 30.0))
    await asyncio.sleep(RECANCEL_S / 2)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert detached_count() == before + 1
    release.set()
    await asyncio.wait({task}, timeout=2.0)
