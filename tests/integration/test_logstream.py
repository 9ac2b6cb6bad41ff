"""The durable log on a real nats-server (D4): writer fencing, retries, resume, permissions."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from natshelpers import ErrorLog, setup_streams

from cctf.bus.connect import jetstream
from cctf.bus.headers import EXPECTED_LAST_SUBJECT_SEQUENCE, MSG_ID
from cctf.bus.logstream import (
    LogWriter,
    last_record,
    log_msg_id,
    log_subject,
    open_log,
    read_records,
)
from cctf.bus.streams import LOG_STREAM
from cctf.crypto.keys import SigningKey
from cctf.devfabric.nats import NatsFabric
from cctf.translog.errors import LogFencedError, LogWriteError, MirrorError
from cctf.translog.logstate import LogState
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier

if TYPE_CHECKING:
    from conftest import NatsConnect

KEY = SigningKey.generate()


async def test_writer_resume_fence_and_duplicates(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(jetstream(admin), nats_single.regions)
    coord = await nats_connect(nats_single, "coordinator")
    # another log first, so the stream's last sequence is not this log's (expected subject seq 0)
    other_state, other = await open_log(coord, "other", SigningKey.generate())
    await other.append(other_state.append([b"o"]))

    state, writer = await open_log(coord, "c1", KEY)
    assert (state.size, writer.last_seq) == (0, 0)
    for batch in ([b"a", b"b"], [b"c"], [b"d", b"e", b"f"]):
        await writer.append(state.append(batch))
    assert writer.last_seq > 1 and writer.next_index == 6

    # resume: the same tree, every head re-verified; the next head is consistent with the last
    resumed, writer2 = await open_log(coord, "c1", KEY)
    assert (resumed.size, resumed.root) == (state.size, state.root)
    assert writer2.last_seq == writer.last_seq
    record = resumed.append([b"g"])
    await writer2.append(record)

    # the first writer is stale now: the engine fences it (expected last subject sequence)
    stale = state.append([b"X"])
    with pytest.raises(LogFencedError):
        await writer.append(stale)
    with pytest.raises(LogWriteError) as err:  # and it stays failed
        await writer.append(stale)
    assert err.value.reason == "failed"

    # a retry of a record that did land (its ack was lost) is recognised as ours
    retry = LogWriter(coord, "c1", last_seq=writer.last_seq, next_index=6)
    await retry.append(record)
    assert retry.last_seq == writer2.last_seq

    # a different record under the same message id (a second writer with the same state) is fenced
    twin = LogState.resume(KEY, [s.record async for s in read_records(coord, "c1")][:-1])
    impostor = twin.append([b"not g"])
    dup = LogWriter(coord, "c1", last_seq=writer.last_seq, next_index=6)
    with pytest.raises(LogFencedError):
        await dup.append(impostor)

    # a client re-derives the whole log; the stored records are exactly what was appended
    client = await nats_connect(nats_single, "client")
    mirror = LogMirror(state.origin, NoteVerifier(state.origin, KEY.public))
    seqs = []
    async for stored in read_records(client, "c1"):
        mirror.apply(stored.record)
        seqs.append(stored.seq)
    assert mirror.size == 7 and mirror.root == resumed.root
    assert seqs == sorted(seqs) and len(seqs) == 4
    last = await last_record(coord, "c1")
    assert last is not None and last.record == record


async def test_resume_refuses_a_tampered_log(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(jetstream(admin), nats_single.regions)
    coord = await nats_connect(nats_single, "coordinator")
    state, writer = await open_log(coord, "c2", KEY)
    await writer.append(state.append([b"a"]))
    # an admin (or a broken writer) stores a record whose head was not signed over its entries
    forged = LogState(KEY).append([b"b"])
    js = jetstream(admin)
    await js.publish(
        log_subject("c2"),
        type(forged)(forged.origin, 1, forged.entries, forged.checkpoint).encode(),
        headers={MSG_ID: log_msg_id("c2", 1), EXPECTED_LAST_SUBJECT_SEQUENCE: str(writer.last_seq)},
    )
    with pytest.raises(MirrorError) as err:
        await open_log(coord, "c2", KEY)
    assert err.value.reason == "size-mismatch"


async def test_log_permissions(nats_single: NatsFabric, nats_connect: NatsConnect) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(jetstream(admin), nats_single.regions)
    errors = ErrorLog()
    coord = await nats_connect(nats_single, "coordinator", error_cb=errors)
    await coord.publish("cctf.v1.log.c1.extra", b"x")  # one token: the log id
    await errors.wait_for('permissions violation for publish to "cctf.v1.log.c1.extra"')
    agent_errors = ErrorLog()
    agent = await nats_connect(nats_single, "agent-us-east", error_cb=agent_errors)
    await agent.publish("cctf.v1.log.c1", b"x")
    await agent_errors.wait_for("permissions violation")
    info = await jetstream(admin).stream_info(LOG_STREAM)
    assert info.state.messages == 0
    assert info.config.deny_delete and info.config.deny_purge and info.config.max_age in (0, None)


async def test_append_waits_out_an_outage(tmp_path, nats_connect: NatsConnect) -> None:  # type: ignore[no-untyped-def]
    """A record appended while the only server is down is stored once it is back (same msg id)."""
    fabric = await NatsFabric.astart(tmp_path / "nats", nodes=1)
    try:
        admin = await nats_connect(fabric, "admin")
        await setup_streams(jetstream(admin), fabric.regions)
        coord = await nats_connect(
            fabric, "coordinator", max_reconnect_attempts=-1, reconnect_time_wait=0.1
        )
        state, writer = await open_log(coord, "c3", KEY, timeout_s=0.5)
        await writer.append(state.append([b"a"]))
        server = fabric.servers[0]
        await asyncio.to_thread(server.stop)
        pending = asyncio.create_task(writer.append(state.append([b"b"])))
        await asyncio.sleep(1.0)
        assert not pending.done() and writer.pending == 1
        pending.cancel()  # the caller gives up waiting: the append itself goes on
        later = state.append([b"c"])
        following = asyncio.create_task(writer.append(later))
        await asyncio.sleep(0.2)
        assert writer.pending == 2
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(following, 30)
        await writer.append(later)  # a caller's retry of the last record: a no-op
        resumed, _ = await open_log(coord, "c3", KEY)
        assert (resumed.size, resumed.root) == (3, state.root)
    finally:
        await fabric.astop()
