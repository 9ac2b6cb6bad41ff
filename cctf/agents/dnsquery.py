"""One DNS query through UDP / TCP / DoT / DoH / DoQ under a hard deadline (DNS adapter).

:func:`query` never raises for network, TLS or DNS problems: every failure becomes an
:class:`~cctf.agents.canonical.Observation` with status ``timeout``, ``servfail`` or ``error``. It raises
``ValueError`` only for configuration mistakes (bad name or type, unreadable CA file, bad deadline).

Deadlines are hard. dnspython's own timeouts can overshoot, and ``asyncio.wait_for`` waits, without
bound, for the cancelled operation to finish its clean-up (a QUIC close waits out the draining
period), so every DNS call runs in a task that is abandoned if it has not unwound shortly after
cancellation. The libraries' own timeouts are set a little earlier (10 %, at most 100 ms) so that they
normally fire first and clean up properly; the hard deadline is the backstop.

Transport notes:

* ``udp``: a *connected* UDP socket, so an ICMP port-unreachable surfaces at once as ``error``
  ("connection refused") and datagrams from other addresses are dropped by the kernel. Datagrams that
  do not parse or do not answer the query (wrong id or question) are ignored as possible spoofs, like a
  stub resolver does: a server that only sends such datagrams ends in ``timeout``. A truncated (TC)
  answer is retried over TCP.
* ``tcp``, ``dot``: one connection per query; a wrong id/question or a malformed message is ``error``.
* ``doh``: RFC 8484 POST over HTTP/2 or HTTP/1.1 (ALPN), one connection per query, no proxies, no
  redirects, no content encoding; the body is capped at 65535 bytes.
* ``doq``: RFC 9250 through dnspython/aioquic, one connection per query, closed in the background so
  the QUIC draining period (about 3 PTO) does not count against the deadline.

TLS (``dot``, ``doh``, ``doq``): the certificate is verified unless ``verify_tls`` is false, against
``ca_file`` when given (only that CA is trusted) or the system roots, and the name checked is
``tls_hostname`` when given, else the resolver's IP address (which must then be in the certificate's
subjectAltName). The connection always goes to ``address``: ``tls_hostname`` is never resolved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import ipaddress
import math
import re
import socket
import ssl
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Final, TypeVar

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import httpx2
from dns.quic._asyncio import AsyncioQuicManager
from dns.quic._common import UnexpectedEOF as _QuicUnexpectedEOF

from cctf.agents.canonical import (
    Observation,
    Transport,
    VoteStatus,
    observation_from_response,
    parse_qname,
    parse_qtype,
)
from cctf.bus_schemas import limits as L
from cctf.ids import check_id

__all__ = [
    "DEFAULT_PORTS",
    "EDNS_PAYLOAD",
    "TLS_TRANSPORTS",
    "ResolverSpec",
    "prepare",
    "query",
    "query_all",
]

T = TypeVar("T")

#: Default port of each transport.
DEFAULT_PORTS: Final[Mapping[Transport, int]] = {
    Transport.UDP: 53,
    Transport.TCP: 53,
    Transport.DOT: 853,
    Transport.DOH: 443,
    Transport.DOQ: 853,
}
TLS_TRANSPORTS: Final = frozenset({Transport.DOT, Transport.DOH, Transport.DOQ})
#: EDNS UDP payload size advertised in queries (DNS flag day 2020).
EDNS_PAYLOAD: Final = 1232
#: Queries over encrypted transports are padded to a multiple of this (RFC 8467).
_PAD_BLOCK: Final = 128
#: Largest DoH response body read.
_MAX_DOH_BODY: Final = 65535
#: After the deadline, how long a cancelled query may take to unwind before it is abandoned.
_CANCEL_GRACE_S: Final = 0.05
#: The libraries' own timeouts are set this much (at most) before the hard deadline, so they normally
#: fire first and clean up; the hard deadline is the backstop.
_INNER_MARGIN_S: Final = 0.1
#: query_all does not start a query with less time than this left.
_MIN_START_S: Final = 0.01
_DEFAULT_URL_PATH: Final = "/dns-query"
_LABEL_RE: Final = re.compile(r"[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?")
_URL_PATH_RE: Final = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,254}")
_SPEC_KEYS: Final = frozenset(
    {"id", "address", "port", "transport", "tls_hostname", "url_path", "ca_file", "verify_tls"}
)

# Tasks abandoned after their deadline; kept referenced until they finish so they are not collected.
_DETACHED: set[asyncio.Task[Any]] = set()


def _is_hostname(value: str) -> bool:
    if not value or len(value) > 253:
        return False
    return all(_LABEL_RE.fullmatch(label) for label in value.removesuffix(".").split("."))


@dataclasses.dataclass(frozen=True)
class ResolverSpec:
    """One resolver as an agent reaches it. Validated on construction (``ValueError``).

    * ``id``: ``[a-z0-9][a-z0-9-]{0,31}``, unique within an agent's resolver list;
    * ``address``: an IPv4 or IPv6 literal without scope (never a name: resolving the resolver would
      be circular);
    * ``port``: 1..65535 (:meth:`from_dict` fills in :data:`DEFAULT_PORTS`);
    * ``tls_hostname``: name to verify in the server certificate and to send as SNI (and the DoH Host);
      only for ``dot``/``doh``/``doq``; when absent the IP address is verified;
    * ``url_path``: DoH path, default ``/dns-query``; only for ``doh``;
    * ``ca_file``: PEM file of the CA(s) to trust instead of the system roots; only for TLS transports;
    * ``verify_tls``: ``False`` disables certificate verification (test set-ups only); only for TLS
      transports and incompatible with ``ca_file``.
    """

    id: str
    address: str
    port: int
    transport: Transport
    tls_hostname: str | None = None
    url_path: str = _DEFAULT_URL_PATH
    ca_file: str | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        ident = self.id
        check_id(ident, "resolver id")
        where = f"resolver {ident!r}"
        try:
            transport = Transport(self.transport)
        except ValueError:
            valid = ", ".join(t.value for t in Transport)
            raise ValueError(
                f"{where}: transport {self.transport!r} is not one of {valid}"
            ) from None
        object.__setattr__(self, "transport", transport)
        if not isinstance(self.address, str):
            raise ValueError(f"{where}: address must be a string")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(
                f"{where}: address {self.address!r} is not an IPv4 or IPv6 literal"
            ) from None
        if "%" in self.address:
            raise ValueError(f"{where}: scoped IPv6 address {self.address!r} is not supported")
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(f"{where}: port {self.port!r} must be an integer in 1..65535")
        if not isinstance(self.verify_tls, bool):
            raise ValueError(f"{where}: verify_tls must be true or false")
        is_tls = transport in TLS_TRANSPORTS
        if self.tls_hostname is not None:
            if not is_tls:
                raise ValueError(f"{where}: tls_hostname only applies to dot, doh and doq")
            if not isinstance(self.tls_hostname, str) or not (
                _is_hostname(self.tls_hostname.lower()) or _is_ip(self.tls_hostname)
            ):
                raise ValueError(f"{where}: tls_hostname {self.tls_hostname!r} is not a host name")
            object.__setattr__(self, "tls_hostname", self.tls_hostname.lower().removesuffix("."))
        if not isinstance(self.url_path, str) or not _URL_PATH_RE.fullmatch(self.url_path):
            raise ValueError(
                f"{where}: url_path {self.url_path!r} must be an absolute URL path such as "
                f"{_DEFAULT_URL_PATH!r} (no query string, at most 255 characters)"
            )
        if self.url_path != _DEFAULT_URL_PATH and transport != Transport.DOH:
            raise ValueError(f"{where}: url_path only applies to doh")
        if self.ca_file is not None:
            if not is_tls:
                raise ValueError(f"{where}: ca_file only applies to dot, doh and doq")
            if not isinstance(self.ca_file, str) or not self.ca_file:
                raise ValueError(f"{where}: ca_file must be a non-empty path")
            if not self.verify_tls:
                raise ValueError(f"{where}: ca_file is given but verify_tls is false")
        if not self.verify_tls and not is_tls:
            raise ValueError(f"{where}: verify_tls only applies to dot, doh and doq")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ResolverSpec:
        """Build from a config mapping; ``port`` defaults by transport. Unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError("resolver spec must be a mapping")
        unknown = sorted(str(k) for k in data if k not in _SPEC_KEYS)
        ident = data.get("id")
        where = f"resolver {ident!r}"
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("id", "address", "transport"):
            if key not in data:
                raise ValueError(f"{where}: missing required key {key!r}")
        transport_raw = data["transport"]
        try:
            transport = (
                Transport(str(transport_raw).lower()) if isinstance(transport_raw, str) else None
            )
        except ValueError:
            transport = None
        if transport is None:
            valid = ", ".join(t.value for t in Transport)
            raise ValueError(f"{where}: transport {transport_raw!r} is not one of {valid}")
        port = data.get("port", DEFAULT_PORTS[transport])
        url_path = data.get("url_path", _DEFAULT_URL_PATH)
        verify_tls = data.get("verify_tls", True)
        for key, value, kind in (
            ("id", ident, str),
            ("address", data["address"], str),
            ("port", port, int),
            ("url_path", url_path, str),
            ("verify_tls", verify_tls, bool),
        ):
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}: {key} must be of type {kind.__name__}")
        for key in ("tls_hostname", "ca_file"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string")
        tls_hostname = data.get("tls_hostname")
        ca_file = data.get("ca_file")
        assert isinstance(ident, str) and isinstance(data["address"], str)
        assert isinstance(port, int) and isinstance(url_path, str) and isinstance(verify_tls, bool)
        assert tls_hostname is None or isinstance(tls_hostname, str)
        assert ca_file is None or isinstance(ca_file, str)
        return cls(
            id=ident,
            address=data["address"],
            port=port,
            transport=transport,
            tls_hostname=tls_hostname,
            url_path=url_path,
            ca_file=ca_file,
            verify_tls=verify_tls,
        )

    def to_dict(self) -> dict[str, object]:
        """The inverse of :meth:`from_dict` (every key present)."""
        return {
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "transport": self.transport.value,
            "tls_hostname": self.tls_hostname,
            "url_path": self.url_path,
            "ca_file": self.ca_file,
            "verify_tls": self.verify_tls,
        }


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _tls_context(spec: ResolverSpec) -> ssl.SSLContext:
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
        if spec.transport in TLS_TRANSPORTS:
            _tls_context(spec)


def _server_hostname(spec: ResolverSpec) -> str | None:
    if spec.tls_hostname is not None:
        return spec.tls_hostname
    return spec.address if spec.verify_tls else None


class _DohResponseError(Exception):
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
                raise _DohResponseError("DoH response has a content encoding")
            declared = response.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > _MAX_DOH_BODY):
                raise _DohResponseError("DoH response body too large")
            stream = response.stream
            if not isinstance(stream, httpx2.AsyncByteStream):
                raise _DohResponseError("DoH response stream is not asynchronous")
            async for chunk in stream:
                body += chunk
                if len(body) > _MAX_DOH_BODY:
                    raise _DohResponseError("DoH response body too large")
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


