"""A real nats-server with the verdict streams, for the subscriber's integration tests.

Import ``bus_fixture`` / ``cli_files_fixture`` into a test module to use the fixtures ``bus`` and
``cli_files``. ``bus``: a single JetStream node with ``us-east`` and ``eu-west`` verdict streams, a
coordinator connection to publish verdicts and a ``client`` connection; ``cli_files``: a
world on the real clock and the common ``cctf check`` / ``cctf watch`` options; ``run_cli``: run
``python -m cctf`` and collect its exit code and output.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from clientcases import REGION
from nats.aio.client import Client
from wirefactories import World, make_world

from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.bus_schemas.messages import Verdict
from cctf.client.sdk import TrustClient
from cctf.devfabric.nats import NatsFabric

__all__ = [
    "LENIENT",
    "Bus",
    "bus_fixture",
    "cli_files_fixture",
    "n",
    "run_cli",
    "take",
    "trust_client",
    "wait_consumers",
]


class Bus:
    """A fabric with the verdict streams, a coordinator publisher and a client connection."""

    def __init__(self, fabric: NatsFabric, admin: Client, coord: Client, client_nc: Client):
        self.fabric = fabric
        self.admin = admin
        self.coord = coord
        self.client_nc = client_nc

    async def publish(self, subject: str, data: bytes) -> None:
        await self.coord.jetstream().publish(subject, data)

    async def consumer_count(self, region: str = REGION) -> int:
        info = await self.admin.jetstream().stream_info(verdict_stream_name(region))
        return int(info.state.consumer_count)


@pytest.fixture(name="bus")
async def bus_fixture(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Bus]:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [REGION, "eu-west"], 1)
    coord = await nats_connect(nats_single, "coordinator")
    client_nc = await nats_connect(nats_single, "client")
    yield Bus(nats_single, admin, coord, client_nc)


def trust_client(bus: Bus, world: World, **kw: Any) -> TrustClient:
    kw.setdefault("feed_inactive_threshold_s", 1.0)
    return TrustClient(bus.client_nc, world.trust, REGION, clock=world.clock, **kw)


def n(v: Verdict) -> int:
    """The small counter of a test verdict's seq (``issued_ms * 1000 + n``)."""
    return v.seq - v.issued_ms * 1000


async def wait_consumers(bus: Bus, count: int, timeout: float = 15.0) -> None:
    """Wait until the verdict stream has ``count`` consumers (the server removes a closed feed's
    consumer after its inactive threshold: clients may not delete consumers)."""
    deadline = time.monotonic() + timeout
    while (now := await bus.consumer_count()) != count:
        assert time.monotonic() < deadline, f"{now} consumers, expected {count}"
        await asyncio.sleep(0.1)


async def take(it: AsyncIterator[Verdict], n: int, timeout: float = 10.0) -> list[Verdict]:
    async def run() -> list[Verdict]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(run(), timeout)


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(name="cli_files")
def cli_files_fixture(bus: Bus, tmp_path: Path) -> tuple[World, list[str]]:
    """A world on the real clock (the CLI reads the system clock) and the common CLI options."""
    world = make_world(start_ms=time.time_ns() // 1_000_000)
    creds = bus.fabric.write_credentials(tmp_path / "creds.json")
    trust = tmp_path / "trust.json"
    world.trust.save(trust)
    return world, ["--credentials", str(creds), "--trust", str(trust), "--region", REGION]


#: ``cctf check`` options for tests that are not about the maximum age (the CLI's clock runs on
#: while the test's stands still, and starting Python takes a while on a busy machine).
LENIENT = ("--max-age-ms", "60000")
