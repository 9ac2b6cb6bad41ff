#!/usr/bin/env python3
"""End-to-end benchmark of CCTF against a same-run plain-DNS baseline (``make bench``).

    .venv/bin/python benchmarks/e2e.py [--quick] [--nodes 1|3] [--duration S] [--names N]

Prints ONE JSON object on stdout (progress goes to stderr). Everything runs on 127.0.0.1 and is
stopped on exit, on error, on Ctrl-C and on SIGTERM; every loop is bounded in count and time.

What runs, in this order:

1. ``crypto_us``: sign/verify cost per operation of ed25519, ml-dsa-65 and the hybrid suite.
2. The fabric: a JetStream server (one node, or a 3-node cluster with ``--nodes 3``), the CCTF
   streams, and ONE coordinator in its own process (``python -m cctf coordinator run --config F``
   with a generated config, so the harness's CPU is not charged to it; its Prometheus endpoint gives
   its own decision latency). Five simulated agents (one NATS connection each, as their region's
   user, with real hybrid keys) publish real sealed ballots; a ``TrustClient`` verdict stream
   verifies every verdict. No DNS in this part: every agent reports the same honest answer.
3. Latency (unloaded): per sample, the five ballots (pre-signed) are published back to back, each
   awaiting its JetStream ack. Latency is from the start of the publish of the ballot that completes
   the quorum (the k-th = 3rd) to the verified verdict at the subscriber; ``from_last`` measures from
   the 5th publish instead (it can be ~0 or negative: the verdict does not wait for votes 4 and 5).
4. Throughput (loaded): batches of five ballots carrying ``--names`` names each, at most
   ``--window`` batches in flight, for ``--duration`` seconds after a warm-up; ``verdicts_per_s`` is
   verified verdicts received by the subscriber per second in the measured window.
5. Baseline: five ``FaultyDnsServer`` in a child process; the harness asks all five in parallel
   with ``dns.asyncquery.udp`` and takes the majority answer (3 of 5). Unsigned, no bus.

Every (name, round) is unique: names carry a per-run sequence number, so tallies are always fresh
(the coordinator runs with its default 1 s rounds; the ballots use the current round).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.zone
from nats.aio.msg import Msg

from cctf import telemetry
from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.consumer import votes_stream_for
from cctf.bus.streams import ensure_streams, votes_stream_name
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import (
    Ballot,
    MessageType,
    ResolverVote,
    Transport,
    Verdict,
    VoteStatus,
    answer_digest,
    encode,
)
from cctf.bus_schemas.subjects import verdict_subject, vote_subject
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.client.sdk import TrustClient, VerdictStream
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric

REGIONS: tuple[str, ...] = DEFAULT_REGIONS
K = 3
N = len(REGIONS)
COORDINATOR_ID = "coord-1"
VERDICT_REGION = REGIONS[0]
ORIGIN = "bench.test."
SUITE = SuiteId.HYBRID
ROUND_MS = 1_000
ROUND_GRACE_MS = 1_500
TARGETS = {"p99_ms": 10, "verdicts_per_s": 500}
GOAL_P99_MS = 5
PUBLISH_TIMEOUT_S = 5.0
WAIT_VERDICT_S = 3.0  # a latency sample whose verdicts take longer counts as a timeout
BATCH_TIMEOUT_S = 10.0  # a throughput batch older than this stops counting as in flight
DNS_CHILD_MAX_S = 900.0  # the DNS child process exits by itself after this long


def agent_id(region: str) -> str:
    return f"agent-{region}"


def resolver_id(region: str) -> str:
    return f"dns-{region}"


# ------------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class Options:
    quick: bool
    nodes: int
    duration_s: float
    names: int
    window: int
    warmup_s: float
    latency_samples: int
    latency_names: int
    batch_samples: int
    batch_names: int
    baseline_samples: int
    baseline_duration_s: float
    baseline_concurrency: int
    crypto_iterations: int
    budget_s: float
    profile_coordinator: Path | None


def parse_args(argv: Sequence[str] | None) -> tuple[Options | None, int | None]:
    p = argparse.ArgumentParser(
        description="CCTF end-to-end latency/throughput vs a plain-DNS majority baseline (JSON)."
    )
    p.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="JetStream nodes")
    p.add_argument("--duration", type=float, help="throughput window, s (default 20; quick 2)")
    p.add_argument(
        "--names", type=int, help="names per ballot in the throughput run (default 500; quick 200)"
    )
    p.add_argument("--window", type=int, default=2, help="throughput batches in flight")
    p.add_argument("--latency-samples", type=int, help="latency samples (default 400; quick 40)")
    p.add_argument("--latency-names", type=int, default=1, help="names per latency sample")
    p.add_argument(
        "--profile-coordinator",
        type=Path,
        metavar="FILE",
        help="run the coordinator under cProfile and write its stats to FILE",
    )
    p.add_argument("--serve-dns", type=int, metavar="NAMES", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_dns is not None:
        return None, a.serve_dns
    quick = bool(a.quick)
    duration = a.duration if a.duration is not None else (2.0 if quick else 20.0)
    names = a.names if a.names is not None else (200 if quick else 500)
    if not 1 <= names <= 3000:
        p.error("--names takes 1..3000 (a ballot of 3000 votes is ~490 KB; the cap is 496 KB)")
    if not 0.5 <= duration <= 600:
        p.error("--duration takes 0.5..600 seconds")
    if not 1 <= a.window <= 16:
        p.error("--window takes 1..16")
    lat_samples = a.latency_samples or (40 if quick else 400)
    if not 1 <= lat_samples <= 20_000 or not 1 <= a.latency_names <= 100:
        p.error("--latency-samples takes 1..20000, --latency-names 1..100")
    opts = Options(
        quick=quick,
        nodes=a.nodes,
        duration_s=duration,
        names=names,
        window=a.window,
        warmup_s=0.5 if quick else 2.0,
        latency_samples=lat_samples,
        latency_names=a.latency_names,
        batch_samples=15 if quick else 150,
        batch_names=10,
        baseline_samples=100 if quick else 1000,
        baseline_duration_s=1.5 if quick else 8.0,
        baseline_concurrency=16,
        crypto_iterations=30 if quick else 300,
        budget_s=60.0 + 2 * duration + (0 if quick else 60.0),
        profile_coordinator=a.profile_coordinator,
    )
    return opts, None


# ------------------------------------------------------------------------------------------------
# small helpers


class _Stop:
    """Set by SIGINT/SIGTERM. Every loop of the harness checks it, because a bare
    ``task.cancel()`` can be swallowed by Python 3.11's ``asyncio.wait_for`` when its inner future
    completes at the same moment (and nats-py uses ``wait_for`` on every request)."""

    requested = False


def check_stop() -> None:
    if _Stop.requested:
        raise asyncio.CancelledError("stop requested")


class Progress:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (``q`` in 0..100)."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean in ms of durations given in seconds."""
    xs = sorted(x * 1000.0 for x in samples_s)
    if not xs:
        return {"count": 0}
    return {
        "p50_ms": round(percentile(xs, 50), 3),
        "p90_ms": round(percentile(xs, 90), 3),
        "p99_ms": round(percentile(xs, 99), 3),
        "max_ms": round(xs[-1], 3),
        "min_ms": round(xs[0], 3),
        "mean_ms": round(sum(xs) / len(xs), 3),
        "count": len(xs),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux ``/proc``), or None."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


