"""All 8 up/down combinations of the three paths with the REAL fabric: three resolver agents (one per
region) query real DNS servers and observe the local identity fabric (bundle endpoint, OIDC issuer,
workload TLS endpoint, one view per region) every round, publishing signed ballots and evidence to a
real nats-server; the real coordinator tallies both and publishes signed DNS and identity verdicts;
the relying party (``IdentityClient`` and the gateway's HTTP API) fetches and verifies them, fetches
the key material itself, and negotiates the workload's decision -- under the default policy (2 of 3)
and under "mTLS required".

A path goes down by a real fault of the fabric, as in production:

* ``outage``: the three DNS servers stop answering; the workload's TLS endpoint is down in every
  region; the OIDC issuer is down (the paths become unavailable);
* ``failure``: the DNS servers give three different answers (DISPUTED); the endpoint presents
  another workload's valid SVID in every region (agents refuse it: DISPUTED); the token presented
  is another workload's (the paths fail).

The expected decisions are the table of :mod:`test_workload_paths` (written out there, not computed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
import pytest_asyncio
from test_workload_paths import POLICIES, expected
from wirefactories import World, make_world

from cctf.agents.canonical import Transport
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.resolver import ResolverAgent
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.evidence import IdentityKind
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.zone import demo_zone
from cctf.client.identity import IdentityClient, workload_to_json
from cctf.client.sdk import NoVerdict, TrustClient, VerdictRejected
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.devfabric.identity import IdentityFabric, Mode, Presentation
from cctf.devfabric.nats import NatsFabric
from cctf.gateway.app import create_app

REGIONS = ("us-east", "us-west", "eu-west")
ROUND_MS = 1000
PATHS = ("dns", "mtls", "oidc")
COMBINATIONS = [
    dict(zip(PATHS, u, strict=True)) for u in itertools.product((True, False), repeat=3)
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class RealFabric:
    nats: NatsFabric
    world: World
    identity: IdentityFabric
    dns: list[FaultyDnsServer]
    trust: TrustClient

    def client(self, policy: dict[str, Any] | None) -> IdentityClient:
        return IdentityClient(self.trust, self.identity.targets(policy=policy))


@pytest_asyncio.fixture
async def real(
    tmp_path: Path, nats_single: NatsFabric, nats_connect: Any
) -> AsyncIterator[RealFabric]:
    world = make_world(REGIONS, start_ms=time.time_ns() // 1_000_000)
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)
    async with contextlib.AsyncExitStack() as stack:
        identity = await stack.enter_async_context(
            IdentityFabric(tmp_path / "idf", regions=REGIONS, refresh_hint_s=1)
        )
        servers = []
        for _ in REGIONS:
            server = FaultyDnsServer(demo_zone(), "127.0.0.1", 0)
            await server.start()
            stack.push_async_callback(server.stop)
            servers.append(server)
        coord_nc = await nats_connect(nats_single, "coordinator", max_reconnect_attempts=-1)
        coordinator = Coordinator(
            CoordinatorConfig(
                coordinator=world.coordinator.principal,
                region=REGIONS[0],
                rule=RuleConfig(k=2, n=3),
                electorate=[f"{world.agent(r).principal}/r1" for r in REGIONS],
                names=[(w.spec.dns_name, "A") for w in identity.workloads.values()],
                verdict_regions=[REGIONS[0]],
                identity=identity.targets(),
                round_ms=ROUND_MS,
                round_grace_ms=500,
                tick_ms=20,
            ),
            coord_nc,
            key=world.coordinator.key,
            trust=world.trust,
        )
        await coordinator.start()
        stack.push_async_callback(coordinator.stop)
        agents: list[ResolverAgent] = []
        for region, server in zip(REGIONS, servers, strict=True):
            me = world.agent(region)
            targets = identity.targets(region)
            domains = [msgspec.structs.replace(t, refresh_ms=1000) for t in targets.trust_domains]
            nc = await nats_connect(nats_single, f"agent-{region}", max_reconnect_attempts=-1)
            agents.append(
                ResolverAgent(
                    agent=me.principal,
                    region=region,
                    key=me.key,
                    resolvers=[ResolverSpec("r1", "127.0.0.1", server.port, Transport.UDP)],
                    names=[(w.spec.dns_name, "A") for w in identity.workloads.values()],
                    nc=nc,
                    round_ms=ROUND_MS,
                    query_deadline_ms=600,
                    identity=msgspec.structs.replace(targets, trust_domains=domains),
                )
            )
        tasks = [asyncio.create_task(a.run()) for a in agents]
        client_nc = await nats_connect(nats_single, "client")
        trust = TrustClient(client_nc, world.trust, REGIONS[0], clock=SYSTEM_CLOCK)
        try:
            yield RealFabric(nats_single, world, identity, servers, trust)
        finally:
            for a in agents:
                a.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def _arrange(real: RealFabric, spiffe_id: str, up: dict[str, bool], mode: str) -> str:
    """Set the fabric's faults of one combination; the token the caller will present."""
    fab = real.identity
    fab.reset_faults()
    w = fab.workload(spiffe_id)
    for i, server in enumerate(real.dns):
        if up["dns"]:
            server.clear_faults()
        elif mode == "outage":
            server.set_faults(Faults(blackhole=True))
        else:  # three different answers: no two regions agree
            server.set_faults(Faults(poison=f"203.0.113.{i + 1}"))
    if not up["mtls"]:
        if mode == "outage":
            w.set_mode(Mode.DOWN)
        else:
            w.present(Presentation.WRONG_IDENTITY)
    if not up["oidc"] and mode == "outage":
        fab.issuer.set_mode(Mode.DOWN)
    subject = spiffe_id if up["oidc"] or mode == "outage" else fab.workload("db").spiffe_id
    return fab.issuer.mint_id_token(subject, w.spec.audience, ttl_s=600)


