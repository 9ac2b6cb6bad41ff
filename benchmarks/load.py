"""Load: the whole local fabric at N names per 1 s round (issue #9, "Graceful overload", D6).

    .venv/bin/python benchmarks/load.py [--names 100,300,1000,3000] [--rounds 20] [--warmup 3]
                                        [--nodes 3] [--transport tcp|udp] [--dns nsd|python]
                                        [--set KEY=JSON ...] [--quick]
    make bench-load ARGS="--rounds 30"

What runs, all on 127.0.0.1, each part in its own process (so the two cores are shared the way a
real deployment's machines would not be, but no part is charged another's CPU):

* a NATS JetStream cluster (``NatsFabric``, 3 nodes by default, R3 streams);
* five authoritative DNS servers, one child process each, each serving a DNSSEC-signed zone of
  ``n<i>.load.test.`` A records (as many as the largest N; each signs with its own keys, so each
  agent gets its server's DS as trust anchor): Debian's nsd (``--dns nsd``, the default: a C server,
  so the servers the agents ask take next to none of the two cores; its processes' CPU is counted
  under ``dns``) or ``FaultyDnsServer`` (``--dns python``, no faults; also when nsd is missing);
* five real agents, ``cctf agent run`` processes (one per region, one resolver each, validating
  DNSSEC up to the zone's DS), asking the first N names every round over ``--transport`` (``tcp``,
  the default: one pipelined connection per round, :mod:`cctf.agents.tcppipe`; or ``udp``); a round's
  votes are split over several ballots when they exceed the agents' ballot bounds;
* one real coordinator, ``cctf coordinator run`` (3-of-5, 1 s rounds, names ``*.load.test.``,
  batch signing, Prometheus endpoint), with ``--set`` overrides of its config;
* the harness: a verifying ``TrustClient`` verdict stream (the subscriber) and a core subscription
  on the vote subjects that timestamps every ballot part (its ``Nats-Msg-Id`` names agent, round,
  part).

Per N the agents are (re)started with N names, run ``--warmup`` rounds (more, up to ``--max-warmup``,
until a round had every agent's ballot parts on the bus within 1.2 s of its start: cold agents
validate every answer), then ``--rounds`` measured
rounds; the harness waits until the shed horizon of the last measured round has passed, stops the
agents and lets the coordinator go idle before the next N. Per N it reports, under
``names_per_round.<N>``:

* ``complete_rounds_pct``: measured rounds for which every one of the N names has a verified verdict;
* ``lag_p50_ms`` / ``lag_p99_ms`` / ``lag_max_ms``: per verified verdict of a measured round, from
  its round's ballots (the moment the k-th agent's last ballot part of that round was seen on the
  bus: from then on every name has a quorum of ballots) to its verification at the subscriber;
* ``lag_from_round_start_p99_ms``: the same from the round's start (``round * 1000`` ms, wall clock);
* ``stages_p50_p99_ms``: where that lag accrues (:func:`loadparts.stages`): the ballots after the
  round's start (agents), ballots to the verdict's ``issued_ms`` (coordinator: ingest, decision),
  ``issued_ms`` to verification (signing, bus, the subscriber's queue), and the shares of verdicts
  decided early and of LKG attestations;
* ``coordinator_queues``: the coordinator's ``cctf_coordinator_queue_depth`` by queue (live and
  durable copies waiting, held ballots, verdicts pending, scheduled, storing), sampled once per
  second of the measured rounds, and each queue's maximum;
* ``stream_leaders``: the node leading each stream (``?`` on one node): spread over the nodes by
  ``cctf.bus.leaders`` (``--leaders spread``, the default, as ``cctf nats up`` and the demo do) or
  where JetStream placed them at random (``--leaders random``);
* ``shed_rounds`` (coordinator ``cctf_rounds_shed_total``), ``verdicts_shed``, ``ballots_expired``,
  verdicts expected / verified, ballot parts per agent per round, agents' rounds seen, and the CPU
  seconds per round of each process group (``cpu_s_per_round``: harness, coordinator, nats_server,
  agents, dns): where the time goes.

One JSON object on stdout (progress on stderr). ``--quick``: N = 30, 3 measured rounds, one node (the smoke test ``tests/integration/test_bench_load_smoke.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_fabric import SUITE, scrape
from harness import (
    COORDINATOR_ID,
    REGIONS,
    VERDICT_REGION,
    K,
    N,
    Pids,
    Progress,
    agent_id,
    check_stop,
    cpu_snapshot,
    free_port,
    percentile,
    resolver_id,
    run_main,
    spawn,
    stop_process,
    tail,
    wait_until,
)
from loadparts import (
    DNS_CHILD,
    NSD_CHILD,
    ORIGIN,
    QUEUES,
    Watch,
    metrics_delta,
    name,
    queue_depths,
    stages,
)

from cctf.bus.leaders import balance_leaders
from cctf.bus.streams import ensure_streams
from cctf.client.sdk import FetchError, TrustClient
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric
from cctf.devfabric.nsd import nsd_binary

ROUND_MS = 1_000
ROUND_GRACE_MS = 1_500
SHED_AFTER_ROUNDS = 2
#: A warm-up round counts as warm when every agent's last ballot part of it was on the bus this long
#: after its start (within the round and 200 ms: the coordinators' grace is 1.5 s).
WARM_BY_MS = 1_200
DEFAULT_NAMES = (100, 300, 1000, 3000)
LOG_LEVEL = os.environ.get("CCTF_LOAD_AGENT_LOG", "warning")
COORD_LOG_LEVEL = os.environ.get("CCTF_LOAD_COORDINATOR_LOG", "warning")
_AGENT_CMD = (sys.executable, "-m", "cctf", "agent", "run")


async def _stop_dns(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(Exception):
        assert proc.stdin is not None
        proc.stdin.close()
    await stop_process(proc, timeout_s=5.0)


class LoadFabric:
    def __init__(self, tmp: Path, stack: contextlib.AsyncExitStack, progress: Progress) -> None:
        self.tmp = tmp
        self.stack = stack
        self.progress = progress
        self.watch = Watch()
        self.pids: Pids = {}
        self.agent_procs: list[subprocess.Popen[bytes]] = []
        self.transport = "tcp"
        self.dns = "nsd"
        self.leaders = "spread"

    async def start(
        self,
        *,
        nodes: int,
        max_names: int,
        overrides: dict[str, Any],
        profile: Path | None = None,
    ) -> None:
        tmp, stack, progress = self.tmp, self.stack, self.progress
        keys = {r: SigningKey.generate(SUITE) for r in REGIONS}
        coord_key = SigningKey.generate(SUITE)
        trust = TrustConfig(
            [TrustEntry(Role.AGENT, agent_id(r), r, keys[r].public) for r in REGIONS]
            + [TrustEntry(Role.COORDINATOR, COORDINATOR_ID, VERDICT_REGION, coord_key.public)]
        )
        for r in REGIONS:
            save_signing_key(tmp / f"{agent_id(r)}.key.json", keys[r])
        save_signing_key(tmp / "coordinator.key.json", coord_key)
        trust.save(tmp / "trust.json")

        binary = nsd_binary() if self.dns == "nsd" else None
        if self.dns == "nsd" and binary is None:
            progress("nsd is not installed (apt-get install nsd): the Python DNS servers instead")
            self.dns = "python"
        kind = f"nsd ({binary})" if binary else "FaultyDnsServer"
        progress(f"DNS: five {kind} servers, each signing a {max_names}-name zone")
        procs = []
        for _ in REGIONS:  # one process per resolver (five machines in a deployment)
            child = (
                [NSD_CHILD, str(max_names), binary] if binary else [DNS_CHILD, str(max_names), "1"]
            )
            proc = spawn(
                [sys.executable, "-c", *child],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            stack.push_async_callback(_stop_dns, proc)
            procs.append(proc)
        self.dns_ports: list[int] = []
        self.anchors: list[str] = []  # each server signs with its own keys: one anchor each
        dns_pids: list[int] = []  # nsd's processes (grandchildren: their CPU is counted too)
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 180)
            info = json.loads(line)
            self.dns_ports += info["ports"]
            self.anchors.append(info["anchor"])
            dns_pids += info.get("pids", [])
        self.pids["dns"] = [p.pid for p in procs] + dns_pids

        progress(f"starting JetStream ({nodes} node{'s' if nodes > 1 else ''})")
        nats = await NatsFabric.astart(tmp / "nats", nodes=nodes, regions=REGIONS)
        stack.push_async_callback(nats.astop)
        self.creds = nats.write_credentials(tmp / "credentials.json")
        admin = await nats.connect("admin", name="load-admin", for_tests=True)
        stack.push_async_callback(admin.close)
        self.admin = admin
        await ensure_streams(admin.jetstream(), REGIONS, nats.stream_replicas)
        if nats.stream_replicas > 1 and self.leaders == "spread":
            spread = await balance_leaders(admin)
            progress(f"stream leaders spread over the nodes ({len(spread.done)} moved)")
        self.pids["nats_server"] = [s.pid for s in nats.servers if s.pid is not None]
        await admin.subscribe("cctf.v1.vote.>", cb=self.watch.on_ballot)

        self.metrics_port = free_port()
        config = {
            "coordinator": COORDINATOR_ID,
            "region": VERDICT_REGION,
            "key_file": str(tmp / "coordinator.key.json"),
            "trust_file": str(tmp / "trust.json"),
            "nats": {"user": "coordinator", "credentials": str(self.creds)},
            "rule": {"k": K, "n": N},
            "electorate": [f"{agent_id(r)}/{resolver_id(r)}" for r in REGIONS],
            "round_ms": ROUND_MS,
            "round_grace_ms": ROUND_GRACE_MS,
            "verdict_regions": [VERDICT_REGION],
            "names": [["*." + ORIGIN, "A"]],
            "metrics": f"127.0.0.1:{self.metrics_port}",
            "signing": "batch",  # the deployment's intended mode (D2); --set signing='"per_verdict"'
            **overrides,
        }
        self.shed_after = int(config.get("shed_after_rounds", SHED_AFTER_ROUNDS))
        config_path = tmp / "coordinator.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.coord_log = tmp / "coordinator.log"
        log_file = open(self.coord_log, "wb")  # noqa: SIM115 - closed by the exit stack
        stack.callback(log_file.close)
        progress("starting the coordinator process")
        cmd = [sys.executable, "-m", "cctf"]
        if profile is not None:  # cProfile runs a script: the console script next to python
            cmd = [sys.executable, "-m", "cProfile", "-o", str(profile.resolve())]
            cmd += [str(Path(sys.executable).parent / "cctf")]
        cmd += ["coordinator", "run", "--config", str(config_path)]
        coord = spawn(
            [*cmd, "--log-level", COORD_LOG_LEVEL],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=tmp,
        )
        self.coord = coord
        stack.push_async_callback(lambda: stop_process(coord, timeout_s=15.0))
        self.pids["coordinator"] = [coord.pid]
        port = self.metrics_port

        async def metrics_ready() -> bool:
            return await asyncio.to_thread(scrape, port) is not None

        await wait_until(metrics_ready, 60.0, "the coordinator's metrics endpoint", self.check)

        client_nc = await nats.connect("client", name="load-subscriber", for_tests=True)
        stack.push_async_callback(client_nc.close)
        client = TrustClient(client_nc, trust, VERDICT_REGION, round_ms=ROUND_MS)
        deadline = time.monotonic() + 60
        while True:
            check_stop()
            try:
                stream = await client.stream(VERDICT_REGION, deliver="new")
                break
            except FetchError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        stack.push_async_callback(stream.aclose)

        async def consume() -> None:
            async for verdict in stream:
                self.watch.on_verdict(verdict)

        task = asyncio.create_task(consume())

        async def stop_consume() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

        stack.push_async_callback(stop_consume)
        self.stack.push_async_callback(self.stop_agents)

    async def stream_leaders(self) -> dict[str, str]:
        """Which node leads each stream (JetStream places them at random: context for a run)."""
        out: dict[str, str] = {}
        with contextlib.suppress(Exception):
            js = self.admin.jetstream()
            for info in await js.streams_info():
                leader = info.cluster.leader if info.cluster is not None else None
                out[info.config.name or "?"] = leader or "?"
        return out

    def check(self) -> None:
        if self.coord.poll() is not None:
            raise RuntimeError(
                f"coordinator exited with {self.coord.returncode}:\n{tail(self.coord_log)}"
            )

    def scrape(self) -> dict[str, float] | None:
        return scrape(self.metrics_port)

    def start_agents(self, names: int) -> None:
        self.agent_procs = []
        self.pids["agents"] = []
        for region, port, anchor in zip(REGIONS, self.dns_ports, self.anchors, strict=True):
            config = {
                "agent": agent_id(region),
                "region": region,
                "key_file": f"{agent_id(region)}.key.json",
                "trust": "trust.json",
                "nats": {"user": f"agent-{region}", "credentials": str(self.creds)},
                "resolvers": [
                    {
                        "id": resolver_id(region),
                        "address": "127.0.0.1",
                        "port": port,
                        "transport": self.transport,
                    }
                ],
                "names": [[name(i), "A"] for i in range(names)],
                "round_ms": ROUND_MS,
                "dnssec": {"trust_anchors": [anchor]},
            }
            path = self.tmp / f"{agent_id(region)}.json"
            path.write_text(json.dumps(config))
            log = open(self.tmp / f"{agent_id(region)}.{names}.log", "wb")  # noqa: SIM115
            self.stack.callback(log.close)
            proc = spawn(
                [*_AGENT_CMD, "--config", str(path), "--log-level", LOG_LEVEL],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.tmp,
            )
            self.agent_procs.append(proc)
            self.pids["agents"].append(proc.pid)

    async def stop_agents(self) -> None:
        await asyncio.gather(*(stop_process(p, timeout_s=10.0) for p in self.agent_procs))
        self.agent_procs = []


async def measure_n(
    fab: LoadFabric, n: int, rounds: int, warmup: int, max_warmup: int
) -> dict[str, Any]:
    progress = fab.progress
    watch = fab.watch

    def current() -> int:
        return time.time_ns() // 1_000_000 // ROUND_MS

    # agents start at the next boundary once up (importing and connecting takes seconds on a
    # loaded machine): the warm-up rounds count from the first round all five published
    started = current()
    fab.start_agents(n)
    deadline = time.monotonic() + 90
    while len({a for (r, a) in watch.part_seen if r > started}) < N:
        check_stop()
        fab.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"N={n}: not every agent published within 90 s")
        await asyncio.sleep(0.1)
    # at least `warmup` rounds, then more (at most `max_warmup` in all) until a round had every
    # agent's ballot parts on the bus within WARM_BY_MS of its start: a cold agent validates every
    # answer (~0.45 s CPU per 1,000 names) and on a loaded machine needs more rounds to fill its
    # memo; the steady state is what is measured, the warm-up rounds used are reported
    offset = time.time() - time.perf_counter()

    def warm(r: int) -> bool:
        seen = [t for (rr, _a), t in watch.part_seen.items() if rr == r]
        return len(seen) == N and (max(seen) + offset) * 1000 <= r * ROUND_MS + WARM_BY_MS

    up = current()
    while current() <= up + warmup or (
        not warm(current() - 2) and current() <= up + max(warmup, max_warmup)
    ):
        check_stop()
        fab.check()
        await asyncio.sleep(0.1)
    warmup_used = current() - up - 1
    first = current()
    last = first + rounds - 1
    progress(
        f"N={n}: agents up, {warmup_used} warm-up rounds (warm: {warm(current() - 2)}); "
        f"measuring rounds {first}..{last} ({rounds} rounds)"
    )

    while current() < first:
        check_stop()
        fab.check()
        await asyncio.sleep(0.1)
    before_m = await asyncio.to_thread(fab.scrape)
    before_cpu = cpu_snapshot(fab.pids)
    depths: list[dict[str, int]] = []  # the coordinator's queues, once per second
    sampled = time.monotonic()
    while current() <= last:
        check_stop()
        fab.check()
        await asyncio.sleep(0.1)
        if time.monotonic() - sampled >= 1.0:
            sampled = time.monotonic()
            depths.append(queue_depths(await asyncio.to_thread(fab.scrape)))
    after_cpu = cpu_snapshot(fab.pids)
    # wait until the last measured round is past its shed horizon (+ a tick), then stop the agents
    horizon_ms = (last + 1 + fab.shed_after) * ROUND_MS + ROUND_GRACE_MS + 500
    while time.time_ns() // 1_000_000 < horizon_ms:
        check_stop()
        await asyncio.sleep(0.1)
    await fab.stop_agents()
    # drain: until no verdict of a measured round for 2 s (bounded; verdicts of later rounds do not
    # count: with the agents stopped every later round is silent and attested from LKG, so "no
    # verdict at all" never came at 3,000 names and the drain always waited out its bound)
    deadline = time.monotonic() + 30
    measured = range(first, last + 1)
    while (
        time.perf_counter() - watch.last_verdict_of(measured) < 2.0 and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.2)
    after_m = await asyncio.to_thread(fab.scrape)

    lags: list[float] = []
    lags_start: list[float] = []
    complete = 0
    verified = 0
    per_round: list[dict[str, Any]] = []
    expected_names = {name(i) for i in range(n)}
    for r in range(first, last + 1):
        got = {q: t for q, t in watch.verdicts.get(r, {}).items() if q in expected_names}
        verified += len(got)
        if len(got) == n:
            complete += 1
        t_ballots = watch.ballots_at(r)
        if t_ballots is not None:
            lags += [(t - t_ballots) * 1000 for t in got.values()]
        walls = watch.verdict_wall.get(r, {})
        lags_start += [(w * 1000 - r * ROUND_MS) for q, w in walls.items() if q in expected_names]
        per_round.append({"round": r, "verdicts": len(got)})
    lags.sort()
    lags_start.sort()
    parts = [len(p) for (r, _a), p in watch.parts.items() if first <= r <= last]
    agents_seen = [
        sum(1 for (rr, _a) in watch.part_seen if rr == r) for r in range(first, last + 1)
    ]
    cpu = {
        role: round(((after_cpu.get(role) or 0.0) - (b or 0.0)) / rounds, 3)
        for role, b in before_cpu.items()
        if b is not None and after_cpu.get(role) is not None
    }
    out: dict[str, Any] = {
        "complete_rounds_pct": round(100.0 * complete / rounds, 2),
        "lag_p50_ms": round(percentile(lags, 50), 1) if lags else None,
        "lag_p99_ms": round(percentile(lags, 99), 1) if lags else None,
        "lag_max_ms": round(lags[-1], 1) if lags else None,
        "lag_from_round_start_p99_ms": round(percentile(lags_start, 99), 1) if lags_start else None,
        "rounds": rounds,
        "warmup_rounds": warmup_used,
        "complete_rounds": complete,
        "verdicts_expected": n * rounds,
        "verdicts_verified": verified,
        "ballot_parts_per_agent_round": max(parts) if parts else 0,
        "agents_per_round_min": min(agents_seen) if agents_seen else 0,
        "cpu_s_per_round": cpu,
        "stages_p50_p99_ms": stages(
            watch, range(first, last + 1), expected_names, offset, ROUND_MS
        ),
        "coordinator": metrics_delta(before_m, after_m),
        "coordinator_queues": {
            "what": "cctf_coordinator_queue_depth sampled once per second of the measured rounds",
            "max": {q: max(d.get(q, 0) for d in depths) for q in QUEUES} if depths else {},
            "per_second": depths,
        },
        "verdicts_per_round": [p["verdicts"] for p in per_round],
    }
    out["stream_leaders"] = await fab.stream_leaders()
    out["shed_rounds"] = out["coordinator"].get("shed_rounds")
    out["machine_load_avg_1m"] = round(os.getloadavg()[0], 2)  # the machine is shared: context
    progress(
        f"N={n}: {out['complete_rounds_pct']} % complete, lag p99 {out['lag_p99_ms']} ms, "
        f"shed {out['shed_rounds']}, cpu/round {cpu}"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", default=",".join(map(str, DEFAULT_NAMES)))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="warm-up rounds, at least")
    parser.add_argument(
        "--max-warmup",
        type=int,
        default=20,
        help="warm-up rounds at most: more than --warmup while some agent's parts came late",
    )
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=3)
    parser.add_argument(
        "--transport",
        choices=("tcp", "udp"),
        default="tcp",
        help="the agents' resolver transport (tcp: one pipelined connection per round)",
    )
    parser.add_argument(
        "--dns",
        choices=("nsd", "python"),
        default="nsd",
        help="the five DNS servers: Debian's nsd (falls back to python when missing) or "
        "cctf.chaos.dnsserver.FaultyDnsServer",
    )
    parser.add_argument(
        "--leaders",
        choices=("spread", "random"),
        default="spread",
        help="stream leaders: spread over the nodes (cctf.bus.leaders, as `cctf nats up` and the "
        "demo do) or where JetStream placed them (at random)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the logs and configs")
    parser.add_argument(
        "--profile-coordinator", type=Path, metavar="FILE", help="cProfile stats of the coordinator"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="coordinator config override, e.g. --set signing='\"per_verdict\"'",
    )
    args = parser.parse_args()
    if args.quick:
        args.names, args.rounds, args.warmup, args.nodes = "30", 3, 1, 1
        args.max_warmup = 1
    sizes = [int(x) for x in args.names.split(",") if x]
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)

    async def work(progress: Progress) -> dict[str, Any]:
        tmp = Path(tempfile.mkdtemp(prefix="cctf-load-"))
        try:
            async with contextlib.AsyncExitStack() as stack:
                fab = LoadFabric(tmp, stack, progress)
                fab.transport = args.transport
                fab.dns = args.dns
                fab.leaders = args.leaders
                await fab.start(
                    nodes=args.nodes,
                    max_names=max(sizes),
                    overrides=overrides,
                    profile=args.profile_coordinator,
                )
                results: dict[str, Any] = {}
                for n in sizes:
                    results[str(n)] = await measure_n(
                        fab, n, args.rounds, args.warmup, args.max_warmup
                    )
                return {
                    "names_per_round": results,
                    "config": {
                        "nodes": args.nodes,
                        "rounds": args.rounds,
                        "warmup": args.warmup,
                        "max_warmup": args.max_warmup,
                        "round_ms": ROUND_MS,
                        "quorum": f"{K}-of-{N}",
                        "agents": N,
                        "resolvers_per_agent": 1,
                        "transport": args.transport,
                        "dns_servers": fab.dns,
                        "stream_leaders": args.leaders,
                        "dnssec": "validated by each agent up to the zone's DS",
                        "coordinator_overrides": overrides,
                        "python": sys.version.split()[0],
                    },
                }
        finally:
            if args.keep_workdir:
                progress(f"workdir kept: {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)

    budget = 120 + len(sizes) * (args.rounds + max(args.warmup, args.max_warmup) + 20) * 1.5
    return run_main(work, budget_s=budget)


if __name__ == "__main__":
    sys.exit(main())
