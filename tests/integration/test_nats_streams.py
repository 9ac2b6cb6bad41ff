"""Per-region vote streams against a real nats-server: the engine bounds each region on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import nats.js.errors
import pytest
from nats.js.api import AckPolicy
from nats.js.client import JetStreamContext

from cctf.bus.connect import connect
from cctf.bus.settle import not_settled
from cctf.bus.streams import (
    PUBACK_LIMIT_ERR_CODE,
    VOTES_MAX_BYTES,
    VOTES_MAX_MSG_SIZE,
    VOTES_MAX_MSGS_PER_SUBJECT,
    ensure_streams,
    votes_stream_name,
)
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect


async def _per_region(fabric: NatsFabric, nats_connect: NatsConnect) -> JetStreamContext:
    admin = await nats_connect(fabric, "admin")
    js = admin.jetstream()
    await ensure_streams(js, fabric.regions, replicas=1, timeout_s=10, votes_per_region=True)
    return js


async def _stored(js: JetStreamContext, region: str) -> int:
    return int((await js.stream_info(votes_stream_name(region))).state.messages)


async def test_interest_retention_without_a_consumer_acks_but_keeps_nothing(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await _per_region(nats_single, nats_connect)
    agent = (await nats_connect(nats_single, "agent-us-east")).jetstream()
    ack = await agent.publish("cctf.v1.vote.us-east.a1", b"early", headers={"Nats-Msg-Id": "e1"})
    assert ack.stream == "CCTF_VOTES_US_EAST" and ack.seq == 1
    assert await _stored(admin, "us-east") == 0  # nobody was interested: gone
    await admin.add_consumer("CCTF_VOTES_US_EAST", durable_name="c", ack_policy=AckPolicy.EXPLICIT)
    await agent.publish("cctf.v1.vote.us-east.a1", b"kept", headers={"Nats-Msg-Id": "e2"})
    assert await _stored(admin, "us-east") == 1  # kept until the durable acknowledges it


async def test_one_region_flood_fills_only_its_own_stream(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await _per_region(nats_single, nats_connect)
    for region in ("us-east", "eu-west"):  # a coordinator's durable that does not keep up
        await admin.add_consumer(
            votes_stream_name(region), durable_name="slow", ack_policy=AckPolicy.EXPLICIT
        )
    flooder = (await nats_connect(nats_single, "agent-us-east")).jetstream(timeout=5)
    honest = (await nats_connect(nats_single, "agent-eu-west")).jetstream(timeout=5)

    # one agent subject holds at most VOTES_MAX_MSGS_PER_SUBJECT: the next publish is refused
    for i in range(VOTES_MAX_MSGS_PER_SUBJECT):
        await flooder.publish("cctf.v1.vote.us-east.a1", b"g", headers={"Nats-Msg-Id": f"s{i}"})
    with pytest.raises(nats.js.errors.APIError) as refused:
        await flooder.publish("cctf.v1.vote.us-east.a1", b"g", headers={"Nats-Msg-Id": "over"})
    assert refused.value.err_code == PUBACK_LIMIT_ERR_CODE
    assert "per subject" in (refused.value.description or "")
    # ... while another agent subject of the same region still lands
    await flooder.publish("cctf.v1.vote.us-east.a2", b"ok", headers={"Nats-Msg-Id": "a2"})

    # the region's stream fills up (bytes) and refuses more, on any of its subjects
    big = b"x" * (VOTES_MAX_MSG_SIZE - 8192)
    accepted = 0
    with pytest.raises(nats.js.errors.APIError) as full:
        for i in range(2 * VOTES_MAX_BYTES // len(big)):
            await flooder.publish(
                f"cctf.v1.vote.us-east.f{i}", big, headers={"Nats-Msg-Id": f"f{i}"}
            )
            accepted += 1
    assert full.value.err_code == PUBACK_LIMIT_ERR_CODE
    assert "maximum bytes" in (full.value.description or "")
    assert accepted <= VOTES_MAX_BYTES // len(big)
    with pytest.raises(nats.js.errors.APIError):
        await flooder.publish("cctf.v1.vote.us-east.a3", big, headers={"Nats-Msg-Id": "a3"})

    # another region is untouched: its publishes are acknowledged and stored
    for i in range(20):
        ack = await honest.publish(
            "cctf.v1.vote.eu-west.a1", b"ballot", headers={"Nats-Msg-Id": f"h{i}"}
        )
        assert ack.stream == "CCTF_VOTES_EU_WEST" and not ack.duplicate
    assert await _stored(admin, "eu-west") == 20
    assert await _stored(admin, "us-east") == VOTES_MAX_MSGS_PER_SUBJECT + 1 + accepted

    # a message over max_msg_size is refused by the stream
    with pytest.raises(nats.js.errors.APIError):
        await honest.publish("cctf.v1.vote.eu-west.a1", b"y" * (VOTES_MAX_MSG_SIZE + 1))
    assert await _stored(admin, "eu-west") == 20


async def test_on_a_cluster_every_stream_is_in_place_on_every_node_when_setup_returns(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    # No retry here, unlike an agent: right after ensure_streams a first publish through any node
    # finds its stream (a replica still being created would answer "no responders").
    admin = (await nats_connect(nats_cluster, "admin")).jsm()  # a manager: no KV bucket after
    infos = await ensure_streams(admin, nats_cluster.regions, replicas=3, timeout_s=30)
    for name in reversed(infos):  # the last created first
        assert not_settled(await admin.stream_info(name), 3) is None, name
    for i, url in enumerate(nats_cluster.urls):
        nc = await connect(
            [url], nats_cluster.users["agent-us-east"], name=f"node-{i}", for_tests=True
        )
        try:
            ack = await nc.jetstream().publish(
                "cctf.v1.vote.us-east.a1", b"first", headers={"Nats-Msg-Id": f"node-{i}"}
            )
            assert ack.stream == votes_stream_name("us-east") and ack.seq == i + 1
        finally:
            await nc.close()
