"""Batch-signed verdicts through a real nats-server: ``TrustClient`` fetches a missing head by direct
get, takes heads live from its core subscription, gossips the heads it verified, raises the
split-view alarm on a forked head gossiped by another subscriber, and ``cctf check --json`` shows
the log position.

Heads and verdicts are published as the coordinator publishes them (head first, on every region's
head subject, then each verdict on every region's verdict subject), by the ``coordinator`` user."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
from clientbus import (  # noqa: F401 - fixtures bus, cli_files
    LENIENT,
    Bus,
    bus_fixture,
    cli_files_fixture,
    run_cli,
    take,
    trust_client,
)
from clientcases import NAME, REGION, verdict
from tlogfactories import TestLog
from wirefactories import World, make_world

from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.heads import head_subject
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.headfeed import gossip_subject
from cctf.client.heads import SplitViewError
from cctf.client.sdk import TrustClient, VerdictRejected

REGIONS = (REGION, "eu-west")


async def _publish_batch(
    bus: Bus, world: World, log: TestLog, names: list[str], *, heads: bool = True
) -> list[tuple[str, bytes]]:
    """Sign a batch (one head), publish the head on every region's head subject, then each
    verdict on every region's verdict subject; returns the (us-east subject, envelope) pairs."""
    items = [
        ([verdict_subject(r, nm, "A") for r in REGIONS], verdict(world, qname=nm)) for nm in names
    ]
    batch = log.batch(items, now_ms=world.clock.now_ms())
    js = bus.coord.jetstream()
    if heads:
        for region in REGIONS:
            await js.publish(
                head_subject(region, world.coordinator.principal, batch.size), batch.note
            )
    for (subjects, _), data in zip(items, batch.envelopes, strict=True):
        for subject in subjects:
            await js.publish(subject, data)
    return [(subjects[0], data) for (subjects, _), data in zip(items, batch.envelopes, strict=True)]


async def test_check_fetches_the_head_a_stored_verdict_names(bus: Bus) -> None:
    world = make_world()
    log = TestLog(world.coordinator)
    await _publish_batch(bus, world, log, [NAME, "b.example."])
    client = trust_client(bus, world, gossip=False)
    got = await client.check(NAME)
    assert got.qname == NAME
    checked = client.last_checked(NAME)
    assert checked is not None and checked.log is not None
    assert (checked.log.index, checked.log.size, checked.log.root) == (0, 2, log.tree.root())
    assert client.head_feed.added == Counter({"fetch": 1})  # direct get, verified once
    assert (await client.check("b.example.")).qname == "b.example."
    assert client.head_feed.added == Counter({"fetch": 1}) and client.heads.verified == 1
    assert client.rejected == Counter()
    # the other region's verdict stream holds the very same envelope, verified there too
    eu = TrustClient(bus.client_nc, world.trust, "eu-west", clock=world.clock, gossip=False)
    assert (await eu.check(NAME)).qname == NAME
    await client.close()
    await eu.close()


async def test_a_verdict_whose_head_was_never_published_fails_closed(bus: Bus) -> None:
    world = make_world()
    await _publish_batch(bus, world, TestLog(world.coordinator), [NAME], heads=False)
    client = trust_client(bus, world, gossip=False)
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.HEAD_UNKNOWN
    assert client.rejected == Counter({"head_unknown": 1})
    await client.close()


async def test_live_heads_gossip_and_the_split_view_alarm(bus: Bus, nats_connect: Any) -> None:
    world = make_world()
    log = TestLog(world.coordinator)
    watcher = trust_client(bus, world, gossip=False)
    peer_nc = await nats_connect(bus.fabric, "client")  # another subscriber
    gossiped: list[bytes] = []

    async def heard(msg: Any) -> None:
        gossiped.append(msg.data)

    await peer_nc.subscribe(gossip_subject(REGION), cb=heard)
    await peer_nc.flush()
    gossiper = TrustClient(peer_nc, world.trust, REGION, clock=world.clock)
    gossiper.head_feed._interval = 0.1
    await gossiper.head_feed.watch(REGION)
    stream = await watcher.stream()
    try:
        names = [f"n{i}.example." for i in range(4)]
        await _publish_batch(bus, world, log, names)
        verdicts = await take(stream, 4)
        assert sorted(v.qname for v in verdicts) == names
        assert watcher.head_feed.added == Counter({"live": 1})  # no direct get needed
        deadline = time.monotonic() + 10
        while log.head_note(4)[:60] not in [g[:60] for g in gossiped]:  # same body, any signature
            assert time.monotonic() < deadline, "the verified head was never gossiped"
            await asyncio.sleep(0.05)
        assert watcher.heads.split_views == []  # the genuine head gossiped back: no alarm
        # a fork: the same key signed another tree of the same size, shown to another region and
        # gossiped by a subscriber there: caught here, where only us-east is watched
        fork = TestLog(world.coordinator)
        for i in range(4):
            fork.tree.append(b"forged %d" % i)
        await peer_nc.publish(gossip_subject("eu-west"), fork.head_note(4))
        deadline = time.monotonic() + 10
        while not watcher.heads.split_views:
            assert time.monotonic() < deadline, "no split view raised from gossip"
            await asyncio.sleep(0.05)
        assert watcher.heads.split_views[0].kind == "fork"
        with pytest.raises(SplitViewError) as info:
            watcher.raise_for_split_view()
        assert info.value.reason is Reason.SPLIT_VIEW
        assert watcher.heads.verified_root(world.coordinator.kid, 4) == log.tree.root()
        # garbage on the gossip and head subjects is refused by reason, never used
        await peer_nc.publish(gossip_subject(REGION), b"not a note")
        wrong = head_subject(REGION, world.coordinator.principal, 9)
        await bus.coord.publish(wrong, log.head_note(4))
        deadline = time.monotonic() + 10
        while sum(watcher.head_feed.rejected.values()) < 2:
            assert time.monotonic() < deadline, watcher.head_feed.rejected
            await asyncio.sleep(0.05)
        assert watcher.head_feed.rejected == Counter({"malformed": 1, "wrong_size": 1})
    finally:
        await stream.aclose()
        await watcher.close()
        await gossiper.close()


