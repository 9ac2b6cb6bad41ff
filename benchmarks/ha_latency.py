#!/usr/bin/env python3
"""What k-of-m costs in latency: 1 coordinator (any trusted verdict used) vs 3 coordinators with a
2-of-3 subscriber policy, in the same run on the same nats-server.

    .venv/bin/python benchmarks/ha_latency.py [--rounds N] [--nodes 1|3]

Per round: the agent's ballot (three agreeing resolvers: the coordinators decide early) is published
and the time until the subscriber's ``TrustClient.verdicts()`` yields the verified (and, for 2-of-3,
combined) verdict of that round is measured. The two set-ups alternate in blocks of rounds so load
noise hits both. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from hafabric import COORDS, EAST, HONEST, POLICY, Fabric

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.connect import connect
from cctf.bus.streams import ensure_streams
from cctf.client.sdk import TrustClient
from cctf.devfabric.nats import NatsFabric


async def block(fab: NatsFabric, coords: tuple[str, ...], rounds: int, offset: int) -> list[float]:
    async def conn(f: NatsFabric, user: str, **kw: Any) -> Any:
        return await connect(f.urls, f.users[user], name=f"bench-{user}", for_tests=True, **kw)

    f = Fabric(fab, conn, coords)
    f.clock.advance(offset * 1000)  # fresh rounds for every block (no replays)
    admin = await conn(fab, "admin")
    await ensure_streams(admin.jetstream(), [EAST], fab.stream_replicas)
    agent_nc = await conn(fab, f"agent-{EAST}")
    client_nc = await conn(fab, "client")
    policy = POLICY if len(coords) == 3 else None
    client = TrustClient(client_nc, f.trust, EAST, clock=f.clock, coordinators=policy)
    seen: dict[int, float] = {}

    async def watch() -> None:
        async for v in client.verdicts():
            seen.setdefault(v.round, time.perf_counter())

    out: list[float] = []
    try:
        for c in coords:
            await f.start(c)
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        for _ in range(rounds):
            f.clock.advance(1000)
            r = f.clock.now_ms() // 1000
            t0 = time.perf_counter()
            await f.ballot(agent_nc, "live.example.", HONEST)
            deadline = time.monotonic() + 10
            while r not in seen and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            if r in seen:
                out.append((seen[r] - t0) * 1000)
        watcher.cancel()
    finally:
        await f.stop_all()
        for nc in (client_nc, agent_nc, admin):
            await nc.close()
    return out


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs), 2),
        "p90_ms": round(xs[int(0.9 * (len(xs) - 1))], 2),
        "max_ms": round(xs[-1], 2),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--nodes", type=int, choices=(1, 3), default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fab = NatsFabric.start(Path(tmp), nodes=args.nodes, regions=DEFAULT_REGIONS)
        try:
            one: list[float] = []
            kofm: list[float] = []
            per = max(1, args.rounds // 3)
            for i in range(3):
                one += await block(fab, ("c1",), per, (2 * i) * (per + 5))
                kofm += await block(fab, COORDS, per, (2 * i + 1) * (per + 5))
        finally:
            fab.stop()
    print(
        json.dumps(
            {
                "benchmark": "ha_latency",
                "what": "ballot publish -> verified verdict yielded by TrustClient.verdicts()",
                "nodes": args.nodes,
                "baseline_1_coordinator": summary(one),
                "k2_of_3_coordinators": summary(kofm),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
