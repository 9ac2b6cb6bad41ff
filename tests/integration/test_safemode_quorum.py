"""Safe-mode announcements of several coordinators, combined k-of-m by the client, over a real
nats-server: three coordinators (``per_coordinator_subjects``) each announce their state on their own
subject ``cctf.v1.control.<region>.<coordinator>``; ``TrustClient(coordinators=2-of-3).safe_mode``
combines them (a scope is active when two list it); one coordinator key alone changes nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hafabric import COORDS, EAST, POLICY, Fabric

from cctf.bus.streams import CONTROL_STREAM, ensure_streams
from cctf.bus_schemas.control import SafeModeAnnouncement, SafeModeCause, SafeModeState
from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.subjects import control_subject
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.errors import NoVerdict, VerdictRejected
from cctf.client.sdk import TrustClient
from cctf.coordinator.pipeline.safemode import seal_announcement
from cctf.devfabric.nats import NatsFabric

WWW = "www.example."


async def test_two_of_three_safe_mode_state_rogue_alone_changes_nothing(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    f = Fabric(nats_single, nats_connect)
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [EAST], 1)
    client_nc = await nats_connect(nats_single, "client")
    client = TrustClient(client_nc, f.trust, EAST, clock=f.clock, coordinators=POLICY)
    try:
        for name in COORDS:
            await f.start(name)
        deadline = time.monotonic() + 15
        last: Exception | None = None
        while True:  # each coordinator announces its state at start, on its own subject
            try:
                status = await client.safe_mode()
                if status.signers == COORDS:
                    break
            except (NoVerdict, VerdictRejected) as exc:
                last = exc
            assert time.monotonic() < deadline, (
                f"no combined safe-mode state: {last!r} {client.safe_modes.rejected}"
            )
            await asyncio.sleep(0.05)
        assert status.active == () and not status.covers(WWW)
        js = admin.jetstream()
        for c in COORDS:
            msg = await js.get_last_msg(CONTROL_STREAM, control_subject(EAST, c))
            assert msg.data
        with pytest.raises(NoVerdict):  # nothing on the single-coordinator subject
            await TrustClient(client_nc, f.trust, EAST, clock=f.clock).safe_mode()

        def entered(coord: str, seq_offset: int) -> SafeModeAnnouncement:
            now = f.clock.now_ms()
            return SafeModeAnnouncement(
                region=EAST,
                scope=WWW,
                state=SafeModeState.ENTERED,
                cause=SafeModeCause.OPERATOR,
                rule="",
                reason="test",
                round=now // 1000,
                active=[WWW],
                issued_ms=now,
                expires_ms=now + 300_000,
                coordinator=coord,
                seq=now * 1000 + 500 + seq_offset,
            )

        async def publish(coord: str, seq_offset: int) -> None:
            subject, data = seal_announcement(
                f.coords[coord].key, entered(coord, seq_offset), per_coordinator=True
            )
            await js.publish(subject, data, timeout=5.0)

        await publish("c3", 0)  # one (rogue) coordinator key alone: nothing changes
        status = await client.safe_mode()
        assert status.active == () and not status.covers(WWW)
        await publish("c2", 1)  # a second one agrees: the scope is in safe mode
        status = await client.safe_mode()
        assert status.active == (WWW,) and status.covers(WWW)
        strict = TrustClient(
            client_nc, f.trust, EAST, clock=f.clock, coordinators=CoordinatorPolicy(2, ("c1", "c9"))
        )
        with pytest.raises(VerdictRejected) as info:  # only one configured coordinator announced
            await strict.safe_mode()
        assert info.value.reason is Reason.COORDINATOR_QUORUM
    finally:
        await f.stop_all()
