"""DNS transports: UDP / TCP / DoT / DoH / DoQ exchanges of one query (the network adapter).

Each function sends one query message and returns the response message, raising on any failure
(classified by :mod:`cctf.agents.dnsclassify`). Hard deadlines are applied by the caller
(:func:`cctf.agents.dnsquery.query`); the ``limit_s`` given here is the libraries' own timeout.
See :mod:`cctf.agents.dnsquery` for the behaviour of each transport.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Sequence
from typing import Final

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.quic
import httpx2

from cctf.agents.canonical import Transport
from cctf.agents.spec import TLS_TRANSPORTS, ResolverSpec
from cctf.util.deadline import background

__all__ = [
    "MAX_DOH_BODY",
    "DohResponseError",
    "doh_url",
    "prepare",
    "send",
    "server_hostname",
    "tls_context",
]

#: Largest DoH response body read.
MAX_DOH_BODY: Final = 65535
#: Over UDP, a query is sent again after this long without an answer (a lost datagram), while time
#: is left; every copy has the same id and question, so a late answer to any of them is accepted.
UDP_RETRY_S: Final = 1.0
_MAX_DOH_BODY: Final = MAX_DOH_BODY
#: A resend is made only if at least this much time is left.
_MIN_RETRY_S: Final = 0.05


@functools.lru_cache(maxsize=256)
def tls_context(spec: ResolverSpec) -> ssl.SSLContext:
    """The client TLS context of one resolver, built once. Raises ``ValueError`` if ``ca_file`` cannot
    be loaded."""
    if spec.verify_tls:
        try:
            ctx = ssl.create_default_context(cafile=spec.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"resolver {spec.id!r}: cannot load ca_file {spec.ca_file!r}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if spec.transport == Transport.DOT:
        ctx.set_alpn_protocols(["dot"])
    elif spec.transport == Transport.DOH:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def prepare(specs: Sequence[ResolverSpec]) -> None:
    """Check a resolver list as a whole (unique ids) and load its TLS material now, so configuration
    mistakes raise ``ValueError`` at start-up rather than in a round. Idempotent."""
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ResolverSpec):
            raise ValueError(f"not a ResolverSpec: {spec!r}")
        if spec.id in seen:
            raise ValueError(f"duplicate resolver id {spec.id!r}")
        seen.add(spec.id)
        if spec.transport == Transport.DOQ and not dns.quic.have_quic:
            raise ValueError(
                f"resolver {spec.id!r}: doq needs dnspython's doq extra (aioquic), not installed"
            )
        if spec.transport in TLS_TRANSPORTS:
            tls_context(spec)


def server_hostname(spec: ResolverSpec) -> str | None:
    """The name sent as SNI and verified in the certificate (``tls_hostname``, else the address when
    verifying)."""
    if spec.tls_hostname is not None:
        return spec.tls_hostname
    return spec.address if spec.verify_tls else None


class DohResponseError(Exception):
    """The DoH server's HTTP response is unacceptable (too large, encoded)."""