Pids = dict[str, list[int]]


def cpu_snapshot(pids: Pids) -> dict[str, float | None]:
    """CPU seconds used so far by the harness and by each group of processes."""
    snap: dict[str, float | None] = {"harness": self_cpu_seconds()}
    for role, plist in pids.items():
        vals = [cpu_seconds(p) for p in plist]
        snap[role] = None if any(v is None for v in vals) else sum(v or 0.0 for v in vals)
    return snap


def cpu_delta(
    before: dict[str, float | None], after: dict[str, float | None], per: float, scale: float = 1.0
) -> dict[str, float]:
    """CPU used between two snapshots, divided by ``per`` and multiplied by ``scale``."""
    out: dict[str, float] = {}
    for role, b in before.items():
        a = after.get(role)
        if a is not None and b is not None and per > 0:
            out[role] = round((a - b) / per * scale, 3)
    return out


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the harness


_children: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=5)


atexit.register(_kill_children)


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    preexec = _set_pdeathsig if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(cmd, preexec_fn=preexec, **kw)
    _children.append(proc)
    return proc


async def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait, 5)
    return proc.poll()


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# ------------------------------------------------------------------------------------------------
# crypto costs


def bench_crypto(iterations: int) -> dict[str, Any]:
    """Mean µs per sign and per verify of each suite over a 600-byte message (about a verdict's
    to-be-signed bytes)."""
    tbs = os.urandom(600)
    out: dict[str, Any] = {"message_bytes": len(tbs), "iterations": iterations}
    for suite, label in (
        (SuiteId.ED25519, "ed25519"),
        (SuiteId.ML_DSA_65, "ml_dsa_65"),
        (SuiteId.HYBRID, "hybrid"),
    ):
        key = SigningKey.generate(suite)
        n = iterations * (10 if suite is SuiteId.ED25519 else 1)
        key.sign(tbs)  # warm
        t = time.perf_counter()
        sigs = [key.sign(tbs) for _ in range(n)]
        sign_us = (time.perf_counter() - t) / n * 1e6
        pub = key.public
        t = time.perf_counter()
        for sig in sigs:
            pub.verify(tbs, sig)
        verify_us = (time.perf_counter() - t) / n * 1e6
        out[f"{label}_sign"] = round(sign_us, 1)
        out[f"{label}_verify"] = round(verify_us, 1)
    return out


