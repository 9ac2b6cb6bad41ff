"""The KV adapter (cctf.bus.kv) against a real nats-server: the LKG bucket made at set-up, R3 in a
cluster, the coordinator's grants (bind, put, get, read back, delete, per-message TTL) and nobody
else's."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from natshelpers import ErrorLog, setup_streams

from cctf.bus.connect import jetstream
from cctf.bus.kv import LKG_BUCKET, Bucket, KvError, kv_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

pytestmark = pytest.mark.asyncio


async def test_coordinator_uses_the_lkg_bucket(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(admin.jetstream(), nats_single.regions)
    info = await admin.jetstream().stream_info(kv_stream_name(LKG_BUCKET))
    assert info.config.max_msgs_per_subject == 1 and info.config.allow_msg_ttl
    errors = ErrorLog()
    coord = await nats_connect(nats_single, "coordinator", error_cb=errors)
    bucket = await Bucket.bind(jetstream(coord), LKG_BUCKET)
    assert await bucket.get("coord-1.A.www.example.com") is None
    await bucket.put("coord-1.A.www.example.com", b"one")
    await bucket.put("coord-1.A.www.example.com", b"two")
    await bucket.put("coord-1.AAAA.=2A.example", b"three")
    await bucket.put("coord-2.A.www.example.com", b"other")
    assert await bucket.get("coord-1.A.www.example.com") == b"two"
    got = sorted(await bucket.items("coord-1", limit=10))
    assert got == [("coord-1.A.www.example.com", b"two"), ("coord-1.AAAA.=2A.example", b"three")]
    with pytest.raises(KvError, match="more than 1"):
        await bucket.items("coord-1", limit=1)
    await bucket.delete("coord-1.AAAA.=2A.example")
    assert await bucket.items("coord-1", limit=10) == [("coord-1.A.www.example.com", b"two")]
    assert await bucket.items("coord-3", limit=10) == []
    with pytest.raises(KvError, match="invalid KV key"):
        await bucket.put("coord-1.A.~2e", b"x")
    assert not errors.errors


async def test_per_message_ttl_removes_the_value(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(admin.jetstream(), nats_single.regions)
    coord = await nats_connect(nats_single, "coordinator")
    bucket = await Bucket.bind(jetstream(coord), LKG_BUCKET)
    await bucket.put("coord-1.A.short", b"v", ttl_s=1)
    await bucket.put("coord-1.A.long", b"v", ttl_s=600)
    assert await bucket.get("coord-1.A.short") == b"v"
    deadline = time.monotonic() + 15  # generous: the engine expires TTLs about once a second
    while await bucket.get("coord-1.A.short") is not None:
        assert time.monotonic() < deadline, "the per-message TTL did not remove the value"
        await asyncio.sleep(0.2)
    assert await bucket.get("coord-1.A.long") == b"v"


async def test_others_cannot_write_the_bucket(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(admin.jetstream(), nats_single.regions)
    for user in ("client", "agent-us-east"):
        errors = ErrorLog()
        nc = await nats_connect(nats_single, user, error_cb=errors)
        await nc.publish(f"$KV.{LKG_BUCKET}.coord-1.A.www.example.com", b"forged")
        await nc.flush()
        await errors.wait_for("permissions violation")
    coord = await nats_connect(nats_single, "coordinator")
    assert await (await Bucket.bind(jetstream(coord), LKG_BUCKET)).items(limit=5) == []


async def test_bind_without_the_bucket_is_one_line(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    coord = await nats_connect(nats_single, "coordinator")
    with pytest.raises(KvError, match="does not exist"):
        await Bucket.bind(jetstream(coord), LKG_BUCKET)


async def test_bucket_is_replicated_in_a_cluster(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_cluster, "admin")
    await setup_streams(admin.jetstream(), nats_cluster.regions, replicas=3)
    info = await admin.jetstream().stream_info(kv_stream_name(LKG_BUCKET))
    assert info.config.num_replicas == 3
    coord = await nats_connect(nats_cluster, "coordinator")
    bucket = await Bucket.bind(jetstream(coord), LKG_BUCKET)
    await bucket.put("coord-1.A.www.example.com", b"v")
    assert await bucket.items("coord-1", limit=5) == [("coord-1.A.www.example.com", b"v")]


async def test_a_lagging_replicas_view_is_completed_from_the_leader(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    """``Bucket.items`` step 2: whatever an ordered consumer on a lagging replica delivered (here:
    a real read taken BEFORE the newest writes, or nothing at all), the leader's tail after its
    last sequence turns it into the leader's view: new keys, replaced values, deletes."""
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(admin.jetstream(), nats_single.regions)
    coord = await nats_connect(nats_single, "coordinator")
    bucket = await Bucket.bind(jetstream(coord), LKG_BUCKET)
    await bucket.put("coord-1.A.kept", b"k")
    await bucket.put("coord-1.A.replaced", b"old")
    await bucket.put("coord-1.A.deleted", b"d")
    far = time.monotonic() + 10
    stale, stale_seq = await bucket._watch_all("coord-1.>", 10, far, 10)  # the replica's view
    assert stale == {
        "coord-1.A.kept": b"k",
        "coord-1.A.replaced": b"old",
        "coord-1.A.deleted": b"d",
    }
    await bucket.put("coord-1.A.replaced", b"new")
    await bucket.delete("coord-1.A.deleted")
    await bucket.put("coord-1.A.added", b"a")
    await bucket.put("coord-2.A.other", b"o")  # another prefix: never read
    want = {"coord-1.A.kept": b"k", "coord-1.A.replaced": b"new", "coord-1.A.added": b"a"}
    assert dict(await bucket.items("coord-1", limit=10)) == want
    for view, seq in ((stale, stale_seq), ({}, 0)):  # lagging, or empty (the flake's symptom)
        found = dict(view)
        await bucket._leader_tail("coord-1.>", found, seq, 10, far, 10)
        assert found == want
    with pytest.raises(KvError, match="more than 2 keys"):
        await bucket._leader_tail("coord-1.>", {}, 0, 2, far, 10)