async def _settled(real: RealFabric, spiffe_id: str, dns_name: str, after_ms: int) -> None:
    """Wait (bounded, generous) until every verdict the decision reads is of a round that started
    after the faults were set."""
    first_round = after_ms // ROUND_MS + 1
    deadline = time.monotonic() + 30
    issuer = real.identity.issuer.issuer_url
    domain = real.identity.trust_domain.name
    while True:
        rounds = []
        for fetch in (
            lambda: real.trust.check(dns_name),
            lambda: real.trust.identity_verdict(IdentityKind.MTLS, spiffe_id),
            lambda: real.trust.identity_verdict(IdentityKind.JWKS, issuer),
            lambda: real.trust.identity_verdict(IdentityKind.BUNDLE, domain),
        ):
            try:
                rounds.append((await fetch()).round)
            except (NoVerdict, VerdictRejected):
                rounds.append(-1)
        if min(rounds) >= first_round:
            return
        assert time.monotonic() < deadline, (
            f"verdicts of rounds {rounds}, waiting for {first_round}"
        )
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("mode", ["outage", "failure"])
async def test_all_eight_combinations_with_real_agents_and_coordinator(
    real: RealFabric, mode: str
) -> None:
    w = real.identity.workload("api")
    got: dict[str, dict[str, str]] = {}
    want: dict[str, dict[str, str]] = {}
    for up in COMBINATIONS:
        label = " ".join(f"{p}={'up' if u else 'down'}" for p, u in up.items())
        token = _arrange(real, w.spiffe_id, up, mode)
        await _settled(real, w.spiffe_id, w.spec.dns_name, int(time.time() * 1000))
        got[label], want[label] = {}, {}
        down_state = "unavailable" if mode == "outage" else "fails"
        for policy, spec in POLICIES.items():
            d = workload_to_json(await real.client(spec).workload(w.spiffe_id, token=token))
            states = {p: s["state"] for p, s in d["paths"].items()}
            assert states == {p: "holds" if u else down_state for p, u in up.items()}, (label, d)
            got[label][policy] = d["outcome"]
            want[label][policy] = expected(up, mode, policy)
        # the gateway answers the SDK's decision over HTTP
        app = create_app(real.client(None))
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://gw"
        ) as http:
            r = await http.get(
                f"/v1/workloads/{w.spiffe_id}", headers={"Authorization": f"Bearer {token}"}
            )
        assert r.status_code == 200 and r.json()["outcome"] == got[label]["default"], r.text
    assert got == want
    without_mtls = [k for k in want if "mtls=down" in k]
    assert all(got[k]["mtls_required"] != "trusted" for k in without_mtls)
    if mode == "failure":
        assert all(got[k]["mtls_required"] == "refused" for k in without_mtls)
