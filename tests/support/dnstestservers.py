"""Test-only DNS servers on loopback: plain UDP+TCP, DoT, DoH (HTTP/1.1 and HTTP/2) and DoQ.

All of them answer from one mutable :class:`Behaviour`, so a test can switch a server between a good
answer, NXDOMAIN, SERVFAIL, REFUSED, silence, a wrong id or question, EDE options, the AD flag, and
so on. Certificates are generated at test time with ``cryptography`` (:func:`make_pki`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import enum
import functools
import ipaddress
import ssl
import struct
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import h2.config
import h2.connection
import h2.events
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --------------------------------------------------------------------------------------------------
# Certificates


@dataclasses.dataclass(frozen=True)
class Pki:
    ca_file: str  # the CA that signed the server certificate
    cert_file: str  # server certificate (SAN: the hostnames and IPs given)
    key_file: str
    other_ca_file: str  # an unrelated CA: verifying against it must fail


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(
    directory: Path,
    hostnames: tuple[str, ...] = ("dns.test",),
    ips: tuple[str, ...] = ("127.0.0.1", "::1"),
) -> Pki:
    ca_key, ca_cert = _ca("CCTF test CA")
    _, other_cert = _ca("Unrelated test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.pem", "cert.pem", "key.pem", "other.pem")}
    paths["ca.pem"].write_bytes(_pem(ca_cert))
    paths["other.pem"].write_bytes(_pem(other_cert))
    paths["cert.pem"].write_bytes(_pem(cert))
    paths["key.pem"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Pki(
        ca_file=str(paths["ca.pem"]),
        cert_file=str(paths["cert.pem"]),
        key_file=str(paths["key.pem"]),
        other_ca_file=str(paths["other.pem"]),
    )


def server_tls_context(pki: Pki, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_file, pki.key_file)
    ctx.set_alpn_protocols(alpn)
    return ctx


# --------------------------------------------------------------------------------------------------
# Behaviour


class Mode(enum.Enum):
    ANSWER = "answer"  # answer from the zone (NXDOMAIN for unknown names)
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    FORMERR = "formerr"
    SILENT = "silent"  # never answer
    WRONG_ID = "wrong-id"  # the right answer with another message id
    WRONG_QUESTION = "wrong-question"  # the right id, another question name
    GARBAGE = "garbage"  # bytes that are not a DNS message
    TRUNCATE_UDP = "truncate-udp"  # TC=1 and no records over UDP, normal answer over TCP
    EXTRA_UNRELATED = "extra-unrelated"  # the answer plus an unrelated A record in the answer
    MANY_RECORDS = "many-records"  # 100 A records
    SPOOF_FIRST = (
        "spoof-first"  # over UDP: a forged reply (wrong id, other address) before the real one
    )


class HttpMode(enum.Enum):
    OK = "ok"
    STATUS_500 = "500"
    HUGE_BODY = "huge"  # 200 000 byte body
    GZIP = "gzip"  # claims Content-Encoding: gzip
    HUGE_UNDECLARED = "huge-undeclared"  # HTTP/1.1 only: no Content-Length, 1 MB until close


DEMO_ZONE: dict[tuple[str, str], list[str]] = {
    ("www.demo.test.", "A"): ["192.0.2.10", "192.0.2.11"],
    ("www.demo.test.", "AAAA"): ["2001:db8::10"],
    ("alias.demo.test.", "CNAME"): ["WWW.Demo.Test."],
    ("mail.demo.test.", "MX"): ["10 MX1.demo.test."],
    ("txt.demo.test.", "TXT"): ['"Hello World" "second"'],
    ("dangling.demo.test.", "CNAME"): ["gone.demo.test."],
}


@dataclasses.dataclass
class Behaviour:
    mode: Mode = Mode.ANSWER
    http: HttpMode = HttpMode.OK
    ad: bool = False
    ede: list[int] = dataclasses.field(default_factory=list)
    ttl: int = 300
    zone: dict[tuple[str, str], list[str]] = dataclasses.field(
        default_factory=lambda: dict(DEMO_ZONE)
    )
    queries: list[dns.message.Message] = dataclasses.field(default_factory=list)

    def _lookup(self, q: dns.message.Message, r: dns.message.Message) -> None:
        question = q.question[0]
        name = question.name
        qtype = dns.rdatatype.to_text(question.rdtype)
        for _ in range(8):
            key = name.to_text().lower()
            cname = self.zone.get((key, "CNAME"))
            if cname and qtype != "CNAME":
                r.answer.append(dns.rrset.from_text_list(name, self.ttl, "IN", "CNAME", cname))
                name = dns.name.from_text(cname[0])
                continue
            break
        key = name.to_text().lower()
        rdatas = self.zone.get((key, qtype))
        if rdatas:
            r.answer.append(dns.rrset.from_text_list(name, self.ttl, "IN", qtype, rdatas))
        elif not any(n == key for n, _ in self.zone):  # only for misses: large zones stay cheap
            r.set_rcode(dns.rcode.NXDOMAIN)

    def respond(self, wire: bytes, *, via_udp: bool) -> bytes | None:
        """The reply to one query, or ``None`` to stay silent."""
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return None
        self.queries.append(q)
        mode = self.mode
        if mode == Mode.SILENT:
            return None
        if mode == Mode.GARBAGE:
            return b"\x00\x01garbage"
        r = dns.message.make_response(q)
        if mode == Mode.NXDOMAIN:
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif mode == Mode.SERVFAIL:
            r.set_rcode(dns.rcode.SERVFAIL)
        elif mode == Mode.REFUSED:
            r.set_rcode(dns.rcode.REFUSED)
        elif mode == Mode.FORMERR:
            r.set_rcode(dns.rcode.FORMERR)
        elif mode == Mode.TRUNCATE_UDP and via_udp:
            r.flags |= dns.flags.TC
        elif mode == Mode.MANY_RECORDS:
            rdatas = [f"198.51.100.{i}" for i in range(100)]
            r.answer.append(
                dns.rrset.from_text_list(q.question[0].name, self.ttl, "IN", "A", rdatas)
            )
        else:
            self._lookup(q, r)
            if mode == Mode.EXTRA_UNRELATED:
                r.answer.append(
                    dns.rrset.from_text("evil.example.", 300, "IN", "A", "203.0.113.66")
                )
        if self.ad:
            r.flags |= dns.flags.AD
        if self.ede and r.edns >= 0:
            r.use_edns(
                0, options=[dns.edns.EDEOption(dns.edns.EDECode.make(code)) for code in self.ede]
            )
        if mode == Mode.WRONG_ID:
            r.id = (q.id + 1) % 65536
        if mode == Mode.WRONG_QUESTION:
            r.question = [
                dns.rrset.RRset(
                    dns.name.from_text("other.demo.test."), dns.rdataclass.IN, q.question[0].rdtype
                )
            ]
        limit = max(512, q.payload) if via_udp else 65535
        try:
            return r.to_wire(max_size=limit)
        except dns.exception.TooBig:
            r.answer.clear()
            r.flags |= dns.flags.TC
            return r.to_wire(max_size=limit)


# --------------------------------------------------------------------------------------------------
# Servers


class _Base:
    """Tracks connections and hung handlers so ``close()`` ends everything."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.port = 0
        self._closed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.Server] = []
        self.connections = 0

    async def _hang(self) -> None:
        await self._closed.wait()

    async def _framed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """DNS over a stream: 2-byte length prefix (RFC 1035 4.2.2)."""
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                wire = await reader.readexactly(length)
                reply = self.behaviour.respond(wire, via_udp=False)
                if reply is None:
                    await self._hang()
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        self._closed.set()
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await asyncio.sleep(0)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.behaviour.respond(data, via_udp=True)
        if reply is None or self.transport is None:
            return
        if self.behaviour.mode == Mode.SPOOF_FIRST:
            forged = dns.message.from_wire(reply)
            forged.id = (forged.id + 1) % 65536
            forged.answer = [
                dns.rrset.from_text(r.name, r.ttl, "IN", "A", "203.0.113.66")
                if r.rdtype == dns.rdatatype.A
                else r
                for r in forged.answer
            ]
            self.transport.sendto(forged.to_wire(), addr)
        self.transport.sendto(reply, addr)


