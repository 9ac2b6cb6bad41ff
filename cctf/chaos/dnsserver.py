"""A fault-injecting authoritative DNS server (UDP and TCP on one port): the asyncio adapter.

All DNS logic is in :class:`cctf.chaos.responder.ZoneResponder` (pure, fuzzed). This module holds the
sockets, TCP framing, delays, limits and counters. Faults can be switched at run time with
``set_faults`` or through the optional control channel (``cctf.chaos.control``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from cctf.chaos.control import ControlServer
from cctf.chaos.faults import Faults, ServerStats
from cctf.chaos.responder import (
    DEFAULT_UDP_PAYLOAD,
    MAX_QUERY_BYTES,
    Outcome,
    ZoneResponder,
)
from cctf.chaos.signing import SignedZone
from cctf.util.deadline import stop_tasks

__all__ = ["FaultyDnsServer"]

log = logging.getLogger(__name__)
#: UDP receive buffer asked for (the kernel caps it at net.core.rmem_max)
_UDP_RCVBUF = 4 * 1024 * 1024


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: FaultyDnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._server._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("chaos dns: udp error: %s", exc)


class FaultyDnsServer:
    """Authoritative server for one zone with switchable faults, on UDP and TCP of one port.

    ``port=0`` picks a port that is free for both UDP and TCP. With ``control=True``, ``start()``
    also starts a ``ControlServer`` (see ``control_port`` / ``control_token``). A signed zone
    (``signed=`` the :class:`~cctf.chaos.signing.SignedZone` it comes from, e.g.
    ``FaultyDnsServer(s.zone, signed=s)`` with ``s = signed_demo_zone()``) is served with DNSSEC
    records and the ``Faults.dnssec`` faults.
    """

    def __init__(
        self,
        zone: dns.zone.Zone,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        udp_payload: int = DEFAULT_UDP_PAYLOAD,
        max_query_bytes: int = MAX_QUERY_BYTES,
        max_tcp_connections: int = 64,
        max_tcp_inflight: int = 16,
        tcp_idle_timeout: float = 10.0,
        max_pending: int = 1024,
        bind_attempts: int = 20,
        control: bool = False,
        control_host: str = "127.0.0.1",
        control_port: int = 0,
        control_token: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        signed: SignedZone | None = None,
    ) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address, got {host!r}") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        for label, value in (
            ("max_tcp_connections", max_tcp_connections),
            ("max_tcp_inflight", max_tcp_inflight),
            ("max_pending", max_pending),
            ("bind_attempts", bind_attempts),
        ):
            if value < 1:
                raise ValueError(f"{label} must be at least 1")
        if tcp_idle_timeout <= 0:
            raise ValueError("tcp_idle_timeout must be positive")
        self.responder = ZoneResponder(
            zone, udp_payload=udp_payload, max_query_bytes=max_query_bytes, signed=signed
        )
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._faults = faults if faults is not None else Faults()
        self._stats = ServerStats()
        self._max_tcp_connections = max_tcp_connections
        self._max_tcp_inflight = max_tcp_inflight
        self._tcp_idle_timeout = tcp_idle_timeout
        self._max_pending = max_pending
        self._bind_attempts = bind_attempts
        self._sleep = sleep
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_active = 0
        self._tcp_tasks: set[asyncio.Task[Any]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._control: ControlServer | None = (
            ControlServer(self, host=control_host, port=control_port, token=control_token)
            if control
            else None
        )

    # -- faults and stats -------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        if not isinstance(faults, Faults):
            raise TypeError("set_faults expects a Faults value")
        self._faults = faults
        log.info("chaos dns: faults set to %s", faults.describe())

    def clear_faults(self) -> None:
        self.set_faults(Faults())

    @property
    def stats(self) -> ServerStats:
        return self._stats

    def handle(
        self, wire: bytes, faults: Faults | None = None, *, udp: bool = True
    ) -> bytes | None:
        """Pure DNS logic (see ``ZoneResponder.handle``); ``faults`` defaults to the current ones."""
        return self.responder.handle(wire, self._faults if faults is None else faults, udp=udp)

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def control_port(self) -> int:
        if self._control is None:
            raise RuntimeError("the server was created without control=True")
        return self._control.port

    @property
    def control_token(self) -> str:
        if self._control is None:
            raise RuntimeError("the server was created without control=True")
        return self._control.token

    @property
    def control(self) -> ControlServer | None:
        return self._control

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._udp is not None:
            raise RuntimeError("the server is already started")
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        attempts = self._bind_attempts if self._requested_port == 0 else 1
        for _ in range(attempts):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self._requested_port)
            )
            port = int(transport.get_extra_info("sockname")[1])
            # a burst of queries (five agents asking thousands of names at a round's start) must
            # not overflow the default receive buffer: dropped datagrams become client timeouts
            with contextlib.suppress(OSError, AttributeError):
                transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF
                )
            try:
                self._tcp = await asyncio.start_server(
                    self._on_tcp_connection,
                    self.host,
                    port,
                    limit=2 * self.responder.max_query_bytes,
                )
            except OSError as exc:
                transport.close()
                last_error = exc
                continue
            self._udp = transport
            self._port = port
            break
        else:
            raise OSError(
                f"cannot bind UDP and TCP on {self.host} port {self._requested_port or 'any'}: "
                f"{last_error}"
            )
        if self._control is not None:
            try:
                await self._control.start()
            except BaseException:
                await self.stop()
                raise
        log.info("chaos dns: serving %s on %s port %d", self.responder.origin, self.host, port)

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.stop()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        await stop_tasks([*self._tcp_tasks, *self._pending], 2.0, what="faulty DNS server")
        if tcp is not None:
            await tcp.wait_closed()

    async def __aenter__(self) -> FaultyDnsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- UDP --------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        faults = self._faults
        self._stats.received += 1
        self._stats.udp += 1
        outcome = self.responder.respond(data, faults, udp=True)
        wire = self._account(outcome, faults)
        if wire is None:
            return
        transport = self._udp
        if transport is None:
            return
        if faults.delay_ms <= 0:
            transport.sendto(wire, addr)
            return
        if len(self._pending) >= self._max_pending:
            self._stats.count_dropped("overload")
            return

        async def send_later() -> None:
            await self._sleep(faults.delay_ms / 1000)
            if self._udp is not None:
                self._udp.sendto(wire, addr)

        task = asyncio.get_running_loop().create_task(send_later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _account(self, outcome: Outcome, faults: Faults) -> bytes | None:
        if outcome.response is None:
            self._stats.count_dropped(outcome.drop_reason or "unknown")
            return None
        applied = outcome.applied
        if faults.delay_ms > 0:
            applied = applied | {"delay"}
        self._stats.count_served(applied)
        if outcome.truncated:
            self._stats.truncated += 1
        return outcome.response

    # -- TCP --------------------------------------------------------------------------------

    async def _on_tcp_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._tcp_active >= self._max_tcp_connections:
            self._stats.tcp_rejected += 1
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tcp_tasks.add(task)
        self._tcp_active += 1
        self._stats.tcp_connections += 1
        self._tcp_writers.add(writer)
        inflight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self._max_tcp_inflight)
        write_lock = asyncio.Lock()
        try:
            while True:
                message = await self._read_tcp_message(reader)
                if message is None:
                    break
                faults = self._faults
                self._stats.received += 1
                self._stats.tcp += 1
                outcome = self.responder.respond(message, faults, udp=False)
                wire = self._account(outcome, faults)
                if wire is None:
                    continue
                if faults.delay_ms <= 0:
                    await self._tcp_write(writer, write_lock, wire)
                    continue
                await slots.acquire()  # back-pressure: bounded in-flight queries per connection
                reply = asyncio.get_running_loop().create_task(
                    self._tcp_reply_later(writer, write_lock, wire, faults.delay_ms, slots)
                )
                inflight.add(reply)
                reply.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
        except (ConnectionError, OSError) as exc:
            log.debug("chaos dns: tcp connection error: %s", exc)
        finally:
            for reply in inflight:
                reply.cancel()
            self._tcp_active -= 1
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tcp_tasks.discard(task)

    async def _read_tcp_message(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next length-prefixed message, or ``None`` to close (EOF, idle, bad length)."""
        try:
            async with asyncio.timeout(self._tcp_idle_timeout):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                if length == 0 or length > self.responder.max_query_bytes:
                    self._stats.count_dropped("oversized" if length else "malformed")
                    return None
                return await reader.readexactly(length)
        except TimeoutError:
            self._stats.tcp_idle_closed += 1
            return None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None

    async def _tcp_write(
        self, writer: asyncio.StreamWriter, lock: asyncio.Lock, wire: bytes
    ) -> None:
        async with lock:
            writer.write(struct.pack("!H", len(wire)) + wire)
            async with asyncio.timeout(self._tcp_idle_timeout):
                await writer.drain()

    async def _tcp_reply_later(
        self,
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
        wire: bytes,
        delay_ms: int,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            await self._sleep(delay_ms / 1000)
            await self._tcp_write(writer, lock, wire)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.debug("chaos dns: delayed tcp reply failed: %s", exc)
        finally:
            slots.release()
