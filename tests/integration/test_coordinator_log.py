"""The coordinator's durable log (D4) over a real nats-server: every batch-signed verdict is a leaf
of the log stored in CCTF_LOG; a restarted coordinator resumes the log (size and root intact) and
its next head is consistent with the last one (a fresh mirror re-derives the whole log)."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg
from test_coordinator import EAST, HONEST, WEST, _make_harness, _until

from cctf.bus.logstream import read_records
from cctf.bus_schemas.envelope import TlogAuth, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import log_origin
from cctf.devfabric.nats import NatsFabric
from cctf.translog.merkle import leaf_hash
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier


async def _mirror(h: Any) -> tuple[LogMirror, set[bytes]]:
    origin = log_origin(h.coord.key.kid)
    mirror = LogMirror(origin, NoteVerifier(origin, h.coord.key.public))
    leaves: set[bytes] = set()
    async for stored in read_records(h.admin, h.coord.principal):
        mirror.apply(stored.record)
        leaves |= {leaf_hash(e) for e in stored.record.entries}
    return mirror, leaves


def _published_leaves(seen: list[bytes]) -> set[bytes]:
    out = set()
    for data in seen:
        env = decode_envelope(data)
        assert isinstance(env.auth, TlogAuth)
        out.add(leaf_hash(envelope_log_entry(env)))
    return out


async def test_coordinator_log_survives_a_restart(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    h = await _make_harness(nats_single, nats_connect)
    seen: list[bytes] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.data)

    await h.admin.subscribe("cctf.v1.verdict.>", cb=on_msg)
    await h.admin.flush()
    try:
        first = await h.start_coordinator(signing="batch", batch_window_ms=10)
        for qname in ("example.com.", "after.example."):
            await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname=qname)
            await h.ballot(WEST, {"r1": HONEST, "r2": HONEST}, qname=qname)
        await _until(lambda: len(seen) == 4, 15.0, "4 verdict messages")
        await h.consumer_drained(h.coord.principal)
        await first.stop()
        mirror, leaves = await _mirror(h)
        assert mirror.size == 2 and _published_leaves(seen) <= leaves
        size, root = mirror.size, mirror.root

        second = await h.start_coordinator(signing="batch", batch_window_ms=10)
        assert second.durable_log.state is not None
        assert (second.durable_log.state.size, second.durable_log.state.root) == (size, root)
        h.clock.advance(1000)  # the next round
        await h.ballot(EAST, {"r1": HONEST, "r2": HONEST, "r3": HONEST}, qname="before.example.")
        await h.ballot(WEST, {"r1": HONEST, "r2": HONEST}, qname="before.example.")
        await _until(lambda: len(seen) == 6, 15.0, "6 verdict messages")
        await h.consumer_drained(h.coord.principal)
        await second.stop()
        again, leaves = await _mirror(h)  # every head re-derived, each consistent with the last
        assert again.size == 3 and again.head_at(size) is not None
        assert again.head_at(size).root == root  # type: ignore[union-attr]
        again.check_consistency(size, again.size)
        assert _published_leaves(seen) <= leaves  # no verdict published that is not in the log
        assert second.batcher is not None and second.batcher.stats.published_before_logged == 0
    finally:
        for c in h.coordinators:
            await c.stop()
