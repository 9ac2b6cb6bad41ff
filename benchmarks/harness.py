"""The shared harness of the CCTF benchmarks: statistics, process and CPU helpers, and the bench
fabric (the project's own pieces: ``NatsFabric``, ``ensure_streams``, real keys and trust, ballots
built by ``cctf.agents.ballot``, the real coordinator as ``python -m cctf coordinator run``, and a
verifying ``TrustClient``).

Every loop is bounded in count and time; everything started is stopped on exit, on error, on Ctrl-C
and on SIGTERM (children also die with the harness: ``PR_SET_PDEATHSIG``).

Clocks: a latency is always the difference of two readings of ONE clock. End-to-end figures use
``time.perf_counter`` in this process. The breakdown around the bus uses the JetStream *store*
timestamp of the verdict (the server's ``CLOCK_REALTIME``, from the delivery metadata), so the
harness readings it is compared with are ``time.time()`` (the same host clock): the store strictly
precedes any delivery, so neither segment can come out negative the way a probe timestamped when
its callback happened to run could.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import gc
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cctf import telemetry
from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus_schemas.subjects import verdict_subject
from cctf.coordinator.cli import GC_THRESHOLDS

REGIONS: tuple[str, ...] = DEFAULT_REGIONS
K = 3
N = len(REGIONS)
COORDINATOR_ID = "coord-1"
VERDICT_REGION = REGIONS[0]
ORIGIN = "bench.test."
ROUND_MS = 1_000
ROUND_GRACE_MS = 1_500
PUBLISH_TIMEOUT_S = 5.0
WAIT_VERDICT_S = (
    3.0  # a latency sample whose verdicts take longer: a timeout, its missing names 3 s
)


def agent_id(region: str) -> str:
    return f"agent-{region}"


def resolver_id(region: str) -> str:
    return f"dns-{region}"


# -------------------------------------------------------------------------------- stop and progress


class Stop:
    """Set by SIGINT/SIGTERM. Every loop checks it, because a bare ``task.cancel()`` can be
    swallowed by Python 3.11's ``asyncio.wait_for`` when its inner future completes at the same
    moment (and nats-py uses ``wait_for`` on every request)."""

    requested = False


def check_stop() -> None:
    if Stop.requested:
        raise asyncio.CancelledError("stop requested")


class Progress:
    """Progress lines on stderr (stdout holds only the JSON result)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


async def wait_until(
    pred: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    check: Callable[[], None] | None = None,
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


# -------------------------------------------------------------------------------------- statistics


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
    """p50/p90/p99/max/min/mean in ms of durations given in seconds."""
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


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, or None when either is missing or ``b`` is 0."""
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
Pids = dict[str, list[int]]


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


def kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=5)


atexit.register(kill_children)


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


# ------------------------------------------------------------------------------ verdict collector


@dataclass
class Group:
    """Verdicts awaited together (one latency sample or one throughput batch)."""

    names: frozenset[str]
    t0: float
    times: dict[str, float] = field(default_factory=dict)  # perf_counter at verification
    wall: dict[str, float] = field(default_factory=dict)  # time.time() at verification
    stored: dict[str, float] = field(default_factory=dict)  # JetStream store time (server clock)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def complete(self) -> bool:
        return self.done.is_set()


class Collector:
    """Consumes the verified verdict stream; timestamps each verdict on arrival. With
    :meth:`on_stored` as the callback of a second (ordered) consumer it also learns when each
    verdict was stored by JetStream."""

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

    async def on_stored(self, msg: Any) -> None:
        """A copy of a stored verdict from a second consumer (not verified: only its subject and
        delivery metadata are read)."""
        hit = self._probed.pop(msg.subject, None)
        if hit is not None:
            with contextlib.suppress(Exception):
                hit[0].stored[hit[1]] = msg.metadata.timestamp.timestamp()

    def on_verdict(self, verdict: Any) -> None:
        now = time.perf_counter()
        wall = time.time()
        self.arrivals.append(now)
        self.outcomes[verdict.outcome.value] += 1
        group = self._waiting.pop(verdict.qname, None)
        if group is not None:
            group.times[verdict.qname] = now
            group.wall[verdict.qname] = wall
            if len(group.times) == len(group.names):
                group.done.set()
                self.progress.set()

    async def run(self, stream: Any) -> None:
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


# ------------------------------------------------------------------------------------ entry point


def finite(obj: Any) -> Any:
    """JSON has no Infinity/NaN: those become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def run_main(work: Callable[[Progress], Awaitable[dict[str, Any]]], budget_s: float) -> int:
    """Run ``work`` under a time budget with SIGINT/SIGTERM stopping it; print its JSON result.
    Exit codes: 0 done, 1 failed or over budget, 130 interrupted."""
    telemetry.configure_logging(json=True, level="warning", stream=sys.stderr)
    # The harness process (simulated agents, collector, subscriber) collects garbage like a running
    # coordinator (cctf.coordinator.cli.GC_THRESHOLDS): its own bookkeeping (arrival times, answer
    # cache) would otherwise make every old-generation pass scan it. ``subscriber.measure``
    # measures the SDK with Python's default thresholds.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    async def main_async() -> dict[str, Any]:
        progress = Progress()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            Stop.requested = True
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            async with asyncio.timeout(budget_s):
                return await work(progress)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        result = asyncio.run(main_async())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"benchmark exceeded its {budget_s:.0f} s budget; stopped", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        kill_children()
    print(json.dumps(finite(result), indent=2))
    return 0
