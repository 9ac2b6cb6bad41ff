"""Debian's nsd as an authoritative DNS server of the local fabric (a server process, like
:mod:`cctf.devfabric.nats_server`): the load benchmark's resolvers (``benchmarks/load.py --dns nsd``,
signed zones of thousands of names served by a C server, so that the DNS servers the agents ask do
not take the CPU of the 2-core machine the fabric is measured on) and the DNSSEC interop tests.

:class:`NsdServer` writes a config and the zone files in a work directory, starts nsd in the
foreground (``-d``) on 127.0.0.1 (UDP and TCP on one port), waits until it answers, and stops it with
SIGTERM. Zones are given as zone file text (e.g. a zone signed by :func:`cctf.chaos.signing.sign`,
``zone.to_text(relativize=False)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import dns.message
import dns.query

__all__ = ["NsdServer", "nsd_binary", "stop_child"]


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGTERM when the parent dies (Linux ``prctl``), so an
    nsd is never left behind by a parent killed before its :meth:`NsdServer.stop`."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def nsd_binary() -> str | None:
    """The path of ``nsd`` (PATH, then /usr/sbin), or None when it is not installed."""
    return shutil.which("nsd") or ("/usr/sbin/nsd" if os.access("/usr/sbin/nsd", os.X_OK) else None)


class NsdServer:
    """One nsd process serving zone files (authoritative only) on ``port`` of 127.0.0.1."""

    def __init__(self, workdir: Path, zones: Mapping[str, str], *, binary: str, port: int) -> None:
        """``zones``: origin -> zone file text."""
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.conf = self.dir / "nsd.conf"
        lines = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{self.dir}"',
            '  database: ""',
            f'  pidfile: "{self.dir}/nsd.pid"',
            f'  xfrdfile: "{self.dir}/xfrd.state"',
            f'  zonelistfile: "{self.dir}/zone.list"',
            f'  logfile: "{self.dir}/nsd.log"',
            "  server-count: 1",
            "  verbosity: 1",
            "  do-ip6: no",
            "remote-control:",
            "  control-enable: no",
        ]
        for i, (origin, text) in enumerate(zones.items()):
            (self.dir / f"zone{i}.zone").write_text(text)
            lines += ["zone:", f'  name: "{origin}"', f'  zonefile: "zone{i}.zone"']
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: str, timeout_s: float = 20.0) -> None:
        """Start and wait until ``probe`` (a name it serves) is answered. Raises ``RuntimeError``
        when nsd exits or does not answer in time."""
        self.proc = subprocess.Popen(
            [self.binary, "-d", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # only prctl between fork and exec
        )
        deadline = time.monotonic() + timeout_s
        query = dns.message.make_query(probe, "SOA")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nsd exited with {self.proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(Exception):
                if dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2).answer:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nsd did not answer within {timeout_s} s")

    def pids(self) -> list[int]:
        """nsd's process and its children (the server and xfrd processes it forks)."""
        if self.proc is None:
            return []
        out = [self.proc.pid]
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                children = Path(f"/proc/{self.proc.pid}/task/{task}/children").read_text()
                out += [int(p) for p in children.split()]
        return out

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_child(proc)


def stop_child(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM a server process and wait; SIGKILL when it has not exited within ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
