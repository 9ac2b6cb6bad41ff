"""The local fabric of a chaos run (adapter): NATS, five fault-injecting DNS servers with their
control channels, one coordinator, five agents and a verifying subscriber.

Built from the demo's building blocks (:mod:`cctf.devfabric.demo`: keys and trust, ids;
:class:`~cctf.devfabric.nats.NatsFabric`), without the identity fabric: the chaos suite measures the
DNS trust path. The fabric's processes and sockets are owned by the ``AsyncExitStack`` it is given.
Only the chaos CLI imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rdataclass
import dns.rdatatype
import dns.zone

from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.dnssec import TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.resolver import ResolverAgent
from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.messages import Transport
from cctf.chaos.control import HostPort, ResolverEndpoint
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.netns import Partition
from cctf.chaos.responder import ZoneResponder
from cctf.chaos.scenarios.catalog import Scenario
from cctf.chaos.scenarios.score import Answer, answer_of
from cctf.chaos.signing import SignedZone, sign
from cctf.chaos.zone import DEMO_NAMES, DEMO_ORIGIN, demo_zone
from cctf.client.sdk import TrustClient
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import TrustConfig
from cctf.devfabric.demo import (
    COORDINATOR_ID,
    VERDICT_REGION,
    agent_id,
    make_keys_and_trust,
    resolver_id,
)
from cctf.devfabric.nats import NatsFabric
from cctf.policy.config import PolicyConfig
from cctf.util.deadline import stop_tasks
from cctf.util.files import write_secret_file

Progress = Callable[[str], None]


class SkewClock:
    """The wall clock plus a settable offset (the clock-skew scenario moves it)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


def zone_with(label: str | None = None, address: str | None = None) -> dns.zone.Zone:
    """The demo zone, with ``label``'s A record replaced by ``address`` (a legitimate change)."""
    zone = demo_zone()
    if label is not None and address is not None:
        name = dns.name.from_text(f"{label}.{DEMO_ORIGIN}")
        node = zone.find_node(name)
        node.delete_rdataset(dns.rdataclass.IN, dns.rdatatype.A)
        rds = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.A, create=True)
        rds.add(dns.rdata.from_text("IN", "A", address), 300)
    return zone


def a_answer(name: str, addresses: list[str]) -> Answer:
    """The canonical answer (wire-protocol.md 5.2) of an A RRset of ``name``."""
    return answer_of(f"{name.lower()} A {a}" for a in addresses)


def honest_answers(zone: dns.zone.Zone) -> dict[str, Answer]:
    """Per demo name, the A RRset the honest zone gives."""
    out: dict[str, Answer] = {}
    for name in DEMO_NAMES:
        rds = zone.get_rdataset(dns.name.from_text(name), dns.rdatatype.A)
        assert rds is not None
        out[name.lower()] = a_answer(name, [rd.to_text() for rd in rds])
    return out


