"""The DNSSEC path end to end over a real nats-server: three resolver agents (one per region), each
validating a dnspython-signed zone served by its own chaos DNS server up to the zone's DS trust
anchor; the real coordinator tallies their votes and signs verdicts; the client fetches and verifies
them. A secure quorum gives a TRUSTED verdict stating ``secure`` (in ``cctf check --json`` too); one
tampered server is outvoted; a tampered (bad signature) or expired quorum is bogus: never TRUSTED,
DISPUTED (not UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from wirefactories import make_world

from cctf.agents.canonical import Transport
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.dnssec import TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.resolver import ResolverAgent
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.messages import DnssecState, Outcome, Verdict
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.signing import signed_demo_zone
from cctf.client.present import verdict_line, verdict_to_json
from cctf.client.sdk import NoVerdict, TrustClient, VerdictRejected
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.devfabric.nats import NatsFabric

REGIONS = ("us-east", "us-west", "eu-west")
ROUND_MS = 1000
NAME = "www.demo.test."

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclass
class Fabric:
    dns: list[FaultyDnsServer]
    trust: TrustClient


@pytest_asyncio.fixture
async def fabric(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path
) -> AsyncIterator[Fabric]:
    world = make_world(REGIONS, start_ms=time.time_ns() // 1_000_000)
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)
    signed = signed_demo_zone()
    anchors = TrustAnchors.parse([signed.trust_anchor])
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for _ in REGIONS:
            server = FaultyDnsServer(signed.zone, signed=signed)
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
                names=[(NAME, "A")],
                verdict_regions=[REGIONS[0]],
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
        agents = []
        for region, server in zip(REGIONS, servers, strict=True):
            me = world.agent(region)
            nc = await nats_connect(nats_single, f"agent-{region}", max_reconnect_attempts=-1)
            agents.append(
                ResolverAgent(
                    agent=me.principal,
                    region=region,
                    key=me.key,
                    resolvers=[ResolverSpec("r1", "127.0.0.1", server.port, Transport.UDP)],
                    names=[(NAME, "A")],
                    nc=nc,
                    round_ms=ROUND_MS,
                    query_deadline_ms=600,
                    dnssec=ChainValidator(anchors),
                )
            )
        tasks = [asyncio.create_task(a.run()) for a in agents]
        client_nc = await nats_connect(nats_single, "client")
        trust = TrustClient(client_nc, world.trust, REGIONS[0], clock=SYSTEM_CLOCK)
        try:
            yield Fabric(servers, trust)
        finally:
            for a in agents:
                a.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def _verdict_after(fabric: Fabric, after_ms: int) -> Verdict:
    """The first verdict of a round that started after ``after_ms`` (bounded, generous wait)."""
    first_round = after_ms // ROUND_MS + 1
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(NoVerdict, VerdictRejected):
            verdict = await fabric.trust.check(NAME)
            if verdict.round >= first_round:
                return verdict
        assert time.monotonic() < deadline, f"no verdict of round {first_round} yet"
        await asyncio.sleep(0.2)


def _faults(fabric: Fabric, *faults: Faults) -> int:
    for server, fault in zip(fabric.dns, faults, strict=True):
        server.set_faults(fault)
    return time.time_ns() // 1_000_000


async def test_secure_quorum_outvoted_tamper_and_bogus_quorum(fabric: Fabric) -> None:
    ok = Faults()
    verdict = await _verdict_after(fabric, _faults(fabric, ok, ok, ok))
    assert (verdict.outcome, verdict.dnssec) == (Outcome.TRUSTED, DnssecState.SECURE)
    assert verdict.answer == ("www.demo.test. A 192.0.2.10",)
    shown = verdict_to_json(verdict)
    assert shown["dnssec"] == "secure" and "dnssec=secure" in verdict_line(verdict)

    tampered = Faults(dnssec="tampered")
    verdict = await _verdict_after(fabric, _faults(fabric, tampered, ok, ok))
    assert (verdict.outcome, verdict.dnssec) == (Outcome.TRUSTED, DnssecState.SECURE)
    assert verdict.answer == ("www.demo.test. A 192.0.2.10",)  # the tampered region is outvoted

    for bad in (tampered, Faults(dnssec="expired")):
        verdict = await _verdict_after(fabric, _faults(fabric, bad, bad, ok))
        assert verdict.outcome is Outcome.DISPUTED  # never TRUSTED, and not UNAVAILABLE
        assert verdict.dnssec is DnssecState.INDETERMINATE and verdict.answer == ()
        assert verdict_to_json(verdict)["dnssec"] == "indeterminate"
