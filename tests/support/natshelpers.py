"""Shared helpers of the NATS tests: an error log that waits for a server's -ERR, stream helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats.js.api
import nats.js.errors
from nats.js.client import JetStreamContext

from cctf.bus.streams import ensure_streams, votes_stream_name


class ErrorLog:
    """An ``error_cb`` that records errors and lets a test wait for a specific one."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._changed = asyncio.Event()

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self._changed.set()

    async def wait_for(self, needle: str, timeout_s: float = 3.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            for err in self.errors:
                if needle.lower() in err.lower():
                    return err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no error containing {needle!r}; got {self.errors}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)


async def vote_count(js: JetStreamContext, region: str) -> int:
    info = await js.stream_info(votes_stream_name(region))
    return int(info.state.messages)


async def keep_votes(js: JetStreamContext, region: str) -> None:
    """A durable on the region's vote stream: with interest retention, nothing is stored without one."""
    await js.add_consumer(
        votes_stream_name(region),
        durable_name="keep",
        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
    )


async def setup_streams(js: JetStreamContext, regions: tuple[str, ...], replicas: int = 1) -> None:
    await ensure_streams(js, regions, replicas=replicas, timeout_s=30, votes_per_region=True)


async def nothing_stored(js: JetStreamContext, stream: str, subject: str) -> bool:
    try:
        await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return True
    return False
