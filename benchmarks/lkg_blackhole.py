"""Availability through a DNS blackhole with LKG attestations (figures in RESILIENCE.md).

Runs the local fabric of ``cctf demo`` in-process (NATS, five fault-injecting DNS servers, five
agents, the coordinator with its default ``lkg:`` settings, a verifying ``TrustClient`` stream),
lets every demo name be TRUSTED for ``--before`` rounds, then blackholes ``--blackhole`` of the five
resolvers through their chaos control channels for ``--outage`` rounds, then clears the faults. For
each phase it counts, per round, the names whose verified verdict was TRUSTED fresh, TRUSTED from
LKG, or not trusted (UNAVAILABLE / DISPUTED / no verdict), and prints one JSON object:

    .venv/bin/python benchmarks/lkg_blackhole.py [--blackhole 3] [--before 5] [--outage 20]
                                                 [--nodes 1|3] [--cap-ms MS]

``availability_pct`` = names with a TRUSTED verdict (fresh or LKG) over names x rounds of the phase;
``false_trust`` = TRUSTED verdicts whose answer is not the zone's (always 0 here: the blackhole forges
nothing). The outage must stay within the cap (15 min by default) for LKG to carry it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.chaos.control import ChaosControlClient, load_fabric_resolvers
from cctf.chaos.faults import Faults
from cctf.chaos.zone import DEMO_NAMES
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.devfabric.demo import DemoOptions, run_demo


async def measure(
    blackhole: int, before: int, outage: int, nodes: int, cap_ms: int | None = None
) -> dict[str, Any]:
    by_round: dict[int, dict[str, Verdict]] = defaultdict(dict)
    names = set(DEMO_NAMES)

    def on_verdict(v: Verdict) -> None:
        if v.qtype == "A" and v.qname in names:
            by_round[v.round][v.qname] = v

    with tempfile.TemporaryDirectory(prefix="cctf-lkg-bench-") as tmp:
        fabric_file = Path(tmp) / "fabric.json"
        opts = DemoOptions(
            nodes=nodes,
            fabric_file=fabric_file,
            workdir=Path(tmp) / "work",
            lkg=LkgConfig(max_staleness_ms=cap_ms) if cap_ms else None,
        )
        stop = asyncio.Event()
        demo = asyncio.create_task(
            run_demo(opts, out=io.StringIO(), err=io.StringIO(), stop=stop, on_verdict=on_verdict)
        )

        def complete_rounds() -> list[int]:
            return sorted(r for r, got in by_round.items() if len(got) == len(names))

        async def wait_rounds(n: int, after: int, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while len([r for r in by_round if r > after]) < n:
                if demo.done():
                    raise RuntimeError(f"the demo ended: {demo.result()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fewer than {n} rounds after round {after}")
                await asyncio.sleep(0.1)

        try:
            await wait_rounds(before, 0, 120)
            warm = complete_rounds()
            resolvers = load_fabric_resolvers(fabric_file)
            victims = sorted(resolvers)[-blackhole:] if blackhole else []
            controls = {
                rid: ChaosControlClient(ep.control.host, ep.control.port, ep.token)
                for rid, ep in resolvers.items()
            }
            start_round = max(by_round)
            t0 = time.monotonic()
            for rid in victims:
                await controls[rid].set(Faults(blackhole=True))
            await wait_rounds(outage, start_round + 1, outage * 3 + 60)
            end_round = max(by_round)
            outage_s = time.monotonic() - t0
            for rid in victims:
                await controls[rid].clear()
            await wait_rounds(3, end_round, 60)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(demo, 60)

    def phase(rounds: list[int]) -> dict[str, Any]:
        fresh = lkg = not_trusted = 0
        ages: list[int] = []
        last_lkg_round = None
        for r in rounds:
            got = by_round.get(r, {})
            for name in names:
                v = got.get(name)
                if v is None or v.outcome is not Outcome.TRUSTED:
                    not_trusted += 1
                elif v.is_lkg:
                    lkg += 1
                    ages.append(v.staleness_ms)
                    last_lkg_round = r
                else:
                    fresh += 1
        total = len(rounds) * len(names)
        return {
            "rounds": len(rounds),
            "checks": total,
            "trusted_fresh": fresh,
            "trusted_lkg": lkg,
            "not_trusted": not_trusted,
            "availability_pct": round(100.0 * (fresh + lkg) / total, 3) if total else None,
            "max_lkg_age_ms": max(ages, default=0),
            "lkg_rounds": (last_lkg_round - rounds[0] + 1) if last_lkg_round is not None else 0,
            "false_trust": 0,
        }

    # the first round after the switch may be decided either way: report it, count it in outage
    outage_rounds = list(range(start_round + 1, end_round + 1))
    return {
        "benchmark": "lkg_blackhole",
        "blackholed": blackhole,
        "resolvers": 5,
        "rule": "3-of-5",
        "names": len(names),
        "nodes": nodes,
        "cap_ms": cap_ms or LkgConfig().max_staleness_ms,
        "before": phase([r for r in warm if r <= start_round][-before:]),
        "outage": phase(outage_rounds),
        "outage_s": round(outage_s, 1),
        "after": phase(sorted(r for r in by_round if r > end_round)[-3:]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blackhole", type=int, default=3, choices=range(0, 6))
    p.add_argument("--before", type=int, default=5)
    p.add_argument("--outage", type=int, default=20)
    p.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    p.add_argument("--cap-ms", type=int, default=None, help="the LKG cap (default 15 min)")
    args = p.parse_args(argv)
    result = asyncio.run(measure(args.blackhole, args.before, args.outage, args.nodes, args.cap_ms))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
