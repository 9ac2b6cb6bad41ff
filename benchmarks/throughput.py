#!/usr/bin/env python3
"""Sustained CCTF throughput: verified verdicts per second at the subscriber, under load.

    .venv/bin/python benchmarks/throughput.py [--quick] [--nodes 1|3] [--duration S] [--names N]
                                              [--window W] [--signing batch|per_verdict]
                                              [--lkg] [--profile-coordinator FILE]

Batches of five ballots carrying ``--names`` names each, at most ``--window`` batches in flight, for
``--duration`` seconds after a warm-up. ``verdicts_per_s`` counts verified verdicts received in the
measured window only. Also: per-second counts, batch latencies under load, CPU use of the harness,
the coordinator and nats-server (from ``/proc``), and the coordinator's own metrics.

Prints one JSON object on stdout; ``run.py`` (``make bench``) runs this with the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_fabric as fabric
from harness import (
    ORIGIN,
    REGIONS,
    ROUND_MS,
    Group,
    Progress,
    check_stop,
    cpu_delta,
    cpu_snapshot,
    summary_ms,
)

BATCH_TIMEOUT_S = 10.0  # a batch older than this stops counting as in flight


async def measure(
    fab: fabric.BenchFabric,
    progress: Progress,
    *,
    names_per_ballot: int,
    window: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """Sustained load for ``warmup_s + duration_s``; counts verdicts in the last ``duration_s``."""
    agents, collector, pids = fab.agents, fab.collector, fab.pids
    progress(
        f"throughput: {names_per_ballot} names/ballot, {window} batches in flight, "
        f"{warmup_s:.1f} s warm-up + {duration_s:.1f} s"
    )
    m0 = fab.scrape()
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    inflight: list[Group] = []
    batch_latency: list[float] = []
    batch_first: list[float] = []
    batches = 0
    expired = 0
    cpu_before: dict[str, float | None] = {}
    build_before = 0.0
    measuring = False

    def reap(now: float) -> None:
        nonlocal expired
        keep = []
        for g in inflight:
            if g.complete:
                if g.t0 >= t_measure:
                    batch_latency.append(max(g.times.values()) - g.t0)
                    batch_first.append(min(g.times.values()) - g.t0)
            elif now - g.t0 > BATCH_TIMEOUT_S:
                expired += 1
                collector.forget(g)
            else:
                keep.append(g)
        inflight[:] = keep

    while True:
        check_stop()
        now = time.perf_counter()
        if now >= t_end:
            break
        if not measuring and now >= t_measure:
            measuring = True
            cpu_before = cpu_snapshot(pids)
            build_before = agents.build_cpu_s
        reap(now)
        if len(inflight) >= window:
            fab.check_alive()
            collector.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.progress.wait(), min(0.1, t_end - now))
            continue
        batches += 1
        t_ms = fabric.now_ms()
        names = [f"t{batches}-{j}.{ORIGIN}" for j in range(names_per_ballot)]
        datas = [agents.sealed_ballot(r, t_ms // ROUND_MS, names, t_ms) for r in REGIONS]
        t0 = time.perf_counter()
        inflight.append(collector.expect(names, t0))
        await asyncio.gather(*(agents.publish(r, d) for r, d in zip(REGIONS, datas, strict=True)))
    cpu_after = cpu_snapshot(pids)
    build_cpu = agents.build_cpu_s - build_before if measuring else 0.0
    window_s = t_end - t_measure
    count = collector.count_between(t_measure, t_end)
    per_second = collector.per_second(t_measure, t_end)
    # drain what is still in flight (bounded) so the coordinator ends idle
    drain_deadline = time.perf_counter() + 5.0
    while inflight and time.perf_counter() < drain_deadline:
        check_stop()
        reap(time.perf_counter())
        collector.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.progress.wait(), 0.2)
    for g in inflight:
        collector.forget(g)
    m1 = fab.scrape()
    cpu = cpu_delta(cpu_before, cpu_after, window_s)
    cpu_per_verdict = cpu_delta(cpu_before, cpu_after, count, 1000.0) if count else {}
    if count and "harness" in cpu_per_verdict:  # the harness = simulated agents + the subscriber
        building = round(build_cpu / count * 1000.0, 3)
        cpu_per_verdict["harness_ballot_building"] = building
        cpu_per_verdict["harness_subscriber"] = round(cpu_per_verdict["harness"] - building, 3)
    progress(f"throughput: {count} verdicts in {window_s:.1f} s = {count / window_s:.0f}/s")
    return {
        "verdicts_per_s": round(count / window_s, 1),
        "verdicts_in_window": count,
        "per_second": per_second,
        "window_s": round(window_s, 2),
        "warmup_s": warmup_s,
        "names_per_ballot": names_per_ballot,
        "batches_in_flight": window,
        "batches_published": batches,
        "batches_timed_out": expired,
        "batch_latency": {
            "what": "publish of a batch's 5 ballots -> its last verified verdict (under load)",
            **summary_ms(batch_latency),
        },
        "batch_first_verdict": {
            "what": "publish of a batch's 5 ballots -> its first verified verdict (under load)",
            **summary_ms(batch_first),
        },
        "cpu_cores_used": cpu,
        "cpu_ms_per_verdict": cpu_per_verdict,
        "coordinator": fabric.metrics_delta(m0, m1),
    }


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, help="throughput window, s (default 20; quick 2)")
    p.add_argument(
        "--names", type=int, help="names per ballot in the throughput run (default 500; quick 200)"
    )
    p.add_argument("--window", type=int, default=2, help="throughput batches in flight")


def check_options(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 20.0)
    a.names = a.names if a.names is not None else (200 if a.quick else 500)
    a.warmup = 0.5 if a.quick else 2.0
    if not 1 <= a.names <= 3000:
        p.error("--names takes 1..3000 (a ballot of 3000 votes is ~490 KB; the cap is 496 KB)")
    if not 0.5 <= a.duration <= 600:
        p.error("--duration takes 0.5..600 seconds")
    if not 1 <= a.window <= 16:
        p.error("--window takes 1..16")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CCTF sustained verified verdicts/s (JSON on stdout)")
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="JetStream nodes")
    p.add_argument("--signing", choices=("per_verdict", "batch"), default="batch")
    p.add_argument("--profile-coordinator", type=Path, metavar="FILE")
    p.add_argument(
        "--lkg",
        action="store_true",
        help="coordinator with LKG on (bench_fabric.coordinator_config)",
    )
    add_options(p)
    a = p.parse_args(argv)
    check_options(p, a)

    return fabric.run_part(
        lambda fab, progress: measure(
            fab,
            progress,
            names_per_ballot=a.names,
            window=a.window,
            warmup_s=a.warmup,
            duration_s=a.duration,
        ),
        nodes=a.nodes,
        budget_s=90.0 + 2 * a.duration,
        signing=a.signing,
        profile_coordinator=a.profile_coordinator,
        lkg=a.lkg,
    )


if __name__ == "__main__":
    sys.exit(main())
