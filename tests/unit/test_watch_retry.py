"""``cctf watch`` start-up retries (cctf.client.cli.open_retrying): transient fetch errors are
retried with backoff and one progress line each; a permanent one, or the last, is raised."""

from __future__ import annotations

import asyncio

import pytest

from cctf.client.cli import open_retrying
from cctf.client.errors import FetchError


class Opener:
    def __init__(self, failures: list[FetchError]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "stream"


def run(opener: Opener, total_s: float = 30.0) -> tuple[str | FetchError, list[str], list[float]]:
    now = [0.0]
    waits: list[float] = []
    lines: list[str] = []

    async def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    async def go() -> str | FetchError:
        try:
            return await open_retrying(
                opener, lines.append, total_s=total_s, monotonic=lambda: now[0], sleep=sleep
            )
        except FetchError as exc:
            return exc

    return asyncio.run(go()), lines, waits


def test_transient_errors_are_retried_with_backoff_and_progress() -> None:
    opener = Opener([FetchError("timeout", transient=True) for _ in range(3)])
    got, lines, waits = run(opener)
    assert got == "stream" and opener.calls == 4
    assert waits == [0.2, 0.4, 0.8] and len(lines) == 3
    assert lines[0].startswith("attempt 1 failed (timeout); retrying in 0.2 s")


def test_a_permanent_error_is_raised_at_once() -> None:
    permanent = FetchError("stream not found")
    opener = Opener([permanent])
    got, lines, waits = run(opener)
    assert got is permanent and opener.calls == 1 and lines == [] and waits == []


@pytest.mark.parametrize("total_s", [0.0, 1.0, 7.0])
def test_retries_are_bounded_in_time(total_s: float) -> None:
    opener = Opener([FetchError("timeout", transient=True) for _ in range(100)])
    got, _lines, waits = run(opener, total_s)
    assert isinstance(got, FetchError) and got.transient
    assert sum(waits) == pytest.approx(total_s) and all(w <= 5.0 for w in waits)
