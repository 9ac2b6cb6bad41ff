"""``cctf coordinator run`` exits within 5 s of SIGTERM in every state, with the documented exit code 0:
connecting (NATS unreachable, retrying), running, and running after NATS went away."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from wirefactories import make_trust, make_world

from cctf.bus.connect import connect
from cctf.bus.streams import ensure_streams
from cctf.crypto.keys import save_signing_key
from cctf.devfabric.nats import NatsFabric

EAST, WEST = "us-east", "eu-west"
STOP_BOUND_S = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, nats: dict[str, object]) -> Path:
    world = make_world((EAST, WEST))
    save_signing_key(tmp_path / "coord.key.json", world.coordinator.key)
    make_trust(*world.agents.values()).save(tmp_path / "trust.json")
    cfg = {
        "coordinator": world.coordinator.principal,
        "region": EAST,
        "key_file": "coord.key.json",
        "trust_file": "trust.json",
        "nats": nats,
        "rule": {"k": 2, "n": 3},
        "electorate": ["agent-us-east/r1", "agent-us-east/r2", "agent-eu-west/r1"],
        "names": [["example.com.", "A"]],
    }
    path = tmp_path / "coord.yaml"  # YAML is a superset of JSON
    path.write_text(json.dumps(cfg))
    return path


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cctf", "coordinator", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=config.parent,
    )


def _wait_log(log: Path, event: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while f'"event": "{event}"' not in log.read_text():
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no {event} in {log.read_text()[-2000:]}"
        time.sleep(0.05)


def _sigterm_and_time(proc: subprocess.Popen[bytes], log: Path) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_BOUND_S + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - t0
    assert code == 0, log.read_text()[-2000:]
    assert took < STOP_BOUND_S, f"exited {took:.1f} s after SIGTERM"
    return took


def test_sigterm_while_connecting_to_an_unreachable_nats(tmp_path: Path) -> None:
    port = _free_port()  # nobody listens here
    config = _config(
        tmp_path, {"urls": [f"nats://127.0.0.1:{port}"], "user": "coordinator", "password": "pw"}
    )
    log = tmp_path / "coordinator.log"
    proc = _spawn(config, log)
    # its signal handlers are installed when it starts connecting (a loaded machine can take
    # seconds to get there: a fixed sleep raced the interpreter's start-up)
    _wait_log(log, "nats_connecting", proc)
    time.sleep(1.0)  # well into its connect retries
    assert proc.poll() is None, log.read_text()[-2000:]  # still trying, not given up
    _sigterm_and_time(proc, log)


def _prepare(fabric: NatsFabric, tmp_path: Path) -> Path:
    fabric.write_credentials(tmp_path / "creds.json")

    async def streams() -> None:
        nc = await connect(fabric.urls, fabric.users["admin"], name="setup", for_tests=True)
        await ensure_streams(nc.jetstream(), [EAST, WEST], 1)
        await nc.close()

    asyncio.run(streams())
    return _config(tmp_path, {"credentials": "creds.json", "user": "coordinator"})


def test_sigterm_while_running(nats_single: NatsFabric, tmp_path: Path) -> None:
    config = _prepare(nats_single, tmp_path)
    log = tmp_path / "coordinator.log"
    proc = _spawn(config, log)
    _wait_log(log, "coordinator_started", proc)
    _sigterm_and_time(proc, log)
    assert '"event": "coordinator_stopped"' in log.read_text()


def test_sigterm_after_nats_went_away(nats_single: NatsFabric, tmp_path: Path) -> None:
    config = _prepare(nats_single, tmp_path)
    log = tmp_path / "coordinator.log"
    proc = _spawn(config, log)
    _wait_log(log, "coordinator_started", proc)
    nats_single.servers[0].kill()  # the server is gone; the coordinator keeps reconnecting
    time.sleep(2.0)
    assert proc.poll() is None, log.read_text()[-2000:]
    _sigterm_and_time(proc, log)
