"""Client TLS contexts for NATS (the adapter half of :mod:`cctf.bus.tlsauth`).

:class:`ClientTls` owns one :class:`ssl.SSLContext` that trusts only the configured CA file and
presents the component's certificate. nats-py reuses the SAME context object for every reconnect,
so :meth:`ClientTls.reload` (after a renewal, e.g. as a ``cctf.ca.renew.CertRenewer.on_renewed``
callback) makes every later (re)connection present the current certificate; live connections keep
theirs (TLS does not re-authenticate a session). A reload first loads the new pair into a scratch
context, so a bad or mismatched file leaves the live context untouched (one-line ``ConfigError``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from cctf.errors import ConfigError

__all__ = ["ClientTls"]


def _load_pair(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(
            f"TLS certificate {cert} / key {key}: cannot be used ({reason})"
        ) from None


class ClientTls:
    """A client TLS context for NATS: ``ca`` (server trust), ``cert`` + ``key`` (this component)."""

    def __init__(self, *, ca: Path, cert: Path, key: Path) -> None:
        self.ca, self.cert, self.key = Path(ca), Path(cert), Path(key)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise ConfigError(f"TLS CA file {self.ca}: cannot be used ({reason})") from None
        _load_pair(ctx, self.cert, self.key)
        self.context = ctx
        self.reloads = 0

    def __repr__(self) -> str:
        return f"ClientTls(ca={str(self.ca)!r}, cert={str(self.cert)!r})"

    def reload(self, *_: Any) -> None:
        """Load the current certificate and key files into the live context (checked first)."""
        _load_pair(ssl.create_default_context(), self.cert, self.key)
        _load_pair(self.context, self.cert, self.key)
        self.reloads += 1
