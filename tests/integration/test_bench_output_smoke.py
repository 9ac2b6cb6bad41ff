"""Smoke test of ``benchmarks/output.py`` (CPU per verdict of the coordinator's output stages with
batch signing): it runs end to end on a real nats-server, every verdict is stored and every key
settled (the script asserts both), and it prints one JSON object with the documented keys. No
timing assertion (machine-dependent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "output.py"


def test_output_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--batches", "1", "--names", "20"],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)
    assert result["verdicts"] == 20 and result["names_per_batch"] == 20
    assert result["batches"] == 1  # one signed head per decision here
    for key in ("cpu_ms_per_verdict", "decide_cpu_ms_per_verdict", "output_cpu_ms_per_verdict"):
        assert result[key] > 0, key
