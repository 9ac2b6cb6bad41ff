"""cctf.util.deadline.BoundedExitStack: a stuck clean-up is abandoned at its bound, the others run."""

from __future__ import annotations

import asyncio
import time

import pytest

from cctf.util.deadline import BoundedExitStack


async def test_a_stuck_close_is_abandoned_and_the_next_clean_ups_still_run() -> None:
    ran: list[str] = []
    never = asyncio.Event()

    async def stuck() -> None:
        ran.append("stuck")
        while not never.is_set():  # swallows every cancel, like a close awaiting an endless flush
            try:
                await never.wait()
            except asyncio.CancelledError:
                continue

    async def ok(name: str) -> None:
        ran.append(name)

    started = time.monotonic()
    async with BoundedExitStack(0.2) as stack:
        stack.push_async_callback(ok, "first-pushed")
        stack.push_async_callback(stuck)
        stack.push_async_callback(ok, "last-pushed")
    assert ran == ["last-pushed", "stuck", "first-pushed"]  # LIFO, none skipped
    assert time.monotonic() - started < 5.0
    never.set()  # let the abandoned task end
    await asyncio.sleep(0)


async def test_a_failing_clean_up_propagates_after_the_others_ran() -> None:
    ran: list[str] = []

    async def boom() -> None:
        raise RuntimeError("close failed")

    async def ok() -> None:
        ran.append("ok")

    with pytest.raises(RuntimeError, match="close failed"):
        async with BoundedExitStack(1.0) as stack:
            stack.push_async_callback(ok)
            stack.push_async_callback(boom)
    assert ran == ["ok"]
