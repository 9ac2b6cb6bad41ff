"""Run-time control of a fault-injecting DNS server, and the fabric state file.

Control protocol: TCP on 127.0.0.1, one JSON object per line each way. Every request carries the
server's token (random by default, compared in constant time, never logged)::

    {"token": "...", "op": "get"}                      -> {"ok": true, "faults": {...}}
    {"token": "...", "op": "set", "faults": {...}}     -> {"ok": true, "faults": {...}}
    {"token": "...", "op": "clear"}                    -> {"ok": true, "faults": {...}}
    {"token": "...", "op": "stats"}                    -> {"ok": true, "faults": {...}, "stats": {...}}

Errors are ``{"ok": false, "error": "..."}``. ``set`` replaces all faults (missing fields take their
defaults). A wrong token or an over-long line closes the connection after the error reply.

Fabric state file (``.cctf/fabric.json``, mode 0600)::

    {"resolvers": {"<resolver-id>": {"dns": "127.0.0.1:PORT", "control": "127.0.0.1:PORT",
                                     "token": "..."}}}
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from cctf.chaos.faults import FaultError, Faults, ServerStats
from cctf.errors import CctfError, ConfigError
from cctf.util.deadline import stop_tasks
from cctf.util.files import parse_document, read_bounded, write_secret_file, write_secret_json

__all__ = [
    "DEFAULT_FABRIC_PATH",
    "MAX_LINE_BYTES",
    "ChaosControlClient",
    "ChaosControlError",
    "ControlServer",
    "FabricFileError",
    "FaultTarget",
    "HostPort",
    "ResolverEndpoint",
    "load_fabric_resolvers",
    "read_token_file",
    "write_fabric_resolvers",
    "write_token_file",
]

log = logging.getLogger(__name__)

DEFAULT_FABRIC_PATH = Path(".cctf") / "fabric.json"
MAX_LINE_BYTES = 8192  # longest request line the server reads
MAX_RESPONSE_BYTES = 1024 * 1024  # longest response line the client reads
MAX_TOKEN_FILE_BYTES = 4096
MAX_TOKEN_CHARS = 512
MAX_ERROR_CHARS = 300
OPS = ("get", "set", "clear", "stats")


class FaultTarget(Protocol):
    """What the control server drives (``FaultyDnsServer`` is one)."""

    @property
    def faults(self) -> Faults: ...

    def set_faults(self, faults: Faults) -> None: ...

    @property
    def stats(self) -> ServerStats: ...


def _check_token(token: str) -> str:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"a control token must be a non-empty string of at most {MAX_TOKEN_CHARS}")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("a control token must be printable ASCII without spaces")
    return token


def _error(message: str) -> dict[str, Any]:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return {"ok": False, "error": message}


class ControlServer:
    """The JSON-lines control channel for one ``FaultTarget``."""

    def __init__(
        self,
        target: FaultTarget,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_connections: int = 16,
        idle_timeout: float = 30.0,
    ) -> None:
        self._target = target
        self.host = host
        self._requested_port = port
        self._token = _check_token(token) if token is not None else secrets.token_urlsafe(32)
        self._max_line = max_line_bytes
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:  # never show the token
        return f"ControlServer(host={self.host!r}, port={self._port})"

    @property
    def token(self) -> str:
        return self._token

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the control server is not started")
        return self._port

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the control server is already started")
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port, limit=self._max_line
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await stop_tasks(list(self._tasks), 2.0, what="chaos control connection")
        await server.wait_closed()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- protocol ---------------------------------------------------------------------------

    def process(self, line: bytes) -> tuple[dict[str, Any], bool]:
        """Answer one request line: ``(response, close_connection)``. Never raises."""
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error(f"invalid JSON: {exc}"), False
        if not isinstance(request, dict):
            return _error("a request must be a JSON object"), False
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), self._token.encode("ascii")
        ):
            log.warning("chaos control: request with a missing or wrong token rejected")
            return _error("unauthorized: missing or wrong token"), True
        op = request.get("op")
        try:
            if op == "get":
                return {"ok": True, "faults": self._target.faults.to_dict()}, False
            if op == "stats":
                return {
                    "ok": True,
                    "faults": self._target.faults.to_dict(),
                    "stats": self._target.stats.to_dict(),
                }, False
            if op == "clear":
                self._target.set_faults(Faults())
                return {"ok": True, "faults": self._target.faults.to_dict()}, False
            if op == "set":
                spec = request.get("faults")
                if not isinstance(spec, dict):
                    return _error('"set" needs "faults": a JSON object'), False
                try:
                    faults = Faults.from_dict(spec)
                except (FaultError, TypeError) as exc:
                    return _error(f"invalid faults: {exc}"), False
                self._target.set_faults(faults)
                return {"ok": True, "faults": faults.to_dict()}, False
        except Exception as exc:  # a bug in the target must not kill the channel
            log.exception("chaos control: %s failed", op)
            return _error(f"internal error: {type(exc).__name__}"), False
        shown = op if isinstance(op, str) and len(op) <= 32 else type(op).__name__
        return _error(f"unknown op {shown!r}; expected one of {', '.join(OPS)}"), False

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._active >= self._max_connections:
            with contextlib.suppress(Exception):
                await self._send(writer, _error("too many control connections"))
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._active += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        line = await reader.readline()
                except ValueError:  # the line exceeded the stream limit
                    await self._send(
                        writer, _error(f"request line too long (max {self._max_line} bytes)")
                    )
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):  # EOF in the middle of a line
                    await self._send(writer, _error("incomplete request line (no newline)"))
                    break
                response, close = self.process(line)
                await self._send(writer, response)
                if close:
                    break
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("chaos control: connection closed: %s", exc)
        finally:
            self._active -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        async with asyncio.timeout(self._idle_timeout):
            await writer.drain()


class ChaosControlError(CctfError):
    """A control request failed (connection problem or ``{"ok": false}``)."""


class ChaosControlClient:
    """Async client for ``ControlServer``; one short connection per request."""

    def __init__(self, host: str, port: int, token: str, *, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"ChaosControlClient(host={self.host!r}, port={self.port})"

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; return the response object, raising ``ChaosControlError`` unless
        it says ``"ok": true``."""
        payload = json.dumps({"token": self._token, "op": op, **fields}).encode() + b"\n"
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=MAX_RESPONSE_BYTES
                )
                try:
                    writer.write(payload)
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
        except TimeoutError:
            raise ChaosControlError(
                f"control {where}: no answer within {self.timeout:g} s"
            ) from None
        except ValueError:
            raise ChaosControlError(f"control {where}: response too long") from None
        except OSError as exc:
            raise ChaosControlError(f"control {where}: {exc.strerror or exc}") from None
        if not line:
            raise ChaosControlError(f"control {where}: connection closed without an answer")
        try:
            response = json.loads(line)
        except ValueError:
            raise ChaosControlError(f"control {where}: the answer is not JSON") from None
        if not isinstance(response, dict):
            raise ChaosControlError(f"control {where}: the answer is not a JSON object")
        if response.get("ok") is not True:
            raise ChaosControlError(f"control {where}: {response.get('error', 'request failed')}")
        return response

    async def get(self) -> Faults:
        return self._faults_of(await self.request("get"))

    async def set(self, faults: Faults) -> Faults:
        return self._faults_of(await self.request("set", faults=faults.to_dict()))

    async def clear(self) -> Faults:
        return self._faults_of(await self.request("clear"))

    async def stats(self) -> dict[str, Any]:
        """``{"faults": {...}, "stats": {...}}`` as sent by the server."""
        response = await self.request("stats")
        return {"faults": response.get("faults"), "stats": response.get("stats")}

    def _faults_of(self, response: dict[str, Any]) -> Faults:
        try:
            return Faults.from_dict(response.get("faults") or {})
        except (FaultError, TypeError) as exc:
            raise ChaosControlError(
                f"control {self.host}:{self.port}: bad faults in answer: {exc}"
            ) from None


