"""A region's durable fetch is bounded in bytes as well as in count (cctf.coordinator.fetching),
against a real nats-server: with ballot parts of ~200 KB and ``fetch_max_bytes`` of 1 MiB, no fetch
asks for more than the bound allows (the first assumes the largest envelope), every part still
arrives, and the count bound alone (``fetch_batch``) would have asked for them all at once."""

from __future__ import annotations

import asyncio
import time

from conftest import NatsConnect

from cctf.bus.consumer import ConsumerSpec, Delivery, RegionConsumer
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.limits import MAX_ENVELOPE_BYTES
from cctf.coordinator.counters import Counters
from cctf.coordinator.fetching import RegionFetcher
from cctf.coordinator.pipeline.ingest import FairQueues, RateBudget
from cctf.devfabric.nats import NatsFabric

REGION = "us-east"
PARTS = 30
PART_BYTES = 200_000
MAX_BYTES = 1 << 20


class _Recording(RegionConsumer):
    """The real consumer, with each fetch's asked and returned counts written down."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.fetches: list[tuple[int, int]] = []

    async def fetch(self, batch: int, timeout_s: float) -> list[Delivery]:
        got = await super().fetch(batch, timeout_s)
        if got:
            self.fetches.append((batch, len(got)))
        return got


async def test_fetches_are_bounded_in_bytes(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    await ensure_streams(js, [REGION], 1)
    conn = await nats_connect(nats_single, "admin", name="fetcher")
    spec = ConsumerSpec(
        durable="bytes-test", region=REGION, ack_wait_s=30, max_ack_pending=1000, max_deliver=5
    )
    consumer = _Recording(conn, spec)
    await consumer.bind()  # the durable delivers what is published from now on
    for i in range(PARTS):  # a backlog, as after a stall
        await js.publish(f"cctf.v1.vote.{REGION}.agent-{i % 10}", bytes([i]) * PART_BYTES)
    queues: FairQueues[Delivery] = FairQueues([REGION], limit=4096, batch=256)
    stopping = asyncio.Event()
    failures: list[BaseException] = []

    async def term(d: Delivery, reason: str) -> None:
        await d.term(reason)

    fetcher = RegionFetcher(
        conn=conn,
        consumer=consumer,
        queues=queues,
        budget=RateBudget(1e6, 1e6, time.monotonic()),
        counts=Counters(),
        fetch_batch=256,
        fetch_max_bytes=MAX_BYTES,
        fetch_timeout_s=0.2,
        max_backoff_s=0.5,
        monotonic=time.monotonic,
        stopping=stopping,
        space=asyncio.Event(),
        work=asyncio.Event(),
        term=term,
        log=lambda *a, **k: None,
        fail=failures.append,
    )
    task = asyncio.create_task(fetcher.run())
    try:
        deadline = time.monotonic() + 20
        while sum(n for _b, n in consumer.fetches) < PARTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
    assert not failures
    assert sum(n for _b, n in consumer.fetches) == PARTS  # every part arrived
    first, *rest = consumer.fetches
    assert first[0] == MAX_BYTES // MAX_ENVELOPE_BYTES  # the first fetch: largest envelopes assumed
    assert rest and all(asked <= MAX_BYTES // PART_BYTES for asked, _n in rest)
    assert all(n * PART_BYTES <= MAX_BYTES for _b, n in consumer.fetches)
    assert len(consumer.fetches) >= PARTS * PART_BYTES // MAX_BYTES  # not one fetch of all 30
