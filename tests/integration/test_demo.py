"""The local fabric end to end, through the real CLI: `cctf demo` as a user runs it.

Each run starts a 3-node nats-server cluster, five fault-injecting DNS servers, five agents, a
coordinator and a verifying subscriber, so these are the slowest tests of the suite (~5 s each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.rdatatype
import pytest

from cctf.chaos.zone import DEMO_NAMES, demo_zone

pytestmark = pytest.mark.slow


def honest_answers() -> dict[str, list[str]]:
    zone = demo_zone()
    out: dict[str, list[str]] = {}
    for name in DEMO_NAMES:
        rds = zone.find_rdataset(name, dns.rdatatype.A)
        out[name] = sorted(f"{name} A {rd.to_text()}" for rd in rds)
    return out


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def run_demo(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    workdir = tmp_path / "fabric"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cctf",
            "demo",
            "--rounds",
            "3",
            "--json",
            "--dir",
            str(workdir),
            "--fabric-file",
            str(tmp_path / "fabric.json"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    # Every name of every round arrived; nothing was left running.
    assert len(verdicts) >= 3 * len(DEMO_NAMES), proc.stderr[-2000:]
    assert processes_mentioning(str(workdir)) == []
    return verdicts, proc.stderr


def test_demo_two_poisoned_resolvers_do_not_change_the_verdict(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--poison", "2")
    honest = honest_answers()
    for v in verdicts:
        assert v["outcome"] == "trusted", v
        assert v["answer"] == honest[v["name"]], v
        assert len(v["agree"]) >= 3
        assert set(v) >= {
            "name",
            "qtype",
            "round",
            "outcome",
            "answer",
            "agree",
            "disagree",
            "unavailable",
        }
    # The poisoned resolvers' forged addresses were really served (and outvoted).
    assert any(v["disagree"] for v in verdicts)


def test_demo_three_poisoned_resolvers_never_yield_trust(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--poison", "3")
    assert verdicts
    assert all(v["outcome"] != "trusted" for v in verdicts)
    assert all(v["outcome"] == "disputed" for v in verdicts)
    assert all(v["answer"] == [] for v in verdicts)


def test_demo_all_resolvers_blackholed_is_unavailable(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--blackhole", "5")
    assert verdicts
    for v in verdicts:
        assert v["outcome"] == "unavailable", v
        assert len(v["unavailable"]) == 5


def test_demo_rejects_impossible_options(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cctf", "demo", "--poison", "3", "--blackhole", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "cannot exceed" in proc.stderr


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "fabric"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cctf",
            "demo",
            "--dir",
            str(workdir),
            "--fabric-file",
            str(tmp_path / "fabric.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the first verdict is printed
        assert "TRUSTED" in first, first
        assert processes_mentioning(str(workdir)), "the fabric should be running"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    deadline = time.monotonic() + 5
    while processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(workdir)) == []
    assert not (tmp_path / "fabric.json").exists()