# -- addresses, fabric file and token files ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: object) -> HostPort:
        """``HOST:PORT`` or ``[V6]:PORT``; port 1..65535."""
        if not isinstance(text, str):
            raise ValueError("an address must be a string 'HOST:PORT'")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]:")
        else:
            host, sep, rest = text.rpartition(":")
            if ":" in host:
                raise ValueError(f"bad address {text!r}: write IPv6 as [ADDR]:PORT")
        if not sep or not host or not rest.isdigit() or not 1 <= int(rest) <= 65535:
            raise ValueError(f"bad address {text!r}: expected HOST:PORT with PORT in 1..65535")
        return cls(host, int(rest))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ResolverEndpoint:
    """One chaos resolver of a running fabric."""

    dns: HostPort
    control: HostPort
    token: str

    def __repr__(self) -> str:  # never show the token
        return f"ResolverEndpoint(dns={self.dns}, control={self.control})"

    def client(self, *, timeout: float = 5.0) -> ChaosControlClient:
        return ChaosControlClient(self.control.host, self.control.port, self.token, timeout=timeout)

    def to_dict(self) -> dict[str, str]:
        return {"dns": str(self.dns), "control": str(self.control), "token": self.token}


class FabricFileError(ConfigError):
    """The fabric state file is missing or malformed (a ``ValueError`` too)."""


