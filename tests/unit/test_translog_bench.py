"""benchmarks/translog.py runs and reports its keys (speed itself is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "translog.py"


def test_translog_benchmark_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--entries", "300"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert data["entries"] == 300 and data["appends_per_s"] > 0
    assert data["proof_hashes"]["inclusion_max"] == 9  # ceil(log2(300))
    assert data["checkpoint_note_bytes"] > 4400  # two signature lines, ML-DSA-65 is 3309 bytes
