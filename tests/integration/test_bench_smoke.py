"""Smoke test of ``benchmarks/e2e.py --quick``: it runs end to end, cleans up after itself and prints
one JSON object with the documented keys. No timing assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "e2e.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        timeout=140,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object

    for key in ("p50_ms", "p99_ms", "verdicts_per_s"):
        assert _positive(result[key]), (key, result[key])
    assert result["p50_ms"] <= result["p99_ms"]

    baseline = result["baseline"]
    for key in ("p50_ms", "p99_ms", "decisions_per_s"):
        assert _positive(baseline[key]), (key, baseline[key])

    crypto = result["crypto_us"]
    for algo in ("ed25519", "ml_dsa_65", "hybrid"):
        assert _positive(crypto[f"{algo}_sign"]) and _positive(crypto[f"{algo}_verify"])

    config = result["config"]
    assert config["nodes"] == 1 and config["suite"] == "hybrid-ed25519-ml-dsa-65"
    for key in ("names_per_ballot", "duration_s", "machine_cores"):
        assert _positive(config[key]), (key, config[key])
    assert isinstance(config["python"], str)

    assert result["targets"]["p99_ms"] == 10 and result["targets"]["verdicts_per_s"] == 500
    assert set(result["meets_targets"]) >= {"p99_ms", "verdicts_per_s"}
    assert all(isinstance(v, bool) for v in result["meets_targets"].values())

    # every verdict the subscriber saw passed verification and said TRUSTED
    assert result["subscriber"]["rejected"] == {}
    assert set(result["subscriber"]["outcomes"]) == {"trusted"}
