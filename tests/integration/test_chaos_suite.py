"""A smaller run of every chaos scenario against the real local fabric (real nats-server, real
DNS servers with their control channels, real coordinator, agents and TrustClient).

Short rounds and phases, few checks: the whole module stays well under three minutes. The figures
of full runs are in RESILIENCE.md (``cctf chaos run ... --json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from cctf.chaos.runner import run_scenario
from cctf.chaos.scenarios.catalog import SCENARIOS, Options, build
from cctf.chaos.zone import DEMO_NAMES

ROUND_MS = 500
SMALL = Options(round_ms=ROUND_MS, phase_rounds=3, colluders=(2, 3))
CHECKS = 1_500


def _run(name: str, options: Options = SMALL) -> dict[str, Any]:
    return asyncio.run(run_scenario(build(name, options), CHECKS, lambda _m: None))


def _phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in report["phases"] if p["phase"] == name)


@pytest.mark.parametrize(
    "name",
    [n for n in SCENARIOS if n not in ("dns-blackhole", "poison", "answer-change", "partition")],
)
def test_scenario_never_grants_false_trust(name: str) -> None:
    report = _run(name)
    assert report["checks"] == CHECKS
    assert report["false_trust"] == 0, report
    assert report["integrity_pct"] == 100.0
    assert report["scenario"] == name and report["parameters"]["round_ms"] == ROUND_MS
    if name in ("replay", "downgrade"):
        # the attack reached the subscriber and was refused there
        assert sum(report["client_rejected"].values()) > 0, report
    if name == "clock-skew":
        # the coordinator's clock set back after +5 min: it decides the current rounds at once
        # (before the rewind: nothing until its clock reached the rounds it had expired)
        assert report["time_to_recover_ms"] is not None, report
        assert _phase(report, "fixed")["correct"] > 0, report
    if name == "poison-dnssec":
        # DNSSEC makes even three identical forgeries bogus: never trusted
        assert _phase(report, "poison-3 same")["correct"] > 0


def test_dns_blackhole_lkg_within_the_cap_then_fail_closed() -> None:
    report = _run("dns-blackhole")
    assert report["false_trust"] == 0
    assert report["integrity_pct"] == 100.0
    within = _phase(report, "blackhole-5 (lkg within cap)")
    after = _phase(report, "blackhole-5 (after cap: fail closed)")
    assert within["lkg_served"] > 0
    assert within["availability_pct"] >= 90.0, within  # 100 on an idle machine (RESILIENCE.md)
    assert after["correct"] == 0 and after["unavailable"] == after["checks"] > 0, after
    assert _phase(report, "blackhole-2")["lkg_served"] == 0
    assert report["lkg_within_cap"]["lkg_served"] > 0
    assert report["after_cap"]["availability_pct"] == 0.0
    assert report["time_to_recover_ms"] is not None


def test_poison_shows_the_3_of_5_limit_honestly() -> None:
    report = _run("poison")
    assert report["parameters"]["dnssec"] is False
    for ok in ("poison-2 same", "poison-2 different", "poison-3 different"):
        assert _phase(report, ok)["false_trust"] == 0, ok
    limit = _phase(report, "poison-3 same")
    assert limit["false_trust"] > 0  # three colluders agreeing are a 3-of-5 quorum
    assert report["false_trust"] == report["false_trust_beyond_model"]


def test_answer_change_followed_and_held_in_safe_mode() -> None:
    plain = _run("answer-change")
    assert plain["false_trust"] == 0
    assert _phase(plain, "after change")["correct"] > 0
    safe_options = Options(round_ms=ROUND_MS, phase_rounds=4, safe_mode=True)
    safe = _run("answer-change", safe_options)
    # the old answer is never TRUSTED past the change's grace (the round in flight and the
    # subscriber's freshness window): false_trust counts it
    assert safe["false_trust"] == 0
    # the hold, on the changed name's own checks (the other names' load noise left out): its new
    # answer is UNAVAILABLE for about hold_rounds (at least one round's checks of that name), then
    # TRUSTED; without safe mode it is followed at once
    changed, plain_changed = (_phase(r["changed_names"], "after change") for r in (safe, plain))
    sc = build("answer-change", safe_options)
    per_round = CHECKS / sc.rounds / len(DEMO_NAMES)
    assert changed["unavailable"] >= per_round, (changed, per_round)
    assert changed["unavailable"] > plain_changed["unavailable"], (changed, plain_changed)
    assert changed["correct"] > 0
    assert _phase(safe, "after change")["correct"] > 0


def test_cli_json_and_usage_errors() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cctf",
            "chaos",
            "run",
            "ttl-mismatch",
            "--checks",
            "200",
            "--round-ms",
            str(ROUND_MS),
            "--phase-rounds",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in (
        "scenario",
        "checks",
        "correct",
        "false_trust",
        "false_deny",
        "unavailable",
        "lkg_served",
        "integrity_pct",
        "availability_pct",
        "time_to_recover_ms",
    ):
        assert key in report
    bad = subprocess.run(
        [sys.executable, "-m", "cctf", "chaos", "run", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "unknown scenario" in bad.stderr


def test_partition_cuts_the_namespaced_agent_off_and_heals() -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "the partition scenario needs root and nftables on CI (.ci/run installs it)"
            )
        pytest.skip("needs root and nftables (apt-get install nftables)")
    report = _run("partition")
    assert report["false_trust"] == 0 and report["integrity_pct"] == 100.0
    seen = report["partitioned_agent_messages"]
    assert seen.get("healthy", 0) + seen.get("warm-up", 0) > 0  # it voted from its namespace
    assert seen.get("region cut off", 0) == 0  # nothing got through the cut
    assert seen.get("healed", 0) > 0


def test_sigterm_stops_the_run_and_everything_it_started() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cctf", "chaos", "run", "dns-flap", "--round-ms", str(ROUND_MS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    workdir = ""
    for line in proc.stderr:  # wait until the fabric runs
        if "working directory " in line:
            workdir = line.rsplit("working directory ", 1)[1].strip()
        if "fabric healthy" in line:
            break
    assert workdir.startswith("/")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "everything it started is stopped" in err
    # no process of this run is left behind (nats-servers run from its working directory)
    left = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout
