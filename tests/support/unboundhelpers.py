"""Debian's unbound as a real validating (or plain iterating) resolver for DNSSEC interop tests.

:func:`find_binary` locates ``unbound`` / ``unbound-control`` / ``nsd``: when missing, tests skip with
the reason, except on CI (``CI=true``), where a missing binary FAILS the test (``.ci/run`` installs
them with apt-get). :class:`Unbound` writes a config in a temporary directory, starts the process in
the foreground (``-d``), waits until it answers, flushes its caches between tests through
``unbound-control`` (a UNIX control socket, no certificates) and stops it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message
import dns.query
import pytest

from cctf.devfabric.nsd import NsdServer, stop_child

__all__ = ["Nsd", "Unbound", "find_binary", "free_port"]


def find_binary(name: str) -> str:
    """The path of ``name`` (PATH, then /usr/sbin); skip, or fail on CI, when it is missing."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
    )
    if path is None:
        reason = f"{name} is not installed (apt-get install unbound nsd; .ci/run does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"on CI: {reason}")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (briefly; the caller binds it next)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Unbound:
    """One unbound process (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        *,
        stubs: Sequence[tuple[str, int]],
        trust_anchors: Sequence[str] = (),
        validating: bool = True,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: ``(cert_file, key_file)`` to also serve DNS over TLS on :attr:`tls_port`."""
        self.binary = find_binary("unbound")
        self.control = find_binary("unbound-control")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        self.conf = self.dir / "unbound.conf"
        self.log = self.dir / "unbound.log"
        lines = [
            "server:",
            "  verbosity: 1",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"',
            "  use-syslog: no",
            f'  logfile: "{self.log}"',
            "  log-servfail: yes",
            "  do-not-query-localhost: no",
            "  num-threads: 1",
            "  so-reuseport: no",
            "  qname-minimisation: no",
            "  aggressive-nsec: no",
            "  prefetch: no",
            "  minimal-responses: yes",
            "  ede: yes",
            "  val-log-level: 2",
            "  val-bogus-ttl: 1",
            "  infra-host-ttl: 1",
            '  local-zone: "test." nodefault',  # RFC 6761 .test is a default local zone otherwise
            f'  module-config: "{"validator iterator" if validating else "iterator"}"',
        ]
        if tls is not None:
            lines += [
                f"  interface: 127.0.0.1@{self.tls_port}",
                f"  tls-port: {self.tls_port}",
                f'  tls-service-pem: "{tls[0]}"',
                f'  tls-service-key: "{tls[1]}"',
            ]
        lines += [f'  trust-anchor: "{anchor}"' for anchor in trust_anchors]
        lines += [
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{self.dir}/unbound.ctl"',
            "  control-use-cert: no",
        ]
        for name, port in stubs:
            lines += ["stub-zone:", f'  name: "{name}"', f"  stub-addr: 127.0.0.1@{port}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-d", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        query = dns.message.make_query("localhost.", "A")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"unbound exited with {self.proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(Exception):
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"unbound did not answer within {timeout_s} s")

    def flush(self) -> None:
        """Forget cached answers, keys, bogus results and server state (between tests)."""
        for args in (
            ["flush_zone", "test."],
            ["flush_bogus"],
            ["flush_infra", "all"],
            ["flush_negative"],
            ["flush_requestlist"],
        ):
            subprocess.run(
                [self.control, "-c", str(self.conf), *args],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=10,
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_child(proc)


class Nsd(NsdServer):
    """One nsd process serving zone files (authoritative only), on a free port of 127.0.0.1
    (:class:`cctf.devfabric.nsd.NsdServer`; skipped, or failed on CI, when nsd is missing)."""

    def __init__(self, workdir: Path, zones: dict[str, str]) -> None:
        """``zones``: origin -> zone file text."""
        super().__init__(workdir, zones, binary=find_binary("nsd"), port=free_port())
