"""The bench fabric: JetStream (``NatsFabric`` + ``ensure_streams``), real hybrid keys and trust, ONE
real coordinator in its own process (``python -m cctf coordinator run --config F``, so the harness's
CPU is not charged to it), five simulated agents (one NATS connection each, as their region's user)
whose ballots are built by the agents' own ``cctf.agents.ballot.build_ballot`` and sealed by
``cctf.bus_schemas.envelope.seal``, and a ``TrustClient`` stream that verifies every verdict.

No DNS here: every agent reports the same honest answer, so every verdict is TRUSTED and decided
early at the k-th vote. Every ``(name, round)`` is unique (names carry a per-run sequence number), so
every tally is fresh; ballots carry the current round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from harness import (
    COORDINATOR_ID,
    ORIGIN,
    PUBLISH_TIMEOUT_S,
    REGIONS,
    ROUND_GRACE_MS,
    ROUND_MS,
    VERDICT_REGION,
    Collector,
    K,
    N,
    Pids,
    Progress,
    agent_id,
    check_stop,
    free_port,
    resolver_id,
    run_main,
    spawn,
    stop_process,
    tail,
    wait_until,
)

from cctf.agents.ballot import build_ballot
from cctf.agents.canonical import Observation
from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams, verdict_subjects, votes_stream_name
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import Ballot, MessageType, Transport, VoteStatus, encode
from cctf.bus_schemas.subjects import vote_subject
from cctf.client.sdk import FetchError, TrustClient
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric

SUITE = SuiteId.HYBRID
BALLOT_LIFETIME_MS = 30_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ----------------------------------------------------------------------------------------- agents


class Agents:
    """Five agents with real keys; ballots from the agents' own builder, sealed, published with a
    unique ``Nats-Msg-Id`` each (a real agent sends one ballot per round; the bench sends many)."""

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self.keys = keys
        self.js: dict[str, Any] = {}
        self.subjects = {r: vote_subject(r, agent_id(r)) for r in REGIONS}
        self._seq = 0
        self._answers: dict[str, tuple[str, ...]] = {}
        #: Harness CPU spent building and sealing ballots (the simulated agents' share of it).
        self.build_cpu_s = 0.0
        self._template: tuple[tuple[int, tuple[str, ...], int], Ballot] | None = None

    def _answer(self, qname: str, index: int) -> tuple[str, ...]:
        ans = self._answers.get(qname)
        if ans is None:
            ans = self._answers[qname] = (f"{qname} A 192.0.2.{index % 250 + 1}",)
            if len(self._answers) > 50_000:
                self._answers.clear()
        return ans

    def sealed_ballot(self, region: str, round_: int, names: Sequence[str], t_ms: int) -> bytes:
        t_cpu = time.process_time()
        try:
            return self._sealed_ballot(region, round_, names, t_ms)
        finally:
            self.build_cpu_s += time.process_time() - t_cpu

    def _sealed_ballot(self, region: str, round_: int, names: Sequence[str], t_ms: int) -> bytes:
        ballot = self.ballot(region, round_, names, t_ms)
        return seal(
            self.keys[region],
            self.subjects[region],
            MessageType.BALLOT,
            encode(ballot),
            now_ms=t_ms,
            lifetime_ms=BALLOT_LIFETIME_MS,
        )

    def ballot(self, region: str, round_: int, names: Sequence[str], t_ms: int) -> Ballot:
        """The ballot ``build_ballot`` makes for ``region``. The agents' builder runs once per
        (round, names, time): the other regions' ballots are its votes with their own agent,
        region and resolver (the same ballot ``build_ballot`` makes for them:
        ``tests/unit/test_bench_ballots.py``), so the simulated agents cost the harness a fifth of
        what five builds would (it was as much CPU per verdict as the verifying subscriber)."""
        key = (round_, tuple(names), t_ms)
        if self._template is None or self._template[0] != key:
            self._template = (key, self.built_ballot(REGIONS[0], round_, names, t_ms))
        template = self._template[1]
        if region == template.region:
            return template
        agent, rid = agent_id(region), resolver_id(region)
        votes = [
            msgspec.structs.replace(v, agent=agent, region=region, resolver_id=rid)
            for v in template.votes
        ]
        return msgspec.structs.replace(template, agent=agent, region=region, votes=votes)

    def built_ballot(self, region: str, round_: int, names: Sequence[str], t_ms: int) -> Ballot:
        """``cctf.agents.ballot.build_ballot`` for ``region``'s agent."""
        rid = resolver_id(region)
        observed = [
            (
                qname,
                "A",
                Observation(
                    resolver_id=rid,
                    transport=Transport.UDP,
                    status=VoteStatus.ANSWER,
                    rcode=0,
                    answer=self._answer(qname, i),
                    ttl=300,
                    ad=False,
                    ede=(),
                    latency_ms=0.0,
                    detail="",
                ),
            )
            for i, qname in enumerate(names)
        ]
        return build_ballot(agent_id(region), region, round_, observed, t_ms)

    async def publish(self, region: str, data: bytes) -> None:
        self._seq += 1
        await self.js[region].publish(
            self.subjects[region],
            data,
            timeout=PUBLISH_TIMEOUT_S,
            stream=votes_stream_name(region),
            headers={MSG_ID: f"bench.{agent_id(region)}.{self._seq}"},
        )


