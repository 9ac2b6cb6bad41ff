"""A small fabric of several coordinators (k-of-m) on one region, for tests and benchmarks/ha_latency.py:
one agent whose three resolvers agree, ``m`` coordinators with ``per_coordinator_subjects``.

:meth:`Fabric.open` makes the connections every HA run uses (admin with the region's streams, the
agent, a 2-of-3 ``TrustClient``: all reconnecting every 0.1 s); :meth:`Fabric.watch` collects the
verdicts that client uses, with their arrival times; :meth:`Fabric.close` stops the coordinators and
closes the connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wirefactories import (
    START_MS,
    Identity,
    make_ballot,
    make_identity,
    make_trust,
    make_vote,
    make_world,
    seal_ballot,
)

from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.messages import Verdict
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.sdk import TrustClient
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

EAST = "us-east"
HONEST = ("93.184.216.34",)
FORGED = ("6.6.6.6",)
ELECTORATE = tuple(f"agent-us-east/r{i}" for i in range(1, 6))
NAMES = [("live.example.", "A"), ("forged.example.", "A")]
COORDS = ("c1", "c2", "c3")
POLICY = CoordinatorPolicy(2, COORDS)


def _coord(name: str) -> Identity:
    return make_identity(name, EAST, role=Role.COORDINATOR)


@dataclass
class Parts:
    """The connections of one HA run (see :meth:`Fabric.open`)."""

    admin: Any
    agent_nc: Any
    client_nc: Any
    client: TrustClient
    used: list[tuple[float, Verdict]] = field(default_factory=list)

    def live(self, qname: str = "live.example.") -> list[tuple[float, Verdict]]:
        return [(t, v) for t, v in self.used if v.qname == qname]


class Fabric:
    def __init__(self, fabric: NatsFabric, connect: Any, coords: Sequence[str] = COORDS) -> None:
        world = make_world((EAST,))
        self.fabric, self.connect = fabric, connect
        self.clock = world.clock
        self.clock.set(START_MS + 100)
        self.agent = world.agents[EAST]
        self.coords = {c: _coord(c) for c in coords}
        self.trust = make_trust(self.agent, *self.coords.values())
        self.running: dict[str, Coordinator] = {}

    async def start(self, name: str) -> None:
        nc = await self.connect(
            self.fabric, "coordinator", max_reconnect_attempts=-1, reconnect_time_wait=0.1
        )
        config = CoordinatorConfig(
            coordinator=name,
            region=EAST,
            rule=RuleConfig(k=3, n=5),
            electorate=list(ELECTORATE),
            names=[list(n) for n in NAMES],  # type: ignore[misc]
            per_coordinator_subjects=True,
            fetch_timeout_ms=100,
            tick_ms=20,
            publish_timeout_ms=1000,
            max_backoff_ms=300,
        )
        c = Coordinator(config, nc, key=self.coords[name].key, trust=self.trust, clock=self.clock)
        await c.start()
        self.running[name] = c

    async def stop_all(self) -> None:
        for c in self.running.values():
            await c.stop()

    async def open(self) -> Parts:
        """Admin (the region's streams created), agent and client connections, and the 2-of-3
        client; every connection reconnects forever, every 0.1 s (design D1)."""
        opts: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1}
        admin = await self.connect(self.fabric, "admin", **opts)
        await ensure_streams(admin.jetstream(), [EAST], self.fabric.stream_replicas)
        agent_nc = await self.connect(self.fabric, f"agent-{EAST}", **opts)
        client_nc = await self.connect(self.fabric, "client", **opts)
        client = TrustClient(client_nc, self.trust, EAST, clock=self.clock, coordinators=POLICY)
        return Parts(admin, agent_nc, client_nc, client)

    def watch(self, parts: Parts, **verdicts_kwargs: Any) -> asyncio.Task[None]:
        """Collect every verdict ``parts.client`` uses (with its arrival time) in ``parts.used``."""

        async def collect() -> None:
            async for v in parts.client.verdicts(**verdicts_kwargs):
                parts.used.append((time.monotonic(), v))

        return asyncio.create_task(collect())

    async def close(self, parts: Parts) -> None:
        await self.stop_all()
        for nc in (parts.client_nc, parts.agent_nc, parts.admin):
            await nc.close()

    async def ballot(self, nc: Any, qname: str, answers: Sequence[str]) -> None:
        r = self.clock.now_ms() // 1000
        votes = [
            make_vote(self.agent.principal, EAST, r, qname=qname, resolver_id=f"r{i}", answer=a)
            for i, a in enumerate([answers] * 3, start=1)
        ]
        ballot = make_ballot(self.agent.principal, EAST, r, votes=votes)
        data = seal_ballot(self.agent, ballot, now_ms=self.clock.now_ms())
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.jetstream().publish(self.agent.subject, data, timeout=1.0)
                return
            except Exception:
                assert time.monotonic() < deadline, "could not publish a ballot"
                await asyncio.sleep(0.1)
