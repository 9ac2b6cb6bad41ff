"""TLS listeners of the local identity fabric, with per-view fault modes.

A :class:`ViewServer` listens once per *view* (one loopback port each; the fabric uses one view per
region, so one region can be shown something the others are not: split view). Each connection is
accepted in plain TCP and its view's current mode decides what happens before any TLS byte:

* ``up``: TLS handshake with the view's current :class:`ssl.SSLContext`, then ``serve`` runs;
* ``down``: the connection is reset at once (the client sees a connection error);
* ``hang``: the connection is held open without a byte until the client gives up (a timeout).

Modes and TLS contexts are read at accept time, so tests flip them while clients run. Everything is
bounded: request heads (16 KiB), handshake and read timeouts, and :meth:`ViewServer.stop` closes the
listeners and cancels every connection task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cctf.devfabric.identity_pki import Issued
from cctf.util.deadline import stop_tasks

MAX_REQUEST_HEAD = 16 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
HANG_MAX_S = 300.0
DEFAULT_VIEW = "default"


class Mode(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    HANG = "hang"


def server_context(issued: Issued) -> ssl.SSLContext:
    """A TLS server context presenting ``issued``'s chain (leaf + intermediates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a chain and key only from files: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="cctf-tls-") as d:
        chain_file, key_file = Path(d) / "chain.pem", Path(d) / "key.pem"
        chain_file.write_bytes(issued.chain_pem())
        key_file.touch(mode=0o600)
        key_file.write_bytes(issued.key_pem())
        ctx.load_cert_chain(chain_file, key_file)
    return ctx


@dataclass(frozen=True)
class Request:
    view: str
    method: str
    path: str


Response = tuple[int, str, bytes]  # status, content type, body
Serve = Callable[[Request], Awaitable[Response]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}


class ViewServer:
    """One TLS listener per view; subclasses (or ``serve``) answer HTTP requests."""

    def __init__(
        self,
        views: Sequence[str],
        context: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        serve: Serve | None = None,
    ) -> None:
        if not views or len(set(views)) != len(views):
            raise ValueError("views must be distinct and at least one")
        self.host = host
        self.views = tuple(views)
        self._context = context
        self._view_context: dict[str, ssl.SSLContext] = {}
        self._mode: Mode = Mode.UP
        self._view_mode: dict[str, Mode] = {}
        self._serve = serve
        self._servers: dict[str, asyncio.Server] = {}
        self.ports: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self.connections = 0  # accepted connections, every mode

    # -- knobs --------------------------------------------------------------------------------
    def set_mode(self, mode: Mode | str, *, view: str | None = None) -> None:
        """Set every view's mode (``view=None``: clears per-view overrides) or one view's."""
        m = Mode(mode)
        if view is None:
            self._mode = m
            self._view_mode.clear()
        else:
            self._check_view(view)
            self._view_mode[view] = m

    def mode(self, view: str) -> Mode:
        return self._view_mode.get(view, self._mode)

    def set_context(self, context: ssl.SSLContext | None, *, view: str | None = None) -> None:
        """Present another certificate: on one view, or on all (``None`` restores the default)."""
        if view is None:
            self._view_context.clear()
            if context is not None:
                self._context = context
            return
        self._check_view(view)
        if context is None:
            self._view_context.pop(view, None)
        else:
            self._view_context[view] = context

    def _check_view(self, view: str) -> None:
        if view not in self.views:
            raise ValueError(f"unknown view {view!r} (views: {', '.join(self.views)})")

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        _quiet_asyncio_ssl_eof()
        self._closing = asyncio.Event()
        try:
            for view in self.views:
                server = await asyncio.start_server(
                    lambda r, w, v=view: self._on_connect(v, r, w),  # type: ignore[misc]
                    self.host,
                    0,
                    reuse_address=True,
                )
                self._servers[view] = server
                self.ports[view] = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        self._closing.set()
        for w in list(self._writers):
            w.transport.abort()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            await stop_tasks(pending, 2.0, what="identity server connection")
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()

    def address(self, view: str = DEFAULT_VIEW) -> str:
        """``host:port`` of a view (the first view when ``view`` is not one of them)."""
        port = self.ports.get(view, self.ports[self.views[0]])
        return f"{self.host}:{port}"

    def url(self, view: str = DEFAULT_VIEW) -> str:
        return f"https://{self.address(view)}"

    # -- connections --------------------------------------------------------------------------
    async def _on_connect(
        self, view: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._handle(view, reader, writer)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            # stop() cancels only connections that outlive its grace period; ending normally keeps
            # asyncio's stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _handle(
        self, view: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        mode = self.mode(view)
        if mode is Mode.DOWN:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # RST, not FIN: the client sees a refused/reset connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if mode is Mode.HANG:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), HANG_MAX_S)
            return
        ctx = self._view_context.get(view, self._context)
        await writer.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        await self._exchange(view, reader, writer)

    async def _exchange(
        self, view: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return
        if len(head) > MAX_REQUEST_HEAD:
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            status, ctype, body = 400, "text/plain", b"bad request\n"
        elif parts[0] != "GET":
            status, ctype, body = 405, "text/plain", b"GET only\n"
        elif self._serve is None:
            status, ctype, body = 404, "text/plain", b"not found\n"
        else:
            status, ctype, body = await self._serve(Request(view, parts[0], parts[1]))
        writer.write(
            (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)


class _DropSslEofNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_EOF_FILTER = _DropSslEofNotice()


def _quiet_asyncio_ssl_eof() -> None:
    """asyncio warns on every TLS connection a stream server upgraded with ``start_tls`` when the
    peer closes first (its stream protocol asks to half-close, which TLS cannot): noise only."""
    logger = logging.getLogger("asyncio")
    if _EOF_FILTER not in logger.filters:
        logger.addFilter(_EOF_FILTER)


def json_response(body: bytes) -> Response:
    return 200, "application/json", body


NOT_FOUND: Response = (404, "text/plain", b"not found\n")


def route(table: Mapping[str, Callable[[str], Response]]) -> Serve:
    """A ``serve`` callable from a path -> handler(view) table (query strings ignored)."""

    async def serve(req: Request) -> Response:
        handler = table.get(req.path.split("?", 1)[0])
        return NOT_FOUND if handler is None else handler(req.view)

    return serve
