"""Kills with real processes (issue #8 acceptance, the lean CI form of ``benchmarks/resilience.py``).

One fabric of separate processes (3 nats-server, 5 DNS servers, 5 agents, 3 coordinators with
``per_coordinator_subjects``, ``cctf watch --coordinators 2:c1,c2,c3``), half-second rounds, and one
SIGKILL per victim class: the meta leader, the node leading the vote streams and the verdict stream,
a follower, a coordinator; then a rolling restart of the three nodes by SIGTERM (the procedure of
deploy/nats/README.md). Asserted per class: no stored ballot unaccounted (each ends in a used
verdict for its round, or every coordinator published a verdict for it or counted it as expired with
a reason); for the classes of ``BOUNDED`` the subscriber never waits more than 2 s between two used
verdicts of a name (the issue's bound), from just before the kill until the victim is back and
settled, and every stored ballot's round has a used verdict; for the others verdicts resume. The
≥ 5-kill figures are in RESILIENCE.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "resilience.py"
CLASSES = ("meta-leader", "stream-leader", "follower", "coordinator", "rolling-sigterm")
#: Classes held to the issue's 2 s bound: all of them since both halves of the live path (D1) are in
#: (coordinators and the subscriber also on core NATS). A class taken out of it is only asserted to
#: resume (a generous bound) and to account for every ballot.
BOUNDED = CLASSES
RESUME_S = 60.0


def _run(tmp_path: Path, victims: tuple[str, ...]) -> dict[str, Any]:
    out = tmp_path / "resilience.json"
    argv = [sys.executable, str(BENCH), "--kills", "1", "--victims", ",".join(victims)]
    argv += ["--round-ms", "500", "--down-s", "3", "--settle-s", "3", "--pre-s", "1"]
    argv += ["--warmup-s", "2", "--workdir", str(tmp_path / "fabric"), "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, timeout=280, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_kill_per_victim_class_keeps_verdicts_flowing(tmp_path: Path) -> None:
    result = _run(tmp_path, CLASSES)
    for victim in CLASSES:
        s = result["victims"][victim]
        (kill,) = s["per_kill"]
        print(f"kill victim={victim} max_gap_s={s['max_gap_s']} acked={s['ballots_acked']}")
        assert s["ballots_acked"] > 0, (victim, kill)
        assert s["ballots_unaccounted"] == 0, (victim, kill)
        if victim in BOUNDED:
            assert s["max_gap_s"] <= 2.0, (victim, kill)
            assert s["ballots_without_used_verdict"] == 0, (victim, kill["without_used_verdict"])
        else:
            assert s["max_gap_s"] <= RESUME_S, (victim, kill)
    assert result["subscriber_lines_unparsed"] == 0
