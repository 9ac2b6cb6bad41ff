"""CPU per verdict of the coordinator's ingest-to-decision stages, alone (no bus, no processes).

The stages the service runs for every ballot and decided key, wired as ``Coordinator`` wires them
(``cctf.coordinator.service``) with the throughput benchmark's configuration (five agents, one
resolver each, 3-of-5, ``*.bench.test. A``, every name unique): :class:`~cctf.coordinator.intake.
Intake` (duplicate index, the verify stage's numbered steps with real hybrid signatures, the replay
ledger, the tallies), the policy stage (:class:`~cctf.coordinator.pipeline.safemode.SafeModeStage`:
detectors and the answer hold) and decide (:class:`~cctf.coordinator.pipeline.decide.Decider`).

Ballots are sealed before the clock starts. The figure is ``time.process_time`` of this process
divided by the verdicts decided: steady on a loaded machine (wall-clock throughput is not). JSON on
stdout::

    .venv/bin/python benchmarks/ingest.py [--batches 20] [--names 500] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fabric import Agents
from harness import COORDINATOR_ID, ORIGIN, REGIONS, ROUND_MS, K, N, agent_id, resolver_id

from cctf.bus_schemas.messages import Outcome
from cctf.bus_schemas.subjects import vote_subject
from cctf.clock import FakeClock
from cctf.coordinator.cli import GC_THRESHOLDS
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.counters import Counters
from cctf.coordinator.intake import Intake, Token
from cctf.coordinator.pipeline.acks import AckLedger
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.live import LiveCopy
from cctf.coordinator.pipeline.safemode import SafeModeStage
from cctf.coordinator.pipeline.tallies import AnyKey, Tallies
from cctf.coordinator.pipeline.verify import VerifyStage
from cctf.coordinator.replay import ReplayCache
from cctf.coordinator.tally import TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

START_MS = 1_800_000_000_000


def _config() -> CoordinatorConfig:
    return msgspec.convert(
        {
            "coordinator": COORDINATOR_ID,
            "region": REGIONS[0],
            "rule": {"k": K, "n": N},
            "electorate": [f"{agent_id(r)}/{resolver_id(r)}" for r in REGIONS],
            "names": [["*." + ORIGIN, "A"]],
            "round_ms": ROUND_MS,
            "verdict_regions": [REGIONS[0]],
        },
        CoordinatorConfig,
    )


def run(batches: int, names: int, profile: Path | None) -> dict[str, Any]:
    c = _config()
    keys = {r: SigningKey.generate(SuiteId.HYBRID) for r in REGIONS}
    trust = TrustConfig([TrustEntry(Role.AGENT, agent_id(r), r, keys[r].public) for r in REGIONS])
    agents = Agents(keys)
    clock = FakeClock(START_MS)
    turns: list[list[tuple[str, LiveCopy]]] = []
    for b in range(batches):
        qnames = [f"n{b}-{i}.{ORIGIN}" for i in range(names)]
        round_ = START_MS // ROUND_MS
        turns.append(
            [
                (
                    r,
                    LiveCopy(
                        r,
                        vote_subject(r, agent_id(r)),
                        agents.sealed_ballot(r, round_, qnames, START_MS),
                    ),
                )
                for r in REGIONS
            ]
        )
    verifier = BallotVerifier(
        trust=trust,
        clock=clock,
        policy=c.policy,
        rounds=RoundPolicy(round_ms=c.round_ms, max_round_lag=c.max_round_lag),
        replay=ReplayCache(capacity=c.replay_capacity),
    )
    tallies = Tallies(
        TallyBook(c.quorum, c.electorate, max_open=c.max_open_tallies, refusable=True)
    )
    ledger: AckLedger[Token, AnyKey] = AckLedger(
        max_deliver=5, refresh_ms=600, hold_limit_ms=c.hold_limit_ms
    )
    intake = Intake(
        verify=VerifyStage(verifier, c.name_set),
        tallies=tallies,
        ledger=ledger,
        verdict_ttl_ms=c.verdict_ttl_ms,
        counts=Counters(),
        handles={},
        last_vote={},
        log=lambda *a, **k: None,
    )
    policy = SafeModeStage(
        c.safe_mode, c.publish_regions, {agent_id(r): r for r in REGIONS}, c.coordinator, clock
    )
    decider = Decider(c.quorum, c.coordinator, c.verdict_ttl_ms, clock)
    stage_s = {"intake": 0.0, "policy": 0.0, "decide": 0.0}
    verdicts = trusted = 0
    prof = cProfile.Profile() if profile is not None else None
    if prof is not None:
        prof.enable()
    gc_s = [0.0, 0.0]

    def _gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.process_time()
        else:
            gc_s[0] += time.process_time() - gc_s[1]

    gc.callbacks.append(_gc)
    t0 = time.process_time()
    for turn in turns:
        a = time.process_time()
        out = intake.turn(turn, time.monotonic(), clock.now_ms())
        b_ = time.process_time()
        decided = policy.apply([(k, d) for k, d in out.decided if isinstance(k, TallyKey)]).decided
        c_ = time.process_time()
        for key, decision in decided:
            trusted += decider.verdict(key, decision).outcome is Outcome.TRUSTED
        d_ = time.process_time()
        verdicts += len(decided)
        stage_s["intake"] += b_ - a
        stage_s["policy"] += c_ - b_
        stage_s["decide"] += d_ - c_
    total = time.process_time() - t0
    gc.callbacks.remove(_gc)
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    per = 1000.0 / max(verdicts, 1)
    return {
        "what": "CPU ms per verdict of intake (verify, tally), policy, decide: one process, no bus",
        "verdicts": verdicts,
        "votes": verdicts * len(REGIONS),
        "trusted": trusted,
        "cpu_ms_per_verdict": round(total * per, 4),
        "stage_cpu_ms_per_verdict": {k: round(v * per, 4) for k, v in stage_s.items()},
        "gc_cpu_ms_per_verdict": round(gc_s[0] * per, 4),
        "gc_thresholds": list(gc.get_threshold()),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--names", type=int, default=500)
    p.add_argument("--profile", type=Path, default=None)
    p.add_argument(
        "--default-gc", action="store_true", help="the interpreter's GC thresholds (700, 10, 10)"
    )
    a = p.parse_args()
    if not a.default_gc:  # as `cctf coordinator run` does once started
        gc.set_threshold(*GC_THRESHOLDS)
    print(json.dumps(run(a.batches, a.names, a.profile), indent=2))


if __name__ == "__main__":
    main()
