#!/usr/bin/env python3
"""Unloaded end-to-end latency of CCTF: ballot publish -> verified verdict at the subscriber.

    .venv/bin/python benchmarks/latency.py [--quick] [--nodes 1|3] [--samples N] [--names N]

Per sample the five ballots are built and sealed first (untimed), then published back to back, each
awaiting its JetStream ack. ``from_kth`` is measured from the start of the publish of the ballot that
completes the quorum (the k-th = 3rd) to the verified verdict; ``from_last`` from the 5th publish (it
can be ~0 or negative: the verdict does not wait for votes 4 and 5). ``breakdown`` splits
``from_kth`` at the moment JetStream stored the verdict (its store timestamp; see ``harness``).

Prints one JSON object on stdout; ``run.py`` (``make bench``) runs this with the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import bench_fabric as fabric
from harness import (
    ORIGIN,
    REGIONS,
    ROUND_MS,
    WAIT_VERDICT_S,
    K,
    Pids,
    Progress,
    check_stop,
    cpu_delta,
    cpu_snapshot,
    summary_ms,
)

WHAT = (
    "publish of the k-th (3rd) ballot -> verified verdict at the subscriber "
    "(from_last: from the 5th ballot's publish); every name of every sample counted: a verdict "
    "missing after WAIT_VERDICT_S (3 s) counts as 3 s (a lower bound; the sample is a timeout)"
)
BREAKDOWN = (
    "kth_publish_ack: the k-th agent's publish -> its JetStream ack; kth_to_verdict_stored: k-th "
    "publish -> JetStream stored the signed verdict (coordinator fetch, verify, tally, sign, "
    "publish); verdict_stored_to_verified: -> delivery to the subscriber and its verification. "
    "Both sides of each segment read the same clock (host CLOCK_REALTIME; the store time is the "
    "server's), so neither can be negative"
)


class Series:
    """The samples of one series (``names_per_sample`` names each), taken one at a time by
    :meth:`sample`, so that several series can be interleaved (:func:`measure_names`)."""

    def __init__(self, fab: fabric.BenchFabric, label: str, names_per_sample: int) -> None:
        self.fab = fab
        self.label = label
        self.names_per_sample = names_per_sample
        self.from_k: list[float] = []
        self.from_last: list[float] = []
        self.round_from_k: list[float] = []
        self.kth_ack: list[float] = []
        self.stored_from_k: list[float] = []
        self.stored_to_verified: list[float] = []
        self.timeouts = 0
        self.done = 0
        self.taken = 0
        self.cpu: dict[str, float] = {}

    async def sample(self, pids: Pids | None = None) -> None:
        """One sample: five sealed ballots published back to back, then the verified verdicts."""
        agents, collector = self.fab.agents, self.fab.collector
        s = self.taken
        self.taken += 1
        cpu0 = cpu_snapshot(pids) if pids else None
        t_ms = fabric.now_ms()
        names = [f"{self.label}{s}-{j}.{ORIGIN}" for j in range(self.names_per_sample)]
        datas = [agents.sealed_ballot(r, t_ms // ROUND_MS, names, t_ms) for r in REGIONS]
        group = collector.expect(names, time.perf_counter(), probe=True)
        t_pub: list[float] = []
        t_ack: list[float] = []
        wall_k = 0.0
        for i, (region, data) in enumerate(zip(REGIONS, datas, strict=True)):
            if i == K - 1:
                wall_k = time.time()
            t_pub.append(time.perf_counter())
            await agents.publish(region, data)
            t_ack.append(time.perf_counter())
        t_k, t_last = t_pub[K - 1], t_pub[-1]
        try:
            await asyncio.wait_for(group.done.wait(), WAIT_VERDICT_S)
        except TimeoutError:
            self.fab.check_alive()
            self.timeouts += 1
            collector.forget(group)
            # every name counted: a verdict that did not come within WAIT_VERDICT_S counts as that
            # long (a lower bound), so a timeout raises the percentiles instead of leaving them
            late = t_k + WAIT_VERDICT_S
            for name in names:
                at = group.times.get(name, late)
                self.from_k.append(at - t_k)
                self.from_last.append(at - t_last)
            self.round_from_k.append(WAIT_VERDICT_S)
            return
        self.done += 1
        self.kth_ack.append(t_ack[K - 1] - t_k)
        for name in names:
            self.from_k.append(group.times[name] - t_k)
            self.from_last.append(group.times[name] - t_last)
            if name in group.stored:
                self.stored_from_k.append(group.stored[name] - wall_k)
                self.stored_to_verified.append(group.wall[name] - group.stored[name])
        self.round_from_k.append(max(group.times.values()) - t_k)
        if pids and cpu0 is not None:
            # includes the (untimed) building and signing of the five ballots by the harness
            for role, v in cpu_delta(cpu0, cpu_snapshot(pids), 1.0).items():
                self.cpu[role] = self.cpu.get(role, 0.0) + v

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "names_per_sample": self.names_per_sample,
            "samples": self.done,
            "timeouts": self.timeouts,
            "from_kth": summary_ms(self.from_k),
            "from_last": summary_ms(self.from_last),
            "breakdown": {
                "what": BREAKDOWN,
                "kth_publish_ack": summary_ms(self.kth_ack),
                "kth_to_verdict_stored": summary_ms(self.stored_from_k),
                "verdict_stored_to_verified": summary_ms(self.stored_to_verified),
            },
        }
        if self.names_per_sample > 1:
            out["sample_complete_from_kth"] = summary_ms(self.round_from_k)
        if self.cpu and self.done:
            out["cpu_ms_per_sample"] = {
                role: round(v / self.done * 1000.0, 3) for role, v in self.cpu.items()
            }
        return out


async def series(
    fab: fabric.BenchFabric,
    *,
    label: str,
    samples: int,
    names_per_sample: int,
    time_limit_s: float,
    pids: Pids | None = None,
) -> dict[str, Any]:
    """``samples`` unloaded latency samples of ``names_per_sample`` names each."""
    one = Series(fab, label, names_per_sample)
    deadline = time.monotonic() + time_limit_s
    for _ in range(samples):
        check_stop()
        if time.monotonic() > deadline:
            break
        await one.sample(pids)
        await asyncio.sleep(0.003)  # let the fabric settle: unloaded latency
    return one.result()


def interleaved(counts: Sequence[int]) -> list[int]:
    """The order in which series of ``counts`` samples take them when interleaved: the indexes of
    the series, each spread evenly over the whole run (so drift in the machine's speed during the
    run reaches every series alike)."""
    total = max(counts, default=0)
    order: list[int] = []
    for t in range(total):
        for i, n in enumerate(counts):
            if (t + 1) * n // total > t * n // total:
                order.append(i)
    return order


async def measure(
    fab: fabric.BenchFabric,
    progress: Progress,
    *,
    samples: int,
    names: int,
    samples_10: int,
    quick: bool,
) -> dict[str, Any]:
    """The 1-name series (with the store-time breakdown) and a 10-name series, each with the
    coordinator's own metrics over the phase."""
    probe = await fab.probe_stored()
    try:
        m0 = fab.scrape()
        progress(f"latency: {samples} samples of {names} name(s)")
        one = await series(
            fab,
            label="l",
            samples=samples,
            names_per_sample=names,
            time_limit_s=10.0 if quick else 30.0,
            pids=fab.pids,
        )
        m1 = fab.scrape()
        progress(
            f"latency from k-th publish: p50 {one['from_kth'].get('p50_ms')} ms, "
            f"p99 {one['from_kth'].get('p99_ms')} ms"
        )
        ten = await series(
            fab,
            label="m",
            samples=samples_10,
            names_per_sample=10,
            time_limit_s=5.0 if quick else 15.0,
            pids=fab.pids,
        )
        m2 = fab.scrape()
    finally:
        with contextlib.suppress(Exception):
            await probe.unsubscribe()
    return {
        "latency": {
            "what": WHAT,
            **one,
            "coordinator": fabric.metrics_delta(m0, m1),
        },
        "latency_10_names": {**ten, "coordinator": fabric.metrics_delta(m1, m2)},
    }