class _BoundedTransport(httpx2.AsyncBaseTransport):
    """Wraps the real transport: pins SNI/Host to ``tls_hostname`` and bounds the response body."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, spec: ResolverSpec) -> None:
        self._inner = inner
        self._spec = spec

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        spec = self._spec
        if spec.tls_hostname is not None:
            request.extensions["sni_hostname"] = spec.tls_hostname
            host = spec.tls_hostname if spec.port == 443 else f"{spec.tls_hostname}:{spec.port}"
            request.headers["Host"] = host
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        body = bytearray()
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise DohResponseError("DoH response has a content encoding")
            declared = response.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > _MAX_DOH_BODY):
                raise DohResponseError("DoH response body too large")
            stream = response.stream
            if not isinstance(stream, httpx2.AsyncByteStream):
                raise DohResponseError("DoH response stream is not asynchronous")
            async for chunk in stream:
                body += chunk
                if len(body) > _MAX_DOH_BODY:
                    raise DohResponseError("DoH response body too large")
        finally:
            await response.aclose()
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx2.ByteStream(bytes(body)),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def doh_url(spec: ResolverSpec) -> str:
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    return f"https://{host}:{spec.port}{spec.url_path}"


async def _udp(spec: ResolverSpec, q: dns.message.Message, limit_s: float) -> dns.message.Message:
    af = dns.inet.af_for_address(spec.address)
    backend = dns.asyncbackend.get_backend("asyncio")
    # Connected socket: ICMP errors are reported, foreign sources filtered by the kernel.
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]
        af, socket.SOCK_DGRAM, 0, None, (spec.address, spec.port)
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    try:
        while True:  # resend after UDP_RETRY_S without an answer (a lost datagram)
            remaining = end - loop.time()
            try:
                response, _tcp = await dns.asyncquery.udp_with_fallback(
                    q,
                    spec.address,
                    timeout=min(remaining, UDP_RETRY_S),
                    port=spec.port,
                    ignore_unexpected=True,
                    udp_sock=sock,
                    ignore_errors=True,
                )
            except dns.exception.Timeout:
                if end - loop.time() < 2 * _MIN_RETRY_S:
                    raise
                continue
            return response
    finally:
        await sock.close()


async def _doq(spec: ResolverSpec, q: dns.message.Message, limit_s: float) -> dns.message.Message:
    # dnspython's quic() without a connection closes it before returning, and that close waits for
    # the QUIC draining period (3 PTO: ~90 ms on loopback, far more on a slow path), which would eat
    # the deadline after the answer is in. So: our own connection, closed in the background.
    verify: bool | str = spec.ca_file if spec.ca_file is not None else spec.verify_tls
    if not dns.quic.have_quic:  # dnspython without its doq extra (refused by prepare() already)
        raise RuntimeError("DoQ needs dnspython's doq extra (aioquic)")
    # the public factory dnspython's own quic() uses (the manager class lives in a private module)
    _context, make_manager = dns.quic.factories_for_backend(  # type: ignore[no-untyped-call]
        dns.asyncbackend.get_backend("asyncio")
    )
    manager = make_manager(None, verify_mode=verify, server_name=server_hostname(spec))
    connection = manager.connect(spec.address, spec.port)
    try:
        return await dns.asyncquery.quic(
            q, spec.address, timeout=limit_s, port=spec.port, connection=connection
        )
    finally:
        background(connection.close())


async def send(
    spec: ResolverSpec, q: dns.message.Message, limit_s: float, ctx: ssl.SSLContext | None
) -> dns.message.Message:
    match spec.transport:
        case Transport.UDP:
            return await _udp(spec, q, limit_s)
        case Transport.TCP:
            return await dns.asyncquery.tcp(q, spec.address, timeout=limit_s, port=spec.port)
        case Transport.DOT:
            return await dns.asyncquery.tls(
                q,
                spec.address,
                timeout=limit_s,
                port=spec.port,
                ssl_context=ctx,
                server_hostname=server_hostname(spec),
            )
        case Transport.DOH:
            assert ctx is not None
            inner = httpx2.AsyncHTTPTransport(verify=ctx, http1=True, http2=True, trust_env=False)
            client = httpx2.AsyncClient(
                transport=_BoundedTransport(inner, spec),
                trust_env=False,
                follow_redirects=False,
                timeout=limit_s,
            )
            async with client:
                return await dns.asyncquery.https(
                    q,
                    doh_url(spec),
                    # No dnspython timeout here: its asyncio.wait_for would cancel httpcore in the
                    # middle of a TLS handshake, which leaks the socket; the client's own timeouts
                    # (anyio.fail_after) close it properly.
                    timeout=None,
                    port=spec.port,
                    client=client,
                    bootstrap_address=spec.address,
                )
        case Transport.DOQ:
            return await _doq(spec, q, limit_s)
    raise AssertionError(f"unhandled transport {spec.transport}")  # pragma: no cover
