"""Smoke test of ``benchmarks/load.py --quick`` (``make bench-load`` in a small size): the whole local
fabric (nats-server, five DNS servers, five ``cctf agent run`` processes, a ``cctf coordinator run``
process, a verifying subscriber) runs end to end, cleans up, and prints one JSON object with the
documented keys. No timing assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LOAD = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_load_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(LOAD), "--quick"],
        capture_output=True,
        timeout=190,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object
    per_n = result["names_per_round"]
    assert list(per_n) == ["30"]
    r = per_n["30"]
    assert 0 <= r["complete_rounds_pct"] <= 100
    assert r["verdicts_verified"] > 0  # real verdicts, verified at the subscriber
    assert r["verdicts_verified"] <= r["verdicts_expected"] == 30 * r["rounds"]
    assert r["lag_p50_ms"] is not None and 0 <= r["lag_p50_ms"] <= r["lag_p99_ms"]
    assert isinstance(r["shed_rounds"], int) and r["shed_rounds"] >= 0
    assert r["agents_per_round_min"] >= 3  # every measured round had a quorum of agents
    for role in ("coordinator", "nats_server", "agents", "dns", "harness"):
        assert role in r["cpu_s_per_round"], role
    stages = r["stages_p50_p99_ms"]  # where the lag accrues: agents, coordinator, delivery
    for stage in ("ballots_after_round_start", "ballots_to_issued", "issued_to_verified"):
        p50, p99 = stages[stage]
        assert p50 <= p99, stage
    assert 0 <= stages["decided_early_pct"] <= 100 and 0 <= stages["lkg_pct"] <= 100
    assert "verdicts_dropped" in r["coordinator"] and "ballots_expired" in r["coordinator"]
