"""A small fabric of several coordinators (k-of-m) on one region, for tests and benchmarks/ha_latency.py:
one agent whose three resolvers agree, ``m`` coordinators with ``per_coordinator_subjects``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
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

from cctf.client.coordquorum import CoordinatorPolicy
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
