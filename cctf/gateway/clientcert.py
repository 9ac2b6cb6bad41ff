"""A presented client certificate chain from RFC 9440 headers (pure).

A TLS-terminating proxy (or the caller itself) passes the client's certificate as
``Client-Cert: :<base64 DER>:`` and its intermediates as ``Client-Cert-Chain: :<b64>:, :<b64>:``
(RFC 9440 §2: structured-field byte sequences, RFC 8941 §3.3.5). The gateway turns them into a PEM
chain, leaf first, for the workload's mtls path; the chain is then validated locally under the
quorum-verified bundle like any presented chain (it grants nothing by itself).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = ["CERT_PATTERN", "CHAIN_PATTERN", "MAX_HEADER_CHARS", "ClientCertError", "chain_pem"]

#: longest Client-Cert / Client-Cert-Chain header value accepted
MAX_HEADER_CHARS: Final = 64 * 1024
#: presented certificates (leaf + intermediates) at most, as cctf.identity.x509svid
MAX_CERTS: Final = 8
#: one RFC 8941 byte sequence of non-empty, correctly padded base64
B64: Final = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})"
_ITEM: Final = re.compile(rf":({B64}):")
#: the documented header patterns (the OpenAPI schema): one item; 1..7 items
CERT_PATTERN: Final = rf"^:{B64}:$"
CHAIN_PATTERN: Final = rf"^:{B64}:(?:[ \t]*,[ \t]*:{B64}:){{0,{MAX_CERTS - 2}}}$"


class ClientCertError(ValueError):
    """A Client-Cert / Client-Cert-Chain header that is not RFC 9440 (one line)."""


def _items(value: str, what: str) -> list[bytes]:
    if len(value) > MAX_HEADER_CHARS:
        raise ClientCertError(f"{what} longer than {MAX_HEADER_CHARS} characters")
    out: list[bytes] = []
    for part in value.split(","):
        m = _ITEM.fullmatch(part.strip(" \t"))
        if m is None:
            raise ClientCertError(f"{what} is not a list of :base64: byte sequences (RFC 9440)")
        try:
            der = base64.b64decode(m.group(1), validate=True)
        except (binascii.Error, ValueError):
            raise ClientCertError(f"{what}: invalid base64") from None
        if not der:
            raise ClientCertError(f"{what}: empty certificate")
        out.append(der)
    return out


def _pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def chain_pem(cert: str | None, chain: str | None) -> str | None:
    """The PEM chain (leaf first) of the two headers; ``None`` without ``Client-Cert``. Raises
    :class:`ClientCertError` (malformed, or too many certificates)."""
    if cert is None:
        return None  # a chain without its leaf proves nothing: as if none was presented
    leaf = _items(cert, "Client-Cert")
    if len(leaf) != 1:
        raise ClientCertError("Client-Cert holds more than one certificate")
    rest = [] if chain is None else _items(chain, "Client-Cert-Chain")
    if 1 + len(rest) > MAX_CERTS:
        raise ClientCertError(f"more than {MAX_CERTS} certificates presented")
    return "".join(_pem(d) for d in leaf + rest)
