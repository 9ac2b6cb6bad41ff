"""Batch signing (``signing: batch``) against a real nats-server: each verdict is ONE "tlog" envelope
published on every verdict region, its signed head published before it (same connection) and stored
in the region's heads stream, its inclusion proof verifying against that head; heads stay consistent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from test_coordinator import EAST, HONEST, WEST, Harness, _make_harness, _until
from wirefactories import make_world

from cctf.bus.publisher import Publisher
from cctf.bus.streams import ensure_streams, heads_stream_name
from cctf.bus_schemas.envelope import TlogAuth, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import head_subject, log_origin, parse_head_subject
from cctf.bus_schemas.messages import MessageType, Outcome, decode_verdict
from cctf.clock import SystemClock
from cctf.coordinator.batcher import APPENDS_AHEAD, BatchClosed, BatchSigner
from cctf.coordinator.pipeline.batchsign import BatchItem, BatchLog, SignedBatch
from cctf.devfabric.nats import NatsFabric
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.errors import LogFencedError
from cctf.translog.merkle import leaf_hash, verify_inclusion
from cctf.translog.note import NoteVerifier, open_checkpoint

QNAMES = ("example.com.", "after.example.", "before.example.")


class Seen:
    """Everything on ``cctf.v1.verdict.>`` and ``cctf.v1.head.>``, in arrival order."""

    def __init__(self) -> None:
        self.order: list[tuple[str, bytes]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.order.append((msg.subject, msg.data))

    def verdicts(self) -> list[tuple[str, bytes]]:
        return [(s, d) for s, d in self.order if s.startswith("cctf.v1.verdict.")]


@pytest_asyncio.fixture
async def batch_harness(
    nats_single: NatsFabric, nats_connect: Any
) -> AsyncIterator[tuple[Harness, Seen]]:
    h = await _make_harness(nats_single, nats_connect)
    seen = Seen()
    await h.admin.subscribe("cctf.v1.verdict.>", cb=seen.on_msg)
    await h.admin.subscribe("cctf.v1.head.>", cb=seen.on_msg)
    await h.admin.flush()
    try:
        yield h, seen
    finally:
        for c in h.coordinators:
            await c.stop()


@pytest.mark.parametrize("batch_max", [1024, 2])  # 2: one decision's verdicts in two batches
async def test_batch_signed_verdicts_are_one_envelope_on_every_region_after_their_head(
    batch_harness: tuple[Harness, Seen], batch_max: int
) -> None:
    h, seen = batch_harness
    coordinator = await h.start_coordinator(
        signing="batch", batch_window_ms=20, batch_max=batch_max
    )
    for qname in QNAMES:  # 3 names, decided at once by the west ballots
        await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname=qname)
    for qname in QNAMES:
        await h.ballot(WEST, {"r1": HONEST, "r2": HONEST}, qname=qname)
    await _until(lambda: len(seen.verdicts()) == 2 * len(QNAMES), 15.0, "6 verdict messages")

    verifier = NoteVerifier(log_origin(h.coord.key.kid), h.coord.key.public)
    heads: dict[int, Checkpoint] = {}
    by_name: dict[str, dict[str, bytes]] = {}
    for subject, data in seen.order:
        if subject.startswith("cctf.v1.head."):
            parsed = parse_head_subject(subject)
            cp = open_checkpoint(data, verifier, log_origin(h.coord.key.kid))
            assert (parsed.coordinator, parsed.size) == (h.coord.principal, cp.size)
            heads[cp.size] = cp
            continue
        env = decode_envelope(data)
        auth = env.auth
        assert isinstance(auth, TlogAuth) and env.kid == h.coord.key.kid
        assert subject in auth.subjects and len(auth.subjects) == 2
        head = heads.get(auth.head.size)
        assert head is not None, "a verdict arrived before its head"
        assert head.root_hash == auth.head.root
        verify_inclusion(
            leaf_hash(envelope_log_entry(env)),
            auth.index,
            auth.head.size,
            auth.proof,
            head.root_hash,
        )
        verdict = decode_verdict(env.payload)
        assert verdict.outcome is Outcome.TRUSTED
        by_name.setdefault(verdict.qname, {})[subject.split(".")[3]] = data
    assert set(by_name) == set(QNAMES)
    for regions in by_name.values():  # the same bytes on both regions
        assert set(regions) == {EAST, WEST} and regions[EAST] == regions[WEST]
    # one log: every leaf index once, heads consistent sizes
    indexes = sorted(decode_envelope(d).auth.index for d in (r[EAST] for r in by_name.values()))  # type: ignore[union-attr]
    assert indexes == list(range(len(QNAMES)))
    # heads are stored, one per subject, readable by direct get
    js = h.admin.jetstream()
    for size, cp in heads.items():
        for region in (EAST, WEST):
            stored = await js.get_last_msg(
                heads_stream_name(region), head_subject(region, h.coord.principal, size)
            )
            assert open_checkpoint(stored.data, verifier).root_hash == cp.root_hash
    await h.consumer_drained(h.coord.principal)
    assert coordinator.batcher is not None
    stats = coordinator.batcher.stats
    assert stats.verdicts == len(QNAMES) and stats.batches == len(heads)
    assert stats.largest_batch <= batch_max
    assert stats.heads_published == 2 * len(heads)
    st = coordinator.stats()
    assert st.verdicts == {"trusted": len(QNAMES)} and st.verdict_messages == 2 * len(QNAMES)
    await asyncio.sleep(0)


async def _stage(
    nats_single: NatsFabric, nats_connect: Any, append: Any, **kw: Any
) -> tuple[BatchSigner, list[BaseException], Any]:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [EAST], 1)
    world = make_world((EAST,))
    fatal: list[BaseException] = []
    stage = BatchSigner(
        BatchLog(world.coordinator.key),
        coordinator=world.coordinator.principal,
        regions=(EAST,),
        publisher=Publisher(admin, SystemClock(), timeout_s=1.0),
        executor=ThreadPoolExecutor(1),
        stopping=asyncio.Event(),
        append=append,
        fatal_errors=(LogFencedError,),
        on_fatal=fatal.append,
        now_ms=SystemClock().now_ms,
        **kw,
    )
    return stage, fatal, admin


def _items(n: int) -> list[BatchItem]:
    now = SystemClock().now_ms()
    return [
        BatchItem(MessageType.VERDICT, (f"cctf.v1.verdict.{EAST}.n{i}.A",), b"p", now, now + 9000)
        for i in range(n)
    ]


async def test_a_slow_log_append_delays_verdicts_by_log_wait_ms_at_most(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    """D4: a batch's verdicts wait for its append at most log_wait_ms; then they flow (counted)
    while the append goes on; the next batch's append waits for this one (one writer, in order)."""
    appended: list[int] = []
    release = asyncio.Event()

    async def append(sealed: SignedBatch) -> None:
        await release.wait()
        appended.append(sealed.first_index)

    stage, fatal, _ = await _stage(nats_single, nats_connect, append, log_wait_ms=50)
    stage.start()
    first = await asyncio.wait_for(stage.seal(_items(3)), 10)  # released after ~50 ms
    second = await asyncio.wait_for(stage.seal(_items(2)), 10)
    assert len(first) == 3 and len(second) == 2 and appended == []
    assert stage.stats.published_before_logged == 5
    release.set()
    await _until(lambda: appended == [0, 3], 5.0, "both appends, in order")
    assert stage.stats.appends == 2 and fatal == []
    await stage.stop()