# -------------------------------------------------------------------------- coordinator metrics

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


def _by_label(d: dict[str, float], metric: str, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in d.items():
        if k.startswith(metric + "{") and v and f'{label}="' in k:
            out[k.split(f'{label}="')[1].split('"')[0]] = int(v)
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
    out["verdicts_published"] = _by_label(d, "cctf_verdicts_total", "outcome")
    out["ballots_accepted"] = int(d.get("cctf_ballots_accepted_total", 0))
    out["votes_accepted"] = int(d.get("cctf_votes_accepted_total", 0))
    out["votes_ignored"] = _by_label(d, "cctf_votes_ignored_total", "result")
    out["rejected"] = _by_label(d, "cctf_messages_rejected_total", "reason")
    out["publish_retries"] = int(d.get("cctf_verdict_publish_retries_total", 0))
    out["verdicts_dropped"] = int(d.get("cctf_verdicts_dropped_total", 0))
    # batch signing: one signed head and one durable-log record per batch
    out["batches"] = int(d.get("cctf_batches_total", 0))
    count = d.get("cctf_batch_verdicts_count", 0.0)
    if count:
        out["verdicts_per_batch_mean"] = round(d.get("cctf_batch_verdicts_sum", 0.0) / count, 1)
    out["published_before_logged"] = int(d.get("cctf_log_published_before_logged_total", 0))
    out["batches_held_for_log"] = int(d.get("cctf_log_batches_held_total", 0))
    return out


# ------------------------------------------------------------------------------------ the fabric


@dataclass
class BenchFabric:
    """What the measurements use; built by :func:`start`."""

    agents: Agents
    collector: Collector
    client: TrustClient
    admin: Any
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    pids: Pids = field(default_factory=dict)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"coordinator exited with {self.proc.returncode}:\n{tail(self.log_path)}"
            )

    def scrape(self) -> dict[str, float] | None:
        return scrape(self.metrics_port)

    async def probe_stored(self) -> Any:
        """A second (ordered) consumer on the verdict stream whose deliveries tell the collector
        when JetStream stored each probed verdict. Unsubscribe it when done."""
        return await self.admin.jetstream().subscribe(
            verdict_subjects(VERDICT_REGION), ordered_consumer=True, cb=self.collector.on_stored
        )


def coordinator_config(
    tmp: Path, creds: Path, metrics_port: int, signing: str = "per_verdict", lkg: bool = False
) -> dict[str, Any]:
    """The generated ``cctf coordinator run`` config: 3-of-5, 1 s rounds, metrics endpoint,
    ``signing`` (``per_verdict`` or ``batch``), verdicts to ``VERDICT_REGION``.

    ``lkg`` False (the default here): ``lkg: {enabled: false}``. Every benchmark name is decided
    once and never voted on again, so with LKG on each one becomes a *silent* name
    (``cctf.coordinator.pipeline.expiry``): re-decided UNAVAILABLE and attested from LKG every
    round for the 15 min cap, and its first basis written to the KV bucket: per-round work that
    grows with every name the run has ever seen (after 20 s at 500/s: 10,000 extra decisions per
    round), which measures the benchmark's naming, not the verdict path. ``--lkg`` measures it."""
    return {
        "signing": signing,
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
        **({} if lkg else {"lkg": {"enabled": False}}),
    }


