#!/usr/bin/env python3
"""``make bench``: every CCTF benchmark in one run, against a same-run plain-DNS baseline.

    .venv/bin/python benchmarks/run.py [--quick] [--nodes 1|3] [--duration S] [--names N]
                                       [--window W] [--latency-samples N] [--latency-names N]
                                       [--profile-coordinator FILE]

In this order: ``crypto`` (sign/verify µs), then one bench fabric (``bench_fabric``) for
``latency`` (unloaded, 1 and 10 names) and ``throughput`` (sustained verified verdicts/s), then the
fabric is stopped and ``baseline`` runs (plain dnspython majority of five DNS servers), so nothing
competes with it for the CPU. Prints ONE JSON object on stdout (progress on stderr) whose
``ratios`` compare CCTF with the baseline of the same run (a slower or busier machine moves both,
so compare ratios across runs, not absolute figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import baseline
import bench_fabric
import crypto
import latency
import throughput
from harness import ROUND_MS, K, N, Progress, ratio, run_main

TARGETS = {"p99_ms": 10, "verdicts_per_s": 500}
GOAL_P99_MS = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CCTF end-to-end latency/throughput vs a plain-DNS majority baseline (JSON)."
    )
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="JetStream nodes")
    throughput.add_options(p)
    latency.add_options(p)
    p.add_argument(
        "--profile-coordinator",
        type=Path,
        metavar="FILE",
        help="run the coordinator under cProfile and write its stats to FILE",
    )
    a = p.parse_args(argv)
    throughput.check_options(p, a)
    latency.check_options(p, a)
    return a


def ratios(cctf_lat: dict[str, Any], tput: float | None, base: dict[str, Any]) -> dict[str, Any]:
    return {
        "what": "CCTF / baseline of the same run (latency: > 1 is slower; throughput: > 1 is more)",
        "p50_latency": ratio(cctf_lat.get("p50_ms"), base.get("p50_ms")),
        "p99_latency": ratio(cctf_lat.get("p99_ms"), base.get("p99_ms")),
        "throughput": ratio(tput, base.get("decisions_per_s")),
    }


async def run(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    started = datetime.now(UTC)
    progress("crypto micro-benchmark")
    crypto_us = crypto.measure(30 if a.quick else 300)
    progress(
        f"hybrid sign {crypto_us['hybrid_sign']:.0f} µs, verify {crypto_us['hybrid_verify']:.0f} µs"
    )
    tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            fab = await bench_fabric.start(
                tmp, stack, progress, nodes=a.nodes, profile_coordinator=a.profile_coordinator
            )
            lat = await latency.measure(
                fab,
                progress,
                samples=a.latency_samples,
                names=a.latency_names,
                samples_10=15 if a.quick else 150,
                quick=a.quick,
            )
            tput = await throughput.measure(
                fab,
                progress,
                names_per_ballot=a.names,
                window=a.window,
                warmup_s=a.warmup,
                duration_s=a.duration,
            )
            fab.check_alive()
            coordinator = {
                "process": "separate: python -m cctf coordinator run --config FILE",
                "decision_latency_unloaded": lat["latency"]["coordinator"].get("decision_latency"),
                "decision_latency_loaded": tput["coordinator"].get("decision_latency"),
            }
            subscriber = {
                "verified": fab.client.accepted,
                "rejected": dict(fab.client.rejected),
                "outcomes": dict(fab.collector.outcomes),
            }
            # stop the fabric before the baseline so nothing of it competes for the CPU
        progress("fabric stopped; baseline")
        base = await baseline.measure(tmp, progress, **baseline.sizes(a.quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from_kth = lat["latency"]["from_kth"]
    vps = tput["verdicts_per_s"]
    p99 = from_kth.get("p99_ms")
    return {
        "p50_ms": from_kth.get("p50_ms"),
        "p90_ms": from_kth.get("p90_ms"),
        "p99_ms": p99,
        "max_ms": from_kth.get("max_ms"),
        "count": from_kth.get("count"),
        "verdicts_per_s": vps,
        "ratios": ratios(from_kth, vps, base),
        **lat,
        "throughput": tput,
        "coordinator": coordinator,
        "subscriber": subscriber,
        "baseline": base,
        "crypto_us": crypto_us,
        "config": {
            "nodes": a.nodes,
            "names_per_ballot": a.names,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "window": a.window,
            "latency_samples": a.latency_samples,
            "latency_names": a.latency_names,
            "suite": bench_fabric.SUITE.value,
            "quorum": f"{K}-of-{N}",
            "agents": N,
            "round_ms": ROUND_MS,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine_cores": os.cpu_count(),
            "platform": platform.platform(),
            "quick": a.quick,
            "started_utc": started.isoformat(timespec="seconds"),
        },
        "targets": {**TARGETS, "p99_goal_ms": GOAL_P99_MS},
        "meets_targets": {
            "p99_ms": p99 is not None and p99 <= TARGETS["p99_ms"],
            "p99_goal_ms": p99 is not None and p99 <= GOAL_P99_MS,
            "verdicts_per_s": vps >= TARGETS["verdicts_per_s"],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    budget = 60.0 + 2 * a.duration + (0 if a.quick else 60.0)

    async def work(progress: Progress) -> dict[str, Any]:
        return await run(a, progress)

    return run_main(work, budget_s=budget)


if __name__ == "__main__":
    sys.exit(main())
