"""``Publisher.publish_many`` on a real nats-server: one acknowledgement collector per batch, with
the per-message contract of ``Publisher.publish`` (stored once per message id, retried with the same
bytes until stored, its own deadline or stop; ``on_sent`` once, after every first attempt)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from cctf.bus.publisher import Outgoing, Publisher, PublishOutcome
from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.clock import SYSTEM_CLOCK
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

EAST = "us-east"


def _subject(i: int) -> str:
    return f"cctf.v1.verdict.{EAST}.n{i}.A"


async def test_a_batch_is_stored_once_per_message_id_and_failures_are_per_message(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    await ensure_streams(js, [EAST], nats_single.stream_replicas)
    stream = verdict_stream_name(EAST)
    publisher = Publisher(admin, SYSTEM_CLOCK, timeout_s=0.5, first_backoff_s=0.02)
    stopping = asyncio.Event()
    soon = SYSTEM_CLOCK.now_ms() + 400
    later = SYSTEM_CLOCK.now_ms() + 60_000
    msgs = [Outgoing(_subject(i), b"v%d" % i, f"id-{i}", later, stream) for i in range(200)]
    msgs += [
        Outgoing(_subject(0), b"v0", "id-0", later, stream),  # the same id again: stored once
        Outgoing("cctf.v1.nostream.x", b"lost", "id-x", soon),  # no stream: no responders
        Outgoing(_subject(7), b"elsewhere", "id-w", soon, "CCTF_NOT_THIS_ONE"),  # refused
    ]
    told: list[list[bool]] = []
    first, results = await asyncio.gather(  # two first batches at once: one subscription
        publisher.publish_many(msgs[:1], stopping),
        publisher.publish_many(msgs, stopping, on_sent=told.append),
    )
    assert first[0].outcome is PublishOutcome.PUBLISHED

    assert told == [[True] * len(msgs)]  # once, every first attempt went out
    stored = [r.outcome for r in results[:201]]
    assert stored == [PublishOutcome.PUBLISHED] * 201
    assert all(r.failures == 0 for r in results[:201])
    for r in results[201:]:  # each failure is its own, retried until its deadline
        assert r.outcome is PublishOutcome.EXPIRED and r.sent
        assert r.failures >= 2 and r.last_error
    assert "no responders" in results[201].last_error.lower()
    assert "APIError" in results[202].last_error
    info = await js.stream_info(stream)
    assert info.state.messages == 200
    collectors = [s.subject for s in admin._subs.values() if s._cb == publisher._acks._on_reply]
    assert collectors == [publisher._acks._prefix + "*"]  # one, though two batches started at once


async def test_a_batch_without_a_stream_leader_is_retried_with_the_same_bytes_until_stopped(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    publisher = Publisher(admin, SYSTEM_CLOCK, timeout_s=0.3, first_backoff_s=0.02)
    stopping = asyncio.Event()
    later = SYSTEM_CLOCK.now_ms() + 60_000
    msgs = [Outgoing(_subject(i), b"v%d" % i, f"id-{i}", later) for i in range(20)]
    task = asyncio.create_task(publisher.publish_many(msgs, stopping))
    await asyncio.sleep(0.3)  # no stream yet: every attempt fails, nothing is given up
    assert not task.done()
    await ensure_streams(js, [EAST], nats_single.stream_replicas)
    results = await asyncio.wait_for(task, 10)
    assert [r.outcome for r in results] == [PublishOutcome.PUBLISHED] * 20
    assert all(r.failures >= 1 for r in results)
    info = await js.stream_info(verdict_stream_name(EAST))
    assert info.state.messages == 20

    gone = [Outgoing("cctf.v1.nostream.y", b"y", "id-y", later)]
    task = asyncio.create_task(publisher.publish_many(gone, stopping))
    await asyncio.sleep(0.1)
    stopping.set()
    (result,) = await asyncio.wait_for(task, 5)
    assert result.outcome is PublishOutcome.STOPPED and result.failures >= 1
    assert not publisher._acks._waiting  # every token of every attempt forgotten

    # cancelled while waiting for acknowledgements: no token is left behind
    silent = await admin.subscribe("cctf.v1.nostream.z")  # a listener, so no "no responders"
    slow = Publisher(admin, SYSTEM_CLOCK, timeout_s=30.0)
    quiet = [Outgoing("cctf.v1.nostream.z", b"z", f"id-z{i}", later) for i in range(5)]
    task = asyncio.create_task(slow.publish_many(quiet, asyncio.Event()))
    await asyncio.sleep(0.2)
    assert len(slow._acks._waiting) == 5 and not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not slow._acks._waiting
    await silent.unsubscribe()


async def test_the_batch_write_sends_what_one_publish_per_message_sends(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    """The batch write (``cctf.bus.batchwrite``, taken with the pinned nats-py) and the one-by-one
    fallback deliver the same messages, in order, with the same headers, to a core subscriber, and
    every message is stored once."""
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    await ensure_streams(js, [EAST], nats_single.stream_replicas)
    stream = verdict_stream_name(EAST)
    got: list[tuple[str, bytes, dict[str, str]]] = []

    async def on_msg(msg: Msg) -> None:
        got.append((msg.subject, msg.data, dict(msg.headers or {})))

    sub = await admin.subscribe(f"cctf.v1.verdict.{EAST}.>", cb=on_msg)
    later = SYSTEM_CLOCK.now_ms() + 60_000
    runs: dict[bool, list[tuple[str, bytes, dict[str, str]]]] = {}
    for fast in (True, False):
        publisher = Publisher(admin, SYSTEM_CLOCK, timeout_s=2.0)
        assert publisher._writer.fast  # the pinned nats-py has the batch write path
        publisher._writer.fast = fast
        tag = "f" if fast else "s"
        msgs = [
            Outgoing(_subject(i), b"%s%d" % (tag.encode(), i) * 50, f"id-{tag}{i}", later, stream)
            for i in range(300)
        ]
        results = await publisher.publish_many(msgs, asyncio.Event())
        assert [r.outcome for r in results] == [PublishOutcome.PUBLISHED] * 300
        assert all(r.failures == 0 and r.sent for r in results)
        await admin.flush()
        for _ in range(100):
            if len(got) == 300:
                break
            await asyncio.sleep(0.02)
        runs[fast] = [(s, d.replace(tag.encode(), b"?"), h) for s, d, h in got]
        assert [s for s, _d, _h in got] == [m.subject for m in msgs]  # in order
        assert [h for _s, _d, h in got] == [
            {"Nats-Msg-Id": m.msg_id, "Nats-Expected-Stream": stream} for m in msgs
        ]
        got.clear()
    assert [(s, d) for s, d, _h in runs[True]] == [(s, d) for s, d, _h in runs[False]]
    await sub.unsubscribe()
    assert (await js.stream_info(stream)).state.messages == 600
