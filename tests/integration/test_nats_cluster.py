"""A 3-node JetStream cluster of real nats-server processes: replicated streams, failover."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import stat
import time
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
import pytest
from nats.js.client import JetStreamContext
from natshelpers import keep_votes, setup_streams, vote_count

from cctf.bus.logstream import LogWriter, open_log
from cctf.bus.streams import (
    ensure_streams,
    votes_stream_name,
)
from cctf.crypto.keys import SigningKey
from cctf.devfabric.nats import NatsFabric
from cctf.translog.errors import LogFencedError
from cctf.translog.logstate import LogState

if TYPE_CHECKING:
    from conftest import NatsConnect


# ----------------------------------------------------------------------------------------------
# a 3-node cluster


@pytest.mark.cluster
async def test_cluster_creates_replicated_streams(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    fabric = nats_cluster
    assert len(fabric.servers) == 3 and fabric.stream_replicas == 3
    assert fabric.meta_leader() in {s.name for s in fabric.servers}
    admin = await nats_connect(fabric, "admin", max_reconnect_attempts=5)
    js = admin.jetstream()
    infos = await ensure_streams(
        js, fabric.regions, replicas=3, timeout_s=30, votes_per_region=True
    )
    assert len(infos) == 3 * len(fabric.regions) + 2  # votes, verdicts, heads; control, log
    assert "CCTF_CONTROL" in infos and "CCTF_LOG" in infos
    for name in infos:
        info = await js.stream_info(name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2

    await keep_votes(js, "ap-south")
    agent = await nats_connect(fabric, "agent-ap-south", max_reconnect_attempts=5)
    headers = {"Nats-Msg-Id": "dup-1"}
    first = await agent.jetstream().publish("cctf.v1.vote.ap-south.a1", b"x", headers=headers)
    again = await agent.jetstream().publish("cctf.v1.vote.ap-south.a1", b"x", headers=dict(headers))
    assert again.duplicate is True and again.seq == first.seq
    assert await vote_count(js, "ap-south") == 1

    # the durable log on R3: a retried record lands once, a stale second writer is fenced
    coord = await nats_connect(fabric, "coordinator", max_reconnect_attempts=5)
    key = SigningKey.generate()
    state, writer = await open_log(coord, "c1", key)
    record = state.append([b"a"])
    await writer.append(record)
    retry = LogWriter(coord, "c1", last_seq=0, next_index=0)
    await retry.append(record)  # the engine: duplicate / wrong last sequence; the bytes are ours
    assert retry.last_seq == writer.last_seq
    stale = LogWriter(coord, "c1", last_seq=0, next_index=0)
    with pytest.raises(LogFencedError):
        await stale.append(LogState(key).append([b"b"]))

    # no password (users' or the route password) ever reaches a log
    secrets_in_configs = set()
    for server in fabric.servers:
        secrets_in_configs |= set(
            re.findall(r'password: "([^"]+)"', server.config_path.read_text())
        )
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    assert {u.password for u in fabric.users.values()} < secrets_in_configs  # + route password
    logs = "".join(s.log_path.read_text() for s in fabric.servers)
    assert "Route connection created" in logs
    leaked = [p for p in secrets_in_configs if p in logs]
    assert not leaked, "a password appears in a nats-server log"


async def _publish_retrying(js: JetStreamContext, subject: str, seq: int, deadline: float) -> None:
    while True:
        try:
            await js.publish(
                subject, str(seq).encode(), headers={"Nats-Msg-Id": f"m-{seq}"}, timeout=1.0
            )
            return
        except nats.errors.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _consume_until(
    psub: JetStreamContext.PullSubscription, want: set[int], deadline: float
) -> set[int]:
    got: set[int] = set()
    while not want <= got:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer stalled: missing {sorted(want - got)}")
        try:
            msgs = await psub.fetch(50, timeout=1.0)
        except nats.errors.Error:
            await asyncio.sleep(0.05)
            continue
        for msg in msgs:
            got.add(int(msg.data))
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
    return got


@pytest.mark.cluster
@pytest.mark.slow
async def test_failover_when_a_node_is_killed(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    fabric = nats_cluster
    failover = {"max_reconnect_attempts": 30, "reconnect_time_wait": 0.1}
    admin = await nats_connect(fabric, "admin", **failover)
    ajs = admin.jetstream()
    await setup_streams(ajs, fabric.regions, replicas=3)
    stream = votes_stream_name("us-east")

    # the victim is the stream leader, and both clients sit on it first: the stream needs a new
    # leader and both connections must move to the surviving nodes
    leader = (await ajs.stream_info(stream)).cluster
    assert leader is not None and leader.leader
    victim = fabric.server(leader.leader)
    urls = [victim.client_url] + [s.client_url for s in fabric.servers if s is not victim]
    publisher = await nats_connect(
        fabric, "agent-us-east", servers=urls, dont_randomize=True, **failover
    )
    consumer = await nats_connect(
        fabric, "coordinator", servers=urls, dont_randomize=True, **failover
    )
    assert publisher.connected_url is not None
    assert publisher.connected_url.port == victim.port
    pjs = publisher.jetstream()
    psub = await consumer.jetstream().pull_subscribe(
        "cctf.v1.vote.us-east.>", durable="failover", stream=stream
    )

    deadline = time.monotonic() + 30
    for seq in range(20):
        await _publish_retrying(pjs, "cctf.v1.vote.us-east.a1", seq, deadline)
    assert await _consume_until(psub, set(range(20)), deadline) == set(range(20))

    killed_at = time.monotonic()
    assert victim.kill() == -signal.SIGKILL
    assert not victim.running

    deadline = time.monotonic() + 40
    for seq in range(20, 40):
        await _publish_retrying(pjs, "cctf.v1.vote.us-east.a1", seq, deadline)
    got = await _consume_until(psub, set(range(20, 40)), deadline)
    assert set(range(20, 40)) <= got
    recovery_s = time.monotonic() - killed_at

    assert publisher.connected_url is not None and publisher.connected_url.port != victim.port
    assert consumer.connected_url is not None and consumer.connected_url.port != victim.port
    info = await ajs.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader != victim.name
    # retried publishes were deduplicated: exactly 40 messages
    assert info.state.last_seq == 40
    assert recovery_s < 40

    # the killed node comes back on the same ports and catches up (its /healthz turns ok only
    # once its streams are current)
    victim.start(timeout_s=30)
    deadline = time.monotonic() + 20
    while True:
        info = await ajs.stream_info(stream)
        assert info.cluster is not None
        peers = {r.name: r.current for r in info.cluster.replicas or []}
        if peers.get(victim.name) is True or info.cluster.leader == victim.name:
            break
        assert time.monotonic() < deadline, f"{victim.name} did not catch up: {peers}"
        await asyncio.sleep(0.2)
