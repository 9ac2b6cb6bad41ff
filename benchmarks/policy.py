"""The policy stage's and decide's CPU per decision, against the tally's own cost in the same run.

``.venv/bin/python benchmarks/policy.py [--names N] [--rounds R] [--repeat K] [--layout L]``
(best of K runs; JSON on stdout). Decisions are made by a ``TallyBook`` first (the baseline: what
every decision costs anyway), then measured with ``time.process_time`` in batches of ``--batch``
decisions, as the service hands them on:

* ``policy``: :meth:`SafeModeStage.apply` (detectors, safe mode, answer hold), automatic safe mode
  on;
* ``decide``: :meth:`Decider.verdict` (``build_verdict``, sequence clock) of every judged decision;
* ``targets``: :meth:`Signer.targets` of every verdict (its subject and message id in each of
  ``--regions`` verdict regions: batch signing).

Two workloads (``--layout``): ``repeat`` (default) is N names decided every round, 5 voters in 2
regions, every name's answer changing once midway (so the hold holds ``names`` x (N-1) decisions):
the steady state of a deployment; ``unique`` is the throughput bench's shape (every name new in
every round, 5 agents in 5 regions, one resolver each, 3-of-5): every series, window and hold is
created and, past ``max_series``, evicted. The coordinator's GC thresholds, unless ``--default-gc``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

from cctf.bus_schemas.messages import ResolverVote, Transport, VoteStatus, answer_digest
from cctf.clock import FakeClock
from cctf.coordinator.cli import GC_THRESHOLDS
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.safemode import SafeModeStage
from cctf.coordinator.pipeline.sign import Signer
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import Decision, QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.policy.config import PolicyConfig

LAYOUTS = {
    "repeat": [("agent-a", "us-east", f"r{i}") for i in range(3)]
    + [("agent-b", "eu-west", f"r{i}") for i in range(2)],
    "unique": [(f"agent-{r}", r, "r0") for r in ("r1", "r2", "r3", "r4", "r5")],
}


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


def _decide(layout: str, names: int, rounds: int) -> tuple[list[tuple[TallyKey, Decision]], float]:
    voters = LAYOUTS[layout]
    electorate = [f"{a}/{r}" for a, _, r in voters]
    work = []
    for r in range(rounds):
        ip = "192.0.2.1" if layout == "unique" or r < rounds // 2 else "192.0.2.2"
        for i in range(names):
            q = f"n{i}.example." if layout == "repeat" else f"n{r}-{i}.example."
            work.append(
                [(TallyKey(q, "A", r), vote_input(_vote(a, g, s, r, q, ip))) for a, g, s in voters]
            )
    book = TallyBook(QuorumRule(3, 5), electorate, max_open=names * rounds + 1)
    t0 = time.process_time()
    decided = []
    for votes in work:
        for key, vi in votes:
            _res, d = book.add(key.qname, key.qtype, key.round, vi)
            if d is not None:
                decided.append((key, d))
    return decided, time.process_time() - t0


def run(
    layout: str, names: int, rounds: int, batch: int, n_regions: int
) -> dict[str, float | int | str]:
    decided, tally_s = _decide(layout, names, rounds)
    regions = sorted({g for _a, g, _r in LAYOUTS[layout]})
    clock = FakeClock(1_800_000_000_000)
    stage = SafeModeStage(
        PolicyConfig(auto_safe_mode=True),
        regions,
        {a: g for a, g, _r in LAYOUTS[layout]},
        "coord",
        clock,
    )
    decider = Decider(QuorumRule(3, 5), "coord", 60_000, clock)
    signer = Signer(SigningKey.generate(SuiteId.HYBRID), [f"r{i}" for i in range(n_regions)])
    policy_s = decide_s = targets_s = 0.0
    held = 0
    for at in range(0, len(decided), batch):
        t0 = time.process_time()
        result = stage.apply(decided[at : at + batch])
        t1 = time.process_time()
        verdicts = [decider.verdict(key, d) for key, d in result.decided]
        t2 = time.process_time()
        for verdict in verdicts:
            signer.targets(verdict)
        targets_s += time.process_time() - t2
        decide_s += t2 - t1
        policy_s += t1 - t0
        held += sum(r.event == "answer_held" for r in result.records)
    n = len(decided)
    return {
        "layout": layout,
        "decisions": n,
        "tally_us_per_decision": round(tally_s / n * 1e6, 2),
        "policy_us_per_decision": round(policy_s / n * 1e6, 2),
        "decide_us_per_decision": round(decide_s / n * 1e6, 2),
        "targets_us_per_decision": round(targets_s / n * 1e6, 2),
        "regions": n_regions,
        "ratio_policy_to_tally": round(policy_s / tally_s, 2),
        "held": held,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="repeat")
    p.add_argument("--names", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=500, help="decisions per SafeModeStage.apply")
    p.add_argument("--regions", type=int, default=1, help="verdict regions (Signer.targets)")
    p.add_argument("--repeat", type=int, default=3, help="runs; the best of each figure is kept")
    p.add_argument(
        "--default-gc", action="store_true", help="the interpreter's GC thresholds (700, 10, 10)"
    )
    a = p.parse_args()
    if not a.default_gc:  # as `cctf coordinator run` does once started
        gc.set_threshold(*GC_THRESHOLDS)
    runs = [run(a.layout, a.names, a.rounds, a.batch, a.regions) for _ in range(max(1, a.repeat))]
    best = dict(runs[0])
    for key in (
        "tally_us_per_decision",
        "policy_us_per_decision",
        "decide_us_per_decision",
        "targets_us_per_decision",
    ):
        best[key] = min(float(r[key]) for r in runs)
    best["ratio_policy_to_tally"] = round(
        float(best["policy_us_per_decision"]) / float(best["tally_us_per_decision"]), 2
    )
    best["runs"] = len(runs)
    best["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"policy": best}))


if __name__ == "__main__":
    main()
