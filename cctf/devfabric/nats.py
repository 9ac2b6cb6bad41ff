"""Local NATS fabric: a single node or an N-node JetStream cluster of real nats-server processes.

A process adapter: :class:`NatsFabric` starts :class:`~cctf.devfabric.nats_server.NatsServer`
processes with configs rendered by :mod:`cctf.devfabric.nats_config` (one account ``CCTF`` with
JetStream, one user per role and one per region, see ``deploy/nats/README.md``), waits until the
cluster is ready, writes the credentials file and connects clients (``cctf.bus.connect``).
The names of ``nats_server`` are re-exported here.

Secrets: passwords live in the generated config files and the credentials file, both written with
mode 0600. They are never logged, printed, or shown in a ``repr``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cctf.bus.accounts import (
    DEFAULT_REGIONS,
    ROUTE_USER,
    NatsUser,
    agent_user_name,
    build_users,
    validate_region,
)
from cctf.bus.connect import Connection, connect
from cctf.devfabric.nats_config import render_server_config
from cctf.devfabric.nats_server import (
    ENV_NATS_SERVER,
    MIN_NATS_SERVER,
    NatsFabricError,
    NatsServer,
    NatsServerNotFoundError,
    PortInUseError,
    check_nats_server_version,
    find_nats_server,
    free_ports,
    live_servers,
)
from cctf.util.files import write_secret_file

__all__ = [
    "ENV_NATS_SERVER",
    "MIN_NATS_SERVER",
    "NatsFabric",
    "NatsFabricError",
    "NatsServer",
    "NatsServerNotFoundError",
    "PortInUseError",
    "check_nats_server_version",
    "find_nats_server",
    "live_servers",
    "render_server_config",
]

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# a fabric: one node or a cluster


class NatsFabric:
    """A local nats-server fabric: one node or an N-node JetStream cluster, plus its users."""

    def __init__(
        self,
        *,
        workdir: Path,
        servers: Sequence[NatsServer],
        users: Mapping[str, NatsUser],
        regions: Sequence[str],
        jetstream: bool,
    ) -> None:
        self.workdir = Path(workdir)
        self.servers: list[NatsServer] = list(servers)
        self.users: dict[str, NatsUser] = dict(users)
        self.regions: tuple[str, ...] = tuple(regions)
        self.jetstream = jetstream
        self._stopped = False
        atexit.register(self.stop)

    def __repr__(self) -> str:
        return f"NatsFabric(nodes={len(self.servers)}, urls={self.urls!r})"

    # ---- construction

    @classmethod
    def start(
        cls,
        workdir: Path,
        nodes: int = 3,
        regions: Sequence[str] = DEFAULT_REGIONS,
        jetstream: bool = True,
        *,
        passwords: Mapping[str, str] | None = None,
        ready_timeout_s: float = 30.0,
        port_attempts: int = 3,
    ) -> NatsFabric:
        """Start ``nodes`` servers under ``workdir`` and wait until the fabric is ready.

        Ready means every node answers ``/healthz`` and, with JetStream in a cluster, every node
        reports the same JetStream meta leader and the full cluster size.
        """
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        regions = tuple(validate_region(r) for r in regions)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        users = build_users(regions, passwords)
        route_user = NatsUser(ROUTE_USER, secrets.token_urlsafe(24)) if nodes > 1 else None
        binary = find_nats_server()
        last_error: Exception | None = None
        for _attempt in range(port_attempts):
            ports = free_ports(nodes * 3)
            client_ports = ports[0:nodes]
            http_ports = ports[nodes : 2 * nodes]
            cluster_ports = ports[2 * nodes :]
            servers = [
                NatsServer(
                    name=f"n{i + 1}",
                    directory=workdir / f"node-{i + 1}",
                    port=client_ports[i],
                    http_port=http_ports[i],
                    users=users,
                    jetstream=jetstream,
                    cluster_port=cluster_ports[i] if nodes > 1 else None,
                    route_ports=[p for j, p in enumerate(cluster_ports) if j != i]
                    if nodes > 1
                    else (),
                    route_user=route_user,
                    binary=binary,
                )
                for i in range(nodes)
            ]
            fabric = cls(
                workdir=workdir, servers=servers, users=users, regions=regions, jetstream=jetstream
            )
            try:
                for server in servers:
                    server.start(wait=False)
                fabric.wait_ready(timeout_s=ready_timeout_s)
            except PortInUseError as exc:
                _log.warning("port collision while starting NATS fabric, retrying: %s", exc)
                last_error = exc
                fabric.stop()
                continue
            except BaseException:
                fabric.stop()
                raise
            _log.info("NATS fabric ready: %d node(s) at %s", nodes, ", ".join(fabric.urls))
            return fabric
        raise NatsFabricError(f"could not start NATS fabric: {last_error}")

    @classmethod
    async def astart(
        cls,
        workdir: Path,
        nodes: int = 3,
        regions: Sequence[str] = DEFAULT_REGIONS,
        jetstream: bool = True,
        **kwargs: Any,
    ) -> NatsFabric:
        """``start`` in a worker thread, for use inside an event loop."""
        return await asyncio.to_thread(cls.start, workdir, nodes, regions, jetstream, **kwargs)

    # ---- readiness

    def wait_ready(self, *, timeout_s: float = 30.0) -> None:
        """Block until every node is healthy and (clustered JetStream) the meta group has formed."""
        deadline = time.monotonic() + timeout_s
        for server in self.servers:
            server.wait_healthy(
                timeout_s=max(0.1, deadline - time.monotonic()), js_enabled_only=True
            )
        for server in self.servers:
            server.wait_healthy(timeout_s=max(0.1, deadline - time.monotonic()))
        if not (self.jetstream and len(self.servers) > 1):
            return
        while True:
            state = self._meta_state()
            if state is not None:
                return
            for server in self.servers:
                server.check_alive()
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {s.name}\n{s.log_tail(15)}" for s in self.servers)
                raise NatsFabricError(
                    f"JetStream meta group not formed after {timeout_s:.1f}s\n{tails}"
                )
            time.sleep(0.1)

    def _meta_state(self) -> str | None:
        """The common meta leader if all nodes agree and see the full cluster, else None."""
        leaders: set[str] = set()
        for server in self.servers:
            try:
                meta = server.monitor("jsz", timeout_s=1.0).get("meta_cluster") or {}
            except (OSError, ValueError, NatsFabricError):
                return None
            leader = meta.get("leader")
            if not leader or int(meta.get("cluster_size") or 0) != len(self.servers):
                return None
            leaders.add(str(leader))
        return leaders.pop() if len(leaders) == 1 else None

    def meta_leader(self) -> str | None:
        """Name of the JetStream meta leader as seen by the running nodes."""
        for server in self.servers:
            if not server.running:
                continue
            try:
                meta = server.monitor("jsz", timeout_s=1.0).get("meta_cluster") or {}
            except (OSError, ValueError, NatsFabricError):
                continue
            if meta.get("leader"):
                return str(meta["leader"])
        return None

    # ---- accessors

    @property
    def urls(self) -> list[str]:
        return [s.client_url for s in self.servers]

    @property
    def stream_replicas(self) -> int:
        """Replica count suited to this fabric (1 for a single node, 3 for a cluster)."""
        return min(3, len(self.servers))

    def user(self, name: str) -> NatsUser:
        return self.users[name]

    def agent_user(self, region: str) -> NatsUser:
        return self.users[agent_user_name(region)]

    def server(self, name: str) -> NatsServer:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    # ---- credentials

    def write_credentials(self, path: Path, *, only: str | None = None) -> Path:
        """Write ``{"urls": [...], "users": {name: {"user", "password"}}}`` with mode 0600: every
        user (the operator's file), or with ``only`` that one user (a component's own file)."""
        users = self.users if only is None else {only: self.users[only]}
        doc = {
            "urls": self.urls,
            "users": {n: {"user": u.name, "password": u.password} for n, u in users.items()},
        }
        return write_secret_file(Path(path), json.dumps(doc, indent=2) + "\n")

    def write_user_credentials(self, directory: Path) -> dict[str, Path]:
        """One credentials file per user, ``<directory>/<user>.json`` (0600), each holding ONLY that
        user's password: hand each component its own (never the file with every password)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        return {n: self.write_credentials(directory / f"{n}.json", only=n) for n in self.users}

    # ---- connections

    async def connect(
        self, user: str, *, name: str | None = None, for_tests: bool = False, **kwargs: Any
    ) -> Connection:
        """Connect to all nodes as ``user`` (a key of ``users``)."""
        return await connect(
            self.urls, self.users[user], name=name or user, for_tests=for_tests, **kwargs
        )

    # ---- shutdown

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL). Idempotent."""
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop()
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
                with contextlib.suppress(BaseException):
                    server.kill()
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
        if errors:
            raise errors[0]

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.servers)


# --------------------------------------------------------------------------------------------
