"""Issue #9 scope 4 end to end, every component a real process over NATS-over-TLS (verify_and_map):

``cctf ca init`` + ``cctf ca serve`` (the CA, user ``ca`` by certificate), ``cctf ca join`` (the
operator's one-time join credential per agent), two ``cctf agent run`` that have NO certificate:
each bootstraps over its join credential, connects with its CA-issued certificate, votes and renews
(4 s certificates, renewed at 2/3); ``cctf coordinator run`` gating ballots on the CA log; a
verifying subscriber (``TrustClient``, user ``client`` by certificate). No password anywhere but the
system account's. Shown, in one fabric:

* verified, trusted verdicts with both agents' votes;
* after each agent's FIRST certificate expired, a nats-server restart forces every connection to
  re-handshake, and a revocation of the west agent is requested as soon as the CA answers (while
  the coordinator's CA-log consumer is still being re-created): no verdict of a round that starts
  one round after the revocation was acknowledged counts the revoked agent (3-of-3: no fresh
  TRUSTED verdict any more); both agents are back (their reconnects presented the renewed
  certificate: the east agent's votes are in the verdicts, the west agent's ballots are refused
  ``cert_revoked``), and the first certificate itself is refused at connect (expired);
* the agent's certificate of region A cannot publish region B's ballots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from natshelpers import ErrorLog
from tlspki import leaf, pem, write_pair
from wirefactories import make_identity, make_trust

from cctf.bus.accounts import NatsUser, build_users
from cctf.bus.connect import Connection, connect
from cctf.bus.rpc import RpcError, request
from cctf.bus.streams import ensure_streams
from cctf.bus.tls import ClientTls
from cctf.bus.tlsauth import ServerTls, agent_tls_users, join_tls_user, role_tls_user
from cctf.bus_schemas.messages import Outcome, Verdict, VoterState
from cctf.ca.entries import RevocationReason
from cctf.ca.issuer import make_test_hierarchy
from cctf.ca.service import ADMIN_REVOKE, RevokeReply, RevokeRequest
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.zone import demo_zone
from cctf.client.sdk import TrustClient
from cctf.crypto.keys import save_signing_key
from cctf.crypto.trust import Role
from cctf.devfabric.nats_server import NatsServer, free_ports

pytestmark = pytest.mark.timeout(150)

TD = "cctf.test"
EAST, WEST = "us-east", "eu-west"
REGIONS = (EAST, WEST)
AGENTS = {"agent-us-east": EAST, "agent-eu-west": WEST}
EAST_AGENT = "agent-us-east"
NAME = "www.demo.test."
ROUND_MS = 1000
CERT_LIFETIME_MS = 4000
ROLES = ("admin", "ca", "coordinator", "client")
#: each (agent, resolver) is a voter; the rule is 3-of-3, so every fresh TRUSTED verdict counted
#: both agents' ballots, and none can be issued while one agent's ballots are refused
RESOLVERS = {"agent-us-east": ("r1", "r2"), "agent-eu-west": ("r1",)}
ELECTORATE = [f"{a}/{r}" for a, rs in RESOLVERS.items() for r in rs]


async def request_retried(
    nc: Connection, subject: str, data: bytes, timeout_s: float = 15
) -> bytes:
    """A request, retried while nobody answers yet (a responder's connection may be between a
    server restart or a slow TLS handshake and its re-subscription), bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await request(nc, subject, data, timeout_s=5)
        except RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)


async def _spawn(name: str, *args: str, cwd: Path) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Proc(name, proc)
    p.reader = asyncio.create_task(p._read())
    return p


async def _cctf(*args: str, cwd: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:  # timed out or cancelled: leave nothing behind
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (args, err.decode()[-2000:])
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def _voted(v: Verdict) -> set[str]:
    """The voters whose ballots the coordinator counted in this (fresh) verdict."""
    assert not v.is_lkg
    return {x.voter for x in v.voters if x.state is not VoterState.UNAVAILABLE}


async def _until(pred: Any, what: str, timeout: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        for p in procs:
            assert p.proc.returncode is None, f"{p.name} exited: {p.text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + " | ".join(
            f"{p.name}: {p.text()[-800:]}" for p in procs
        )
        await asyncio.sleep(0.05)


@dataclass
class World:
    d: Path
    server: NatsServer
    tls: dict[str, ClientTls]
    ops_ca: Path
    url: str
    procs: list[Proc] = field(default_factory=list)


@pytest.fixture
async def dns_port() -> AsyncIterator[int]:
    server = FaultyDnsServer(demo_zone(), "127.0.0.1", 0)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


async def _stop_all(procs: list[Proc]) -> None:
    for p in reversed(procs):
        if p.proc.returncode is None:
            p.proc.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.proc.wait(), 10)
        except TimeoutError:
            p.proc.kill()
            await p.proc.wait()
        if p.reader is not None:
            p.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await p.reader