async def start(
    tmp: Path,
    stack: contextlib.AsyncExitStack,
    progress: Progress,
    *,
    nodes: int = 1,
    profile_coordinator: Path | None = None,
    signing: str = "per_verdict",
    lkg: bool = False,
) -> BenchFabric:
    """Start everything (stopped by ``stack``) and warm it up: one verdict has gone through."""
    agent_keys = {r: SigningKey.generate(SUITE) for r in REGIONS}
    coord_key = SigningKey.generate(SUITE)
    trust = TrustConfig(
        [TrustEntry(Role.AGENT, agent_id(r), r, agent_keys[r].public) for r in REGIONS]
        + [TrustEntry(Role.COORDINATOR, COORDINATOR_ID, VERDICT_REGION, coord_key.public)]
    )
    save_signing_key(tmp / "coordinator.key.json", coord_key)
    trust.save(tmp / "trust.json")

    progress(f"starting JetStream ({nodes} node{'s' if nodes > 1 else ''})")
    nats = await NatsFabric.astart(tmp / "nats", nodes=nodes, regions=REGIONS)
    stack.push_async_callback(nats.astop)
    creds = nats.write_credentials(tmp / "credentials.json")
    admin = await nats.connect("admin", name="bench-admin", for_tests=True)
    stack.push_async_callback(admin.close)
    await ensure_streams(admin.jetstream(), REGIONS, nats.stream_replicas)

    metrics_port = free_port()
    config_path = tmp / "coordinator.json"
    config_path.write_text(
        json.dumps(coordinator_config(tmp, creds, metrics_port, signing, lkg), indent=2)
    )
    log_path = tmp / "coordinator.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by the exit stack
    stack.callback(log_file.close)
    cmd = [sys.executable]
    if profile_coordinator is not None:
        # cProfile runs a script: the ``cctf`` console script next to this interpreter
        cmd += ["-m", "cProfile", "-o", str(profile_coordinator.resolve())]
        cmd += [str(Path(sys.executable).parent / "cctf")]
    else:
        cmd += ["-m", "cctf"]
    cmd += ["coordinator", "run", "--config", str(config_path), "--log-level", "warning"]
    progress("starting the coordinator process")
    proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, cwd=tmp)

    async def stop_coordinator() -> None:
        code = await stop_process(proc, timeout_s=15.0)
        if code not in (0, None, -signal.SIGTERM):
            progress(f"coordinator exited with {code}:\n{tail(log_path)}")

    stack.push_async_callback(stop_coordinator)

    agents = Agents(agent_keys)
    for r in REGIONS:
        nc = await nats.connect(f"agent-{r}", name=agent_id(r), for_tests=True)
        stack.push_async_callback(nc.close)
        agents.js[r] = nc.jetstream()
    collector = Collector()
    client_nc = await nats.connect("client", name="bench-subscriber", for_tests=True)
    stack.push_async_callback(client_nc.close)
    # the SDK verifies both authenticators ("sig"; "tlog" with its verified-head cache)
    client = TrustClient(client_nc, trust, VERDICT_REGION)
    stream = await _open_stream(client, proc, log_path)
    stack.push_async_callback(stream.aclose)
    consumer = asyncio.create_task(collector.run(stream))

    async def stop_consumer() -> None:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consumer

    stack.push_async_callback(stop_consumer)
    fab = BenchFabric(
        agents=agents,
        collector=collector,
        client=client,
        admin=admin,
        proc=proc,
        log_path=log_path,
        metrics_port=metrics_port,
        pids={
            "coordinator": [proc.pid],
            "nats_server": [s.pid for s in nats.servers if s.pid is not None],
        },
    )

    async def metrics_ready() -> bool:
        return await asyncio.to_thread(scrape, metrics_port) is not None

    await wait_until(metrics_ready, 60.0, "the coordinator's metrics endpoint", fab.check_alive)
    progress("warm-up")
    await _warm_up(fab)
    return fab


async def _open_stream(
    client: TrustClient, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0
) -> Any:
    """The subscriber's verdict stream; retried while a fresh cluster still elects the stream's
    leader (each attempt is bounded by the client's request timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        check_stop()
        try:
            return await client.stream(VERDICT_REGION, deliver="new")
        except FetchError:
            if proc.poll() is not None:
                raise RuntimeError(f"coordinator exited:\n{tail(log_path)}") from None
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _warm_up(fab: BenchFabric, timeout_s: float = 60.0, wanted: int = 10) -> None:
    """Publish small samples until ``wanted`` verdicts came back: the coordinator consumes (its
    durables exist), and first-use costs (consumers, caches, connections) are paid. Ballots sent
    before the coordinator's consumers exist are not stored (interest retention): retried."""
    deadline = time.monotonic() + timeout_s
    got = 0
    seq = 0
    while got < wanted:
        fab.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no verdict arrived during warm-up:\n{tail(fab.log_path)}")
        seq += 1
        t_ms = now_ms()
        names = [f"w{seq}-{j}.{ORIGIN}" for j in range(3)]
        datas = [fab.agents.sealed_ballot(r, t_ms // ROUND_MS, names, t_ms) for r in REGIONS]
        group = fab.collector.expect(names, time.perf_counter())
        try:
            for region, data in zip(REGIONS, datas, strict=True):
                await fab.agents.publish(region, data)
            await asyncio.wait_for(group.done.wait(), 2.0)
            got += 1
        except Exception:  # no stream leader yet (fresh cluster), or no verdict yet: retried
            fab.collector.forget(group)
            await asyncio.sleep(0.2)


def run_part(
    measure: Callable[[BenchFabric, Progress], Awaitable[dict[str, Any]]],
    *,
    nodes: int,
    budget_s: float,
    signing: str = "per_verdict",
    profile_coordinator: Path | None = None,
    lkg: bool = False,
) -> int:
    """One benchmark part on a fresh fabric in a temporary directory (removed afterwards)."""

    async def work(progress: Progress) -> dict[str, Any]:
        tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-"))
        try:
            async with contextlib.AsyncExitStack() as stack:
                fab = await start(
                    tmp,
                    stack,
                    progress,
                    nodes=nodes,
                    signing=signing,
                    profile_coordinator=profile_coordinator,
                    lkg=lkg,
                )
                return await measure(fab, progress)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return run_main(work, budget_s=budget_s)