def _doh_url(spec: ResolverSpec) -> str:
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    return f"https://{host}:{spec.port}{spec.url_path}"


async def _udp(spec: ResolverSpec, q: dns.message.Message, limit_s: float) -> dns.message.Message:
    af = dns.inet.af_for_address(spec.address)
    backend = dns.asyncbackend.get_backend("asyncio")
    # Connected socket: ICMP errors are reported, foreign sources filtered by the kernel.
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]
        af, socket.SOCK_DGRAM, 0, None, (spec.address, spec.port)
    )
    try:
        response, _tcp = await dns.asyncquery.udp_with_fallback(
            q,
            spec.address,
            timeout=limit_s,
            port=spec.port,
            ignore_unexpected=True,
            udp_sock=sock,
            ignore_errors=True,
        )
        return response
    finally:
        await sock.close()


async def _doq(spec: ResolverSpec, q: dns.message.Message, limit_s: float) -> dns.message.Message:
    # dnspython's quic() without a connection closes it before returning, and that close waits for
    # the QUIC draining period (3 PTO: ~90 ms on loopback, far more on a slow path), which would eat
    # the deadline after the answer is in. So: our own connection, closed in the background.
    verify: bool | str = spec.ca_file if spec.ca_file is not None else spec.verify_tls
    manager = AsyncioQuicManager(  # type: ignore[no-untyped-call]
        verify_mode=verify, server_name=_server_hostname(spec)
    )
    connection = manager.connect(spec.address, spec.port)  # type: ignore[no-untyped-call]
    try:
        return await dns.asyncquery.quic(
            q, spec.address, timeout=limit_s, port=spec.port, connection=connection
        )
    finally:
        _background(connection.close())


