"""The certificate gate over a real nats-server: CA service (appending to the CA log before it
answers), agents requesting certificates as their own NATS users, a coordinator following the CA
log. Issue #9 acceptance: a certificate that was not logged, has expired or was revoked stops that
agent's ballots (counted by reason); renewal keeps votes flowing with no missed round."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from capki import TRUST_DOMAIN, CaWorld, make_ca_world
from cryptography.hazmat.primitives import serialization
from nats.aio.client import Client
from wirefactories import Identity, make_ballot, make_identity, make_trust, make_vote, seal_ballot

from cctf.bus.rpc import request as rpc_request
from cctf.bus.streams import LOG_STREAM, ensure_streams
from cctf.bus_schemas.envelope import Reason, Rejected, decode_envelope
from cctf.bus_schemas.messages import Outcome, decode_verdict
from cctf.ca.config import AgentCaConfig, CaGateConfig
from cctf.ca.entries import RevocationReason
from cctf.ca.errors import CaError
from cctf.ca.issuer import random_serial
from cctf.ca.log import open_ca_log
from cctf.ca.renew import CertRenewer
from cctf.ca.service import ADMIN_REVOKE, CaService, RevokeReply, RevokeRequest
from cctf.clock import Clock, FakeClock, SystemClock
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

EAST, WEST = "us-east", "eu-west"
AGENTS = (("agent-us-east", EAST), ("agent-eu-west", WEST))
ELECTORATE = ["agent-us-east/r1", "agent-us-east/r2", "agent-eu-west/r1", "agent-eu-west/r2"]
NAME = "example.com."


async def _until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Fabric:
    fabric: NatsFabric
    tmp: Path
    clock: Clock
    world: CaWorld
    admin: Client
    connect: Any
    coord: Identity = field(
        default_factory=lambda: make_identity("coord-1", EAST, role=Role.COORDINATOR)
    )
    ca: CaService | None = None
    log_key: SigningKey = field(default_factory=SigningKey.generate)
    coordinators: list[Coordinator] = field(default_factory=list)
    renewers: list[CertRenewer] = field(default_factory=list)
    agent_nc: dict[str, Client] = field(default_factory=dict)
    verdicts: list[Any] = field(default_factory=list)
    #: nats-py options of the coordinator's connection (e.g. to outlive a server restart)
    coordinator_conn: dict[str, Any] = field(default_factory=dict)

    @property
    def intermediate_path(self) -> Path:
        return self.tmp / "intermediate.pem"

    async def start_ca(self) -> CaService:
        self.intermediate_path.write_bytes(
            self.world.issuer.intermediate.public_bytes(serialization.Encoding.PEM)
        )
        (self.tmp / "ca-log.pub.json").write_text(
            msgspec.json.encode(self.log_key.public.to_json()).decode()
        )
        log = await open_ca_log(self.admin, self.log_key, self.world.registry())
        service = CaService(self.admin, self.world.issuer, log, clock=self.clock)
        await service.start()
        self.ca = service
        return service

    async def start_coordinator(self, **kw: Any) -> Coordinator:
        nc = await self.connect(
            self.fabric, "coordinator", name="test-coordinator", **self.coordinator_conn
        )
        args: dict[str, Any] = {
            "coordinator": "coord-1",
            "region": EAST,
            "rule": RuleConfig(k=3, n=4),
            "electorate": ELECTORATE,
            "names": [(NAME, "A")],
            "verdict_regions": [EAST],
            "fetch_timeout_ms": 100,
            "tick_ms": 20,
            "ca": CaGateConfig(
                trust_domain=TRUST_DOMAIN,
                intermediate=str(self.intermediate_path),
                log_key=str(self.tmp / "ca-log.pub.json"),
            ),
        }
        args.update(kw)
        trust = make_trust(self.coord, *self.world.trust)
        coordinator = Coordinator(
            CoordinatorConfig(**args), nc, key=self.coord.key, trust=trust, clock=self.clock
        )
        await coordinator.start()
        self.coordinators.append(coordinator)

        async def on_verdict(msg: Any) -> None:
            env = decode_envelope(msg.data)
            self.verdicts.append(decode_verdict(env.payload))

        sub_nc = await self.connect(self.fabric, "admin", name="test-verdicts")
        await sub_nc.subscribe("cctf.v1.verdict.>", cb=on_verdict)
        return coordinator

    async def agent_conn(self, agent: str) -> Client:
        if agent not in self.agent_nc:
            region = self.world.agents[agent].region
            self.agent_nc[agent] = await self.connect(self.fabric, f"agent-{region}", name=agent)
        return self.agent_nc[agent]

    async def renewer(self, agent: str, lifetime_ms: int) -> CertRenewer:
        a = self.world.agents[agent]
        config = AgentCaConfig(
            trust_domain=TRUST_DOMAIN,
            intermediate=str(self.intermediate_path),
            cert_dir=str(self.tmp / "certs"),
            lifetime_ms=lifetime_ms,
        )
        r = CertRenewer(
            await self.agent_conn(agent),
            a.key,
            agent=agent,
            region=a.region,
            config=config,
            clock=self.clock,
        )
        self.renewers.append(r)
        return r

    async def vote(self, agent: str, round_: int) -> None:
        a = self.world.agents[agent]
        ident = Identity(a.key, self.world.trust.get(a.key.kid, Role.AGENT))
        votes = [
            make_vote(agent, a.region, round_, qname=NAME, resolver_id=r) for r in ("r1", "r2")
        ]
        ballot = make_ballot(agent, a.region, round_, votes=votes)
        data = seal_ballot(ident, ballot, now_ms=self.clock.now_ms())
        js = (await self.agent_conn(agent)).jetstream()
        await js.publish(ident.subject, data, timeout=5.0)


@pytest_asyncio.fixture
async def ca_fabric(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path, request: Any
) -> AsyncIterator[Fabric]:
    clock: Clock = getattr(request, "param", None) or FakeClock(int(time.time() * 1000))
    async for f in _ca_fabric(nats_single, nats_connect, tmp_path, clock):
        yield f


@pytest_asyncio.fixture
async def ca_cluster(
    nats_cluster: NatsFabric, nats_connect: Any, tmp_path: Path
) -> AsyncIterator[Fabric]:
    """:func:`ca_fabric` on a 3-node cluster (every stream R3)."""
    async for f in _ca_fabric(
        nats_cluster, nats_connect, tmp_path, FakeClock(int(time.time() * 1000))
    ):
        yield f


async def _ca_fabric(
    fabric: NatsFabric, nats_connect: Any, tmp_path: Path, clock: Clock
) -> AsyncIterator[Fabric]:
    admin = await nats_connect(fabric, "admin", name="test-admin")
    await ensure_streams(admin.jetstream(), [EAST, WEST], fabric.stream_replicas)
    f = Fabric(
        fabric,
        tmp_path,
        clock,
        make_ca_world(AGENTS, now_ms=clock.now_ms()),
        admin,
        nats_connect,
    )
    try:
        yield f
    finally:
        for r in f.renewers:
            await r.stop()
        for c in f.coordinators:
            await c.stop()
        if f.ca is not None:
            await f.ca.stop()


def _rejected(c: Coordinator) -> dict[str, int]:
    return {k: v for k, v in c.stats().rejected.items() if k.startswith("cert_")}


async def test_unlogged_expired_and_revoked_certificates_stop_ballots(ca_fabric: Fabric) -> None:
    f = ca_fabric
    clock = f.clock
    assert isinstance(clock, FakeClock)
    ca = await f.start_ca()
    coordinator = await f.start_coordinator()
    gate = coordinator.certs
    assert gate is not None
    east = "agent-us-east"
    kid = f.world.agents[east].key.kid
    rnd = clock.now_ms() // 1000

    # 1. a certificate signed by the real intermediate but never logged: refused, cert_unlogged
    subject, data = f.world.agents[east].request(clock.now_ms(), 10_000)
    unlogged = f.world.issuer.issue(data, subject, now_ms=clock.now_ms(), serial=random_serial())
    assert unlogged.cert.binding.kid == kid
    await f.vote(east, rnd)
    await _until(lambda: _rejected(coordinator) == {"cert_unlogged": 1}, what="cert_unlogged")

    # 2. a certificate from the CA (logged before it is handed out): accepted
    renewer = await f.renewer(east, 10_000)
    cert = await renewer.obtain()
    assert ca.registry.find(cert.serial) == cert  # the CA logged it
    await _until(lambda: gate.registry.certs_of(kid) != [], what="the coordinator follows the log")
    assert renewer.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert renewer.key_path.stat().st_mode & 0o077 == 0
    await f.vote(east, rnd)
    await _until(lambda: coordinator.stats().ballots_accepted == 1, what="an accepted ballot")

    # 3. past its lifetime: cert_expired
    clock.advance(10_000)
    await f.vote(east, clock.now_ms() // 1000)
    await _until(lambda: _rejected(coordinator).get("cert_expired") == 1, what="cert_expired")

    # 4. a fresh certificate, then revoked through the CA's admin subject: cert_revoked
    cert2 = await renewer.obtain()
    await _until(lambda: len(gate.registry.certs_of(kid)) == 2, what="the second certificate")
    await f.vote(east, clock.now_ms() // 1000)
    await _until(lambda: coordinator.stats().ballots_accepted == 2, what="accepted again")
    t0 = time.monotonic()
    reply = await rpc_request(
        f.admin,
        ADMIN_REVOKE,
        msgspec.msgpack.encode(RevokeRequest("", kid, RevocationReason.KEY_COMPROMISE)),
        timeout_s=5,
    )
    got = msgspec.msgpack.decode(reply, type=RevokeReply)
    assert got.error == "" and got.serials == [cert2.serial]
    await _until(lambda: gate.registry.is_revoked(kid, cert2.serial), what="the revocation")
    honoured_s = time.monotonic() - t0  # revoke request -> the coordinator refuses the key
    print(f"revocation honoured after {honoured_s * 1000:.0f} ms")
    assert honoured_s < 1.0, "a revocation must be honoured within one round (1 s)"
    await f.vote(east, clock.now_ms() // 1000)
    await _until(lambda: _rejected(coordinator).get("cert_revoked") == 1, what="cert_revoked")
    assert _rejected(coordinator) == {"cert_unlogged": 1, "cert_expired": 1, "cert_revoked": 1}
    assert coordinator.stats().terminated.get("cert_revoked") == 1
    # the CA log holds both certificates and the revocation, in order
    assert gate.follower.mirror.size == 3 and gate.registry.refused == {}
    # a key_compromise revocation revokes the KEY: the CA issues it no new certificate (a renewal
    # would otherwise re-admit it a few seconds later)
    with pytest.raises(CaError, match="revoked"):
        await renewer.obtain()
    assert gate.follower.mirror.size == 3
    # an agent cannot ask for another region's certificate (permissions: its own region only)
    west_nc = await f.agent_conn("agent-eu-west")
    subject, data = f.world.agents[east].request(clock.now_ms())
    with pytest.raises(Exception):  # noqa: B017 (no responder / permission violation)
        await rpc_request(west_nc, subject, data, timeout_s=1)


@pytest.mark.parametrize("ca_fabric", [SystemClock()], indirect=True)
async def test_renewal_keeps_votes_flowing_with_no_missed_round(ca_fabric: Fabric) -> None:
    f = ca_fabric
    clock = f.clock
    await f.start_ca()
    coordinator = await f.start_coordinator(round_ms=500, round_grace_ms=300)
    renewers = [await f.renewer(a, 3_000) for a, _r in AGENTS]
    for r in renewers:
        await r.obtain()
        r.start()
    gate = coordinator.certs
    assert gate is not None
    await _until(lambda: gate.registry.certificates >= 2, what="both certificates followed")
    first = clock.now_ms() // 500 + 1
    rounds = list(range(first, first + 16))  # 8 s: each agent renews at least twice
    for rnd in rounds:
        while clock.now_ms() < rnd * 500 + 50:
            await asyncio.sleep(0.01)
        await asyncio.gather(*(f.vote(a, rnd) for a, _r in AGENTS))
    await _until(
        lambda: {v.round for v in f.verdicts} >= set(rounds), timeout=10, what="every verdict"
    )
    by_round = {v.round: v for v in f.verdicts if v.round in rounds}
    assert all(v.outcome is Outcome.TRUSTED for v in by_round.values()), by_round
    assert _rejected(coordinator) == {}
    assert all(r.renewals >= 3 and r.failures == 0 for r in renewers)
    assert coordinator.stats().ballots_accepted == 2 * len(rounds)


async def test_a_forged_ca_log_record_stops_the_follower_fail_closed(ca_fabric: Fabric) -> None:
    """A record on the CA log subject that the CA log's key did not sign (here: a valid record of
    another key's log, holding a real certificate entry) is refused by the mirror; the follower
    stops for good and registers nothing after it, so that agent's ballots stay refused."""
    from cctf.translog.logstate import LogState

    f = ca_fabric
    clock = f.clock
    await f.start_ca()
    coordinator = await f.start_coordinator()
    gate = coordinator.certs
    assert gate is not None
    east = "agent-us-east"
    issued = f.world.issue(east, clock.now_ms(), 10_000)  # signed by the real intermediate
    forged = LogState(SigningKey.generate()).append([issued.entry])
    await f.admin.jetstream().publish("cctf.v1.log.ca", forged.encode(), timeout=5)
    await _until(lambda: gate.follower.failed is not None, what="the follower refusing")
    assert gate.follower.failed is not None and gate.follower.failed.reason == "wrong-origin"
    assert gate.registry.certificates == 0
    await f.vote(east, clock.now_ms() // 1000)
    await _until(lambda: _rejected(coordinator) == {"cert_unlogged": 1}, what="refused")


#: connections that outlive a server restart (as in production: reconnect forever, 0.1 s apart)
_RECONNECT: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1}


