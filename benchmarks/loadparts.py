"""Parts of ``benchmarks/load.py``: the DNS child process, the harness's view of the bus (ballot
parts and verified verdicts, timestamped) and the coordinator's counters over one phase."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

from harness import K, percentile

ORIGIN = "load.test."


def name(i: int) -> str:
    return f"n{i}.{ORIGIN}"


#: The DNS child: five FaultyDnsServers serving one signed zone of ``n<i>.load.test.`` names; prints
#: ``{"ports": [...], "anchor": "<DS line>"}`` and serves until its stdin closes.
DNS_CHILD = """
import asyncio, json, sys
import dns.zone
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.signing import sign

async def main(count, servers):
    origin = "load.test."
    lines = ["$TTL 300", "@ IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ IN NS ns1",
             "ns1 IN A 192.0.2.253"]
    lines += [f"n{i} IN A 10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(count)]
    zone = dns.zone.from_text("\\n".join(lines) + "\\n", origin=origin, relativize=False)
    signed = sign(zone)
    running = []
    for _ in range(servers):
        s = FaultyDnsServer(signed.zone, signed=signed, max_pending=65536)
        await s.start()
        running.append(s)
    print(json.dumps({"ports": [s.port for s in running], "anchor": signed.trust_anchor}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in running:
        await s.stop()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


#: The DNS child with nsd (``--dns nsd``): one nsd process serving the same signed zone; prints
#: ``{"ports": [port], "anchor": "<DS line>", "pids": [nsd and its children]}`` and serves until its
#: stdin closes. A port is tried again when nsd cannot bind it (free for UDP and TCP, then taken).
NSD_CHILD = """
import json, signal, socket, sys, tempfile
from pathlib import Path
import dns.zone
from cctf.chaos.signing import sign
from cctf.devfabric.nsd import NsdServer

def free_port():
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port

def on_term(signum, frame):
    raise SystemExit(0)  # SIGTERM (the harness stopping): nsd is stopped by the finally below

signal.signal(signal.SIGTERM, on_term)
count, binary = int(sys.argv[1]), sys.argv[2]
lines = ["$TTL 300", "@ IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ IN NS ns1",
         "ns1 IN A 192.0.2.253"]
lines += [f"n{i} IN A 10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(count)]
zone = dns.zone.from_text("\\n".join(lines) + "\\n", origin="load.test.", relativize=False)
signed = sign(zone)
text = signed.zone.to_text(relativize=False)
with tempfile.TemporaryDirectory(prefix="cctf-load-nsd-", ignore_cleanup_errors=True) as tmp:
    for attempt in range(5):
        server = NsdServer(Path(tmp) / str(attempt), {"load.test.": text}, binary=binary,
                           port=free_port())
        try:
            server.start("load.test.", timeout_s=60)
            break
        except RuntimeError:
            if attempt == 4:
                raise
    try:
        print(json.dumps({"ports": [server.port], "anchor": signed.trust_anchor,
                          "pids": server.pids()}), flush=True)
        sys.stdin.read()
    finally:
        server.stop()
"""


class Watch:
    """The harness's view: ballot parts seen on the bus and verified verdicts, timestamped."""

    def __init__(self) -> None:
        # (round, agent) -> perf_counter of the latest part seen; parts per (round, agent)
        self.part_seen: dict[tuple[int, str], float] = {}
        self.parts: dict[tuple[int, str], set[int]] = defaultdict(set)
        self.verdicts: dict[int, dict[str, float]] = defaultdict(dict)  # round -> qname -> t
        self.verdict_wall: dict[int, dict[str, float]] = defaultdict(dict)
        # round -> qname -> (the verdict's issued_ms: the coordinator's clock when it built it,
        # decided early (a quorum before the deadline), an LKG attestation)
        self.verdict_made: dict[int, dict[str, tuple[int, bool, bool]]] = defaultdict(dict)
        self.outcomes: dict[str, int] = defaultdict(int)
        self.last_verdict = time.perf_counter()
        self.last_in_round: dict[int, float] = {}  # round -> perf_counter of its latest verdict
        self.total = 0

    async def on_ballot(self, msg: Any) -> None:
        now = time.perf_counter()
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        parts = msg_id.split(".")  # cctf-ballot.<agent>.<round>.<part>.<tag>
        if len(parts) != 5 or parts[0] != "cctf-ballot":
            return
        with contextlib.suppress(ValueError):
            key = (int(parts[2]), parts[1])
            self.part_seen[key] = now
            self.parts[key].add(int(parts[3]))

    def on_verdict(self, verdict: Any) -> None:
        now = time.perf_counter()
        self.last_verdict = now
        self.last_in_round[verdict.round] = now
        self.total += 1
        if verdict.qname.endswith("." + ORIGIN):
            self.verdicts[verdict.round].setdefault(verdict.qname, now)
            self.verdict_wall[verdict.round].setdefault(verdict.qname, time.time())
            self.verdict_made[verdict.round].setdefault(
                verdict.qname, (verdict.issued_ms, verdict.decided_early, verdict.is_lkg)
            )
            self.outcomes[verdict.outcome.value] += 1

    def last_verdict_of(self, rounds: range) -> float:
        """When the latest verdict of one of ``rounds`` arrived (``-inf``: none yet)."""
        return max(
            (self.last_in_round.get(r, float("-inf")) for r in rounds), default=float("-inf")
        )

    def ballots_at(self, round_: int) -> float | None:
        """When the k-th agent's last part of ``round_`` was seen (None: fewer than k agents)."""
        times = sorted(t for (r, _a), t in self.part_seen.items() if r == round_)
        return times[K - 1] if len(times) >= K else None


def stages(
    watch: Watch, rounds: range, names: set[str], offset_s: float, round_ms: int
) -> dict[str, Any]:
    """Where a measured round's lag accrues (wall clock of this host, ms; p50 / p99):

    * ``ballots_after_round_start``: per round, the k-th agent's last part on the bus (the agents:
      queries, ballots, publish);
    * ``ballots_to_issued``: per verdict, from then to its ``issued_ms`` (the coordinator: ingest,
      tally, decision, policy; the deadline for keys without an early quorum);
    * ``issued_to_verified``: from ``issued_ms`` to its verification here (signing the batch, the
      bus, the subscriber's queue and its verification);

    and the share of verdicts decided early and of LKG attestations. ``offset_s``: ``time.time()
    - time.perf_counter()`` (the ballots are timestamped with the latter)."""
    start: list[float] = []
    to_issued: list[float] = []
    to_verified: list[float] = []
    early = lkg = total = 0
    for r in rounds:
        at = watch.ballots_at(r)
        at_ms = None if at is None else (at + offset_s) * 1000
        if at_ms is not None:
            start.append(at_ms - r * round_ms)
        walls = watch.verdict_wall.get(r, {})
        for q, (issued, is_early, is_lkg) in watch.verdict_made.get(r, {}).items():
            if q not in names or q not in walls:
                continue
            total += 1
            early += is_early
            lkg += is_lkg
            if at_ms is not None:
                to_issued.append(issued - at_ms)
            to_verified.append(walls[q] * 1000 - issued)

    def pct(xs: list[float]) -> list[float] | None:
        if not xs:
            return None
        xs.sort()
        return [round(percentile(xs, 50), 1), round(percentile(xs, 99), 1)]

    return {
        "ballots_after_round_start": pct(start),
        "ballots_to_issued": pct(to_issued),
        "issued_to_verified": pct(to_verified),
        "decided_early_pct": round(100.0 * early / total, 1) if total else None,
        "lkg_pct": round(100.0 * lkg / total, 1) if total else None,
    }


#: The queues of ``cctf_coordinator_queue_depth``.
QUEUES = ("live", "durable", "held_ballots", "pending_verdicts", "scheduled", "storing_verdicts")


def queue_depths(scraped: dict[str, float] | None) -> dict[str, int]:
    """The coordinator's queue depths in one scrape (``{}`` when the endpoint was down)."""
    if scraped is None:
        return {}
    out: dict[str, int] = {}
    for q in QUEUES:
        v = scraped.get(f'cctf_coordinator_queue_depth{{queue="{q}"}}')
        if v is not None:
            out[q] = int(v)
    return out


def metrics_delta(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, Any]:
    if before is None or after is None:
        return {"error": "coordinator metrics endpoint not reachable"}
    d = {k: v - before.get(k, 0.0) for k, v in after.items()}

    def by(metric: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for k, v in d.items():
            if k.startswith(metric + "{") and v and f'{label}="' in k:
                out[k.split(f'{label}="')[1].split('"')[0]] = int(v)
        return out

    return {
        "shed_rounds": int(d.get("cctf_rounds_shed_total", 0)),
        "verdicts_dropped": by("cctf_verdicts_dropped_total", "reason"),
        "ballots_expired": by("cctf_ballots_expired_total", "reason"),
        "verdicts_published": by("cctf_verdicts_total", "outcome"),
        "ballots_accepted": int(d.get("cctf_ballots_accepted_total", 0)),
        "votes_accepted": int(d.get("cctf_votes_accepted_total", 0)),
        "votes_ignored": by("cctf_votes_ignored_total", "result"),
        "rejected": by("cctf_messages_rejected_total", "reason"),
        "terminated": by("cctf_messages_terminated_total", "reason"),
        "batches": int(d.get("cctf_batches_total", 0)),
        # verdicts released after log_wait_ms without their batch's log append acked
        "published_before_logged": int(d.get("cctf_log_published_before_logged_total", 0)),
        # batch closes that waited for the log (group commit, batcher.APPENDS_AHEAD)
        "batches_held_for_log": int(d.get("cctf_log_batches_held_total", 0)),
    }
