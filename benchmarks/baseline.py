#!/usr/bin/env python3
"""The same-run baseline: plain DNS majority voting without CCTF.

    .venv/bin/python benchmarks/baseline.py [--quick]

Five of the project's ``FaultyDnsServer`` (no faults, a 1000-name zone) run in a child process
(``--serve-dns``); the harness asks all five in parallel with ``dns.asyncquery.udp`` and takes the
3-of-5 majority: sequential decisions for latency, 16 concurrent workers for throughput. Unsigned, no
bus, no durability, nothing a third party can check.

Prints one JSON object on stdout; ``run.py`` (``make bench``) runs this with the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.zone
from harness import (
    ORIGIN,
    REGIONS,
    K,
    Progress,
    check_stop,
    run_main,
    self_cpu_seconds,
    spawn,
    stop_process,
    summary_ms,
)

from cctf.chaos.dnsserver import FaultyDnsServer

N_NAMES = 1000
DNS_CHILD_MAX_S = 900.0  # the DNS child process exits by itself after this long


def bench_zone(n_names: int) -> dns.zone.Zone:
    lines = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 300",
        "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60",
        "@ 3600 IN NS ns1",
        "ns1 IN A 192.0.2.253",
    ]
    lines += [f"b{i} IN A 192.0.2.{i % 250 + 1}" for i in range(n_names)]
    return dns.zone.from_text("\n".join(lines) + "\n", origin=ORIGIN, relativize=False)


async def serve_dns(n_names: int) -> int:
    """Child mode: five FaultyDnsServers (no faults); print their ports; run until stdin closes,
    SIGTERM/SIGINT, or ``DNS_CHILD_MAX_S``."""
    zone = bench_zone(n_names)
    servers: list[FaultyDnsServer] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for _ in REGIONS:
            server = FaultyDnsServer(zone)
            await server.start()
            servers.append(server)
        print(json.dumps({"ports": [s.port for s in servers]}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        eof = asyncio.ensure_future(reader.read())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({eof, stopper}, timeout=DNS_CHILD_MAX_S, return_when="FIRST_COMPLETED")
        for t in (eof, stopper):
            t.cancel()
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop()
    return 0


async def majority(name: str, ports: Sequence[int]) -> tuple[bool, int]:
    """Ask every server in parallel; ``(3 of 5 agree, number of answers)``."""

    async def one(port: int) -> tuple[int, tuple[str, ...]] | None:
        q = dns.message.make_query(name, "A")
        try:
            r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=1.0, port=port)
        except Exception:
            return None
        return r.rcode(), tuple(sorted(rr.to_text() for rr in r.answer))

    results = await asyncio.gather(*(one(p) for p in ports))
    answers = Counter(r for r in results if r is not None)
    best = answers.most_common(1)[0][1] if answers else 0
    return best >= K, sum(answers.values())


async def _decisions(
    ports: Sequence[int],
    *,
    samples: int,
    duration_s: float,
    concurrency: int,
    progress: Progress,
) -> dict[str, Any]:
    names = [f"b{i}.{ORIGIN}" for i in range(N_NAMES)]
    for name in names[:20]:  # warm-up
        await majority(name, ports)
    lat: list[float] = []
    failed = 0
    deadline = time.monotonic() + max(10.0, samples * 0.02)
    for i in range(samples):
        check_stop()
        if time.monotonic() > deadline:
            break
        t = time.perf_counter()
        ok, _ = await majority(names[i % N_NAMES], ports)
        lat.append(time.perf_counter() - t)
        failed += not ok
    progress(f"baseline latency: {len(lat)} decisions")
    counter = {"ok": 0, "failed": 0}
    loaded: list[float] = []
    t_end = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < t_end:
            check_stop()
            t = time.perf_counter()
            ok, _ = await majority(names[i % N_NAMES], ports)
            loaded.append(time.perf_counter() - t)
            counter["ok" if ok else "failed"] += 1
            i += concurrency

    t0 = time.perf_counter()
    cpu0 = self_cpu_seconds()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu1 = self_cpu_seconds()
    rate = counter["ok"] / elapsed
    progress(f"baseline throughput: {rate:.0f} decisions/s")
    s = summary_ms(lat)
    return {
        "what": "dnspython: 5 parallel UDP queries (dns.asyncquery.udp), majority 3 of 5, "
        "unsigned, no bus",
        "p50_ms": s.get("p50_ms"),
        "p90_ms": s.get("p90_ms"),
        "p99_ms": s.get("p99_ms"),
        "max_ms": s.get("max_ms"),
        "count": s.get("count"),
        "decisions_per_s": round(rate, 1),
        "no_majority": failed + counter["failed"],
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "loaded_latency": summary_ms(loaded),
        "client_cpu_cores_used": round((cpu1 - cpu0) / elapsed, 3),
    }


async def measure(
    tmp: Path, progress: Progress, *, samples: int, duration_s: float, concurrency: int = 16
) -> dict[str, Any]:
    """Start the DNS child, run the decisions, stop the child (also on error)."""
    proc = spawn(
        [sys.executable, str(Path(__file__).resolve()), "--serve-dns", str(N_NAMES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        cwd=tmp,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30.0)
        if not line:
            raise RuntimeError(f"the DNS server process exited with {proc.poll()}")
        ports = json.loads(line)["ports"]
        progress(f"baseline: 5 DNS servers on {ports}")
        return await _decisions(
            ports,
            samples=samples,
            duration_s=duration_s,
            concurrency=concurrency,
            progress=progress,
        )
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        await stop_process(proc, timeout_s=5.0)


def sizes(quick: bool) -> dict[str, Any]:
    return {"samples": 100 if quick else 1000, "duration_s": 1.5 if quick else 8.0}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plain-DNS 3-of-5 majority baseline (JSON on stdout)")
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--serve-dns", type=int, metavar="NAMES", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_dns is not None:
        return asyncio.run(serve_dns(a.serve_dns))

    async def work(progress: Progress) -> dict[str, Any]:
        return await measure(Path.cwd(), progress, **sizes(a.quick))

    return run_main(work, budget_s=90.0)


if __name__ == "__main__":
    sys.exit(main())