def _check_resolver_id(resolver_id: object) -> str:
    if (
        not isinstance(resolver_id, str)
        or not resolver_id
        or len(resolver_id) > 128
        or not resolver_id.isprintable()
    ):
        raise FabricFileError(f"bad resolver id {resolver_id!r}: 1..128 printable characters")
    return resolver_id


def load_fabric_resolvers(
    path: str | os.PathLike[str] = DEFAULT_FABRIC_PATH,
) -> dict[str, ResolverEndpoint]:
    """Read the ``resolvers`` section of a fabric state file (other sections are ignored)."""
    where = os.fspath(path)
    try:
        data = parse_document(
            read_bounded(path, "fabric file"), f"fabric file {where!r}", yaml_ok=False
        )
    except ConfigError as exc:
        raise FabricFileError(str(exc)) from None
    resolvers = data.get("resolvers") if isinstance(data, dict) else None
    if not isinstance(resolvers, dict):
        raise FabricFileError(f'fabric file {where!r} has no "resolvers" object')
    out: dict[str, ResolverEndpoint] = {}
    for resolver_id, entry in resolvers.items():
        _check_resolver_id(resolver_id)
        if not isinstance(entry, dict):
            raise FabricFileError(
                f"fabric file {where!r}: resolver {resolver_id!r} is not an object"
            )
        try:
            token = entry.get("token")
            if not isinstance(token, str):
                raise ValueError('"token" must be a string')
            out[resolver_id] = ResolverEndpoint(
                dns=HostPort.parse(entry.get("dns")),
                control=HostPort.parse(entry.get("control")),
                token=_check_token(token),
            )
        except ValueError as exc:
            raise FabricFileError(
                f"fabric file {where!r}: resolver {resolver_id!r}: {exc}"
            ) from None
    return out


def write_fabric_resolvers(
    path: str | os.PathLike[str], mapping: Mapping[str, ResolverEndpoint]
) -> None:
    """Write (atomically, mode 0600) the ``resolvers`` section of a fabric state file. Other
    top-level keys of an existing file are kept; an existing file that is not a JSON object is an
    error (it is not overwritten)."""
    document: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            existing = parse_document(
                read_bounded(path, "fabric file"), "fabric file", yaml_ok=False
            )
        except ConfigError as exc:
            raise FabricFileError(
                f"refusing to overwrite unreadable fabric file {os.fspath(path)!r}: {exc}"
            ) from None
        if not isinstance(existing, dict):
            raise FabricFileError(
                f"refusing to overwrite fabric file {os.fspath(path)!r}: not a JSON object"
            )
        document = existing
    resolvers: dict[str, dict[str, str]] = {}
    for resolver_id, endpoint in mapping.items():
        _check_resolver_id(resolver_id)
        resolvers[resolver_id] = endpoint.to_dict()
    document["resolvers"] = resolvers
    write_secret_json(path, document)


def write_token_file(path: str | os.PathLike[str], token: str) -> None:
    """Store a control token in a file only its owner can read (mode 0600)."""
    write_secret_file(path, (_check_token(token) + "\n").encode("ascii"))


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The control token stored in ``path``; :class:`ConfigError` (a ``ValueError``) if unreadable,
    too large or not a valid token."""
    where = os.fspath(path)
    raw = read_bounded(path, "token file", MAX_TOKEN_FILE_BYTES)
    try:
        return _check_token(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"token file {where!r}: {exc}") from None