# ------------------------------------------------------------------------------------------------
# coordinator metrics (Prometheus text)

_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


def scrape(port: int) -> dict[str, float] | None:
    """``name{labels}`` -> value for every ``cctf_`` sample (None if the endpoint is down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("cctf_"):
            continue
        m = _METRIC_RE.match(line.strip())
        if m:
            labels = [
                f'{k}="{v}"'
                for k, v in _LABEL_RE.findall(m.group(2) or "")
                if not k.startswith("otel_")
            ]
            key = m.group(1) + ("{" + ",".join(sorted(labels)) + "}" if labels else "")
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def metrics_delta(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, Any]:
    """Coordinator counters and decision-latency histogram over one phase."""
    if before is None or after is None:
        return {"error": "coordinator metrics endpoint not reachable"}
    d = {k: v - before.get(k, 0.0) for k, v in after.items()}
    out: dict[str, Any] = {}
    hist = "cctf_decision_latency_milliseconds"
    count = d.get(f"{hist}_count", 0.0)
    total = d.get(f"{hist}_sum", 0.0)
    buckets: list[tuple[float, float]] = []
    for key, value in d.items():
        if key.startswith(f"{hist}_bucket"):
            m = re.search(r'le="([^"]+)"', key)
            if m:
                buckets.append((float(m.group(1)), value))
    buckets.sort()
    if count > 0:

        def bound(q: float) -> float:
            for le, cum in buckets:
                if cum >= q * count:
                    return le
            return math.inf

        out["decision_latency"] = {
            "what": "coordinator's own: arrival of the last counted vote -> verdict publish acked",
            "count": int(count),
            "mean_ms": round(total / count, 3),
            "p50_le_ms": bound(0.50),
            "p99_le_ms": bound(0.99),
        }
    verdicts = {
        k.split('outcome="')[1].rstrip('"}'): int(v)
        for k, v in d.items()
        if k.startswith("cctf_verdicts_total{") and v
    }
    rejected = {
        k.split('reason="')[1].rstrip('"}'): int(v)
        for k, v in d.items()
        if k.startswith("cctf_messages_rejected_total{") and v
    }
    ignored = {
        k.split('result="')[1].rstrip('"}'): int(v)
        for k, v in d.items()
        if k.startswith("cctf_votes_ignored_total{") and v
    }
    out["verdicts_published"] = verdicts
    out["ballots_accepted"] = int(d.get("cctf_ballots_accepted_total", 0))
    out["votes_accepted"] = int(d.get("cctf_votes_accepted_total", 0))
    out["votes_ignored"] = ignored
    out["rejected"] = rejected
    out["publish_retries"] = int(d.get("cctf_verdict_publish_retries_total", 0))
    out["verdicts_dropped"] = int(d.get("cctf_verdicts_dropped_total", 0))
    return out


# ------------------------------------------------------------------------------------------------
# the verdict collector (subscriber side)


@dataclass
class Group:
    """Verdicts awaited together (one latency sample or one throughput batch)."""

    names: frozenset[str]
    t0: float
    times: dict[str, float] = field(default_factory=dict)
    bus: dict[str, float] = field(default_factory=dict)  # seen on the bus (core subscription)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def complete(self) -> bool:
        return self.done.is_set()


class Collector:
    """Consumes the verified verdict stream; timestamps each verdict on arrival."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []  # perf_counter of every verified verdict
        self.outcomes: Counter[str] = Counter()
        self.progress = asyncio.Event()
        self._waiting: dict[str, Group] = {}
        self._probed: dict[str, tuple[Group, str]] = {}  # verdict subject -> (group, name)

    def expect(self, names: Sequence[str], t0: float, *, probe: bool = False) -> Group:
        group = Group(frozenset(names), t0)
        for name in names:
            self._waiting[name] = group
            if probe:
                self._probed[verdict_subject(VERDICT_REGION, name, "A")] = (group, name)
        return group

    def forget(self, group: Group) -> None:
        for name in group.names:
            if self._waiting.get(name) is group:
                del self._waiting[name]
        for subject in [s for s, (g, _) in self._probed.items() if g is group]:
            del self._probed[subject]

    async def on_bus(self, msg: Msg) -> None:
        """Core-NATS copy of a verdict: the moment the coordinator's publish reached the server
        (before JetStream delivery to the subscriber and before its verification)."""
        hit = self._probed.pop(msg.subject, None)
        if hit is not None:
            hit[0].bus[hit[1]] = time.perf_counter()

    def on_verdict(self, verdict: Verdict) -> None:
        now = time.perf_counter()
        self.arrivals.append(now)
        self.outcomes[verdict.outcome.value] += 1
        group = self._waiting.pop(verdict.qname, None)
        if group is not None:
            group.times[verdict.qname] = now
            if len(group.times) == len(group.names):
                group.done.set()
                self.progress.set()

    async def run(self, stream: VerdictStream) -> None:
        async for verdict in stream:
            self.on_verdict(verdict)

    def count_between(self, t_from: float, t_to: float) -> int:
        return sum(1 for t in self.arrivals if t_from <= t < t_to)

    def per_second(self, t_from: float, t_to: float) -> list[int]:
        """Verdicts received in each whole second from ``t_from`` (a partial last second is
        left out)."""
        bins = [0] * int(t_to - t_from)
        for t in self.arrivals:
            i = math.floor(t - t_from)
            if 0 <= i < len(bins):
                bins[i] += 1
        return bins


