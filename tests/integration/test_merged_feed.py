"""``cctf.bus.live.MergedFeed`` over a real server: the live and the stored copy of each message as
one feed, each message once, even when the live copies overflow the feed's queue (a dropped live
copy is not remembered, so its stored copy is yielded), and the same bytes stored twice reported as a
repeat. Issue #9: second copies are recognised on arrival (engineer perfclient)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cctf.bus.headers import MSG_ID
from cctf.bus.live import open_merged_feed
from cctf.bus.reader import Delivered, open_ordered_feed
from cctf.bus.streams import ensure_streams, verdict_stream_name, verdict_subjects
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

REGION = "us-east"
N = 40


async def test_each_message_once_when_live_copies_overflow_and_a_stored_repeat_is_reported(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    await ensure_streams(js, [REGION], 1)
    client = await nats_connect(nats_single, "client")
    subjects = verdict_subjects(REGION)
    feed = await open_merged_feed(
        client,
        subjects,
        lambda: open_ordered_feed(client, verdict_stream_name(REGION), subjects, stream_seq=False),
        pending_msgs=8,
    )
    repeats: list[Delivered] = []
    feed.on_repeat = repeats.append
    try:
        for i in range(N):  # nobody reads yet: the queue of 8 overflows
            await js.publish(
                f"cctf.v1.verdict.{REGION}.n{i}.A", b"m%d" % i, headers={MSG_ID: str(i)}
            )
        await js.publish(f"cctf.v1.verdict.{REGION}.n0.A", b"m0", headers={MSG_ID: "again"})
        got: list[bytes] = []
        async with asyncio.timeout(20):
            while len(got) < N:
                got.append((await anext(feed)).data)
            while not repeats:  # the stored repeat comes after the 40 (the pump ran on)
                await asyncio.sleep(0.02)
        assert sorted(got) == sorted(b"m%d" % i for i in range(N))  # each once, none lost
        assert feed.live_dropped >= N - 8  # live copies that did not fit, yielded from the stream
        assert [r.data for r in repeats] == [b"m0"]
        assert feed.queued == 0  # the repeat was never queued
    finally:
        await feed.close()
