"""Split views of a SPIFFE bundle endpoint with the REAL fabric: five resolver agents (one per region)
fetch the local identity fabric's bundle endpoint (one view per region) every round and publish
signed evidence to a real nats-server; the real coordinator tallies it (3 of 5) and publishes signed
identity verdicts; a TrustClient fetches and verifies them.

* one region is shown another CA's bundle (split view): outvoted, the verdict is TRUSTED with the
  genuine bundle's digest, never the rogue one;
* three different views (genuine in two regions, the rogue bundle in two, a third bundle in one):
  DISPUTED, never TRUSTED.

Faults are set before the agents' first fetch (an agent that already holds a bundle refuses a
different one under the same sequence itself: that is the federation state's rule, tested apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from wirefactories import World, make_world

from cctf.agents.canonical import Transport
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.resolver import ResolverAgent
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.evidence import IdentityVerdict
from cctf.bus_schemas.messages import Outcome, VoterState
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.zone import demo_zone
from cctf.client.sdk import NoVerdict, TrustClient
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.devfabric.identity import IdentityFabric
from cctf.devfabric.identity_pki import encode_json
from cctf.devfabric.nats import NatsFabric
from cctf.identity.bundle import parse_bundle

REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
ROUND_MS = 1000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass
class Run:
    world: World
    identity: IdentityFabric
    trust: TrustClient
    coordinator: Coordinator

    @property
    def domain(self) -> str:
        return self.identity.trust_domain.name

    def digest_of(self, doc: dict[str, Any]) -> bytes:
        return parse_bundle(self.domain, encode_json(doc)).digest

    async def verdicts(
        self, done: Callable[[list[IdentityVerdict]], bool], timeout: float = 60.0
    ) -> list[IdentityVerdict]:
        """The bundle verdicts of successive rounds (one per round seen) until ``done`` holds."""
        seen: dict[int, IdentityVerdict] = {}
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(NoVerdict):
                v = await self.trust.identity_verdict("bundle", self.domain)
                seen.setdefault(v.round, v)
            got = [seen[r] for r in sorted(seen)]
            if got and done(got):
                return got
            assert time.monotonic() < deadline, f"verdicts so far: {[g.outcome for g in got]}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, nats: NatsFabric, nats_connect: Any, faults: Callable[[IdentityFabric], None]
) -> AsyncIterator[Run]:
    world = make_world(REGIONS, start_ms=time.time_ns() // 1_000_000)
    admin = await nats_connect(nats, "admin")
    await ensure_streams(admin.jetstream(), list(REGIONS), 1)
    async with contextlib.AsyncExitStack() as stack:
        identity = await stack.enter_async_context(
            IdentityFabric(tmp_path / "idf", regions=REGIONS, refresh_hint_s=1)
        )
        faults(identity)
        dns = FaultyDnsServer(demo_zone(), "127.0.0.1", 0)
        await dns.start()
        stack.push_async_callback(dns.stop)
        names = [(w.spec.dns_name, "A") for w in identity.workloads.values()]
        coord_nc = await nats_connect(nats, "coordinator", max_reconnect_attempts=-1)
        coordinator = Coordinator(
            CoordinatorConfig(
                coordinator=world.coordinator.principal,
                region=REGIONS[0],
                rule=RuleConfig(k=3, n=5),
                electorate=[f"{world.agent(r).principal}/r1" for r in REGIONS],
                names=names,
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
        for region in REGIONS:
            me = world.agent(region)
            targets = identity.targets(region)
            domains = [msgspec.structs.replace(t, refresh_ms=1000) for t in targets.trust_domains]
            nc = await nats_connect(nats, f"agent-{region}", max_reconnect_attempts=-1)
            agents.append(
                ResolverAgent(
                    agent=me.principal,
                    region=region,
                    key=me.key,
                    resolvers=[ResolverSpec("r1", "127.0.0.1", dns.port, Transport.UDP)],
                    names=names,
                    nc=nc,
                    round_ms=ROUND_MS,
                    query_deadline_ms=600,
                    identity=msgspec.structs.replace(targets, trust_domains=domains),
                )
            )
        tasks = [asyncio.create_task(a.run()) for a in agents]
        client_nc = await nats_connect(nats, "client")
        trust = TrustClient(client_nc, world.trust, REGIONS[0], clock=SYSTEM_CLOCK)
        try:
            yield Run(world, identity, trust, coordinator)
        finally:
            for a in agents:
                a.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def test_one_region_shown_another_bundle_is_outvoted(
    tmp_path: Path, nats_single: NatsFabric, nats_connect: Any
) -> None:
    async with running(
        tmp_path, nats_single, nats_connect, lambda f: f.bundle.tamper(view="us-east")
    ) as run:
        genuine = run.digest_of(run.identity.trust_domain.document())
        rogue = run.digest_of(run.identity.trust_domain.rogue_document())

        def us_east_counted(vs: list[IdentityVerdict]) -> bool:
            # positive control: a round where the tampered region's vote was counted (not late)
            return any(
                r.voter == "agent-us-east" and r.state is VoterState.DISAGREE
                for v in vs
                for r in v.voters
            )

        verdicts = await run.verdicts(lambda vs: len(vs) >= 2 and us_east_counted(vs))
        for v in verdicts:
            assert v.outcome is Outcome.TRUSTED, v
            assert v.facts.key_digest == genuine != rogue
        assert run.coordinator.stats().rejected == {}


async def test_three_different_views_are_disputed_never_trusted(
    tmp_path: Path, nats_single: NatsFabric, nats_connect: Any
) -> None:
    def three_views(f: IdentityFabric) -> None:
        f.bundle.tamper(view="us-east")
        f.bundle.tamper(view="us-west")  # the same rogue bundle: a group of two
        f.bundle.serve(
            f.trust_domain.document(sequence=f.trust_domain.sequence + 7), view="eu-west"
        )

    async with running(tmp_path, nats_single, nats_connect, three_views) as run:
        verdicts = await run.verdicts(
            lambda vs: sum(v.outcome is Outcome.DISPUTED for v in vs) >= 2
        )
        assert all(v.outcome is not Outcome.TRUSTED for v in verdicts), verdicts
        disputed = [v for v in verdicts if v.outcome is Outcome.DISPUTED]
        for v in disputed:
            assert (v.facts_digest, v.facts.key_digest) == (b"", b"")
            assert all(r.state is not VoterState.AGREE for r in v.voters)


async def test_empty_bundles_never_count_and_are_not_unavailable(
    tmp_path: Path, nats_single: NatsFabric, nats_connect: Any
) -> None:
    def empty_in_three(f: IdentityFabric) -> None:
        for region in ("us-east", "us-west", "eu-west"):
            f.bundle.empty(view=region)  # those agents refuse it: invalid (empty_bundle)

    async with running(tmp_path, nats_single, nats_connect, empty_in_three) as run:
        verdicts = await run.verdicts(
            lambda vs: sum(v.outcome is Outcome.DISPUTED for v in vs) >= 2
        )
        assert all(v.outcome is Outcome.DISPUTED for v in verdicts), verdicts
        # a DISPUTED decision needs best + pending < 3: the three refusals are always counted
        for v in verdicts:
            records = {r.voter: (r.state, r.answer_digest) for r in v.voters}
            for region in ("us-east", "us-west", "eu-west"):
                assert records[f"agent-{region}"] == (VoterState.DISAGREE, b""), records
