"""``cctf gateway`` as a real process for tests: config written next to a real nats-server fabric
and the local identity fabric, started, waited for (``/healthz``), stopped with SIGTERM.

    with GatewayProcess.start(tmp_path, nats_fabric, world, targets_doc) as gw:
        httpx2.get(gw.url + "/healthz")
    assert gw.returncode == 0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
from clientcases import REGION
from wirefactories import World

from cctf.bus.connect import connect
from cctf.bus.streams import ensure_streams
from cctf.devfabric.nats import NatsFabric

__all__ = ["GatewayProcess", "free_port", "prepare_streams"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_streams(fabric: NatsFabric, regions: tuple[str, ...] = (REGION,)) -> None:
    async def run() -> None:
        nc = await connect(fabric.urls, fabric.users["admin"], name="test-setup", for_tests=True)
        try:
            await ensure_streams(nc.jetstream(), list(regions), 1)
        finally:
            await nc.close()

    asyncio.run(run())


class GatewayProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, config: Path) -> None:
        self.proc = proc
        self.url = url
        self.config = config
        self.returncode: int | None = None

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        workdir: Path,
        nats: NatsFabric,
        world: World,
        identity: dict[str, Any],
        *,
        ready_timeout_s: float = 30.0,
        **extra: Any,
    ) -> Iterator[GatewayProcess]:
        workdir.mkdir(parents=True, exist_ok=True)
        creds = nats.write_credentials(workdir / "creds.json")
        trust = workdir / "trust.json"
        world.trust.save(trust)
        port = free_port()
        config = workdir / "gateway.json"
        doc = {
            "region": REGION,
            "trust_file": str(trust),
            "nats": {"credentials": str(creds), "user": "client"},
            "listen": f"127.0.0.1:{port}",
            "identity": identity,
            **extra,
        }
        config.write_text(json.dumps(doc))
        stderr = (workdir / "gateway.stderr").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cctf", "gateway", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        gw = cls(proc, f"http://127.0.0.1:{port}", config)
        try:
            gw._wait_ready(ready_timeout_s)
            yield gw
        finally:
            gw.returncode = gw.stop()
            stderr.close()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cctf gateway exited with {self.proc.returncode}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"cctf gateway not ready within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout_s``: the test then fails on the code)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return int(self.proc.returncode)

    def stderr(self) -> str:
        return (self.config.parent / "gateway.stderr").read_text(errors="replace")
