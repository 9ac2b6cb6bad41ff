"""Fixtures and helpers for the local identity fabric (``cctf.devfabric.identity``).

Fixtures (imported by tests/conftest.py, so every test can ask for them)
------------------------------------------------------------------------
``identity_fabric``         async: a started :class:`IdentityFabric` in ``tmp_path`` (five region
                            views, trust domain ``demo.test``, workloads api/auth/db), stopped at
                            teardown; asserts no connection task outlived it.
``identity_fabric_thread``  the same served from a background thread, for synchronous tests
                            (subprocesses, sync HTTP clients).

Helpers
-------
``fetch_json(url, ca_file)``        GET over HTTPS verified against ``ca_file`` -> parsed JSON
``peer_chain(address)``             DER certificates a TLS endpoint presents (leaf first)
``verify_svid(chain, roots)``       cryptography's X.509 verifier (client policy) on a chain
``find_leaks(data, fabric)``        reasons ``data`` holds a token, private key or certificate
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from cctf.devfabric.identity import IdentityFabric

__all__ = [
    "fetch_json",
    "find_leaks",
    "identity_fabric",
    "identity_fabric_thread",
    "peer_chain",
    "verify_svid",
]


@pytest_asyncio.fixture
async def identity_fabric(tmp_path: Path) -> AsyncIterator[IdentityFabric]:
    fabric = IdentityFabric(tmp_path / "idfabric")
    async with fabric:
        yield fabric
    leftover = [s for s in fabric.servers() if s._tasks]
    assert not leftover, f"identity fabric connections left open: {leftover}"


@pytest.fixture
def identity_fabric_thread(tmp_path: Path) -> Iterator[IdentityFabric]:
    with IdentityFabric(tmp_path / "idfabric-thread").run_in_thread() as fabric:
        yield fabric


def client_context(ca_file: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


async def fetch(url: str, ca_file: Path | str, *, timeout_s: float = 5.0) -> httpx2.Response:
    async with httpx2.AsyncClient(verify=client_context(ca_file), timeout=timeout_s) as client:
        return await client.get(url)


async def fetch_json(url: str, ca_file: Path | str, *, timeout_s: float = 5.0) -> Any:
    response = await fetch(url, ca_file, timeout_s=timeout_s)
    response.raise_for_status()
    return response.json()


async def peer_chain(address: str, *, timeout_s: float = 5.0) -> list[bytes]:
    """The DER chain a TLS endpoint presents, unverified (the caller validates it)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, int(port), ssl=ctx), timeout_s
    )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        chain = sslobj._sslobj.get_unverified_chain()  # Python 3.11: private, stable
        return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    finally:
        writer.close()


def verify_svid(chain_der: Sequence[bytes], roots: Sequence[x509.Certificate]) -> str:
    """Validate a presented chain with cryptography's verifier; returns the leaf's URI SAN."""
    leaf, *rest = (x509.load_der_x509_certificate(d) for d in chain_der)
    verifier = PolicyBuilder().store(Store(list(roots))).build_client_verifier()
    result = verifier.verify(leaf, rest)
    uris = [s for s in result.subjects or [] if isinstance(s, x509.UniformResourceIdentifier)]
    assert len(uris) == 1, uris
    return uris[0].value


JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.")
PEM_MARKERS = (b"-----BEGIN", b"PRIVATE KEY", b"CERTIFICATE-----")


def find_leaks(data: bytes, fabric: IdentityFabric) -> list[str]:
    """Why ``data`` must not be on the bus: a token (JWT shape), a PEM block, the raw DER / scalar
    of any private key the fabric made, or the DER of any certificate it made. Empty: clean."""
    reasons: list[str] = []
    if JWT_SHAPE.search(data):
        reasons.append("JWT-shaped token")
    for token in fabric.minted_tokens():
        if token.encode() in data:
            reasons.append("a minted token")
    for marker in PEM_MARKERS:
        if marker in data:
            reasons.append(f"PEM marker {marker.decode()!r}")
    for secret in fabric.secret_material():
        if secret in data:
            reasons.append(f"private key bytes ({len(secret)} bytes)")
    for der in fabric.certificate_ders():
        if der in data:
            reasons.append(f"full certificate DER ({len(der)} bytes)")
    return reasons