# ------------------------------------------------------------------------------------------------
# simulated agents


class Agents:
    """Five agents with real hybrid keys and their own NATS connections (region users)."""

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self.keys = keys
        self.js: dict[str, Any] = {}
        self.subjects = {r: vote_subject(r, agent_id(r)) for r in REGIONS}
        self._seq = 0
        self._answers: dict[str, tuple[list[str], bytes]] = {}

    def answer(self, qname: str, index: int) -> tuple[list[str], bytes]:
        ans = self._answers.get(qname)
        if ans is None:
            answer = [f"{qname} A 192.0.2.{index % 250 + 1}"]
            ans = self._answers[qname] = (answer, answer_digest(0, answer))
            if len(self._answers) > 50_000:
                self._answers.clear()
        return ans

    def sealed_ballot(self, region: str, round_: int, names: Sequence[str], now_ms: int) -> bytes:
        agent = agent_id(region)
        rid = resolver_id(region)
        votes = []
        for i, qname in enumerate(names):
            answer, digest = self.answer(qname, i)
            votes.append(
                ResolverVote(
                    agent=agent,
                    region=region,
                    round=round_,
                    qname=qname,
                    qtype="A",
                    resolver_id=rid,
                    transport=Transport.UDP,
                    status=VoteStatus.ANSWER,
                    rcode=0,
                    answer=answer,
                    answer_digest=digest,
                    ttl=300,
                    ad=False,
                    ede=[],
                    observed_ms=now_ms,
                )
            )
        ballot = Ballot(agent=agent, region=region, round=round_, issued_ms=now_ms, votes=votes)
        return seal(
            self.keys[region],
            self.subjects[region],
            MessageType.BALLOT,
            encode(ballot),
            now_ms=now_ms,
            lifetime_ms=30_000,
        )

    async def publish(self, region: str, data: bytes) -> None:
        self._seq += 1
        await self.js[region].publish(
            self.subjects[region],
            data,
            timeout=PUBLISH_TIMEOUT_S,
            stream=votes_stream_name(region),
            headers={"Nats-Msg-Id": f"bench-{agent_id(region)}-{self._seq}"},
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------------------------------------
# CCTF phases


async def latency_series(
    agents: Agents,
    collector: Collector,
    *,
    label: str,
    samples: int,
    names_per_sample: int,
    time_limit_s: float,
    pids: Pids | None = None,
    check: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Unloaded latency: five pre-signed ballots published back to back per sample."""
    cpu0 = cpu_snapshot(pids or {})
    from_k: list[float] = []
    from_last: list[float] = []
    round_from_k: list[float] = []
    kth_ack: list[float] = []  # k-th ballot: publish -> JetStream ack at the agent
    bus_from_k: list[float] = []  # k-th publish -> verdict seen on the bus
    bus_to_verified: list[float] = []  # verdict on the bus -> verified at the subscriber
    timeouts = 0
    deadline = time.monotonic() + time_limit_s
    done = 0
    for s in range(samples):
        check_stop()
        if time.monotonic() > deadline:
            break
        t_ms = now_ms()
        round_ = t_ms // ROUND_MS
        names = [f"{label}{s}-{j}.{ORIGIN}" for j in range(names_per_sample)]
        datas = [agents.sealed_ballot(r, round_, names, t_ms) for r in REGIONS]
        group = collector.expect(names, time.perf_counter(), probe=True)
        t_pub: list[float] = []
        t_ack: list[float] = []
        for region, data in zip(REGIONS, datas, strict=True):
            t_pub.append(time.perf_counter())
            await agents.publish(region, data)
            t_ack.append(time.perf_counter())
        try:
            await asyncio.wait_for(group.done.wait(), WAIT_VERDICT_S)
        except TimeoutError:
            check()  # raises if the coordinator died
            timeouts += 1
            collector.forget(group)
            continue
        done += 1
        t_k, t_last = t_pub[K - 1], t_pub[-1]
        kth_ack.append(t_ack[K - 1] - t_k)
        for name in names:
            from_k.append(group.times[name] - t_k)
            from_last.append(group.times[name] - t_last)
            if name in group.bus:
                bus_from_k.append(group.bus[name] - t_k)
                bus_to_verified.append(group.times[name] - group.bus[name])
        round_from_k.append(max(group.times.values()) - t_k)
        await asyncio.sleep(0.003)  # let the fabric settle: unloaded latency
    out: dict[str, Any] = {
        "names_per_sample": names_per_sample,
        "samples": done,
        "timeouts": timeouts,
        "from_kth": summary_ms(from_k),
        "from_last": summary_ms(from_last),
        "breakdown": {
            "what": "kth_publish_ack: the k-th agent's publish -> its JetStream ack; "
            "kth_to_verdict_on_bus: k-th publish -> the signed verdict reaches the server "
            "(coordinator fetch, verify, tally, sign, publish); verdict_on_bus_to_verified: "
            "-> JetStream delivery to the subscriber and its verification",
            "kth_publish_ack": summary_ms(kth_ack),
            "kth_to_verdict_on_bus": summary_ms(bus_from_k),
            "verdict_on_bus_to_verified": summary_ms(bus_to_verified),
        },
    }
    if names_per_sample > 1:
        out["sample_complete_from_kth"] = summary_ms(round_from_k)
    if pids is not None and done:
        # includes the (untimed) signing of the five ballots by the harness
        out["cpu_ms_per_sample"] = cpu_delta(cpu0, cpu_snapshot(pids), done, 1000.0)
    return out


async def throughput_run(
    agents: Agents,
    collector: Collector,
    *,
    names_per_ballot: int,
    window: int,
    warmup_s: float,
    duration_s: float,
    pids: Pids,
    progress: Progress,
    check: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Sustained load: batches of five ballots, ``window`` in flight; verdicts/s at the subscriber."""
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    inflight: list[Group] = []
    batch_latency: list[float] = []
    batch_first: list[float] = []
    batches = 0
    expired = 0
    cpu_before: dict[str, float | None] = {}
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
        reap(now)
        if len(inflight) >= window:
            check()
            collector.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.progress.wait(), min(0.1, t_end - now))
            continue
        batches += 1
        t_ms = now_ms()
        round_ = t_ms // ROUND_MS
        names = [f"t{batches}-{j}.{ORIGIN}" for j in range(names_per_ballot)]
        datas = [agents.sealed_ballot(r, round_, names, t_ms) for r in REGIONS]
        t0 = time.perf_counter()
        inflight.append(collector.expect(names, t0))
        await asyncio.gather(*(agents.publish(r, d) for r, d in zip(REGIONS, datas, strict=True)))
    cpu_after = cpu_snapshot(pids)
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
    cpu = cpu_delta(cpu_before, cpu_after, window_s)
    cpu_per_verdict = cpu_delta(cpu_before, cpu_after, count, 1000.0) if count else {}
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
    }


