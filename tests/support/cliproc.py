"""``python -m cctf ...`` as a running process, for the tests that a command exits on SIGTERM.

``start_cli`` (a fixture: import ``start_cli_fixture`` into the test module) starts ``cctf`` with the
given arguments and returns a :class:`CliProcess`: its stdout lines on a queue, its stderr lines in a
list, and :meth:`CliProcess.terminate` (SIGTERM; the exit code and the seconds it took). Every process
still running at teardown is killed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

__all__ = ["SIGTERM_BOUND_S", "CliProcess", "StartCli", "start_cli_fixture"]

#: Every long-running ``cctf`` command exits within this many seconds of SIGTERM.
SIGTERM_BOUND_S = 5.0


class CliProcess:
    """A running ``cctf`` process with its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._tasks = [
            asyncio.ensure_future(self._pump(proc.stdout, self.lines.put_nowait)),
            asyncio.ensure_future(self._pump(proc.stderr, self.err.append)),
        ]

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, put: Callable[[str], Any]) -> None:
        while line := await stream.readline():
            put(line.decode())

    async def line(self, timeout: float = 30.0) -> str:
        return await asyncio.wait_for(self.lines.get(), timeout)

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), SIGTERM_BOUND_S + 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        elapsed = time.monotonic() - start
        await asyncio.gather(*self._tasks)
        return rc, elapsed


StartCli = Callable[..., Awaitable[CliProcess]]


@pytest.fixture(name="start_cli")
async def start_cli_fixture() -> AsyncIterator[StartCli]:
    started: list[CliProcess] = []

    async def start(*args: str) -> CliProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cctf",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        p = CliProcess(proc)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()
