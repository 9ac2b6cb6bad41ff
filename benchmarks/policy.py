"""The policy stage's cost per decision, against the tally's own cost in the same run (JSON).

``.venv/bin/python benchmarks/policy.py [--names N] [--rounds R] [--repeat K]`` (best of K runs): N names x R rounds, 5 voters;
the baseline is counting the same votes in a ``TallyBook`` (what every decision costs anyway); the
measured part is ``SafeModeStage.vote`` for each vote plus ``SafeModeStage.apply`` for each decision
(detectors, safe mode, hold), with automatic safe mode on and one answer change per name midway.
"""

from __future__ import annotations

import argparse
import json
import time

from cctf.bus_schemas.messages import ResolverVote, Transport, VoteStatus, answer_digest
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.safemode import SafeModeStage
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import QuorumRule, TallyBook, TallyKey
from cctf.policy.config import PolicyConfig

VOTERS = [("agent-a", "us-east", f"r{i}") for i in range(3)] + [
    ("agent-b", "eu-west", f"r{i}") for i in range(2)
]


def _vote(agent: str, region: str, res: str, round_: int, qname: str, ip: str) -> ResolverVote:
    return ResolverVote(
        agent,
        region,
        round_,
        qname,
        "A",
        res,
        Transport.UDP,
        VoteStatus.ANSWER,
        0,
        [ip],
        answer_digest(0, [ip]),
        300,
        False,
        [],
        round_ * 1000,
        "indeterminate",  # type: ignore[arg-type]
    )


def run(names: int, rounds: int) -> dict[str, float]:
    electorate = [f"{a}/{r}" for a, _, r in VOTERS]
    work = []
    for r in range(rounds):
        ip = "192.0.2.1" if r < rounds // 2 else "192.0.2.2"
        for i in range(names):
            q = f"n{i}.example."
            work.append(
                [(TallyKey(q, "A", r), vote_input(_vote(a, g, s, r, q, ip))) for a, g, s in VOTERS]
            )
    book = TallyBook(QuorumRule(3, 5), electorate, max_open=names * rounds + 1)
    t0 = time.perf_counter()
    decided = []
    for votes in work:
        for key, vi in votes:
            _res, d = book.add(key.qname, key.qtype, key.round, vi)
            if d is not None:
                decided.append((key, d))
    tally_s = time.perf_counter() - t0
    stage = SafeModeStage(
        PolicyConfig(auto_safe_mode=True),
        ["us-east", "eu-west"],
        {"agent-a": "us-east", "agent-b": "eu-west"},
        "coord",
        FakeClock(0),
    )
    t0 = time.perf_counter()
    held = 0
    for key, d in decided:
        held += sum(r.event == "answer_held" for r in stage.apply([(key, d)]).records)
    policy_s = time.perf_counter() - t0
    n = len(decided)
    return {
        "decisions": n,
        "tally_us_per_decision": round(tally_s / n * 1e6, 2),
        "policy_us_per_decision": round(policy_s / n * 1e6, 2),
        "ratio_policy_to_tally": round(policy_s / tally_s, 2),
        "held": held,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--names", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="runs; the best of each figure is kept")
    a = p.parse_args()
    runs = [run(a.names, a.rounds) for _ in range(max(1, a.repeat))]
    best = dict(runs[0])
    for key in ("tally_us_per_decision", "policy_us_per_decision"):
        best[key] = min(r[key] for r in runs)
    best["ratio_policy_to_tally"] = round(
        best["policy_us_per_decision"] / best["tally_us_per_decision"], 2
    )
    best["runs"] = len(runs)
    print(json.dumps({"policy": best}))


if __name__ == "__main__":
    main()
