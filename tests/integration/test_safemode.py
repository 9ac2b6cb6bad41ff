"""Safe mode end to end: real nats-server, the real coordinator, five chaos DNS servers (one per
resolver of the electorate), signed ballots built from what those servers answer, and verified
announcements read back through the client user.

* With automatic safe mode (hold N = 3 rounds): a one-round poison flip by 3 of 5 resolvers (a
  quorum!) enters safe mode and is never TRUSTED; a legitimate change of the zone becomes TRUSTED
  exactly on its third round; the scope leaves after M quiet rounds; every enter/leave is a signed
  announcement a client verifies.
* Operator commands: only a command signed by an ``operator`` key is acted on (one signed by another
  trusted key is refused and changes nothing), and only ``admin`` may publish one at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import pytest
import pytest_asyncio
from chaosclient import FORGED, addresses, udp
from nats.aio.client import Client
from nats.aio.msg import Msg
from wirefactories import (
    START_MS,
    Identity,
    make_ballot,
    make_identity,
    make_trust,
    make_vote,
    make_world,
    seal_ballot,
)

from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.control import (
    Action,
    SafeModeAnnouncement,
    SafeModeCause,
    SafeModeCommand,
    SafeModeState,
)
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import MessageType, Outcome, Verdict, VoteStatus, encode
from cctf.bus_schemas.subjects import operator_subject
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.zone import demo_zone
from cctf.client.safemode import SafeModeReader
from cctf.client.sdk import TrustClient
from cctf.client.verify import VerdictVerifier
from cctf.clock import FakeClock
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric
from cctf.policy.config import PolicyConfig

EAST, WEST = "us-east", "eu-west"
RESOLVERS = ((EAST, "r1"), (EAST, "r2"), (EAST, "r3"), (WEST, "r1"), (WEST, "r2"))
ELECTORATE = [f"agent-{r}/{res}" for r, res in RESOLVERS]
NAME = "www.demo.test."
HONEST = "192.0.2.10"
CHANGED = "192.0.2.99"  # the zone's new, legitimate answer
HOLD, QUIET = 3, 5


def _policy() -> SuitePolicy:
    return SuitePolicy()


async def _until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Fabric:
    fabric: NatsFabric
    clock: FakeClock
    admin: Client
    agents: dict[str, Identity]
    coord: Identity
    operator: Identity
    connect: Any
    dns: dict[tuple[str, str], FaultyDnsServer]
    verdicts: list[Verdict] = field(default_factory=list)
    coordinator: Coordinator | None = None
    agent_nc: dict[str, Client] = field(default_factory=dict)

    @property
    def trust(self) -> Any:
        return make_trust(*self.agents.values(), self.coord, self.operator)

    async def start(self, **policy: Any) -> Coordinator:
        nc = await self.connect(self.fabric, "coordinator", max_reconnect_attempts=-1)
        config = CoordinatorConfig(
            coordinator=self.coord.principal,
            region=EAST,
            rule=RuleConfig(k=3, n=5),
            electorate=ELECTORATE,
            names=[(NAME, "A")],
            verdict_regions=[EAST, WEST],
            fetch_timeout_ms=100,
            tick_ms=20,
            publish_timeout_ms=1000,
            max_backoff_ms=300,
            safe_mode=PolicyConfig(hold_rounds=HOLD, quiet_rounds=QUIET, **policy),
            signing="per_verdict",  # verdicts opened with their own signature
        )
        self.coordinator = Coordinator(
            config, nc, key=self.coord.key, trust=self.trust, clock=self.clock
        )
        await self.coordinator.start()
        return self.coordinator

    async def round(self, r: int, *, deadline: bool = False) -> Verdict:
        """One round: ask every chaos server, publish each agent's signed ballot of what its
        resolvers said, and return the verdict (published in us-east). ``deadline``: the round
        cannot be decided early (timeouts), so move the clock past its deadline."""
        self.clock.set(r * 1000 + 100)
        ballots: dict[str, list[Any]] = {EAST: [], WEST: []}
        for (region, res), srv in self.dns.items():
            try:
                response: dns.message.Message | None = await udp(srv, NAME, timeout=0.3)
            except (TimeoutError, dns.exception.Timeout):
                response = None
            agent = self.agents[region].principal
            if response is None:
                vote = make_vote(
                    agent, region, r, qname=NAME, resolver_id=res, status=VoteStatus.TIMEOUT
                )
            else:
                ttl = min(rr.ttl for rr in response.answer) if response.answer else 0
                vote = make_vote(
                    agent,
                    region,
                    r,
                    qname=NAME,
                    resolver_id=res,
                    answer=addresses(response),
                    ttl=ttl,
                )
            ballots[region].append(vote)
        before = len(self.verdicts)
        accepted = self.coordinator.stats().ballots_accepted if self.coordinator else 0
        for region, votes in ballots.items():
            agent = self.agents[region]
            data = seal_ballot(
                agent,
                make_ballot(agent.principal, region, r, votes=votes),
                now_ms=self.clock.now_ms(),
            )
            nc = self.agent_nc.get(region) or await self.connect(self.fabric, f"agent-{region}")
            self.agent_nc[region] = nc
            await nc.jetstream().publish(agent.subject, data, timeout=5.0)
        if deadline:
            if self.coordinator is not None:  # moved past the deadline before the ballots are
                # tallied, the round would expire empty (no verdict) and its ballots come too late
                c = self.coordinator
                await _until(
                    lambda: c.stats().ballots_accepted >= accepted + len(ballots),
                    what=f"ballots of round {r} accepted",
                )
            self.clock.set((r + 1) * 1000 + 1600)  # the default grace is 1.5 s
        await _until(
            lambda: any(v.round == r for v in self.verdicts[before:]), what=f"verdict of round {r}"
        )
        return next(v for v in self.verdicts[before:] if v.round == r)

    def poison(self, servers: Sequence[tuple[str, str]], address: str | None) -> None:
        for key in servers:
            self.dns[key].set_faults(Faults(poison=address))

    def blackhole(self, servers: Sequence[tuple[str, str]], on: bool) -> None:
        for key in servers:
            self.dns[key].set_faults(Faults(blackhole=on))


@pytest_asyncio.fixture
async def fab(nats_single: NatsFabric, nats_connect: Any) -> AsyncIterator[Fabric]:
    world = make_world((EAST, WEST))
    operator = make_identity("ops-alice", EAST, role=Role.OPERATOR)
    admin = await nats_connect(nats_single, "admin", max_reconnect_attempts=-1)
    await ensure_streams(admin.jetstream(), [EAST, WEST], nats_single.stream_replicas)
    servers = {key: FaultyDnsServer(demo_zone()) for key in RESOLVERS}
    for srv in servers.values():
        await srv.start()
    f = Fabric(
        nats_single,
        world.clock,
        admin,
        dict(world.agents),
        world.coordinator,
        operator,
        nats_connect,
        servers,
    )
    verifier = VerdictVerifier(f.trust, f.clock, _policy(), region=EAST)

    async def on_verdict(msg: Msg) -> None:
        f.verdicts.append(verifier.verify(msg.data, msg.subject))

    await admin.subscribe(f"cctf.v1.verdict.{EAST}.>", cb=on_verdict)
    try:
        yield f
    finally:
        if f.coordinator is not None:
            await f.coordinator.stop()
        for srv in servers.values():
            await srv.stop()


async def _announcements(
    f: Fabric, region: str, out: list[SafeModeAnnouncement]
) -> asyncio.Task[None]:
    client = await f.connect(f.fabric, "client")
    reader = SafeModeReader(client, f.trust, f.clock, _policy())

    async def run() -> None:
        async for a in reader.watch(region, deliver="all"):
            out.append(a)

    return asyncio.create_task(run())


def _answer(v: Verdict) -> list[str] | None:
    return list(v.answer) if v.outcome is Outcome.TRUSTED else None


async def test_hysteresis_on_a_poison_flip_and_a_legitimate_change(fab: Fabric) -> None:
    coordinator = await fab.start(auto_safe_mode=True)
    seen: list[SafeModeAnnouncement] = []
    watcher = await _announcements(fab, EAST, seen)
    try:
        await _until(lambda: any(a.cause is SafeModeCause.START for a in seen), what="start status")
        r0 = START_MS // 1000 + 1
        history: list[tuple[int, list[str] | None]] = []
        for i in range(8):  # a stable name: the detector's baseline
            v = await fab.round(r0 + i)
            history.append((v.round, _answer(v)))
        assert all(a == [HONEST] for _, a in history)
        r = r0 + 8
        east = [k for k in RESOLVERS if k[0] == EAST]
        fab.poison(east, FORGED)  # 3 of 5 resolvers, a quorum, forge the answer for one round
        flip = await fab.round(r)
        assert flip.outcome is Outcome.UNAVAILABLE and not flip.answer  # held: never TRUSTED
        await _until(lambda: any(a.state is SafeModeState.ENTERED for a in seen), what="entered")
        entered = next(a for a in seen if a.state is SafeModeState.ENTERED)
        assert (entered.cause, entered.rule, entered.scope) == (
            SafeModeCause.ALARM,
            "answer_change",
            NAME,
        )
        assert NAME in entered.active and "z " in entered.reason and "baseline" in entered.reason
        sdk = TrustClient(await fab.connect(fab.fabric, "client"), fab.trust, EAST, fab.clock)
        status = await sdk.safe_mode()  # the SDK: the region's last announcement, verified
        assert status.covers(NAME) and not status.covers("other.demo.test.")
        fab.poison(east, None)
        back = await fab.round(r + 1)
        assert _answer(back) == [HONEST]  # the previous answer is trusted again at once
        fab.poison(list(RESOLVERS), CHANGED)  # the zone changes for real, on every resolver
        changed = [await fab.round(r + 2 + i) for i in range(HOLD)]
        assert [v.outcome for v in changed] == [Outcome.UNAVAILABLE] * (HOLD - 1) + [
            Outcome.TRUSTED
        ]
        assert _answer(changed[-1]) == [CHANGED]  # trusted exactly on its N-th round
        assert await fab.round(r + 2 + HOLD) and _answer(fab.verdicts[-1]) == [CHANGED]
        stats = coordinator.safe_mode.stats
        assert (
            stats.held == HOLD and stats.released == 1 and stats.alarms.get("answer_change", 0) >= 1
        )
        # quiet for M rounds after the last alarm (the flip's round): both regions' scopes left
        assert stats.left == 2 and coordinator.safe_mode.active(EAST) == []
        await _until(lambda: any(a.state is SafeModeState.LEFT for a in seen), what="left")
        left = next(a for a in seen if a.state is SafeModeState.LEFT)
        assert left.cause is SafeModeCause.QUIET and left.active == [] and left.scope == NAME
        assert left.round - entered.round >= QUIET
        assert not any(_answer(v) == [FORGED] for v in fab.verdicts)
        assert [a.seq for a in seen] == sorted(a.seq for a in seen)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _command(
    f: Fabric, signer: Identity, action: Action, scope: str = "", operator: str | None = None
) -> bytes:
    now = f.clock.now_ms()
    cmd = SafeModeCommand(
        operator=operator or signer.principal,
        region=EAST,
        scope=scope,
        action=action,
        reason="planned maintenance",
        issued_ms=now,
    )
    return seal(
        signer.key,
        operator_subject(EAST),
        MessageType.SAFEMODE_COMMAND,
        encode(cmd),
        now_ms=now,
        lifetime_ms=60_000,
    )


async def test_operator_commands_are_authenticated(fab: Fabric) -> None:
    coordinator = await fab.start()
    seen: list[SafeModeAnnouncement] = []
    watcher = await _announcements(fab, EAST, seen)
    js = fab.admin.jetstream()
    try:
        await _until(lambda: bool(seen), what="start status")
        r0 = START_MS // 1000 + 1
        assert _answer(await fab.round(r0)) == [HONEST]
        # signed by a trusted key of another role (the coordinator's own, an agent's): refused
        await js.publish(operator_subject(EAST), _command(fab, fab.coord, Action.ENTER))
        await js.publish(operator_subject(EAST), _command(fab, fab.agents[EAST], Action.ENTER))
        stats = coordinator.safe_mode.stats
        await _until(lambda: stats.commands.get("unknown_key", 0) == 2, what="refusals")
        # no other user may even publish a command
        for user in ("client", "coordinator", f"agent-{EAST}"):
            nc = await fab.connect(fab.fabric, user)
            with pytest.raises(Exception):  # noqa: B017 - permission violation or no responders
                await nc.jetstream().publish(
                    operator_subject(EAST), _command(fab, fab.operator, Action.ENTER), timeout=1.0
                )
        assert coordinator.safe_mode.active(EAST) == [] and stats.commands.get("accepted", 0) == 0
        # the operator enters safe mode for the whole region: the changed answer is held
        await js.publish(operator_subject(EAST), _command(fab, fab.operator, Action.ENTER))
        await _until(lambda: any(a.state is SafeModeState.ENTERED for a in seen), what="entered")
        entered = next(a for a in seen if a.state is SafeModeState.ENTERED)
        assert entered.cause is SafeModeCause.OPERATOR and entered.active == [""]
        assert "ops-alice" in entered.reason
        replay = _command(fab, fab.operator, Action.LEAVE)
        fab.poison(list(RESOLVERS), CHANGED)
        held = [await fab.round(r0 + 1 + i) for i in range(HOLD)]
        assert [v.outcome for v in held][: HOLD - 1] == [Outcome.UNAVAILABLE] * (HOLD - 1)
        assert _answer(held[-1]) == [CHANGED]
        # manual scopes never leave by themselves; the operator leaves; a replay is refused
        for i in range(QUIET + 1):
            await fab.round(r0 + 1 + HOLD + i)
        assert coordinator.safe_mode.active(EAST) == [""]
        await js.publish(operator_subject(EAST), replay)
        await _until(lambda: any(a.state is SafeModeState.LEFT for a in seen), what="left")
        await js.publish(operator_subject(EAST), replay)
        await _until(lambda: stats.commands.get("replay", 0) == 1, what="replay refused")
        assert coordinator.safe_mode.active(EAST) == [] and stats.commands["accepted"] == 2
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_lkg_use_raises_an_alarm_and_guards_the_name(fab: Fabric) -> None:
    coordinator = await fab.start(auto_safe_mode=True)
    r0 = START_MS // 1000 + 1
    for i in range(3):
        assert _answer(await fab.round(r0 + i)) == [HONEST]
    east = [k for k in RESOLVERS if k[0] == EAST]
    fab.blackhole(east, True)  # 3 of 5 time out: UNAVAILABLE from timeouts, served from LKG
    outage = await fab.round(r0 + 3, deadline=True)
    assert outage.outcome is Outcome.TRUSTED and outage.is_lkg and _answer(outage) == [HONEST]
    stats = coordinator.safe_mode.stats
    assert stats.alarms.get("lkg_use") == 1 and coordinator.safe_mode.active(EAST) == [NAME]
    fab.blackhole(east, False)
    fab.poison(list(RESOLVERS), CHANGED)  # back with another answer: held, as the name is guarded
    r = r0 + 6  # the clock passed round r0 + 4's start
    held = await fab.round(r)
    assert held.outcome is Outcome.UNAVAILABLE and stats.held == 1


async def test_safe_mode_state_survives_a_coordinator_restart(fab: Fabric) -> None:
    """The scopes are written through to the state bucket (``_policy.<coordinator>``, HMAC'd with
    the coordinator key) and read back at start: an operator's safe mode survives a restart and the
    start announcement lists it; a record not written with the coordinator's key is refused."""
    from cctf.bus.kv import LKG_BUCKET, Bucket
    from cctf.coordinator.policystate import seal_state, state_key
    from cctf.policy.model import Scope

    coordinator = await fab.start()
    seen: list[SafeModeAnnouncement] = []
    watcher = await _announcements(fab, EAST, seen)
    js = fab.admin.jetstream()
    try:
        await js.publish(operator_subject(EAST), _command(fab, fab.operator, Action.ENTER, NAME))
        store = coordinator.safe_mode.store
        assert store is not None
        await _until(lambda: coordinator.safe_mode.active(EAST) == [NAME], what="entered")
        await _until(lambda: store.saves >= 1, what="state stored")
        await coordinator.stop()
        fab.clock.advance(1000)  # (a fake clock: the new process's announcements come later)

        restarted = await fab.start()
        assert restarted.safe_mode.active(EAST) == [NAME]  # read back before the first round
        assert restarted.safe_mode.store is not None and restarted.safe_mode.store.loaded == 1
        assert restarted.safe_mode.stage.engine.is_manual(Scope(EAST, NAME))
        await _until(
            lambda: any(a.cause is SafeModeCause.START and a.active == [NAME] for a in seen),
            what="the start announcement listing the restored scope",
        )
        await restarted.stop()

        # a forged record (another key's secret) under the coordinator's key: refused, fail safe
        bucket = await Bucket.bind(js, LKG_BUCKET)
        forged = seal_state(
            b"\x00" * 32, fab.coord.principal, 5, 0, [(Scope(EAST), True, 1, 1, "x")]
        )
        await bucket.put(state_key(fab.coord.principal), forged)
        fab.clock.advance(1000)
        again = await fab.start()
        assert again.safe_mode.active(EAST) == []
        assert again.safe_mode.store is not None and again.safe_mode.store.errors == 1
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
