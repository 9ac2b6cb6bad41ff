"""``cctf gateway`` as a process: exit codes for a bad config (2), an address in use (1), and SIGTERM
in every state (connecting to an unreachable NATS, serving) -> 0 within a few seconds."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gatewayproc import free_port

from cctf.crypto.trust import TrustConfig


def _config(tmp_path: Path, **doc: object) -> Path:
    trust = tmp_path / "trust.json"
    if not trust.exists():
        TrustConfig([]).save(trust)
    base: dict[str, object] = {
        "region": "us-east",
        "trust_file": str(trust),
        "nats": {"urls": [f"nats://127.0.0.1:{free_port()}"], "user": "client", "password": "x"},
        "listen": f"127.0.0.1:{free_port()}",
    }
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({**base, **doc}))
    return path


def _start(config: Path, stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cctf", "gateway", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _wait_for(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in path.read_text(errors="replace"):
        assert proc.poll() is None, path.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"no {needle!r} in {timeout_s} s"
        time.sleep(0.05)


def test_bad_config_is_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = _start(_config(tmp_path, listen="nowhere"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"listen must look like host:port" in err


def test_sigterm_while_connecting_to_an_unreachable_nats_is_exit_0(tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    with log.open("wb") as err:
        proc = _start(_config(tmp_path), stderr=err)
        # signal handlers are in place and the connection is being tried (refused, retried)
        _wait_for(log, "gateway_connecting", proc, 60)
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text()[-2000:]


def test_an_address_in_use_is_exit_1(tmp_path: Path, nats_single: object) -> None:
    from cctf.devfabric.nats import NatsFabric

    assert isinstance(nats_single, NatsFabric)
    creds = nats_single.write_credentials(tmp_path / "creds.json")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(
            tmp_path,
            nats={"credentials": str(creds), "user": "client"},
            listen=f"127.0.0.1:{port}",
        )
        proc = _start(config)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"listen_failed" in err
