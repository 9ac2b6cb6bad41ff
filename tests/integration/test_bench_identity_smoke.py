"""Smoke test of benchmarks/identity.py (``make bench-identity ARGS=--quick``): it runs end to end,
cleans up and prints one JSON object with the documented keys. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "identity.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_identity_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--samples", "20", "--concurrency", "4"],
        capture_output=True,
        timeout=140,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)
    for what in ("certificate", "token"):
        for via in ("library", "sdk", "http"):
            row = result[what][via]
            assert row["count"] == 20, (what, via, row)
            for key in ("p50_ms", "p99_ms", "decisions_per_s", "decisions_per_s_sequential"):
                assert _positive(row[key]), (what, via, key, row)
            assert row["p50_ms"] <= row["p99_ms"]
        for via in ("sdk", "http"):
            ratios = result["ratios"][f"{what}_{via}"]
            assert all(_positive(ratios[k]) for k in ("p50_latency", "p99_latency"))
    assert result["material_fetches"] == 2  # one bundle, one JWKS: then the digest cache
    assert result["config"]["samples"] == 20 and result["config"]["concurrency"] == 4


def test_bad_identity_benchmark_options_are_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--samples", "1"],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and b"--samples takes 10..100000" in proc.stderr
    assert proc.stdout == b""
