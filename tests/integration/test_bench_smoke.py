"""Smoke tests of the benchmarks (``benchmarks/run.py --quick`` = ``make bench`` in small sizes, and
the stand-alone modules): they run end to end, clean up after themselves and print one JSON object
with the documented keys. No timing assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
BENCH = BENCHMARKS / "run.py"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(250)
def test_quick_benchmark_prints_the_json_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object

    for key in ("p50_ms", "p99_ms", "verdicts_per_s"):
        assert _positive(result[key]), (key, result[key])
    assert result["p50_ms"] <= result["p99_ms"]
    for key in ("p50_latency", "p99_latency", "throughput"):  # same-run ratios to the baseline
        assert _positive(result["ratios"][key]), (key, result["ratios"])

    # the breakdown splits at the verdict's JetStream store time, read on one clock on each side:
    # no segment can be negative (the old core-NATS probe gave negative minima)
    breakdown = result["latency"]["breakdown"]
    for segment in ("kth_publish_ack", "kth_to_verdict_stored", "verdict_stored_to_verified"):
        assert breakdown[segment]["count"] > 0, (segment, breakdown[segment])
        assert breakdown[segment]["min_ms"] >= 0, (segment, breakdown[segment])

    # issue #9: per-verdict and batch signing side by side, in one run
    for mode in ("per_verdict", "batch"):
        assert _positive(result["throughput"][mode]["verdicts_per_s"]), mode
    assert _positive(result["throughput"]["batch_over_per_verdict"])
    for key in ("names_1", "names_10", "names_100", "round_500_last_verdict"):
        assert _positive(result["latency"][key]["p99_ms"]), (key, result["latency"][key])
    assert _positive(result["log"]["appends_per_s"])
    assert result["log"]["proof_hashes"]["inclusion_max"] >= 1
    assert result["subscriber_per_verdict"]["rejected"] == {}
    alone = result["subscriber_alone"]  # the subscriber's CPU per batch-signed verdict
    assert alone["verified"] == alone["verdicts"] > 0 and alone["rejected"] == {}
    assert alone["second_copies_recognised"] == alone["verdicts"]  # each durable copy dropped
    assert _positive(alone["cpu_ms_per_verdict"])

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


def _run_json(*args: str, cwd: Path, timeout: float) -> dict[str, object]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_crypto_benchmark_alone(tmp_path: Path) -> None:
    result = _run_json(str(BENCHMARKS / "crypto.py"), "--iterations", "3", cwd=tmp_path, timeout=60)
    assert _positive(result["hybrid_sign"]) and _positive(result["ml_dsa_65_verify"])


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("nodes", [pytest.param("1"), pytest.param("3", marks=pytest.mark.cluster)])
def test_latency_benchmark_alone(tmp_path: Path, nodes: str) -> None:
    result = _run_json(
        str(BENCHMARKS / "latency.py"),
        *("--quick", "--nodes", nodes, "--latency-samples", "5"),
        cwd=tmp_path,
        timeout=110,
    )
    latency = result["latency"]
    assert isinstance(latency, dict) and latency["samples"] == 5 and latency["timeouts"] == 0


def test_bad_benchmark_options_are_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--names", "0"], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2 and b"--names takes 1..3000" in proc.stderr and proc.stdout == b""


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_gc_pause_census_times_the_coordinators_and_the_harness_collections(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gcpauses.py"), "--quick"],
        capture_output=True,
        timeout=140,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result = json.loads(proc.stdout)
    for key in ("names_1", "names_10", "names_100", "round_500_last_verdict"):
        assert _positive(result["latency"][key]["p99_ms"]), (key, result["latency"][key])
    assert set(result["gc"]) == {"coordinator", "harness"}, result["gc"].keys()
    coordinator = result["gc"]["coordinator"]
    assert "coordinator run" in coordinator["cmd"]
    assert coordinator["young_threshold"] == 20_000  # cctf.coordinator.cli.GC_THRESHOLDS
    # the collector ran and was timed (a quick phase is short: some collections fall outside it)
    gens = coordinator["collections"]
    assert coordinator["collections_outside_the_phase"] + sum(g["count"] for g in gens.values())
    assert set(gens) <= {"gen0", "gen1", "gen2"}
    assert all(g["count"] > 0 and g["max_ms"] >= g["p99_ms"] > 0 for g in gens.values()), gens
    assert not list(tmp_path.iterdir())  # nothing left behind in the working directory