async def _send(
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
                server_hostname=_server_hostname(spec),
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
                    _doh_url(spec),
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


def _forget(task: asyncio.Task[Any]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled():
        task.exception()  # mark retrieved: nobody is waiting for it any more


def _background(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a clean-up without waiting for it (kept referenced until done)."""
    task = asyncio.ensure_future(coro)
    _DETACHED.add(task)
    task.add_done_callback(_forget)


async def _hard_deadline(coro: Coroutine[Any, Any, T], limit_s: float) -> T:
    """``asyncio.wait_for`` that really returns by ``limit_s`` (+ a short grace): on expiry the task is
    cancelled, and abandoned if it has not unwound within the grace period."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(limit_s, 0.0))
    except asyncio.CancelledError:
        task.cancel()
        _DETACHED.add(task)
        task.add_done_callback(_forget)
        raise
    if done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_CANCEL_GRACE_S)
    if done:
        _forget(task)
    else:
        _DETACHED.add(task)
        task.add_done_callback(_forget)
    raise TimeoutError


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8 and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


_HTTP_STATUS_RE: Final = re.compile(r"status code (\d{3})")


def _classify(exc: BaseException, deadline_s: float) -> tuple[VoteStatus, str]:
    """Map a failure to a vote status and a short detail (no server-controlled text)."""
    timeout_detail = f"timeout after {round(deadline_s * 1000)} ms"
    chain = _causes(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return VoteStatus.ERROR, f"TLS certificate verification failed: {e.verify_message}"
    if isinstance(exc, TimeoutError | dns.exception.Timeout | httpx2.TimeoutException):
        return VoteStatus.TIMEOUT, timeout_detail
    for e in chain:
        if isinstance(e, ssl.SSLWantReadError | ssl.SSLWantWriteError):
            continue  # not a failure: a non-blocking read/write in progress when something else was
        if isinstance(e, ssl.SSLError):
            return VoteStatus.ERROR, f"TLS error: {e.reason or type(e).__name__}"
        if isinstance(e, ConnectionRefusedError):
            return VoteStatus.ERROR, "connection refused"
        if isinstance(e, ConnectionResetError):
            return VoteStatus.ERROR, "connection reset"
    if isinstance(exc, _DohResponseError):
        return VoteStatus.ERROR, str(exc)
    if isinstance(exc, dns.query.BadResponse):
        return VoteStatus.ERROR, "response does not match the query"
    if isinstance(exc, dns.message.Truncated):
        return VoteStatus.ERROR, "truncated response"
    if isinstance(exc, _QuicUnexpectedEOF):
        return VoteStatus.ERROR, "QUIC connection failed (handshake, certificate or peer close)"
    if isinstance(exc, EOFError):
        return VoteStatus.ERROR, "connection closed by the server"
    if isinstance(exc, dns.exception.DNSException):
        return VoteStatus.ERROR, f"malformed response ({type(exc).__name__})"
    if isinstance(exc, httpx2.HTTPError):
        return VoteStatus.ERROR, f"HTTP failure ({type(exc).__name__})"
    if isinstance(exc, ValueError) and (m := _HTTP_STATUS_RE.search(str(exc))):
        return VoteStatus.ERROR, f"HTTP status {m.group(1)}"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return VoteStatus.ERROR, f"network error ({name})"
    return VoteStatus.ERROR, f"unexpected failure ({type(exc).__name__})"


def _make_query(
    qname: dns.name.Name, qtype: dns.rdatatype.RdataType, want_dnssec: bool, pad: bool
) -> dns.message.QueryMessage:
    q = dns.message.make_query(
        qname,
        qtype,
        use_edns=0,
        want_dnssec=want_dnssec,
        payload=EDNS_PAYLOAD,
        pad=_PAD_BLOCK if pad else 0,
    )
    q.flags |= dns.flags.AD  # RFC 6840 5.7: ask for the AD bit
    return q


def _check_deadline(deadline_s: float) -> None:
    if (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, int | float)
        or not math.isfinite(deadline_s)
    ):
        raise ValueError(f"deadline_s must be a finite number of seconds, got {deadline_s!r}")


async def query(
    spec: ResolverSpec,
    qname: str | dns.name.Name,
    qtype: str | dns.rdatatype.RdataType,
    *,
    deadline_s: float,
    want_dnssec: bool = True,
) -> Observation:
    """Ask ``(qname, qtype, IN)`` of one resolver and classify what came back, within ``deadline_s``.

    The query has RD and AD set, EDNS0 with a 1232-byte payload, the DO bit when *want_dnssec*, and
    padding to 128 bytes on encrypted transports. Returns within ``deadline_s`` plus a few tens of
    milliseconds whatever the server does; a deadline ``<= 0`` gives an immediate ``timeout``.
    Raises ``ValueError`` only for configuration mistakes (invalid name, type, deadline, CA file).
    """
    if not isinstance(spec, ResolverSpec):
        raise ValueError(f"not a ResolverSpec: {spec!r}")
    name = parse_qname(qname)
    rdtype = parse_qtype(qtype)
    _check_deadline(deadline_s)
    ctx = _tls_context(spec) if spec.transport in TLS_TRANSPORTS else None
    if deadline_s <= 0:
        return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, "no time left")
    q = _make_query(name, rdtype, want_dnssec, spec.transport in TLS_TRANSPORTS)
    start = time.perf_counter()
    try:
        inner = deadline_s - min(_INNER_MARGIN_S, deadline_s * 0.1)
        response = await _hard_deadline(_send(spec, q, inner, ctx), deadline_s)
    except Exception as exc:
        status, detail = _classify(exc, deadline_s)
        latency = (time.perf_counter() - start) * 1000.0
        return Observation.failure(spec.id, spec.transport, status, detail, latency)
    latency = (time.perf_counter() - start) * 1000.0
    try:
        return observation_from_response(spec.id, spec.transport, name, rdtype, response, latency)
    except Exception as exc:  # defensive: a response dnspython parsed but we cannot classify
        detail = f"unclassifiable response ({type(exc).__name__})"
        return Observation.failure(spec.id, spec.transport, VoteStatus.ERROR, detail, latency)


async def query_all(
    specs: Sequence[ResolverSpec],
    names: Sequence[tuple[str, str]],
    *,
    deadline_s: float,
    concurrency: int = 256,
    want_dnssec: bool = True,
) -> list[Observation]:
    """Query every ``(qname, qtype)`` of *names* through every resolver of *specs*, at most
    *concurrency* at a time, all within one deadline.

    Returns ``len(names) * len(specs)`` observations, names-major: the observation for ``names[i]``
    through ``specs[j]`` is at index ``i * len(specs) + j``. Returns within ``deadline_s`` plus a few
    tens of milliseconds even if servers hang; a query that could not start before the deadline (the
    concurrency bound) is a ``timeout``. Raises ``ValueError`` (before any I/O) for configuration
    mistakes: invalid names or types, duplicate resolver ids, unreadable CA files, a non-positive
    deadline or concurrency, or more than ``MAX_VOTES_PER_ROUND`` queries.
    """
    _check_deadline(deadline_s)
    if deadline_s <= 0:
        raise ValueError("deadline_s must be positive")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    prepare(specs)
    parsed = [(parse_qname(n), parse_qtype(t)) for n, t in names]
    if len(parsed) * len(specs) > L.MAX_VOTES_PER_ROUND:
        raise ValueError(
            f"{len(parsed)} names x {len(specs)} resolvers exceeds {L.MAX_VOTES_PER_ROUND} queries"
        )
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    gate = asyncio.Semaphore(concurrency)

    async def one(
        spec: ResolverSpec, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> Observation:
        try:
            await asyncio.wait_for(gate.acquire(), timeout=max(end - loop.time(), 0.0))
        except TimeoutError:
            detail = "not started before the deadline (concurrency bound)"
            return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, detail)
        try:
            remaining = end - loop.time()
            if remaining < _MIN_START_S:
                detail = "not started before the deadline (concurrency bound)"
                return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, detail)
            return await query(spec, name, rdtype, deadline_s=remaining, want_dnssec=want_dnssec)
        finally:
            gate.release()

    jobs = [(spec, name, rdtype) for name, rdtype in parsed for spec in specs]
    tasks = [asyncio.ensure_future(one(*job)) for job in jobs]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, timeout=deadline_s + 4 * _CANCEL_GRACE_S)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                _DETACHED.add(task)
                task.add_done_callback(_forget)
    results: list[Observation] = []
    for (spec, _name, _rdtype), task in zip(jobs, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            results.append(task.result())
        else:
            status = VoteStatus.TIMEOUT if not task.done() or task.cancelled() else VoteStatus.ERROR
            detail = (
                "did not finish by the deadline"
                if status == VoteStatus.TIMEOUT
                else "internal error"
            )
            results.append(Observation.failure(spec.id, spec.transport, status, detail))
    return results
