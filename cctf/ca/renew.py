"""The agent's certificate task: obtain a certificate, renew it at 2/3 of its lifetime.

:class:`CertRenewer` (one per agent process, on the agent's NATS connection):

* :meth:`obtain` — new TLS key (ECDSA P-256, generated here, never sent), CSR, signed
  ``cert-request`` on ``cctf.v1.ca.issue.<region>.<agent>``, reply checked by
  :func:`cctf.ca.client.accept_response`; then the files are written atomically:
  ``<cert_dir>/<agent>.tls-key.pem`` (0600) and ``<cert_dir>/<agent>.cert.pem`` (leaf then
  chain), and every ``on_renewed`` callback is called (``natstls``: reload the TLS context so
  reconnects use the current certificate).
* :meth:`run` — sleeps until :func:`~cctf.ca.client.renew_at_ms` of the current certificate (2/3 of
  its lifetime), renews, and retries a failure with bounded backoff (0.1 s doubling to 5 s, never
  past the certificate's expiry without trying). The old certificate stays valid for the remaining
  third, so coordinators (which follow the CA log) hold the new one before the old one expires: no
  missed round.

Time is read through an injected :class:`~cctf.clock.Clock`; the private key is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.rpc import RpcError, request
from cctf.ca.client import accept_response, make_csr, new_tls_key, renew_at_ms, seal_request
from cctf.ca.config import AgentCaConfig, load_certificate
from cctf.ca.errors import CaError
from cctf.ca.profile import AgentCert
from cctf.ca.request import decode_response
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.crypto.keys import SigningKey
from cctf.util.files import write_file_atomic, write_secret_file

__all__ = ["CertRenewer"]

_MIN_BACKOFF_S: Final = 0.1
_MAX_BACKOFF_S: Final = 5.0
_log = telemetry.get_logger("cctf.ca.renew")


class CertRenewer:
    def __init__(
        self,
        conn: Connection,
        key: SigningKey,
        *,
        agent: str,
        region: str,
        config: AgentCaConfig,
        clock: Clock = SYSTEM_CLOCK,
        intermediate: x509.Certificate | None = None,
    ) -> None:
        self._conn = conn
        self._key = key
        self.agent = agent
        self.region = region
        self.config = config
        self._clock = clock
        self._intermediate = intermediate or load_certificate(
            config.intermediate, "ca.intermediate"
        )
        self.current: AgentCert | None = None
        self.renewals = 0
        self.failures = 0
        self.on_renewed: list[Callable[[AgentCert], None]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def cert_path(self) -> Path:
        return Path(self.config.cert_dir) / f"{self.agent}.cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.config.cert_dir) / f"{self.agent}.tls-key.pem"

    async def obtain(self, *, join: bool = False) -> AgentCert:
        """One request; :class:`CaError` or :class:`RpcError` when it fails. ``join``: the first
        certificate, over a connection authenticated by a join certificate (cctf.ca.join)."""
        tls_key = new_tls_key()
        subject, data = seal_request(
            self._key,
            region=self.region,
            agent=self.agent,
            csr=make_csr(tls_key, self.agent),
            lifetime_ms=self.config.lifetime_ms,
            now_ms=self._clock.now_ms(),
            join=join,
        )
        reply = await request(
            self._conn, subject, data, timeout_s=self.config.request_timeout_ms / 1000
        )
        resp = decode_response(reply)
        cert = accept_response(
            resp,
            key=self._key,
            tls_key=tls_key,
            intermediate=self._intermediate,
            trust_domain=self.config.trust_domain,
        )
        pem_key = tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = [x509.load_der_x509_certificate(d) for d in (cert.der, *resp.chain)]
        pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self._store(pem_key, pem_chain)
        self.current = cert
        self.renewals += 1
        _log.info(
            "ca_certificate",
            serial=cert.serial,
            not_after_ms=cert.not_after_ms,
            log_index=resp.log_index,
        )
        for cb in self.on_renewed:
            try:
                cb(cert)
            except Exception:  # a consumer's bug must not stop renewals
                _log.exception("ca_on_renewed_failed")
        return cert

    def _store(self, pem_key: bytes, pem_chain: bytes) -> None:
        """Key first (0600), then the chain: a reader that sees the new chain finds its key."""
        Path(self.config.cert_dir).mkdir(parents=True, exist_ok=True)
        write_secret_file(self.key_path, pem_key)
        write_file_atomic(self.cert_path, pem_chain, mode=0o644)

    async def obtain_until(self, deadline_ms: int, *, join: bool = False) -> AgentCert | None:
        """:meth:`obtain`, retried with backoff until it succeeds, ``deadline_ms`` or stop."""
        delay = _MIN_BACKOFF_S
        while not self._stop.is_set():
            try:
                return await self.obtain(join=join)
            except (CaError, RpcError) as exc:
                self.failures += 1
                _log.warning("ca_request_failed", error=str(exc)[:300], failures=self.failures)
            if self._clock.now_ms() >= deadline_ms:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="cctf-ca-renew")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 2.0)

    async def run(self) -> None:
        """Renew at 2/3 of each certificate's lifetime until :meth:`stop`."""
        while not self._stop.is_set():
            cur = self.current
            if cur is None:
                await self.obtain_until(self._clock.now_ms() + 60_000)
                continue
            wait_ms = renew_at_ms(cur) - self._clock.now_ms()
            if wait_ms > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait_ms / 1000)
                continue
            # past expiry too the agent keeps asking (its ballots are refused meanwhile)
            got = await self.obtain_until(max(cur.not_after_ms, self._clock.now_ms() + 60_000))
            if got is None and not self._stop.is_set():
                _log.error("ca_renewal_failed", serial=cur.serial, not_after_ms=cur.not_after_ms)
