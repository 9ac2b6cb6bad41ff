"""Shared test fixtures: real nats-server fabrics (no mocks) and NATS test connections.

Fixtures
--------
``nats_single``   one JetStream node in ``tmp_path`` (function scope) -> ``NatsFabric``
``nats_cluster``  a 3-node JetStream cluster in ``tmp_path`` (function scope) -> ``NatsFabric``
``identity_fabric`` / ``identity_fabric_thread``  the local identity fabric (trust domain, bundle
                  endpoint, OIDC issuer, workload TLS endpoints): see tests/support/idfabric.py.
``nats_connect``  async factory: ``nc = await nats_connect(fabric, "agent-us-east", error_cb=...)``
                  connects with test settings (all node URLs, quick give-up) and closes every
                  connection it made at teardown.

Every nats-server started here is stopped (SIGTERM, then SIGKILL) at teardown, also when the test
fails; a session-level guard fails the run if any nats-server process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio
from hypothesis import settings
from idfabric import identity_fabric, identity_fabric_thread  # noqa: F401 (fixtures for all tests)
from nats.aio.client import Client

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.connect import connect
from cctf.devfabric.nats import NatsFabric, live_servers

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class NatsConnect(Protocol):
    async def __call__(
        self,
        fabric: NatsFabric,
        user: str = "admin",
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> Client: ...


def _start_fabric(workdir: Path, nodes: int) -> Iterator[NatsFabric]:
    fabric = NatsFabric.start(workdir, nodes=nodes, regions=DEFAULT_REGIONS)
    try:
        yield fabric
    finally:
        fabric.stop()
        leftover = [s.name for s in fabric.servers if s.process and s.process.returncode is None]
        assert not leftover, f"nats-server processes not reaped: {leftover}"


@pytest.fixture
def nats_single(tmp_path: Path) -> Iterator[NatsFabric]:
    """One JetStream nats-server (regions: the five demo regions)."""
    yield from _start_fabric(tmp_path / "nats-single", nodes=1)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsFabric]:
    """A 3-node JetStream cluster, meta leader elected (streams may still need retries)."""
    yield from _start_fabric(tmp_path / "nats-cluster", nodes=3)


@pytest_asyncio.fixture
async def nats_connect() -> AsyncIterator[NatsConnect]:
    """Factory connecting to a fabric as a given user with test settings."""
    clients: list[Client] = []

    async def _connect(
        fabric: NatsFabric,
        user: str = "admin",
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> Client:
        nc = await connect(
            fabric.urls,
            fabric.users[user],
            name=name or f"test-{user}",
            for_tests=True,
            **kwargs,
        )
        clients.append(nc)
        return nc

    yield _connect
    for nc in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=5)


@pytest.fixture(scope="session", autouse=True)
def _nats_leak_guard() -> Iterator[None]:
    """Fail the session if a test leaves a nats-server running (and kill it)."""
    yield
    leftover = live_servers()
    for server in leftover:
        server.kill()
    assert not leftover, f"nats-server processes left running: {leftover}"
