#!/usr/bin/env python3
"""Cyclic-GC pauses in the batch-signing latency phase (issue #9; BENCHMARKS.md, "The cyclic GC").

    .venv/bin/python benchmarks/gcpauses.py [--quick] [--min-ms MS]

Runs ``latency.measure_names`` (``names_1/10/100`` interleaved, then ``round_500_last_verdict``)
on a fresh batch-signing bench fabric, as ``make bench`` does, with every collection of the
coordinator process and of this harness process (agents, collector, subscriber) timed through
``gc.callbacks``: a ``sitecustomize`` on the coordinator's ``PYTHONPATH`` for the run, and the same
callback installed here. Only collections inside the measured phase are summed. Prints one JSON
object: the latency figures (p99s and ratios to the 1-name p99), and per process and generation
the number of collections, their summed, largest and p99 pause (ms), with the young threshold the
process ran with. Pauses under ``--min-ms`` are counted but not listed in ``pauses_ms``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_fabric
import latency
from harness import Progress, percentile

_ENV = "CCTF_GC_LOG_DIR"

#: Loaded by every Python process started with the run's PYTHONPATH (only the coordinator here);
#: written to the run's directory, and executed in this process too (one copy of the callback).
SITECUSTOMIZE = """
import gc, os, time
_dir = os.environ.get("CCTF_GC_LOG_DIR")
if _dir:
    with open("/proc/self/cmdline", "rb") as _c:
        _cmd = _c.read().replace(b"\\0", b" ").decode(errors="replace").strip()
    _log = open(os.path.join(_dir, f"gc.{os.getpid()}.log"), "a", buffering=1)
    _log.write("cmd " + _cmd + "\\n")
    _start = [0.0]

    def _cctf_gc_timer(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - _start[0]) * 1000
            th = gc.get_threshold()[0]
            _log.write(f"{info['generation']} {ms:.3f} {th} {time.time():.4f}\\n")

    gc.callbacks.append(_cctf_gc_timer)
"""


def summarize(path: Path, min_ms: float, window: tuple[float, float]) -> dict[str, Any]:
    """One process's log: per generation, count / sum / max / p99 (ms) of the collections that
    ended inside ``window`` (wall clock, s: the measured phase), the young threshold, and how
    many collections ended outside it (start-up, the fabric's set-up)."""
    lines = path.read_text().splitlines()
    cmd = lines[0].removeprefix("cmd ") if lines else ""
    by_gen: dict[int, list[float]] = {}
    threshold = None
    outside = 0
    for line in lines[1:]:
        gen, ms, th, at = line.split()
        threshold = int(th)
        if not window[0] <= float(at) <= window[1]:
            outside += 1
            continue
        by_gen.setdefault(int(gen), []).append(float(ms))
    gens = {}
    for gen, pauses in sorted(by_gen.items()):
        gens[f"gen{gen}"] = {
            "count": len(pauses),
            "sum_ms": round(sum(pauses), 1),
            "max_ms": round(max(pauses), 2),
            "p99_ms": round(percentile(sorted(pauses), 99), 2),
            "pauses_ms": [round(p, 1) for p in pauses if p >= min_ms],
        }
    return {
        "cmd": cmd[:160],
        "young_threshold": threshold,
        "collections": gens,
        "collections_outside_the_phase": outside,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--min-ms", type=float, default=2.0, help="list pauses of at least this (ms)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="cctf-gc-"))
    (logs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    os.environ[_ENV] = str(logs)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(logs), os.environ.get("PYTHONPATH", "")) if p
    )
    exec(compile(SITECUSTOMIZE, str(logs / "sitecustomize.py"), "exec"), {})  # this process

    async def measure(fab: bench_fabric.BenchFabric, progress: Progress) -> dict[str, Any]:
        start = time.time()
        lat = await latency.measure_names(fab, progress, quick=a.quick)
        window = (start, time.time())
        base = lat["names_1"].get("p99_ms") or 0.0
        figures = {
            name: {
                "p99_ms": lat[name].get("p99_ms"),
                "ratio_to_names_1": round(lat[name]["p99_ms"] / base, 2)
                if base and lat[name].get("p99_ms")
                else None,
            }
            for name in ("names_1", "names_10", "names_100", "round_500_last_verdict")
        }
        processes = {}
        for path in sorted(logs.glob("gc.*.log")):
            s = summarize(path, a.min_ms, window)
            role = "harness" if path.name == f"gc.{os.getpid()}.log" else "coordinator"
            if role == "coordinator" and "coordinator" not in s["cmd"]:
                role = f"other {path.name}"
            processes[role] = s
        return {
            "what": "cyclic-GC pauses (gc.callbacks) during latency.measure_names, batch signing",
            "latency": figures,
            "gc": processes,
            "python": sys.version.split()[0],
            "frozen_in_harness": gc.get_freeze_count(),
        }

    try:
        return bench_fabric.run_part(
            measure, nodes=1, budget_s=120 if a.quick else 600, signing="batch"
        )
    finally:
        for f in logs.iterdir():
            f.unlink()
        logs.rmdir()


if __name__ == "__main__":
    sys.exit(main())