async def test_tls_fabric_bootstrap_vote_renew_reconnect_revoke(
    tmp_path: Path, dns_port: int
) -> None:
    d = tmp_path
    coord = make_identity("coord-1", EAST, role=Role.COORDINATOR)
    agents = {a: make_identity(a, r) for a, r in AGENTS.items()}
    trust = make_trust(coord, *agents.values())
    trust.save(d / "trust.json")
    save_signing_key(d / "coord.key.json", coord.key)
    for a, ident in agents.items():
        save_signing_key(d / f"{a}.key.json", ident.key)

    # the CA's throwaway hierarchy (a process), and the operator's CA for servers and components
    await _cctf("ca", "init", "ca", "--trust-domain", TD, "--trust", "trust.json", cwd=d)
    now_ms = int(time.time() * 1000)
    ops = make_test_hierarchy("ops.test", now_ms=now_ms)
    ops_ca = d / "ops-ca.pem"
    ops_ca.write_bytes(pem(ops.root))
    s_cert, s_key = write_pair(d, "server", *leaf(ops.root, ops.root_key, server=True))
    client_cas = d / "client-cas.pem"  # agent intermediate (agents, joins) + ops root (components)
    client_cas.write_bytes((d / "ca" / "intermediate.pem").read_bytes() + pem(ops.root))
    tls: dict[str, ClientTls] = {}
    role_users = []
    for role in ROLES:
        san = f"spiffe://{TD}/cctf/{role}"
        c, k = write_pair(d, role, *leaf(ops.root, ops.root_key, uri=san))
        tls[role] = ClientTls(ca=ops_ca, cert=c, key=k)
        role_users.append(role_tls_user(san, role, REGIONS))
    port, http_port = free_ports(2)
    server = NatsServer(
        name="tlsfab",
        directory=d / "nats",
        port=port,
        http_port=http_port,
        users={"sys": build_users(REGIONS)["sys"]},  # no other password exists
        regions=REGIONS,
        tls=ServerTls(
            cert_file=str(s_cert), key_file=str(s_key), ca_file=str(client_cas), timeout_s=5.0
        ),
        tls_users=(
            *agent_tls_users(TD, [(r, a) for a, r in AGENTS.items()]),
            *(join_tls_user(TD, r, a) for a, r in AGENTS.items()),
            *role_users,
        ),
    )
    assert server.render_config().count("password:") == 1
    await asyncio.to_thread(server.start, timeout_s=30)
    w = World(d, server, tls, ops_ca, server.client_url)
    conns: list[Connection] = []
    try:
        await _run(w, agents, trust, conns, dns_port)
    finally:
        await _stop_all(w.procs)
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()
        await asyncio.to_thread(server.stop)


def _nats(w: World, user: str, role_or_paths: str | tuple[str, str]) -> dict[str, Any]:
    if isinstance(role_or_paths, str):
        t = w.tls[role_or_paths]
        cert, key = str(t.cert), str(t.key)
    else:
        cert, key = role_or_paths
    return {"urls": [w.url], "user": user, "tls": {"ca": str(w.ops_ca), "cert": cert, "key": key}}


async def _connect(w: World, user: str, tls: ClientTls, **kw: Any) -> Connection:
    return await connect(w.url, NatsUser(user, ""), name=user, tls=tls, **kw)