class PlainDnsServer(_Base):
    """UDP and TCP on the same port."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1") -> None:
        super().__init__(behaviour)
        self.host = host
        self._udp: asyncio.DatagramTransport | None = None

    async def start(self) -> PlainDnsServer:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            server = await asyncio.start_server(self._framed, self.host, 0)
            port = server.sockets[0].getsockname()[1]
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self.behaviour), local_addr=(self.host, port)
                )
            except OSError:
                server.close()
                continue
            self._udp = transport
            self._servers.append(server)
            self.port = port
            return self
        raise RuntimeError("no free UDP+TCP port pair")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        await super().close()


class DotServer(_Base):
    def __init__(self, behaviour: Behaviour, pki: Pki, host: str = "127.0.0.1") -> None:
        super().__init__(behaviour)
        self.host = host
        self._ctx = server_tls_context(pki, ["dot"])

    async def start(self) -> DotServer:
        server = await asyncio.start_server(self._framed, self.host, 0, ssl=self._ctx)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self


class DohServer(_Base):
    """RFC 8484 over HTTP/2 (if the client offers it and ``http2``) or HTTP/1.1."""

    def __init__(
        self,
        behaviour: Behaviour,
        pki: Pki,
        host: str = "127.0.0.1",
        *,
        path: str = "/dns-query",
        http2: bool = True,
    ) -> None:
        super().__init__(behaviour)
        self.host = host
        self.path = path
        self._ctx = server_tls_context(pki, ["h2", "http/1.1"] if http2 else ["http/1.1"])
        self.protocols: list[str] = []  # negotiated ALPN per connection
        self.hosts: list[str] = []  # Host / :authority seen

    async def start(self) -> DohServer:
        server = await asyncio.start_server(self._conn, self.host, 0, ssl=self._ctx)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    def _reply(
        self, method: str, target: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        parsed = urllib.parse.urlsplit(target)
        if parsed.path != self.path:
            return 404, [("content-type", "text/plain")], b"not found"
        if method == "GET":
            b64 = urllib.parse.parse_qs(parsed.query).get("dns", [""])[0]
            wire = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        else:
            wire = body
        http = self.behaviour.http
        if http == HttpMode.STATUS_500:
            return 500, [("content-type", "text/plain")], b"internal error"
        if http == HttpMode.HUGE_BODY:
            return 200, [("content-type", "application/dns-message")], b"\x00" * 200_000
        reply = self.behaviour.respond(wire, via_udp=False)
        if reply is None:
            return None
        headers = [("content-type", "application/dns-message")]
        if http == HttpMode.GZIP:
            headers.append(("content-encoding", "gzip"))
        return 200, headers, reply

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.protocols.append(alpn or "http/1.1")
        try:
            if alpn == "h2":
                await self._h2(reader, writer)
            else:
                await self._http1(reader, writer)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ssl.SSLError,
            OSError,
        ):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _http1(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            self.hosts.append(headers.get("host", ""))
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            reply = self._reply(method, target, body)
            if reply is None:
                await self._hang()
                return
            if self.behaviour.http == HttpMode.HUGE_UNDECLARED:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/dns-message\r\n")
                writer.write(b"connection: close\r\n\r\n")
                for _ in range(16):
                    writer.write(b"\x00" * 65536)
                    await writer.drain()
                return
            status, rheaders, payload = reply
            out = [f"HTTP/1.1 {status} X", f"content-length: {len(payload)}"]
            out += [f"{k}: {v}" for k, v in rheaders]
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
            await writer.drain()

    async def _h2(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        await writer.drain()
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    hdrs = {str(k): str(v) for k, v in (event.headers or [])}
                    requests[event.stream_id] = (hdrs, bytearray())
                    self.hosts.append(hdrs.get(":authority", ""))
                elif isinstance(event, h2.events.DataReceived):
                    requests[event.stream_id][1].extend(event.data or b"")
                    conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    hdrs, body = requests.pop(event.stream_id)
                    reply = self._reply(hdrs[":method"], hdrs[":path"], bytes(body))
                    if reply is None:
                        continue  # never answer this stream
                    status, rheaders, payload = reply
                    conn.send_headers(
                        event.stream_id,
                        [
                            (":status", str(status)),
                            ("content-length", str(len(payload))),
                            *rheaders,
                        ],
                    )
                    # Respect flow control for the huge body: send what the window allows.
                    window = conn.local_flow_control_window(event.stream_id)
                    chunk = payload[: min(window, conn.max_outbound_frame_size)]
                    conn.send_data(event.stream_id, chunk, end_stream=len(chunk) == len(payload))
            writer.write(conn.data_to_send())
            await writer.drain()


class _DoqProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, respond: Callable[[bytes], bytes | None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._respond = respond
        self._buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        buf = self._buffers.setdefault(event.stream_id, bytearray())
        buf.extend(event.data)
        if not event.end_stream:
            return
        del self._buffers[event.stream_id]
        if len(buf) < 2:
            return
        (length,) = struct.unpack("!H", buf[:2])
        reply = self._respond(bytes(buf[2 : 2 + length]))
        if reply is None:
            return
        self._quic.send_stream_data(
            event.stream_id, struct.pack("!H", len(reply)) + reply, end_stream=True
        )
        self.transmit()


class DoqServer:
    def __init__(self, behaviour: Behaviour, pki: Pki, host: str = "127.0.0.1") -> None:
        self.behaviour = behaviour
        self.host = host
        self.port = 0
        self._pki = pki
        self._server: QuicServer | None = None

    async def start(self) -> DoqServer:
        config = QuicConfiguration(is_client=False, alpn_protocols=["doq"])
        config.load_cert_chain(self._pki.cert_file, self._pki.key_file)
        respond = functools.partial(self.behaviour.respond, via_udp=False)
        self._server = await serve(
            self.host,
            0,
            configuration=config,
            create_protocol=functools.partial(_DoqProtocol, respond=respond),
        )
        transport = self._server._transport
        assert transport is not None
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)


async def closed_port(host: str = "127.0.0.1") -> int:
    """A TCP+UDP port on which nothing listens (bound, then released)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(host, 0)
    )
    port: int = transport.get_extra_info("sockname")[1]
    transport.close()
    return port


class BlackHoleServer(_Base):
    """Accepts TCP connections (optionally completing TLS) and then never sends a byte."""

    def __init__(self, ctx: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(Behaviour(mode=Mode.SILENT))
        self.host = host
        self._ctx = ctx

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._hang()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> BlackHoleServer:
        server = await asyncio.start_server(self._sink, self.host, 0, ssl=self._ctx)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self
