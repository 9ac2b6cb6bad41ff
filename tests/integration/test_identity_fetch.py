"""cctf.identity.fetch against real HTTPS and TLS servers (the local identity fabric, plus a tiny
redirecting / oversized HTTPS server of this module)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from cryptography import x509

from cctf.devfabric.identity import IdentityFabric, Presentation
from cctf.devfabric.identity_servers import Mode, server_context
from cctf.identity.bundle import parse_bundle
from cctf.identity.fetch import FetchError, FetchReason, fetch_document, probe_tls
from cctf.identity.oidc import parse_discovery, parse_jwks
from cctf.identity.targets import check_endpoint
from cctf.identity.x509svid import parse_der_chain, verify_x509_svid

REGION = "us-east"


async def test_fetches_bundle_discovery_and_jwks(identity_fabric: IdentityFabric) -> None:
    f = identity_fabric
    ca = str(f.web_ca_file)
    data = await fetch_document(f.bundle.bundle_url(REGION), max_bytes=1 << 20, ca_file=ca)
    bundle = parse_bundle(f.trust_domain.name, data)
    assert bundle.authority_count >= 1
    issuer = f.issuer.issuer_url
    disc = parse_discovery(
        issuer,
        await fetch_document(
            issuer.rstrip("/") + "/.well-known/openid-configuration", max_bytes=65536, ca_file=ca
        ),
    )
    keys = parse_jwks(await fetch_document(disc.jwks_uri, max_bytes=262144, ca_file=ca))
    assert keys.keys


async def test_web_pki_is_enforced(identity_fabric: IdentityFabric) -> None:
    # the system roots do not know the local web CA
    with pytest.raises(FetchError) as exc:
        await fetch_document(identity_fabric.bundle.bundle_url(REGION), max_bytes=1 << 20)
    assert exc.value.reason is FetchReason.TLS_FAILED
    with pytest.raises(FetchError) as exc:
        await fetch_document("https://x", max_bytes=10, ca_file="/nonexistent/ca.pem")
    assert exc.value.reason is FetchReason.CA_FILE
    for bad in ("http://127.0.0.1:1/x", "file:///etc/passwd", "https:///nohost"):
        with pytest.raises(FetchError) as exc:
            await fetch_document(bad, max_bytes=10)
        assert exc.value.reason is FetchReason.BAD_URL


async def test_down_and_hanging_endpoints(identity_fabric: IdentityFabric) -> None:
    f = identity_fabric
    ca = str(f.web_ca_file)
    url = f.bundle.bundle_url(REGION)
    f.bundle.set_mode(Mode.HANG, view=REGION)
    started = time.monotonic()
    with pytest.raises(FetchError) as exc:
        await fetch_document(url, max_bytes=1 << 20, ca_file=ca, timeout_s=0.5)
    assert exc.value.reason is FetchReason.TIMEOUT and exc.value.timed_out
    assert time.monotonic() - started < 10  # bounded (generous: a loaded machine)
    f.bundle.set_mode(Mode.DOWN, view=REGION)
    with pytest.raises(FetchError) as exc:
        await fetch_document(url, max_bytes=1 << 20, ca_file=ca, timeout_s=2)
    assert exc.value.reason in (FetchReason.CONNECT_FAILED, FetchReason.TLS_FAILED)
    assert not exc.value.timed_out
    # nothing listens: connect_failed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as exc:
        await fetch_document(f"https://127.0.0.1:{port}/", max_bytes=10, ca_file=ca)
    assert exc.value.reason is FetchReason.CONNECT_FAILED
    with pytest.raises(FetchError) as exc:
        await probe_tls("127.0.0.1", port)
    assert exc.value.reason is FetchReason.CONNECT_FAILED


# ------------------------------------------------------------------ a tiny HTTPS server of our own

Handler = Callable[[str], tuple[int, dict[str, str], bytes]]
Serve = Callable[[Handler], Awaitable[str]]


@pytest_asyncio.fixture
async def tiny_https(identity_fabric: IdentityFabric) -> AsyncIterator[Serve]:
    """``await serve(handler)`` -> base URL of an HTTPS/1.1 server (the fabric's web PKI) that
    answers every request with ``handler(path)``."""
    servers: list[asyncio.Server] = []
    now = time.time()
    ctx = server_context(
        identity_fabric.web_ca.issue_server(
            ["127.0.0.1", "localhost"], not_before=now - 60, not_after=now + 3600
        )
    )

    async def serve(handler: Handler) -> str:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                words = (await reader.readline()).split()
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                status, headers, body = handler(words[1].decode() if len(words) > 1 else "/")
                head = f"HTTP/1.1 {status} X\r\nConnection: close\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(head.encode() + b"\r\n" + body)
                await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=ctx)
        servers.append(srv)
        return f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield serve
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def test_redirects_stay_on_the_origin(
    identity_fabric: IdentityFabric, tiny_https: Serve
) -> None:
    ca = str(identity_fabric.web_ca_file)
    asked_other: list[str] = []

    def elsewhere(path: str) -> tuple[int, dict[str, str], bytes]:
        asked_other.append(path)
        return 200, {}, b"{}"

    other = await tiny_https(elsewhere)
    hops: list[str] = []

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        hops.append(path)
        if path == "/same":
            return 302, {"Location": "/final"}, b""
        if path == "/away":
            return 302, {"Location": other + "/x"}, b""
        if path == "/loop":
            return 307, {"Location": "/loop"}, b""
        if path == "/status":
            return 404, {}, b"not here"
        return 200, {"Content-Type": "application/json"}, b'{"keys": []}'

    base = await tiny_https(handler)
    assert await fetch_document(base + "/same", max_bytes=100, ca_file=ca) == b'{"keys": []}'
    assert hops[-2:] == ["/same", "/final"]
    for path, reason in (
        ("/away", FetchReason.REDIRECT_REFUSED),
        ("/loop", FetchReason.REDIRECT_REFUSED),
        ("/status", FetchReason.HTTP_STATUS),
    ):
        with pytest.raises(FetchError) as exc:
            await fetch_document(base + path, max_bytes=100, ca_file=ca)
        assert exc.value.reason is reason, path
    assert asked_other == []  # the other origin was never asked
    # another host name for the same address is another origin too
    localhost = base.replace("127.0.0.1", "localhost")
    with pytest.raises(FetchError) as exc:
        await fetch_document(localhost + "/away", max_bytes=100, ca_file=ca)
    assert exc.value.reason is FetchReason.REDIRECT_REFUSED


async def test_size_cap_is_enforced_while_reading(
    identity_fabric: IdentityFabric, tiny_https: Serve
) -> None:
    ca = str(identity_fabric.web_ca_file)
    body = json.dumps({"keys": ["x" * 5000]}).encode()
    honest = await tiny_https(lambda p: (200, {"Content-Length": str(len(body))}, body))
    lying = await tiny_https(lambda p: (200, {}, body))  # no length: read until close
    assert await fetch_document(honest, max_bytes=len(body), ca_file=ca) == body
    for url in (honest, lying):
        with pytest.raises(FetchError) as exc:
            await fetch_document(url, max_bytes=len(body) - 1, ca_file=ca)
        assert exc.value.reason is FetchReason.TOO_LARGE
        assert "xxx" not in str(exc.value)  # never the body


# ------------------------------------------------------------------------------------ TLS probe


async def test_probe_returns_the_presented_svid_chain(identity_fabric: IdentityFabric) -> None:
    f = identity_fabric
    bundle = parse_bundle(f.trust_domain.name, f.bundle_file.read_bytes())
    w = f.workload("api")
    host, port = check_endpoint(w.address(REGION))
    ders = await probe_tls(host, port)
    assert len(ders) >= 2  # leaf + intermediate
    chain = parse_der_chain(ders)
    svid = verify_x509_svid(chain, bundle, int(time.time() * 1000), spiffe_id=w.spiffe_id)
    assert str(svid.spiffe_id) == w.spiffe_id
    assert isinstance(chain[0], x509.Certificate)
    # a wrong identity is presented as is: the probe does not judge, validation refuses it
    w.present(Presentation.WRONG_IDENTITY, view=REGION)
    wrong = parse_der_chain(await probe_tls(host, port))
    with pytest.raises(ValueError, match=r"wrong_spiffe_id|wrong_trust_domain"):
        verify_x509_svid(wrong, bundle, int(time.time() * 1000), spiffe_id=w.spiffe_id)
    w.set_mode(Mode.HANG, view=REGION)
    with pytest.raises(FetchError) as exc:
        await probe_tls(host, port, timeout_s=0.5)
    assert exc.value.reason is FetchReason.TIMEOUT


async def test_probe_of_a_plain_tcp_server_is_a_tls_failure() -> None:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-not-tls\r\n" * 10)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(FetchError) as exc:
            await probe_tls("127.0.0.1", port, timeout_s=3)
        assert exc.value.reason in (FetchReason.TLS_FAILED, FetchReason.CONNECT_FAILED)
    finally:
        srv.close()
        await srv.wait_closed()
