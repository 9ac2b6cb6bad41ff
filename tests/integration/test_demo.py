"""The local fabric end to end, through the real CLI: `cctf demo` as a user runs it.

Each run starts nats-server (one node, the cheaper fabric, where the test is about the votes; the
default 3-node cluster in test_demo_stops_cleanly_on_ctrl_c), five fault-injecting DNS servers, five
agents, a coordinator and a verifying subscriber, so these are the slowest tests of the suite (~5 s
each). Usage errors, refused before anything starts, run in the test process (cliusage).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.rdatatype
import pytest
from cliusage import main_in_process

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


def stop_demo(proc: subprocess.Popen[Any]) -> None:
    """Stop a demo a failed assertion left running: SIGTERM first (it stops its nats-servers, which
    run in sessions of their own and would outlive a SIGKILLed demo), SIGKILL only as a last
    resort."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
        return
    except subprocess.TimeoutExpired:
        pass
    for pipe in (proc.stdout, proc.stderr):  # a demo blocked writing to a full pipe: EPIPE
        if pipe is not None:
            pipe.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def demo_output(
    tmp_path: Path, *args: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """``cctf demo --rounds 3 --json ...``: (name verdicts, workload decisions, stderr)."""
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
    objects = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    # the last line: the coordinator's log re-derived from every entry, every published head in it
    assert objects and set(objects[-1]) == {"log"}, proc.stdout[-500:]
    log = objects.pop()["log"]
    assert set(log) == {"size", "root", "verified"} and log["verified"] is True, log
    assert log["size"] >= 3 * len(DEMO_NAMES) and len(bytes.fromhex(log["root"])) == 32
    verdicts = [o for o in objects if "workload" not in o]
    workloads = [o for o in objects if "workload" in o]
    assert len(verdicts) + len(workloads) == len(objects)
    # Every name of every round arrived; nothing was left running.
    assert len(verdicts) >= 3 * len(DEMO_NAMES), proc.stderr[-2000:]
    assert processes_mentioning(str(workdir)) == []
    return verdicts, workloads, proc.stderr


def run_demo(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    verdicts, _, err = demo_output(tmp_path, *args)
    return verdicts, err


def test_demo_two_poisoned_resolvers_do_not_change_the_verdict(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--nodes", "1", "--poison", "2")
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
            "dnssec",
        }
        assert v["dnssec"] in ("secure", "insecure", "indeterminate"), v
    # The poisoned resolvers' forged addresses were really served (and outvoted).
    assert any(v["disagree"] for v in verdicts)


def test_demo_three_poisoned_resolvers_never_yield_trust(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--nodes", "1", "--poison", "3")
    assert verdicts
    assert all(v["outcome"] != "trusted" for v in verdicts)
    assert all(v["outcome"] == "disputed" for v in verdicts)
    assert all(v["answer"] == [] for v in verdicts)


def test_demo_all_resolvers_blackholed_is_unavailable(tmp_path: Path) -> None:
    verdicts, _ = run_demo(tmp_path, "--nodes", "1", "--blackhole", "5")
    assert verdicts
    for v in verdicts:
        assert v["outcome"] == "unavailable", v
        assert len(v["unavailable"]) == 5


def test_demo_fail_path_dns_blackholes_every_resolver(tmp_path: Path) -> None:
    verdicts, err = run_demo(tmp_path, "--nodes", "1", "--fail-path", "dns")
    for v in verdicts:
        assert v["outcome"] == "unavailable", v
        assert len(v["unavailable"]) == 5
    assert "faults=blackhole" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--fail-path", "smtp"), "invalid choice"),
        (("--fail-path", "dns", "--fail-path", "dns"), "at most once"),
        (("--mtls-fault", "melted"), "invalid choice"),
    ],
)
def test_demo_rejects_bad_fail_paths(
    tmp_path: Path, args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _demo_usage(tmp_path, capsys, *args)
    assert rc == 2, err
    assert message in err
    assert out == ""
    assert not (tmp_path / "fabric").exists()


def test_demo_rejects_impossible_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _demo_usage(tmp_path, capsys, "--poison", "3", "--blackhole", "3")
    assert rc == 2
    assert "cannot exceed" in err
    assert not (tmp_path / "fabric").exists()


def _demo_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``cctf demo`` refused before it starts anything: in this process (see cliusage)."""
    return main_in_process(["demo", "--dir", str(tmp_path / "fabric"), *args], capsys)


def test_demo_bogus_dnssec_minority_is_outvoted_majority_never_trusted(tmp_path: Path) -> None:
    verdicts, err = run_demo(tmp_path, "--nodes", "1", "--bogus", "2")
    assert "tampered" in err
    for v in verdicts:
        assert v["outcome"] == "trusted", v
        assert v["dnssec"] == "secure", v
    (tmp_path / "3").mkdir()
    verdicts, _ = run_demo(tmp_path / "3", "--nodes", "1", "--bogus", "3")
    assert verdicts and all(v["outcome"] != "trusted" for v in verdicts)


def _demo_cli(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cctf", "demo", "--dir", str(tmp_path / "fabric"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999999999999999999"])
def test_demo_bad_metrics_port_is_a_usage_error(
    tmp_path: Path, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _demo_usage(tmp_path, capsys, "--metrics-port", port)
    assert rc == 2, err
    assert err.strip().count("\n") == 0, err  # one line, no traceback
    assert "--metrics-port takes 1..65535" in err
    assert out == ""
    assert not (tmp_path / "fabric").exists()


def test_demo_busy_metrics_port_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _demo_cli(tmp_path, "--metrics-port", str(port))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"cctf demo: error: cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
    assert "in use" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # it failed before starting NATS or DNS servers: nothing ran from its work directory
    assert not (tmp_path / "fabric" / "nats").exists()
    assert processes_mentioning(str(tmp_path / "fabric")) == []


def _err(tmp_path: Path) -> str:
    """The demo's stderr, written to a file (never an unread pipe: a full pipe blocks the demo)."""
    return (tmp_path / "demo.err").read_text(errors="replace")


def _first_line(proc: subprocess.Popen[str], tmp_path: Path, timeout_s: float = 60) -> str:
    """The demo's first stdout line, waited for at most ``timeout_s`` (a demo that prints nothing
    fails here with its stderr, instead of blocking a bare readline until the pytest timeout)."""
    assert proc.stdout is not None
    out, box = proc.stdout, []
    reader = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not box:
        raise AssertionError(f"no line in {timeout_s:.0f} s; stderr: {_err(tmp_path)[-3000:]}")
    return box[0]


def _drain(proc: subprocess.Popen[str]) -> None:
    """Keep reading the demo's stdout in the background so a full pipe cannot block it."""
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: [None for _ in out], daemon=True).start()


def test_demo_serves_metrics_on_the_given_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cctf", "demo", "--nodes", "1"),
            *("--dir", str(tmp_path / "fabric"), "--fabric-file", str(tmp_path / "fabric.json")),
            *("--metrics-port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "demo.err").open("w"),  # a full unread pipe would block the demo
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first verdict: the coordinator has decided once
        _drain(proc)
        assert "TRUSTED" in first, first
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert "cctf_" in body
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_demo(proc)
    assert proc.returncode == 143, _err(tmp_path)[-3000:]


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
        stderr=(tmp_path / "demo.err").open("w"),  # a full unread pipe would block the demo
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = _first_line(proc, tmp_path)  # the first verdict printed
        _drain(proc)
        if "TRUSTED" not in first:  # say why the demo ended early
            proc.wait(timeout=60)
            raise AssertionError(f"first line {first!r}; stderr: {_err(tmp_path)[-3000:]}")
        assert processes_mentioning(str(workdir)), "the fabric should be running"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        stop_demo(proc)
    assert proc.returncode == 130, _err(tmp_path)[-3000:]  # as --help says
    deadline = time.monotonic() + 5
    while processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(workdir)) == []
    assert not (tmp_path / "fabric.json").exists()


def test_demo_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    """`cctf demo | head -1`: the reader leaves; the demo stops without a traceback, fabric gone."""
    workdir = tmp_path / "fabric"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cctf", "demo", "--nodes", "1", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "demo.err").open("w"),  # a full unread pipe would block the demo
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    try:
        first = _first_line(proc, tmp_path)
        assert "TRUSTED" in first, first
        proc.stdout.close()  # like head(1) exiting after one line
        proc.wait(timeout=60)
    finally:
        stop_demo(proc)
    err = _err(tmp_path)
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 141, err[-3000:]
    assert not processes_mentioning(str(workdir)), "the fabric should be gone"


def test_demo_three_coordinators_combined_two_of_three(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cctf demo --coordinators 3``: three coordinators (own keys, durables, subjects and logs),
    the subscriber and the relying party using 2-of-3 for DNS verdicts, identity verdicts and safe
    mode; every coordinator's log verified (one ``log`` line each)."""
    workdir = tmp_path / "fabric"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cctf",
            "demo",
            "--coordinators",
            "3",
            "--nodes",
            "1",
            "--rounds",
            "3",
            "--json",
            "--dir",
            str(workdir),
            "--fabric-file",
            str(tmp_path / "fabric.json"),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    objects = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    logs = [o["log"] for o in objects if set(o) == {"log"}]
    assert objects[-3:] == [{"log": log} for log in logs] and len(logs) == 3, proc.stdout[-800:]
    assert all(log["verified"] and log["size"] >= 3 * len(DEMO_NAMES) for log in logs), logs
    assert len({log["root"] for log in logs}) == 3  # three logs, one per coordinator
    verdicts = [o for o in objects if "workload" not in o and "log" not in o]
    workloads = [o for o in objects if "workload" in o]
    assert len(verdicts) >= 3 * len(DEMO_NAMES), proc.stderr[-2000:]
    assert all(v["outcome"] == "trusted" for v in verdicts)
    assert {v["coordinator"] for v in verdicts} <= {"coord-1", "coord-2", "coord-3"}
    assert workloads and all(w["outcome"] == "trusted" for w in workloads), workloads[-1:]
    assert "subscriber uses 2-of-3 coordinators" in proc.stderr
    assert processes_mentioning(str(workdir)) == []
    rc, _, err = _demo_usage(tmp_path / "bad", capsys, "--coordinators", "2")
    assert rc == 2 and "--coordinators" in err
