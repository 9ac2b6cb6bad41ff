"""Serve the gateway app with uvicorn inside the caller's event loop (``cctf gateway``, the demo,
tests and benchmarks).

:class:`GatewayServer` leaves signals to its owner (uvicorn's own handlers would re-raise a captured
SIGTERM after shutdown and kill the process): ``await server.start()`` binds and returns the bound
``(host, port)`` (port 0 picks a free one), ``await server.stop()`` stops accepting, lets open
requests finish (bounded) and returns. Access logs are off: request lines carry no secret here,
but nothing about a request is logged by default (tokens travel in headers and bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Final

import uvicorn
from fastapi import FastAPI

from cctf.gateway.clientcert import MAX_HEADER_CHARS
from cctf.util.deadline import stop_task

__all__ = ["GatewayServer"]

STOP_BUDGET_S: Final = 3.0
#: Longest request head (request line and headers) the server reads: both ``Client-Cert`` headers
#: at their bound plus 64 KiB for the rest (an ``Authorization`` token, the usual headers).
MAX_REQUEST_HEAD: Final = 2 * MAX_HEADER_CHARS + 64 * 1024


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the owner handles signals


class GatewayServer:
    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(STOP_BUDGET_S),
            server_header=False,
            http="h11",
            # the request head may hold both RFC 9440 headers at their bound (the OpenAPI document
            # allows 64 KiB each): h11's default 16 KiB reset such requests instead of answering
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> tuple[str, int]:
        """Bind and serve; raises ``OSError`` when it cannot bind (the socket is bound here, so a
        busy port is this exception, not uvicorn's ``sys.exit``)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP (with
        # proto 0 every response written in two parts waits ~40 ms for a delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.set_inheritable(True)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                raise RuntimeError(f"gateway on {self.url} stopped while starting")
            await asyncio.sleep(0.01)
        return self.host, self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_BUDGET_S + 1)
        except (TimeoutError, Exception):
            self._server.force_exit = True
            await stop_task(self._task, 2.0, what="gateway server")
        finally:
            if self._socket is not None:
                self._socket.close()

    async def wait(self) -> None:
        """Until the server stops on its own (it does not, unless stopped or failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)
