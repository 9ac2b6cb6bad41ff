"""benchmarks/ingest.py runs the coordinator's ingest-to-decision stages and reports its keys (speed
itself is not asserted here): every name of every batch is decided exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"


def test_ingest_benchmark_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--batches", "2", "--names", "30"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert data["verdicts"] == 60 and data["votes"] == 300
    assert data["trusted"] == 60  # five agreeing voters, 3-of-5: every verdict TRUSTED
    assert data["cpu_ms_per_verdict"] > 0
    assert set(data["stage_cpu_ms_per_verdict"]) == {"intake", "policy", "decide"}
