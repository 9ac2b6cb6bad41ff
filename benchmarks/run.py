#!/usr/bin/env python3
"""``make bench``: every CCTF benchmark in one run, against a same-run plain-DNS baseline.

    .venv/bin/python benchmarks/run.py [--quick] [--nodes 1|3] [--duration S] [--names N]
                                       [--window W] [--latency-samples N] [--latency-names N]
                                       [--profile-coordinator FILE]

In this order: ``crypto`` (sign/verify µs), then a bench fabric (``bench_fabric``) whose coordinator
signs each verdict (``signing: per_verdict``) for ``latency`` (unloaded, 1 and 10 names) and
``throughput`` (sustained verified verdicts/s), then a fresh one whose coordinator batch-signs
(``signing: batch``) for ``latency.names_1/10/100``, ``latency.round_500_last_verdict`` and
``throughput``; then the fabrics are stopped, ``subscriber`` measures the verifying subscriber
alone (CPU per batch-signed verdict, its publisher in a child process), and ``baseline`` runs (plain dnspython majority of five
DNS servers), so nothing competes with it for the CPU; last the transparency-log core
(``translog``: appends/s, proof sizes). Prints ONE JSON object on stdout (progress on stderr) whose
``ratios`` compare CCTF with the baseline of the same run (a slower or busier machine moves both,
so compare ratios across runs, not absolute figures).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
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
import subscriber
import throughput
import translog
from harness import ROUND_MS, K, N, Progress, ratio, run_main

TARGETS = {"p99_ms": 10, "verdicts_per_s": 500}
BATCH_TARGETS = {
    "batch_over_per_verdict": 5,
    "batch_verdicts_per_s": 10_000,
    "names_10_ratio": 1.5,
    "names_100_ratio": 3,
    "round_500_last_verdict_p99_ms": 100,
    "log_appends_per_s": 5_000,
    "subscriber_cpu_ms_per_verdict": 0.05,
}
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
    p.add_argument(
        "--lkg",
        action="store_true",
        help="coordinators with LKG on (off by default: every bench name is one-shot, see "
        "bench_fabric.coordinator_config)",
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


async def _fabric_part(
    a: argparse.Namespace, progress: Progress, tmp: Path, signing: str
) -> dict[str, Any]:
    """One coordinator process with ``signing``: its latency series and sustained throughput."""
    async with contextlib.AsyncExitStack() as stack:
        progress(f"fabric with signing: {signing}")
        fab = await bench_fabric.start(
            tmp,
            stack,
            progress,
            nodes=a.nodes,
            profile_coordinator=a.profile_coordinator if signing == "batch" else None,
            signing=signing,
            lkg=a.lkg,
        )
        if signing == "batch":
            lat = await latency.measure_names(fab, progress, quick=a.quick)
        else:
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
        subscriber = {
            "verified": fab.client.accepted,
            "rejected": dict(fab.client.rejected),
            "outcomes": dict(fab.collector.outcomes),
        }
        return {"latency": lat, "throughput": tput, "subscriber": subscriber}


async def run(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    started = datetime.now(UTC)
    progress("crypto micro-benchmark")
    crypto_us = crypto.measure(30 if a.quick else 300)
    progress(
        f"hybrid sign {crypto_us['hybrid_sign']:.0f} µs, verify {crypto_us['hybrid_verify']:.0f} µs"
    )
    tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-"))
    try:
        # each fabric is stopped before the next part, so nothing of it competes for the CPU
        per_verdict = await _fabric_part(a, progress, tmp / "per_verdict", "per_verdict")
        # the first part's leftovers (its verified verdicts, caches, connections) are not the second
        # part's subscriber's: free them, and keep what stays (module caches) out of the collector's
        # view, as harness.run_main does at the start, so both parts measure the same subscriber
        gc.collect()
        gc.freeze()
        batch = await _fabric_part(a, progress, tmp / "batch", "batch")
        progress("fabrics stopped; the subscriber alone (CPU per batch-signed verdict)")
        sub = await subscriber.measure(
            progress, verdicts=1_000 if a.quick else 20_000, batch=1_000, pause_s=0.05
        )
        progress("baseline")
        base = await baseline.measure(tmp, progress, **baseline.sizes(a.quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress("transparency-log core (appends/s, proof sizes)")
    log = translog.measure(20_000 if a.quick else 200_000)

    pv_lat = per_verdict["latency"]["latency"]
    b_lat = batch["latency"]
    from_kth = b_lat["names_1"]
    vps = batch["throughput"]["verdicts_per_s"]
    vps_pv = per_verdict["throughput"]["verdicts_per_s"]
    p99 = from_kth.get("p99_ms")
    one = b_lat["names_1"]["series"]
    latency_out = {
        "what": latency.WHAT + "; batch signing (signing: batch), every name of a sample counted",
        "names_1": {k: v for k, v in b_lat["names_1"].items() if k != "series"},
        "names_10": {k: v for k, v in b_lat["names_10"].items() if k != "series"},
        "names_100": {k: v for k, v in b_lat["names_100"].items() if k != "series"},
        "round_500_last_verdict": {
            k: v for k, v in b_lat["round_500_last_verdict"].items() if k != "series"
        },
        "ratios": b_lat["ratios"],
        "from_kth": one["from_kth"],
        "from_last": one["from_last"],
        "breakdown": one["breakdown"],
        "series": {
            k: b_lat[k]["series"]
            for k in ("names_1", "names_10", "names_100", "round_500_last_verdict")
        },
        "coordinator": b_lat["coordinator"],
        "per_verdict": {
            "what": "the same coordinator with signing: per_verdict (one hybrid signature each)",
            "names_1": pv_lat["from_kth"],
            "names_10": per_verdict["latency"]["latency_10_names"]["from_kth"],
            "series": per_verdict["latency"],
        },
    }
    throughput_out = {
        "what": "sustained verified verdicts/s at the subscriber, one coordinator process, "
        f"{a.names} names per ballot, verdicts to one region",
        "per_verdict": per_verdict["throughput"],
        "batch": batch["throughput"],
        "batch_over_per_verdict": ratio(vps, vps_pv),
    }
    b_coord = batch["throughput"]["coordinator"]
    window_s = batch["throughput"]["window_s"]
    log_out = {
        "durable_appends_per_s": round(b_coord.get("batches", 0) / window_s, 1)
        if window_s
        else None,
        "durable_appends_what": "LogBatch records appended to CCTF_LOG per second by the batch "
        "coordinator during the throughput window (one per batch, one signed head each)",
        "verdicts_per_batch_mean": b_coord.get("verdicts_per_batch_mean"),
        "published_before_logged": b_coord.get("published_before_logged"),
        "what": "cctf.translog core on one core (benchmarks/translog.py) and the batch-signed "
        "verdicts' proofs",
        "appends_per_s": log["appends_per_s"],
        "proof_hashes": log["proof_hashes"],
        "inclusion_proof_bytes_max": log["proof_hashes"]["inclusion_bytes_max"],
        "checkpoint_note_bytes": log["checkpoint_note_bytes"],
        "core": log,
    }
    return {
        "p50_ms": from_kth.get("p50_ms"),
        "p90_ms": from_kth.get("p90_ms"),
        "p99_ms": p99,
        "max_ms": from_kth.get("max_ms"),
        "count": from_kth.get("count"),
        "verdicts_per_s": vps,
        "ratios": ratios(from_kth, vps, base),
        "latency": latency_out,
        "throughput": throughput_out,
        "log": log_out,
        "coordinator": {
            "process": "separate: python -m cctf coordinator run --config FILE",
            "decision_latency_unloaded": b_lat["coordinator"].get("decision_latency"),
            "decision_latency_loaded": batch["throughput"]["coordinator"].get("decision_latency"),
        },
        "subscriber": batch["subscriber"],
        "subscriber_per_verdict": per_verdict["subscriber"],
        "subscriber_alone": sub,
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
            "signing": ["per_verdict", "batch"],
            "lkg": a.lkg,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine_cores": os.cpu_count(),
            "platform": platform.platform(),
            "quick": a.quick,
            "started_utc": started.isoformat(timespec="seconds"),
        },
        "targets": {**TARGETS, "p99_goal_ms": GOAL_P99_MS, **BATCH_TARGETS},
        "meets_targets": {
            "p99_ms": p99 is not None and p99 <= TARGETS["p99_ms"],
            "p99_goal_ms": p99 is not None and p99 <= GOAL_P99_MS,
            "verdicts_per_s": vps >= TARGETS["verdicts_per_s"],
            "batch_over_per_verdict": (ratio(vps, vps_pv) or 0) >= 5,
            "batch_verdicts_per_s": vps >= BATCH_TARGETS["batch_verdicts_per_s"],
            "names_10_ratio": (b_lat["ratios"]["names_10"] or 99) <= 1.5,
            "names_100_ratio": (b_lat["ratios"]["names_100"] or 99) <= 3,
            "round_500_last_verdict_p99_ms": (b_lat["round_500_last_verdict"].get("p99_ms") or 1e9)
            <= BATCH_TARGETS["round_500_last_verdict_p99_ms"],
            "log_appends_per_s": log["appends_per_s"] >= BATCH_TARGETS["log_appends_per_s"],
            "subscriber_cpu_ms_per_verdict": sub["cpu_ms_per_verdict"]
            <= BATCH_TARGETS["subscriber_cpu_ms_per_verdict"],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    budget = 180.0 + 4 * a.duration + (0 if a.quick else 240.0)  # loaded machines are slow

    async def work(progress: Progress) -> dict[str, Any]:
        return await run(a, progress)

    return run_main(work, budget_s=budget)


if __name__ == "__main__":
    sys.exit(main())