async def test_a_revocation_right_after_a_server_restart_is_honoured_within_one_round(
    ca_fabric: Fabric,
) -> None:
    """The revocation is requested as soon as the restarted nats-server answers, while the
    follower's ordered consumer is still being re-created (seconds: docs/ca.md §10): the live copy
    (core subscription, re-sent at the reconnect) or the catch-up after the reconnect (direct gets)
    brings it, so the coordinator refuses the key within one round (1 s) of the CA storing it."""
    f = ca_fabric
    f.coordinator_conn = _RECONNECT
    f.admin = await f.connect(f.fabric, "admin", name="test-ca", **_RECONNECT)
    await f.start_ca()
    coordinator = await f.start_coordinator()
    gate = coordinator.certs
    assert gate is not None
    east = "agent-us-east"
    kid = f.world.agents[east].key.kid
    cert = await (await f.renewer(east, 60_000)).obtain()
    await _until(lambda: gate.registry.certs_of(kid) != [], what="the coordinator follows the log")

    server = f.fabric.servers[0]
    await asyncio.to_thread(server.restart)
    request = msgspec.msgpack.encode(RevokeRequest("", kid, RevocationReason.KEY_COMPROMISE))
    t0 = time.monotonic()
    while True:  # the CA's connection may still be reconnecting: retried
        try:
            reply = await rpc_request(f.admin, ADMIN_REVOKE, request, timeout_s=2)
            break
        except Exception:
            assert time.monotonic() - t0 < 20, "the CA never answered after the restart"
            await asyncio.sleep(0.05)
    stored = time.monotonic()  # the CA answers once the revocation is stored
    assert msgspec.msgpack.decode(reply, type=RevokeReply).serials == [cert.serial]
    await _until(lambda: gate.registry.is_blocked(kid), timeout=10, what="the revocation")
    honoured = time.monotonic()
    print(
        f"revoke requested {t0 - stored:+.3f} s, honoured {honoured - stored:+.3f} s after it "
        f"was stored; live {gate.follower.live_applied}, catch-ups {gate.follower.catch_ups}"
    )
    assert honoured - stored < 1.0, "a revocation must be honoured within one round (1 s)"
    assert gate.follower.failed is None and gate.follower.live_refused == {}
    f.agent_nc.clear()  # the agent's test connection did not outlive the restart: a new one
    await f.vote(east, f.clock.now_ms() // 1000)
    await _until(lambda: _rejected(coordinator) == {"cert_revoked": 1}, what="cert_revoked")


async def test_a_revocation_during_a_ca_log_leader_election_is_honoured_within_one_round(
    ca_cluster: Fabric,
) -> None:
    """The node leading ``CCTF_LOG`` crashes (SIGKILL: a real election, seconds) and the revocation
    is requested at once, the CA and the coordinator connected to the other nodes: the CA's append
    waits for a new leader, the live copy of its first publish does not."""
    f = ca_cluster
    info = await f.admin.jetstream().stream_info(LOG_STREAM)
    assert info.cluster is not None and info.cluster.leader
    leader = f.fabric.server(info.cluster.leader)
    others = [s.client_url for s in f.fabric.servers if s is not leader]
    f.coordinator_conn = {"servers": others, **_RECONNECT}
    f.admin = await f.connect(f.fabric, "admin", name="test-ca", servers=others, **_RECONNECT)
    await f.start_ca()
    coordinator = await f.start_coordinator()
    gate = coordinator.certs
    assert gate is not None
    east = "agent-us-east"
    kid = f.world.agents[east].key.kid
    await (await f.renewer(east, 60_000)).obtain()
    await _until(lambda: gate.registry.certs_of(kid) != [], what="the coordinator follows the log")
    await asyncio.to_thread(leader.kill)
    t0 = time.monotonic()
    request = msgspec.msgpack.encode(RevokeRequest("", kid, RevocationReason.KEY_COMPROMISE))
    answer = asyncio.create_task(rpc_request(f.admin, ADMIN_REVOKE, request, timeout_s=30))
    try:
        await _until(lambda: gate.registry.is_blocked(kid), timeout=20, what="the revocation")
        honoured = time.monotonic() - t0
        print(f"revocation honoured after {honoured:.3f} s (CA reply pending: {not answer.done()})")
        assert honoured < 1.0, "a revocation must be honoured within one round (1 s)"
    finally:
        answer.cancel()  # the CA answers once a new leader stored it (seconds): not waited for
        with contextlib.suppress(BaseException):
            await answer
    assert gate.follower.failed is None and gate.follower.live_refused == {}
    # step 12a refuses the key (ballots are not sent: their stream may be electing a leader too)
    with pytest.raises(Rejected) as refused:
        gate.registry.check(kid, f.clock.now_ms())
    assert refused.value.reason is Reason.CERT_REVOKED
