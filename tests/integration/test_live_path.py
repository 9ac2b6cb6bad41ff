"""The live path (design D1, issue #8 scope 2): with the vote stream's leader SIGKILLed, verdicts keep
arriving at a core-subscribed client within 2 s, and every acknowledged ballot is counted exactly once
or terminated with its reason.

A real 3-node cluster (R3 streams), the real coordinator on the system clock, an agent publishing the
way agents do (JetStream publish with a message id, the ack awaited in the background and retried
with the same bytes and id, never blocking the next ballot), and a subscriber connected as the
``client`` user with a core subscription on its region's verdicts (the cross-account stream import of
``cctf.bus.accounts.CLIENT_LIVE_SUBJECTS``). Without the live path the same kill stops verdicts for the
stream's leader election (4-9 s), so the gap assertion fails (``live: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from wirefactories import make_ballot, make_trust, make_vote, make_world, seal_ballot

from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams, verdict_stream_name, votes_stream_name
from cctf.bus_schemas.envelope import decode_envelope, verify_envelope
from cctf.bus_schemas.messages import MessageType, decode_verdict
from cctf.client.sdk import TrustClient
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

EAST = "us-east"
NAMES = [f"n{i}.example." for i in range(5)]
TICK_S = 0.2  # one ballot (one name) per tick: a verdict every 200 ms while healthy
GAP_LIMIT_S = 2.0  # the bound
RUN_BEFORE_S, RUN_AFTER_S = 3.0, 10.0  # the kill, then longer than a leader election (4-9 s)


async def test_verdicts_keep_flowing_when_the_vote_streams_leader_is_killed(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    fabric = nats_cluster
    world = make_world((EAST,))
    agent, coord = world.agents[EAST], world.coordinator
    fast = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1}
    admin = await nats_connect(fabric, "admin", **fast)
    await ensure_streams(admin.jetstream(), [EAST], fabric.stream_replicas)

    config = CoordinatorConfig(
        coordinator=coord.principal,
        region=EAST,
        rule=RuleConfig(k=2, n=3),
        electorate=[f"{agent.principal}/r{i}" for i in (1, 2, 3)],
        names=[(n, "A") for n in NAMES],
        verdict_regions=[EAST],
        fetch_timeout_ms=100,
        tick_ms=20,
        publish_timeout_ms=1000,
        max_backoff_ms=300,
    )
    coordinator = Coordinator(
        config,
        await nats_connect(fabric, "coordinator", **fast),
        key=coord.key,
        trust=make_trust(agent, coord),
    )

    arrivals: list[float] = []
    live_seen: set[tuple[str, int]] = set()

    async def on_verdict(msg: Msg) -> None:
        checked = verify_envelope(
            msg.data,
            msg.subject,
            expected_type=MessageType.VERDICT,
            role=Role.COORDINATOR,
            trust=make_trust(coord),
            policy=SuitePolicy(),
            now_ms=SYSTEM_CLOCK.now_ms(),
        )
        v = decode_verdict(checked.envelope.payload)
        if (v.qname, v.round) not in live_seen:  # a retried publish may come twice: one verdict
            live_seen.add((v.qname, v.round))
            arrivals.append(time.monotonic())

    client = await nats_connect(fabric, "client", **fast)
    await client.subscribe(f"cctf.v1.verdict.{EAST}.>", cb=on_verdict)
    await client.flush()
    agent_js = (await nats_connect(fabric, f"agent-{EAST}", **fast)).jetstream()

    # and a subscriber through the SDK: TrustClient.verdicts (live copy + ordered feed, merged)
    sdk = TrustClient(await nats_connect(fabric, "client", **fast), make_trust(coord), EAST)
    sdk_seen: list[tuple[float, tuple[str, int]]] = []

    async def consume() -> None:
        async for v in sdk.verdicts():
            sdk_seen.append((time.monotonic(), (v.qname, v.round)))

    consumer = asyncio.create_task(consume())

    acked: dict[str, tuple[str, int]] = {}  # msg id -> (name, round) of ballots the stream acked

    async def publish(data: bytes, msg_id: str, key: tuple[str, int]) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # the same bytes and id until acknowledged
            with contextlib.suppress(Exception):
                await agent_js.publish(agent.subject, data, timeout=1.0, headers={MSG_ID: msg_id})
                acked[msg_id] = key
                return
            await asyncio.sleep(0.1)

    await coordinator.start()
    publishing: list[asyncio.Task[None]] = []
    killed_at = 0.0
    victim = None
    try:
        start = time.monotonic()
        tick = 0
        while (now := time.monotonic()) < start + RUN_BEFORE_S + RUN_AFTER_S:
            if victim is None and now >= start + RUN_BEFORE_S:
                info = await admin.jetstream().stream_info(votes_stream_name(EAST))
                victim = fabric.server(info.cluster.leader)
                await asyncio.to_thread(victim.kill)  # SIGKILL
                killed_at = time.monotonic()
            now_ms = SYSTEM_CLOCK.now_ms()
            round_, name = now_ms // 1000, NAMES[tick % len(NAMES)]
            votes = [
                make_vote(agent.principal, EAST, round_, qname=name, resolver_id=f"r{i}")
                for i in (1, 2, 3)
            ]
            ballot = make_ballot(agent.principal, EAST, round_, votes=votes, issued_ms=now_ms)
            data = seal_ballot(agent, ballot, now_ms=now_ms)
            publishing.append(
                asyncio.create_task(publish(data, f"b{tick}", (name, round_)))  # never awaited
            )
            tick += 1
            await asyncio.sleep(TICK_S)
        assert victim is not None and not victim.running

        # the gap: from a second before the kill to the end of the run
        window = [t for t in arrivals if t >= killed_at - 1.0]
        gaps = [b - a for a, b in itertools.pairwise(window)]
        tail = time.monotonic() - window[-1] if window else float("inf")
        assert window and max([*gaps, tail]) <= GAP_LIMIT_S, (max(gaps, default=None), tail)
        sdk_window = [t for t, _k in sdk_seen if t >= killed_at - 1.0]
        sdk_gaps = [b - a for a, b in itertools.pairwise(sdk_window)]
        assert sdk_window and max(sdk_gaps) <= GAP_LIMIT_S, max(sdk_gaps, default=None)
        assert len({k for _t, k in sdk_seen}) == len(sdk_seen), "the SDK yielded a verdict twice"

        # accounting: every acknowledged ballot counted once, or terminated with its reason
        await asyncio.gather(*publishing)
        assert len(acked) == len(publishing), "a ballot was never acknowledged by the stream"
        deadline = time.monotonic() + 30
        while not await _drained(admin, config.durable_prefix):  # every durable copy settled
            assert time.monotonic() < deadline, coordinator.stats()
            await asyncio.sleep(0.2)
        st = coordinator.stats()
        assert st.ballots_accepted + sum(st.terminated.values()) == len(acked), st
        assert set(st.terminated) <= {"round", "hold_expired"}, st.terminated
        assert st.duplicates.get("durable", 0) >= st.live_ballots > 0, st  # both copies came
        stored = await _stored_verdicts(admin)
        missing = {k for k in acked.values() if k not in live_seen | stored}
        assert len(missing) <= sum(st.terminated.values()), (missing, st.terminated)
    finally:
        consumer.cancel()
        for task in publishing:
            task.cancel()
        await coordinator.stop()


async def _drained(admin: Any, durable: str) -> bool:
    info = await admin.jetstream().consumer_info(votes_stream_name(EAST), f"{durable}-{EAST}")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def _stored_verdicts(admin: Any) -> set[tuple[str, int]]:
    """Every (name, round) with a verdict in the region's verdict stream (the durable copies)."""
    js = admin.jetstream()
    stream = verdict_stream_name(EAST)
    last = (await js.stream_info(stream)).state.last_seq
    out: set[tuple[str, int]] = set()
    for seq in range(1, last + 1):
        with contextlib.suppress(Exception):
            msg = await js.get_msg(stream, seq)
            with contextlib.suppress(Exception):
                v = decode_verdict(_payload(msg.data))
                out.add((v.qname, v.round))
    return out


def _payload(data: bytes) -> bytes:
    return bytes(decode_envelope(data).payload)