#: Batch signing (issue #9): names per ballot -> samples (quick, full).
NAMES_SERIES = {1: (30, 300), 10: (15, 120), 100: (6, 60)}
ROUND_500_SAMPLES = (3, 30)


async def measure_names(
    fab: fabric.BenchFabric, progress: Progress, *, quick: bool
) -> dict[str, Any]:
    """``names_1``, ``names_10``, ``names_100`` (k-th ballot -> each name's verified verdict, every
    name counted) and ``round_500_last_verdict`` (k-th ballot of a 500-name round -> its LAST
    verified verdict), with the coordinator's metrics over the phase."""
    probe = await fab.probe_stored()
    out: dict[str, Any] = {}
    try:
        m0 = fab.scrape()
        # the three series interleaved (one sample of each in turn, in proportion to their counts):
        # their ratios compare them under the same conditions, not at three moments of the run
        runs = [Series(fab, f"n{names}-", names) for names in NAMES_SERIES]
        counts = [q if quick else full for q, full in NAMES_SERIES.values()]
        deadline = time.monotonic() + (5.0 if quick else 25.0) * len(runs)
        for i in interleaved(counts):
            check_stop()
            if time.monotonic() > deadline:
                break
            await runs[i].sample(fab.pids)
            await asyncio.sleep(0.003)  # let the fabric settle: unloaded latency
        for names, run in zip(NAMES_SERIES, runs, strict=True):
            part = run.result()
            out[f"names_{names}"] = {**part["from_kth"], "series": part, "interleaved": True}
            progress(f"latency {names} name(s): p99 {part['from_kth'].get('p99_ms')} ms")
        part = await series(
            fab,
            label="r500-",
            samples=ROUND_500_SAMPLES[0] if quick else ROUND_500_SAMPLES[1],
            names_per_sample=500,
            time_limit_s=10.0 if quick else 40.0,
            pids=fab.pids,
        )
        out["round_500_last_verdict"] = {
            "what": "publish of the k-th (3rd) ballot of a 500-name round -> its last verified "
            "verdict",
            **part.get("sample_complete_from_kth", {"count": 0}),
            "series": part,
        }
        progress(
            "latency 500-name round, last verdict: p99 "
            f"{out['round_500_last_verdict'].get('p99_ms')} ms"
        )
        out["coordinator"] = fabric.metrics_delta(m0, fab.scrape())
    finally:
        with contextlib.suppress(Exception):
            await probe.unsubscribe()
    n1 = out["names_1"].get("p99_ms")
    out["ratios"] = {
        "what": "p99 with N names / p99 with 1 name (targets: 10 names <= 1.5, 100 names <= 3)",
        "names_10": round(out["names_10"]["p99_ms"] / n1, 3)
        if n1 and "p99_ms" in out["names_10"]
        else None,
        "names_100": round(out["names_100"]["p99_ms"] / n1, 3)
        if n1 and "p99_ms" in out["names_100"]
        else None,
    }
    return out


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency-samples", type=int, help="latency samples (default 400; quick 40)")
    p.add_argument("--latency-names", type=int, default=1, help="names per latency sample")


def check_options(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    a.latency_samples = a.latency_samples or (40 if a.quick else 400)
    if not 1 <= a.latency_samples <= 20_000 or not 1 <= a.latency_names <= 100:
        p.error("--latency-samples takes 1..20000, --latency-names 1..100")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CCTF unloaded end-to-end latency (JSON on stdout)")
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="JetStream nodes")
    add_options(p)
    a = p.parse_args(argv)
    check_options(p, a)

    return fabric.run_part(
        lambda fab, progress: measure(
            fab,
            progress,
            samples=a.latency_samples,
            names=a.latency_names,
            samples_10=15 if a.quick else 150,
            quick=a.quick,
        ),
        nodes=a.nodes,
        budget_s=120.0,
    )


if __name__ == "__main__":
    sys.exit(main())