async def test_a_fenced_log_fails_the_stage_closed(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    async def append(sealed: SignedBatch) -> None:
        raise LogFencedError("fenced", "another writer appended")

    stage, fatal, _ = await _stage(nats_single, nats_connect, append, log_wait_ms=5_000)
    stage.start()
    with pytest.raises(BatchClosed):
        await asyncio.wait_for(stage.seal(_items(2)), 10)
    assert len(fatal) == 1 and isinstance(fatal[0], LogFencedError)
    with pytest.raises(BatchClosed):  # nothing more is sealed
        await stage.seal(_items(1))
    await stage.stop()


async def test_parts_are_sealed_ahead_of_the_log_append(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    """batch_max 2: five items queued at once are three batches, all sealed while the first append
    is still waiting (pipelined: the outbox queues every part of a decision at once), appended in
    order, each envelope against its own batch's head (sizes 2, 4, 5)."""
    gate = asyncio.Event()
    appended: list[int] = []

    async def append(sealed: SignedBatch) -> None:
        await gate.wait()
        appended.append(sealed.first_index)

    stage, fatal, _ = await _stage(
        nats_single, nats_connect, append, log_wait_ms=10_000, batch_max=2, window_ms=5
    )
    stage.start()
    await asyncio.sleep(0)
    assert stage.batch_max == 2
    futures = stage.submit(_items(5))
    await _until(lambda: stage.stats.batches == 3, 5.0, "three batches sealed ahead")
    await asyncio.sleep(0.01)
    assert appended == [] and not futures.done()  # waiting on the log
    gate.set()
    await _until(futures.done, 5.0, "every envelope released")
    envelopes = await stage.collect(futures)
    assert appended == [0, 2, 4] and fatal == []
    sizes = [decode_envelope(e).auth.head.size for e in envelopes]  # type: ignore[union-attr]
    assert sizes == [2, 2, 4, 4, 5]
    await stage.stop()


async def test_the_window_runs_from_the_previous_batch(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    """A verdict after a quiet spell is sealed at once (it does not wait batch_window_ms for
    company); what comes within the window after that batch closed waits for the window and goes
    in one batch: at most one batch per window in a steady flow."""

    async def append(sealed: SignedBatch) -> None:
        return None

    stage, fatal, _ = await _stage(nats_single, nats_connect, append, window_ms=1_500)
    stage.start()
    first = asyncio.ensure_future(stage.seal(_items(1)))
    await _until(lambda: first.done(), 1.0, "the first verdict sealed well before the window")
    second = asyncio.ensure_future(stage.seal(_items(1)))
    third = asyncio.ensure_future(stage.seal(_items(2)))
    envelopes = await asyncio.wait_for(asyncio.gather(second, third), 15)
    assert [len(e) for e in envelopes] == [1, 2] and fatal == []
    assert stage.stats.batches == 2 and stage.stats.largest_batch == 3
    await stage.stop()


async def test_while_the_log_is_behind_the_next_batch_grows_group_commit(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    """APPENDS_AHEAD appends unacknowledged: verdicts decided meanwhile wait for one of them to
    finish and then go as ONE batch (one record, one head, one signature), not as a queue of small
    batches the log falls ever further behind."""
    gate = asyncio.Event()
    appended: list[int] = []

    async def append(sealed: SignedBatch) -> None:
        await gate.wait()
        appended.append(sealed.size)

    stage, fatal, _ = await _stage(
        nats_single, nats_connect, append, log_wait_ms=10_000, batch_max=100, window_ms=1
    )
    stage.start()
    try:
        parts = []
        for _ in range(APPENDS_AHEAD):  # each alone in a batch: the log keeps up so far
            parts.append(stage.submit(_items(1)))
            await _until(lambda: stage.stats.batches == len(parts), 5.0, "a batch per verdict")
        held = []
        for _ in range(5):  # the log is behind now
            held.append(stage.submit(_items(1)))
            await asyncio.sleep(0.02)
        assert stage.stats.batches == APPENDS_AHEAD and stage.stats.held_for_log >= 1
        gate.set()
        await _until(lambda: all(f.done() for f in parts + held), 5.0, "every verdict released")
        assert stage.stats.batches == APPENDS_AHEAD + 1 and stage.stats.largest_batch == 5
        assert appended == [1, 2, 7] and fatal == [] and stage.stats.published_before_logged == 0
    finally:  # a failed assertion never leaves the stage running
        await stage.stop()


async def test_a_stalled_log_holds_a_verdict_log_wait_ms_at_most_in_all(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    """The group-commit hold and the wait for the append share one bound: a verdict decided
    while the log is stalled (a stream-leader election) is out log_wait_ms after it could have
    been batched, not twice that."""
    stalled = asyncio.Event()

    async def append(sealed: SignedBatch) -> None:
        await stalled.wait()  # never set: the log is stalled for the whole test

    wait_ms = 2_000
    stage, fatal, _ = await _stage(
        nats_single, nats_connect, append, log_wait_ms=wait_ms, batch_max=100, window_ms=1
    )
    stage.start()
    try:
        early = [stage.submit(_items(1))]
        await _until(lambda: stage.stats.batches == 1, 5.0, "the first batch")
        early.append(stage.submit(_items(1)))
        await _until(lambda: stage.stats.batches == 2, 5.0, "the second batch")
        started = time.monotonic()
        late = await asyncio.wait_for(stage.seal(_items(1)), 10)  # held (2 appends ahead)
        elapsed = time.monotonic() - started
        assert len(late) == 1 and stage.stats.held_for_log == 1 and fatal == []
        # one bound (2 s), not the hold and then the whole wait for the append (4 s)
        assert elapsed < 1.75 * wait_ms / 1000, elapsed
        assert stage.stats.published_before_logged == 3  # and it counts as published before logged
        await asyncio.wait_for(asyncio.gather(*early), 10)
    finally:  # a failed assertion never leaves the stage running
        await stage.stop()
