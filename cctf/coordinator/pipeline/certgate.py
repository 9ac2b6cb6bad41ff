"""The certificate gate (config ``ca:``): the coordinator's CA-log follower and its registry.

:class:`CertGate` loads the intermediate certificate and the CA log's public key, follows the CA log
(:class:`cctf.ca.follow.CaLogFollower`) into a :class:`cctf.ca.registry.CertRegistry`, and hands
the registry to the ballot verifier (step 12a: ``cert_unlogged`` / ``cert_expired`` /
``cert_revoked``, counted by the service like every refusal). :meth:`start` waits up to
``ready_timeout_ms`` for the follower to catch up with the log, so a restarted coordinator does not
refuse the ballots of agents whose certificates are already logged.
"""

from __future__ import annotations

import asyncio

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.ca.config import CaGateConfig, load_certificate, load_public_key
from cctf.ca.follow import CaLogFollower
from cctf.ca.registry import CertRegistry
from cctf.crypto.trust import TrustConfig

__all__ = ["CertGate"]

_log = telemetry.get_logger("cctf.coordinator.certgate")


class CertGate:
    def __init__(self, config: CaGateConfig, trust: TrustConfig, conn: Connection) -> None:
        self.config = config
        intermediate = load_certificate(config.intermediate, "ca.intermediate")
        self.registry = CertRegistry(intermediate, config.trust_domain, trust)
        log_key = load_public_key(config.log_key, "ca.log_key")
        self.follower = CaLogFollower(conn, self.registry, log_key)

    async def start(self) -> None:
        self.follower.start()
        try:
            await asyncio.wait_for(self.follower.ready.wait(), self.config.ready_timeout_ms / 1000)
        except TimeoutError:
            _log.warning("ca_log_not_ready", timeout_ms=self.config.ready_timeout_ms)

    async def stop(self) -> None:
        await self.follower.stop()