async def test_cctf_check_and_watch_show_the_log_position(
    bus: Bus, cli_files: tuple[World, list[str]]
) -> None:
    world, common = cli_files
    log = TestLog(world.coordinator)
    await _publish_batch(bus, world, log, [NAME])
    code, out, err = await run_cli("check", NAME, *common, "--json", *LENIENT)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["log"] == {
        "origin": f"cctf/v1/log/{world.coordinator.kid}",
        "index": 0,
        "size": 1,
        "root": log.tree.root().hex(),
    }
    code, out, err = await run_cli("check", NAME, *common, *LENIENT)
    assert code == 0, err
    assert out.strip().endswith("log=0/1")
    code, out, err = await run_cli(
        "watch", *common, "--json", "--count", "1", "--deliver", "last_per_subject"
    )
    assert code == 0, err
    assert json.loads(out)["log"]["index"] == 0


async def test_a_batch_signing_coordinator_end_to_end(nats_single: Any, nats_connect: Any) -> None:
    """A real coordinator (``signing: batch``) publishing to both regions; TrustClients of each
    region (the ``client`` user) take its heads live and verify every verdict, log positions in
    one log, the same leaf on both regions."""
    from test_coordinator import EAST, HONEST, WEST, _make_harness

    h = await _make_harness(nats_single, nats_connect)
    clients = {}
    streams = {}
    try:
        for region in (EAST, WEST):
            nc = await nats_connect(nats_single, "client")
            clients[region] = TrustClient(nc, h.trust, region, clock=h.clock, gossip=False)
            streams[region] = await clients[region].stream()
        await h.start_coordinator(signing="batch", batch_window_ms=20)
        qnames = ("example.com.", "after.example.", "before.example.")
        for qname in qnames:
            await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname=qname)
        for qname in qnames:
            await h.ballot(WEST, {"r1": HONEST, "r2": HONEST}, qname=qname)
        positions: dict[str, dict[str, tuple[int, int]]] = {}
        for region in (EAST, WEST):
            got = await take(streams[region], len(qnames), timeout=20)
            assert sorted(v.qname for v in got) == sorted(qnames)
            client = clients[region]
            for v in got:
                checked = client.last_checked(v.qname, v.qtype)
                assert checked is not None and checked.log is not None
                assert checked.log.kid == h.coord.key.kid
                positions.setdefault(v.qname, {})[region] = (checked.log.index, checked.log.size)
            assert client.rejected == Counter()
            assert client.heads.verified >= 1 and not client.heads.split_views
        assert all(p[EAST][0] == p[WEST][0] for p in positions.values())  # one leaf, two regions
        assert sorted(p[EAST][0] for p in positions.values()) == [0, 1, 2]
    finally:
        for region, vs in streams.items():
            await vs.aclose()
            await clients[region].close()
        for c in h.coordinators:
            await c.stop()


async def test_consistency_between_heads_is_checked_through_the_log_api(
    nats_single: Any, nats_connect: Any
) -> None:
    """A real batch-signing coordinator (its durable log) and a real log monitor answering the log
    API: the client proves each later head consistent with the earlier one it saw."""
    from test_coordinator import EAST, HONEST, WEST, _make_harness

    from cctf.logmon.monitor import LogMonitor, log_verifier

    h = await _make_harness(nats_single, nats_connect)
    monitor_nc = await nats_connect(nats_single, "coordinator")
    trust = h.trust
    monitor = LogMonitor(
        monitor_nc,
        h.coord.principal,
        lambda origin: log_verifier(h.coord.principal, origin, trust=trust),
    )
    client_nc = await nats_connect(nats_single, "client")
    client = TrustClient(client_nc, trust, EAST, clock=h.clock, gossip=False)
    stream = await client.stream()
    try:
        await monitor.start()
        await h.start_coordinator(signing="batch", batch_window_ms=20)
        for qname in ("example.com.", "after.example."):  # two batches: heads of size 1 and 2
            await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname=qname)
            await h.ballot(WEST, {"r1": HONEST, "r2": HONEST}, qname=qname)
            await take(stream, 1, timeout=20)
        kid = h.coord.key.kid
        assert client.heads.verified_root(kid, 1) and client.heads.verified_root(kid, 2)
        assert client.heads.pending() == [(kid, 1, 2)]
        deadline = time.monotonic() + 20
        while client.heads.pending():  # the monitor may still be reading the second record
            assert time.monotonic() < deadline, client.head_feed.consistency_unavailable
            await client.head_feed.tick()
            await asyncio.sleep(0.1)
        assert client.heads.consistency_checked == 1 and not client.heads.split_views
        assert client.heads.anchor(kid).size == 2  # type: ignore[union-attr]
    finally:
        await stream.aclose()
        await client.close()
        await monitor.stop()
        for c in h.coordinators:
            await c.stop()