# ------------------------------------------------------------------------------------------------
# baseline: five DNS servers (child process) and a dnspython majority client


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


async def baseline(
    ports: Sequence[int],
    *,
    n_names: int,
    samples: int,
    duration_s: float,
    concurrency: int,
    progress: Progress,
) -> dict[str, Any]:
    names = [f"b{i}.{ORIGIN}" for i in range(n_names)]
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
        ok, _ = await majority(names[i % n_names], ports)
        lat.append(time.perf_counter() - t)
        failed += not ok
    progress(f"baseline latency: {len(lat)} decisions")
    # throughput: ``concurrency`` workers for ``duration_s``
    counter = {"ok": 0, "failed": 0}
    loaded: list[float] = []
    t_end = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < t_end:
            check_stop()
            t = time.perf_counter()
            ok, _ = await majority(names[i % n_names], ports)
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


# ------------------------------------------------------------------------------------------------
# orchestration


async def wait_for(
    pred: Callable[[], Any], timeout_s: float, what: str, check: Callable[[], None] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        check_stop()
        with contextlib.suppress(Exception):
            if await pred():
                return
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run(opts: Options, progress: Progress) -> dict[str, Any]:
    started = datetime.now(UTC)
    result: dict[str, Any] = {}

    progress("crypto micro-benchmark")
    crypto = bench_crypto(opts.crypto_iterations)
    progress(f"hybrid sign {crypto['hybrid_sign']:.0f} µs, verify {crypto['hybrid_verify']:.0f} µs")

    tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            cctf = await run_cctf(opts, tmp, stack, progress)
            # stop the fabric before the baseline so nothing of it competes for the CPU
            await stack.aclose()
            progress("fabric stopped; baseline")
            base = await run_baseline(opts, tmp, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lat = cctf["latency"]["from_kth"]
    tput = cctf["throughput"]["verdicts_per_s"]
    result.update(
        {
            "p50_ms": lat.get("p50_ms"),
            "p90_ms": lat.get("p90_ms"),
            "p99_ms": lat.get("p99_ms"),
            "max_ms": lat.get("max_ms"),
            "count": lat.get("count"),
            "verdicts_per_s": tput,
            "latency": cctf["latency"],
            "latency_10_names": cctf["latency_10_names"],
            "throughput": cctf["throughput"],
            "coordinator": cctf["coordinator"],
            "subscriber": cctf["subscriber"],
            "baseline": base,
            "crypto_us": crypto,
            "config": {
                "nodes": opts.nodes,
                "names_per_ballot": opts.names,
                "duration_s": opts.duration_s,
                "warmup_s": opts.warmup_s,
                "window": opts.window,
                "latency_samples": opts.latency_samples,
                "latency_names": opts.latency_names,
                "suite": SUITE.value,
                "quorum": f"{K}-of-{N}",
                "agents": N,
                "round_ms": ROUND_MS,
                "coordinator_process": "separate (python -m cctf coordinator run --config F)",
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "machine_cores": os.cpu_count(),
                "platform": platform.platform(),
                "quick": opts.quick,
                "started_utc": started.isoformat(timespec="seconds"),
            },
            "targets": {**TARGETS, "p99_goal_ms": GOAL_P99_MS},
        }
    )
    p99 = result["p99_ms"]
    result["meets_targets"] = {
        "p99_ms": p99 is not None and p99 <= TARGETS["p99_ms"],
        "p99_goal_ms": p99 is not None and p99 <= GOAL_P99_MS,
        "verdicts_per_s": tput >= TARGETS["verdicts_per_s"],
    }
    return result


async def run_cctf(
    opts: Options, tmp: Path, stack: contextlib.AsyncExitStack, progress: Progress
) -> dict[str, Any]:
    agent_keys = {r: SigningKey.generate(SUITE) for r in REGIONS}
    coord_key = SigningKey.generate(SUITE)
    trust = TrustConfig(
        [TrustEntry(Role.AGENT, agent_id(r), r, agent_keys[r].public) for r in REGIONS]
        + [TrustEntry(Role.COORDINATOR, COORDINATOR_ID, VERDICT_REGION, coord_key.public)]
    )
    save_signing_key(tmp / "coordinator.key.json", coord_key)
    trust.save(tmp / "trust.json")

    progress(f"starting JetStream ({opts.nodes} node{'s' if opts.nodes > 1 else ''})")
    fabric = await NatsFabric.astart(tmp / "nats", nodes=opts.nodes, regions=REGIONS)
    stack.push_async_callback(fabric.astop)
    creds = fabric.write_credentials(tmp / "credentials.json")
    admin = await fabric.connect("admin", name="bench-admin", for_tests=True)
    stack.push_async_callback(admin.close)
    await ensure_streams(admin.jetstream(), REGIONS, fabric.stream_replicas)
    js_admin = admin.jetstream()

    metrics_port = free_port()
    config = {
        "coordinator": COORDINATOR_ID,
        "region": VERDICT_REGION,
        "key_file": str(tmp / "coordinator.key.json"),
        "trust_file": str(tmp / "trust.json"),
        "nats": {"user": "coordinator", "credentials": str(creds)},
        "rule": {"k": K, "n": N},
        "electorate": [f"{agent_id(r)}/{resolver_id(r)}" for r in REGIONS],
        "round_ms": ROUND_MS,
        "round_grace_ms": ROUND_GRACE_MS,
        "max_round_lag": 2,
        "verdict_regions": [VERDICT_REGION],
        "names": [["*." + ORIGIN, "A"]],  # every benchmark name is unique, under ORIGIN
        "metrics": f"127.0.0.1:{metrics_port}",
    }
    (tmp / "coordinator.json").write_text(json.dumps(config, indent=2))
    log_path = tmp / "coordinator.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by the exit stack
    stack.callback(log_file.close)
    cmd = [sys.executable]
    if opts.profile_coordinator is not None:
        # cProfile runs a script: the ``cctf`` console script next to this interpreter
        cmd += ["-m", "cProfile", "-o", str(opts.profile_coordinator.resolve())]
        cmd += [str(Path(sys.executable).parent / "cctf")]
    else:
        cmd += ["-m", "cctf"]
    cmd += ["coordinator", "run", "--config", str(tmp / "coordinator.json")]
    cmd += ["--log-level", "warning"]
    proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, cwd=tmp)

    async def stop_coordinator() -> None:
        code = await stop_process(proc, timeout_s=15.0)
        if code not in (0, None, -signal.SIGTERM):
            progress(f"coordinator exited with {code}:\n{tail(log_path)}")

    stack.push_async_callback(stop_coordinator)

    def check_alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"coordinator exited with {proc.returncode}:\n{tail(log_path)}")

    async def consumer_ready() -> bool:
        for r in REGIONS:
            stream, _ = votes_stream_for(r)
            await js_admin.consumer_info(stream, f"{COORDINATOR_ID}-{r}")
        return True

    async def metrics_ready() -> bool:
        return await asyncio.to_thread(scrape, metrics_port) is not None

    progress("starting the coordinator process")
    await wait_for(consumer_ready, 60.0, "the coordinator's consumer", check_alive)
    await wait_for(metrics_ready, 10.0, "the coordinator's metrics endpoint", check_alive)

    agents = Agents(agent_keys)
    for r in REGIONS:
        nc = await fabric.connect(f"agent-{r}", name=agent_id(r), for_tests=True)
        stack.push_async_callback(nc.close)
        agents.js[r] = nc.jetstream()
    client_nc = await fabric.connect("client", name="bench-subscriber", for_tests=True)
    stack.push_async_callback(client_nc.close)
    client = TrustClient(client_nc, trust, VERDICT_REGION)
    stream = await client.stream(VERDICT_REGION, deliver="new")
    stack.push_async_callback(stream.aclose)
    collector = Collector()
    consumer = asyncio.create_task(collector.run(stream))

    async def stop_consumer() -> None:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consumer

    stack.push_async_callback(stop_consumer)

    # warm-up: first messages create consumers, caches, connections
    progress("warm-up")
    warm = await latency_series(
        agents,
        collector,
        label="w",
        samples=10,
        names_per_sample=3,
        time_limit_s=20.0,
        check=check_alive,
    )
    if warm["samples"] == 0:
        check_alive()
        raise RuntimeError(f"no verdict arrived during warm-up:\n{tail(log_path)}")

    pids: Pids = {
        "coordinator": [proc.pid],
        "nats_server": [s.pid for s in fabric.servers if s.pid is not None],
    }
    probe_sub = await admin.subscribe(f"cctf.v1.verdict.{VERDICT_REGION}.>", cb=collector.on_bus)
    m0 = scrape(metrics_port)
    progress(f"latency: {opts.latency_samples} samples of {opts.latency_names} name(s)")
    latency = await latency_series(
        agents,
        collector,
        label="l",
        samples=opts.latency_samples,
        names_per_sample=opts.latency_names,
        time_limit_s=10.0 if opts.quick else 30.0,
        pids=pids,
        check=check_alive,
    )
    m1 = scrape(metrics_port)
    progress(
        f"latency from k-th publish: p50 {latency['from_kth'].get('p50_ms')} ms, "
        f"p99 {latency['from_kth'].get('p99_ms')} ms"
    )
    latency10 = await latency_series(
        agents,
        collector,
        label="m",
        samples=opts.batch_samples,
        names_per_sample=opts.batch_names,
        time_limit_s=5.0 if opts.quick else 15.0,
        pids=pids,
        check=check_alive,
    )
    m2 = scrape(metrics_port)
    await probe_sub.unsubscribe()
    progress(
        f"throughput: {opts.names} names/ballot, {opts.window} batches in flight, "
        f"{opts.warmup_s:.1f} s warm-up + {opts.duration_s:.1f} s"
    )
    throughput = await throughput_run(
        agents,
        collector,
        names_per_ballot=opts.names,
        window=opts.window,
        warmup_s=opts.warmup_s,
        duration_s=opts.duration_s,
        pids=pids,
        progress=progress,
        check=check_alive,
    )
    m3 = scrape(metrics_port)
    check_alive()
    latency_coord = metrics_delta(m0, m1)
    throughput_coord = metrics_delta(m2, m3)
    return {
        "latency": {
            "what": "publish of the k-th (3rd) ballot -> verified verdict at the subscriber "
            "(from_last: from the 5th ballot's publish)",
            **latency,
            "coordinator": latency_coord,
        },
        "latency_10_names": {**latency10, "coordinator": metrics_delta(m1, m2)},
        "throughput": {**throughput, "coordinator": throughput_coord},
        "coordinator": {
            "process": "separate: python -m cctf coordinator run --config FILE",
            "decision_latency_unloaded": latency_coord.get("decision_latency"),
            "decision_latency_loaded": throughput_coord.get("decision_latency"),
            "cpu_s_total": cpu_seconds(proc.pid),
        },
        "subscriber": {
            "verified": client.accepted,
            "rejected": dict(client.rejected),
            "outcomes": dict(collector.outcomes),
        },
    }


async def run_baseline(opts: Options, tmp: Path, progress: Progress) -> dict[str, Any]:
    n_names = 1000
    proc = spawn(
        [sys.executable, str(Path(__file__).resolve()), "--serve-dns", str(n_names)],
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
        return await baseline(
            ports,
            n_names=n_names,
            samples=opts.baseline_samples,
            duration_s=opts.baseline_duration_s,
            concurrency=opts.baseline_concurrency,
            progress=progress,
        )
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        await stop_process(proc, timeout_s=5.0)


async def main_async(opts: Options) -> dict[str, Any]:
    progress = Progress()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal() -> None:
        _Stop.requested = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with asyncio.timeout(opts.budget_s):
            return await run(opts, progress)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _finite(obj: Any) -> Any:
    """JSON has no Infinity/NaN: those become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    opts, serve = parse_args(argv)
    if serve is not None:
        return asyncio.run(serve_dns(serve))
    assert opts is not None
    telemetry.configure_logging(json=True, level="warning", stream=sys.stderr)
    try:
        result = asyncio.run(main_async(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"benchmark exceeded its {opts.budget_s:.0f} s budget; stopped", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        _kill_children()
    print(json.dumps(_finite(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
