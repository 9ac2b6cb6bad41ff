"""The CA service and the agent's renewer over a real nats-server, with a log that the test
controls (acknowledges, stalls, refuses): no certificate leaves the CA before its log entry is
acknowledged. The real CA log (cctf.ca.log over cctf.bus.logstream) is in test_ca_gate.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from capki import TRUST_DOMAIN, make_ca_world
from cryptography.hazmat.primitives import serialization

from cctf.ca.config import AgentCaConfig
from cctf.ca.entries import CertEntry, decode_entry
from cctf.ca.errors import CaError, CaReason
from cctf.ca.renew import CertRenewer
from cctf.ca.service import CaService
from cctf.clock import SystemClock
from cctf.devfabric.nats import NatsFabric


class ControlledLog:
    """A CA log whose acknowledgement the test controls (``ack``: an event; ``refuse``)."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.acked: list[int] = []
        self.ack = asyncio.Event()
        self.ack.set()
        self.refuse = False

    @property
    def size(self) -> int:
        return len(self.entries)

    async def append(self, entries: Sequence[bytes]) -> int:
        first = len(self.entries)
        self.entries.extend(entries)
        await self.ack.wait()
        if self.refuse:
            raise CaError(CaReason.LOG, "the stream is full")
        self.acked.append(first)
        return first


async def test_certificates_leave_the_ca_only_after_the_log_acknowledged(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path
) -> None:
    clock = SystemClock()
    world = make_ca_world(now_ms=clock.now_ms())
    (tmp_path / "intermediate.pem").write_bytes(
        world.issuer.intermediate.public_bytes(serialization.Encoding.PEM)
    )
    log = ControlledLog()
    admin = await nats_connect(nats_single, "ca", name="test-ca")  # its own least privilege
    ca = CaService(admin, world.issuer, log, clock=clock, append_timeout_s=1.0)
    await ca.start()
    try:
        agent = world.agents["agent-us-east"]
        nc = await nats_connect(nats_single, "agent-us-east", name="agent-us-east")
        config = AgentCaConfig(
            trust_domain=TRUST_DOMAIN,
            intermediate=str(tmp_path / "intermediate.pem"),
            cert_dir=str(tmp_path / "certs"),
            lifetime_ms=3_000,
        )
        renewer = CertRenewer(
            nc, agent.key, agent="agent-us-east", region="us-east", config=config, clock=clock
        )
        seen: list[str] = []
        renewer.on_renewed.append(lambda c: seen.append(c.serial))

        cert = await renewer.obtain()
        assert log.acked == [0] and decode_entry(log.entries[0]) == CertEntry(cert.der)
        assert seen == [cert.serial] and ca.registry.find(cert.serial) == cert

        # the log stalls past the CA's append timeout: the agent gets an error, no certificate
        log.ack.clear()
        with pytest.raises(CaError) as exc:
            await renewer.obtain()
        assert "log" in str(exc.value) and renewer.current == cert and seen == [cert.serial]
        # the log refuses: same
        log.refuse = True
        log.ack.set()
        with pytest.raises(CaError):
            await renewer.obtain()
        assert renewer.current == cert and ca.counts["refused:log"] == 2
        log.refuse = False

        # renewal at 2/3 of the 3 s lifetime: a new certificate before the old one expires
        renewer.start()
        await asyncio.sleep(4.5)
        await renewer.stop()
        assert len(seen) >= 3, seen
        assert renewer.current is not None and renewer.current.serial == seen[-1]
        certs = [ca.registry.find(s) for s in seen]
        for old, new in itertools.pairwise(certs):  # overlapping validity: no gap
            assert old is not None and new is not None
            assert new.not_before_ms < old.not_after_ms
        # every certificate handed out was acknowledged first; refused ones were never handed out
        handed = {decode_entry(log.entries[i]).der for i in log.acked}  # type: ignore[union-attr]
        assert {ca.registry.find(s).der for s in seen} <= handed  # type: ignore[union-attr]
        pem = renewer.cert_path.read_text()
        assert pem.count("BEGIN CERTIFICATE") == 2
        assert renewer.key_path.stat().st_mode & 0o077 == 0
        # a request from a user of another region for this agent: not permitted to publish
        west = await nats_connect(nats_single, "agent-eu-west", name="agent-eu-west")
        subject, data = agent.request(clock.now_ms())
        from cctf.bus.rpc import RpcError, request

        with pytest.raises(RpcError):
            await request(west, subject, data, timeout_s=0.5)
    finally:
        await ca.stop()