@dataclass
class ChaosFabric:
    """Everything of one run; :meth:`start` builds it."""

    scenario: Scenario
    workdir: Path
    progress: Progress
    stack: contextlib.AsyncExitStack
    nats: NatsFabric | None = None
    admin: Any = None
    client: TrustClient | None = None
    trust: TrustConfig | None = None
    coord_key: SigningKey | None = None
    coordinator: Coordinator | None = None
    coord_nc: Any = None
    coord_clock: SkewClock = field(default_factory=SkewClock)
    agent_clocks: list[SkewClock] = field(default_factory=list)
    servers: list[FaultyDnsServer] = field(default_factory=list)
    endpoints: list[ResolverEndpoint] = field(default_factory=list)
    signed: SignedZone | None = None
    agent_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    agents: list[ResolverAgent] = field(default_factory=list)
    partition: Partition | None = None

    @property
    def regions(self) -> tuple[str, ...]:
        return DEFAULT_REGIONS

    async def start(self) -> None:
        sc = self.scenario
        agent_keys, self.coord_key, self.trust = make_keys_and_trust(
            self.workdir, self.regions, SuiteId.HYBRID
        )
        self.progress(f"starting NATS JetStream ({sc.nodes} node(s))")
        self.nats = await NatsFabric.astart(
            self.workdir / "nats", nodes=sc.nodes, regions=self.regions
        )
        self.stack.push_async_callback(self.nats.astop)
        self.admin = await self.nats.connect("admin", name="cctf-chaos-admin")
        self.stack.push_async_callback(self.admin.close)
        await ensure_streams(self.admin.jetstream(), self.regions, self.nats.stream_replicas)

        zone = zone_with()
        anchors: TrustAnchors | None = None
        if sc.dnssec:
            self.signed = sign(zone)
            zone = self.signed.zone
            anchors = TrustAnchors.parse(self.signed.trust_anchors)
        if sc.partition is not None:
            self.partition = Partition(os.getpid())
            await asyncio.to_thread(self.partition.create)
            self.stack.push_async_callback(self.partition.aclose)
        for i, _region in enumerate(self.regions):
            host = (
                self.partition.host_addr
                if self.partition is not None and i == sc.partition
                else "127.0.0.1"
            )
            server = FaultyDnsServer(zone, host=host, control=True, signed=self.signed)
            await server.start()
            self.stack.push_async_callback(server.stop)
            self.servers.append(server)
            assert server.control_port is not None and server.control_token is not None
            self.endpoints.append(
                ResolverEndpoint(
                    dns=HostPort(host, server.port),
                    control=HostPort("127.0.0.1", server.control_port),
                    token=server.control_token,
                )
            )
        self.progress(
            f"5 DNS servers ({'DNSSEC-signed' if sc.dnssec else 'unsigned'} demo zone) "
            "with control channels"
        )
        # stopped before the NATS servers (the exit stack unwinds in reverse): a coordinator whose
        # server went away first stops against a reconnecting connection, and its reconnect loop
        # may outlive the run (it kept asyncio.run from returning when other runs came before)
        self.stack.push_async_callback(self.stop_coordinator)
        await self.start_coordinator()
        client_nc = await self.nats.connect("client", name="cctf-chaos-subscriber")
        self.stack.push_async_callback(client_nc.close)
        self.client = TrustClient(
            client_nc,
            self.trust,
            VERDICT_REGION,
            round_ms=sc.round_ms,
            max_lkg_staleness_ms=sc.lkg_cap_ms,
        )
        for i, region in enumerate(self.regions):
            clock = SkewClock()
            self.agent_clocks.append(clock)
            if i == sc.partition:
                await self._start_partitioned_agent(region, i)
                continue
            nc = await self.nats.connect(f"agent-{region}", name=agent_id(region))
            self.stack.push_async_callback(nc.close)
            agent = ResolverAgent(
                agent=agent_id(region),
                region=region,
                key=agent_keys[region],
                resolvers=[
                    ResolverSpec(
                        id=resolver_id(region),
                        address="127.0.0.1",
                        port=self.servers[i].port,
                        transport=Transport.UDP,
                    )
                ],
                names=[(n, "A") for n in DEMO_NAMES],
                nc=nc,
                clock=clock,
                round_ms=sc.round_ms,
                dnssec=ChainValidator(anchors) if anchors is not None else None,
            )
            self.agents.append(agent)
            self.stack.callback(agent.stop)
            self.agent_tasks.append(asyncio.create_task(agent.run()))
        self.stack.push_async_callback(self._stop_agents)
        self.progress(
            f"coordinator {sc.k}-of-5, 5 agents, {len(DEMO_NAMES)} names, round {sc.round_ms} ms"
        )

    async def _start_partitioned_agent(self, region: str, index: int) -> None:
        """``cctf agent run`` inside the namespace, through the relay to NATS."""
        assert self.partition is not None and self.nats is not None
        port = await self.partition.relay_to(int(self.nats.urls[0].rsplit(":", 1)[1]))
        user = self.nats.user(f"agent-{region}")
        config = {
            "agent": agent_id(region),
            "region": region,
            "key_file": str(self.workdir / "keys" / f"{agent_id(region)}.key.json"),
            "nats": {
                "user": user.name,
                "password": user.password,
                "urls": [f"nats://{self.partition.host_addr}:{port}"],
            },
            "resolvers": [
                {
                    "id": resolver_id(region),
                    "address": self.partition.host_addr,
                    "port": self.servers[index].port,
                    "transport": "udp",
                }
            ],
            "names": [[n, "A"] for n in DEMO_NAMES],
            "round_ms": self.scenario.round_ms,
            "dnssec": {
                "trust_anchors": list(self.signed.trust_anchors) if self.signed else [],
            },
        }
        path = self.workdir / f"agent-{region}.json"
        write_secret_file(path, json.dumps(config, indent=2) + "\n")
        await self.partition.start_agent(path, self.workdir / f"agent-{region}.log")
        self.progress(
            f"agent {agent_id(region)} in network namespace {self.partition.netns} "
            f"({self.partition.ns_addr})"
        )

    async def _stop_agents(self) -> None:
        await stop_tasks(self.agent_tasks, 5.0, what="chaos agent")

    def coordinator_config(self) -> CoordinatorConfig:
        sc = self.scenario
        return CoordinatorConfig(
            coordinator=COORDINATOR_ID,
            region=VERDICT_REGION,
            rule=RuleConfig(k=sc.k, n=len(self.regions)),
            electorate=[f"{agent_id(r)}/{resolver_id(r)}" for r in self.regions],
            names=[(n, "A") for n in DEMO_NAMES],
            verdict_regions=[VERDICT_REGION],
            round_ms=sc.round_ms,
            round_grace_ms=max(500, sc.round_ms // 2),
            lkg=LkgConfig(max_staleness_ms=sc.lkg_cap_ms),
            safe_mode=PolicyConfig(
                auto_safe_mode=True,
                hold_rounds=sc.hold_rounds,
                quiet_rounds=max(10, sc.hold_rounds),
            )
            if sc.safe_mode
            else PolicyConfig(),
        )

    async def start_coordinator(self) -> None:
        assert self.nats is not None
        nc = await self.nats.connect("coordinator", name=COORDINATOR_ID)
        coordinator = Coordinator(
            self.coordinator_config(),
            nc,
            key=self.coord_key,
            trust=self.trust,
            clock=self.coord_clock,
            owns_conn=True,
        )
        await coordinator.start()
        self.coordinator = coordinator
        self.coord_nc = nc

    async def crash_coordinator(self) -> None:
        """A crash, as near as in-process gets: its NATS connection drops first (no nak, no last
        flush of LKG state, nothing handed over), then its tasks are cancelled."""
        if self.coordinator is None:
            return
        with contextlib.suppress(Exception):
            await self.coord_nc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.coordinator.stop(), 10)
        self.coordinator = None

    async def stop_coordinator(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.stop()
            self.coordinator = None

    async def aclose(self) -> None:
        await self.stop_coordinator()

    def change_zone(self, label: str, address: str) -> None:
        """A legitimate change of the honest zone, on every server (re-signed with its keys)."""
        zone = zone_with(label, address)
        signed: SignedZone | None = None
        if self.signed is not None:
            signed = sign(zone, ksk=self.signed.ksk, zsk=self.signed.zsk)
            zone = signed.zone
        for server in self.servers:
            server.responder = ZoneResponder(zone, signed=signed)