async def _run(
    w: World, agents: dict[str, Any], trust: Any, conns: list[Connection], dns_port: int
) -> None:
    d = w.d
    admin = await _connect(w, "admin", w.tls["admin"], reconnect_time_wait=0.1)
    conns.append(admin)
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)

    ca_yaml = json.loads((d / "ca" / "ca.yaml").read_text())
    ca_yaml["nats"] = _nats(w, "ca", "ca")
    (d / "ca" / "ca.yaml").write_text(json.dumps(ca_yaml))
    ca = await _spawn("ca", "ca", "serve", "--config", "ca/ca.yaml", cwd=d)
    w.procs.append(ca)  # the coordinator starts meanwhile (it follows the CA log)

    coord_cfg = {
        "coordinator": "coord-1",
        "region": EAST,
        "key_file": "coord.key.json",
        "trust_file": "trust.json",
        "nats": _nats(w, "coordinator", "coordinator"),
        "rule": {"k": 3, "n": 3},
        "electorate": ELECTORATE,
        "names": [[NAME, "A"]],
        "round_ms": ROUND_MS,
        "ca": {
            "trust_domain": TD,
            "intermediate": "ca/intermediate.pem",
            "log_key": "ca/ca-log.pub.json",
        },
    }
    (d / "coord.yaml").write_text(json.dumps(coord_cfg))
    coordinator = await _spawn("coordinator", "coordinator", "run", "--config", "coord.yaml", cwd=d)
    w.procs.append(coordinator)
    await _until(lambda: '"ca_started"' in ca.text(), "the CA", 30, [ca])

    # the operator's join credentials (one process each, concurrently)
    joins = await asyncio.gather(
        *(
            _cctf(
                "ca",
                "join",
                "--config",
                "ca/ca.yaml",
                "--region",
                r,
                "--agent",
                a,
                "--out",
                f"join-{a}",
                cwd=d,
            )
            for a, r in AGENTS.items()
        )
    )
    assert {j["spiffe_id"] for j in joins} == {
        f"spiffe://{TD}/cctf/join/{r}/{a}" for a, r in AGENTS.items()
    }

    # the subscriber: every verdict verified (batch-signed: heads, proofs) before it is seen
    client_nc = await _connect(w, "client", w.tls["client"], reconnect_time_wait=0.1)
    conns.append(client_nc)
    client = TrustClient(client_nc, trust, EAST, round_ms=ROUND_MS)
    verdicts: list[Verdict] = []
    await _until(
        lambda: '"coordinator_started"' in coordinator.text(), "the coordinator", 40, w.procs
    )
    stream = await client.stream(EAST, deliver="new")

    async def consume() -> None:
        async for v in stream:
            verdicts.append(v)

    consumer = asyncio.create_task(consume())
    try:
        for a, r in AGENTS.items():
            cfg = {
                "agent": a,
                "region": r,
                "key_file": f"{a}.key.json",
                "nats": _nats(
                    w, f"agent-{r}.{a}", (f"certs-{a}/{a}.cert.pem", f"certs-{a}/{a}.tls-key.pem")
                ),
                "resolvers": [
                    {"id": rid, "address": "127.0.0.1", "port": dns_port, "transport": "udp"}
                    for rid in RESOLVERS[a]
                ],
                "names": [[NAME, "A"]],
                "round_ms": ROUND_MS,
                "ca": {
                    "trust_domain": TD,
                    "intermediate": "ca/intermediate.pem",
                    "cert_dir": f"certs-{a}",
                    "lifetime_ms": CERT_LIFETIME_MS,
                    "join_cert": f"join-{a}/join.cert.pem",
                    "join_key": f"join-{a}/join.tls-key.pem",
                },
            }
            assert not (d / f"certs-{a}").exists()  # no certificate before the bootstrap
            (d / f"{a}.yaml").write_text(json.dumps(cfg))
            w.procs.append(await _spawn(a, "agent", "run", "--config", f"{a}.yaml", cwd=d))
        agent_procs = w.procs[-2:]
        # keep each agent's FIRST certificate (the bootstrap's) to show it expired later
        first: dict[str, tuple[Path, Path]] = {}

        def bootstrapped() -> bool:
            for p in agent_procs:
                if p.name not in first and '"agent.bootstrapped"' in p.text():
                    c, k = (
                        d / f"certs-{p.name}" / f"{p.name}.cert.pem",
                        d / f"certs-{p.name}" / f"{p.name}.tls-key.pem",
                    )
                    first[p.name] = (
                        Path(shutil.copy(c, d / f"{p.name}.first.cert.pem")),
                        Path(shutil.copy(k, d / f"{p.name}.first.key.pem")),
                    )
            return len(first) == len(AGENTS)

        await _until(bootstrapped, "both agents' first certificates", 40, w.procs)
        t_first = time.time() * 1000

        def both_in(after_round: int) -> bool:
            return any(
                v.round > after_round
                and v.outcome is Outcome.TRUSTED
                and not v.is_lkg
                and _voted(v) == set(ELECTORATE)
                for v in verdicts
            )

        await _until(lambda: both_in(0), "a verdict with both agents' votes", 30, w.procs)

        # both first certificates expired (renewed at 2/3 meanwhile): a server restart forces
        # every connection to handshake again
        await asyncio.sleep(
            max(0.0, (t_first + CERT_LIFETIME_MS + 500 - time.time() * 1000) / 1000)
        )
        await asyncio.to_thread(w.server.restart, timeout_s=30)
        restarted_round = int(time.time() * 1000) // ROUND_MS

        # revocation, requested as soon as the CA answers after the restart (the coordinator's
        # ordered consumer of the CA log is still being re-created then: the live copy and the
        # catch-up after the reconnect bring the record, docs/ca.md §10): out of every verdict of
        # the rounds starting a round after it was logged
        west = "agent-eu-west"
        req = RevokeRequest("", agents[west].key.kid, RevocationReason.KEY_COMPROMISE)
        raw = await request_retried(admin, ADMIN_REVOKE, msgspec.msgpack.encode(req))
        assert msgspec.msgpack.decode(raw, type=RevokeReply).serials  # logged, acknowledged
        cutoff = -(
            -(int(time.time() * 1000) + ROUND_MS) // ROUND_MS
        )  # first round starting 1 round later
        print(f"revoked {cutoff - restarted_round} rounds after the restart")

        # both agents are back after the restart, with their renewed certificates (both first ones
        # have expired): the east agent's ballots of later rounds stored (acknowledged), the west
        # agent's ballots refused by the coordinator as revoked (so the server let it publish)
        east_proc = next(p for p in agent_procs if p.name == EAST_AGENT)

        def east_back() -> bool:
            for line in east_proc.text().splitlines():
                if '"ballot.published"' in line:
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(line).get("round", 0) > restarted_round:
                            return True
            return False

        def west_refused() -> bool:
            return any(
                "cert_revoked" in line and "cctf.v1.vote.eu-west.agent-eu-west" in line
                for line in coordinator.text().splitlines()
            )

        await _until(east_back, "the east agent after the restart", 40, w.procs)
        await _until(west_refused, "the revoked west agent's ballots refused", 40, w.procs)
        await _until(
            lambda: sum(1 for v in verdicts if v.round >= cutoff) >= 2,
            "verdicts after the revocation",
            30,
            w.procs,
        )
        # fresh verdicts count ballots (an LKG attestation repeats an older decision, its basis)
        late = [v for v in verdicts if v.round >= cutoff]
        assert all(v.basis_round < cutoff for v in late if v.is_lkg)
        fresh = [v for v in late if not v.is_lkg]
        assert all(f"{west}/r1" not in _voted(v) for v in fresh)
        assert all(v.outcome is not Outcome.TRUSTED for v in fresh)  # 3-of-3 needs the west agent

        for a, (c, k) in first.items():
            with pytest.raises(Exception):  # noqa: B017 (nats-py: NoServersError or an SSL error)
                nc = await _connect(
                    w,
                    f"agent-{AGENTS[a]}.{a}",
                    ClientTls(ca=w.ops_ca, cert=c, key=k),
                    for_tests=True,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                )
                await nc.close()
        assert "certificate has expired" in w.server.log_tail(200_000)

        # region pinning, with the east agent's current certificate
        errors = ErrorLog()
        east = EAST_AGENT
        cur = ClientTls(
            ca=w.ops_ca,
            cert=d / f"certs-{east}" / f"{east}.cert.pem",
            key=d / f"certs-{east}" / f"{east}.tls-key.pem",
        )
        nc = await _connect(w, f"agent-{EAST}.{east}", cur, for_tests=True, error_cb=errors)
        conns.append(nc)
        await nc.publish("cctf.v1.vote.eu-west.agent-eu-west", b"forged")
        await nc.flush()
        await errors.wait_for(
            'Permissions Violation for Publish to "cctf.v1.vote.eu-west.agent-eu-west"'
        )
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consumer
        with contextlib.suppress(Exception):
            await stream.aclose()
        with contextlib.suppress(Exception):
            await client.close()
