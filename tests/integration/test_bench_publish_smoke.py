"""Smoke test of ``benchmarks/publish.py`` (publish CPU per message: per-message tasks against one
``Publisher.publish_many``): it runs end to end on a real nats-server, every message is stored, and
it prints one JSON object with the documented keys. No timing assertion (machine-dependent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "publish.py"


def test_publish_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)
    for mode in ("per_message_tasks", "publish_many"):
        assert result[mode]["per_message_us"] > 0
        assert result[mode]["stored_first_try"] == result["messages"] * result["repetitions"]
    assert result["ratio"] > 0


def test_publish_benchmark_refuses_bad_options(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--messages", "0"],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and b"--messages takes" in proc.stderr and proc.stdout == b""
