"""An agent's first certificate over its one-time join credential (adapter; docs/ca.md §9).

:func:`needs_certificate` (pure, files only): the agent's certificate file is missing, unreadable or
not valid now. :func:`bootstrap` then connects to NATS over TLS presenting the JOIN certificate
(``ca.join_cert`` / ``ca.join_key``; the server maps it to ``join-<region>.<agent>``, which may only
ask for that agent's first certificate, :func:`cctf.bus.tlsauth.join_tls_user`), asks the CA on
``cctf.v1.ca.join.<region>.<agent>`` (:meth:`cctf.ca.renew.CertRenewer.obtain` with ``join``),
writes the agent's own certificate and key to ``cert_dir`` and closes that connection. The agent
then connects with its own certificate (``nats.tls``) and renews on that connection.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from cryptography import x509

from cctf.bus.accounts import NatsUser
from cctf.bus.connect import connect
from cctf.bus.tls import ClientTls
from cctf.bus.tlsauth import JOIN_PREFIX
from cctf.ca.config import AgentCaConfig
from cctf.ca.errors import CaError, CaReason
from cctf.ca.profile import AgentCert
from cctf.ca.renew import CertRenewer
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.crypto.keys import SigningKey
from cctf.errors import ConfigError

__all__ = ["bootstrap", "needs_certificate"]


def needs_certificate(cert_path: Path, now_ms: int) -> bool:
    """True when ``cert_path`` holds no certificate valid at ``now_ms`` (missing, unreadable,
    undecodable, not yet or no longer valid): the agent must bootstrap."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        return True
    nb = cert.not_valid_before_utc.timestamp() * 1000
    na = cert.not_valid_after_utc.timestamp() * 1000
    return not nb <= now_ms < na


async def bootstrap(
    urls: list[str],
    key: SigningKey,
    *,
    agent: str,
    region: str,
    config: AgentCaConfig,
    server_ca: Path,
    retries: int = 3,
    patience_ms: int = 30_000,
    clock: Clock = SYSTEM_CLOCK,
) -> AgentCert:
    """The agent's first certificate over its join credential (module docstring); a refused or
    unanswered request is retried with backoff for ``patience_ms`` (the CA may be starting)."""
    if config.join_cert is None or config.join_key is None:
        raise ConfigError("ca.join_cert/ca.join_key: required to get a first certificate")
    tls = ClientTls(ca=server_ca, cert=Path(config.join_cert), key=Path(config.join_key))
    nc = await connect(
        urls,
        NatsUser(f"{JOIN_PREFIX}{region}.{agent}", ""),
        name=f"cctf-join-{agent}",
        initial_retries=retries,
        tls=tls,
    )
    renewer = CertRenewer(nc, key, agent=agent, region=region, config=config, clock=clock)
    try:
        got = await renewer.obtain_until(clock.now_ms() + patience_ms, join=True)
        if got is None:
            raise CaError(CaReason.JOIN, f"no first certificate within {patience_ms} ms")
        return got
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
