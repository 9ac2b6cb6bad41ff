#!/usr/bin/env python3
"""CPU per verdict of the coordinator's output stages, decided -> published and stored, alone.

The stages the service runs for every decided key with ``signing: batch``, wired as ``Coordinator``
wires them (``cctf.coordinator.service``) on a real single-node nats-server (``cctf.devfabric``):
:class:`~cctf.coordinator.outbox.Outbox` (decide: build and encode each verdict, its subjects and
message ids; the batch stage: seal = log entries, tree, ONE signed head, inclusion proofs,
envelopes; the head publish; the ``LogBatch`` append to ``CCTF_LOG`` awaited before release;
``Publisher.publish_many`` of every verdict and every stream acknowledgement; the settling of
each key). The decisions come from the ingest stages fed with real ballots (as
``benchmarks/ingest.py``), made before the clock starts.

The figure is ``time.process_time`` of this process from handing ``--names`` decided keys to
``Outbox.run`` until every verdict is stored and settled, divided by the verdicts: steady on a
loaded machine. ``decide_cpu_ms_per_verdict`` is the part of it that is the policy stage's
(``Decider.verdict`` + ``Signer.targets``, measured alone on the same decisions), and
``output_cpu_ms_per_verdict`` the rest. JSON on stdout::

    .venv/bin/python benchmarks/output.py [--batches 20] [--names 500] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fabric import Agents
from harness import COORDINATOR_ID, ORIGIN, REGIONS, ROUND_MS, K, N, agent_id, resolver_id

from cctf import telemetry
from cctf.bus.connect import connect
from cctf.bus.publisher import Publisher
from cctf.bus.streams import ensure_streams, verdict_stream_of
from cctf.bus_schemas.subjects import vote_subject
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.batcher import batch_stage
from cctf.coordinator.cli import GC_THRESHOLDS
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.counters import Counters
from cctf.coordinator.durablelog import CoordinatorLog
from cctf.coordinator.intake import Intake, Token
from cctf.coordinator.outbox import Outbox
from cctf.coordinator.pipeline.acks import AckLedger
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.live import LiveCopy
from cctf.coordinator.pipeline.sign import Signer
from cctf.coordinator.pipeline.tallies import AnyKey, Deciders, Tallies
from cctf.coordinator.pipeline.verify import VerifyStage
from cctf.coordinator.replay import ReplayCache
from cctf.coordinator.tally import Decision
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric

REGION = REGIONS[0]


def _config() -> CoordinatorConfig:
    return msgspec.convert(
        {
            "coordinator": COORDINATOR_ID,
            "region": REGION,
            "rule": {"k": K, "n": N},
            "electorate": [f"{agent_id(r)}/{resolver_id(r)}" for r in REGIONS],
            "names": [["*." + ORIGIN, "A"]],
            "round_ms": ROUND_MS,
            "verdict_regions": [REGION],
            "signing": "batch",
        },
        CoordinatorConfig,
    )


def decisions(
    c: CoordinatorConfig, batches: int, names: int
) -> list[list[tuple[AnyKey, Decision]]]:
    """``batches`` lists of ``names`` decided keys (every name of 5 real ballots, 3-of-5), now."""
    keys = {r: SigningKey.generate(SuiteId.HYBRID) for r in REGIONS}
    trust = TrustConfig([TrustEntry(Role.AGENT, agent_id(r), r, keys[r].public) for r in REGIONS])
    agents = Agents(keys)
    verifier = BallotVerifier(
        trust=trust,
        clock=SYSTEM_CLOCK,
        policy=c.policy,
        rounds=RoundPolicy(round_ms=c.round_ms, max_round_lag=c.max_round_lag),
        replay=ReplayCache(capacity=c.replay_capacity),
    )
    ledger: AckLedger[Token, AnyKey] = AckLedger(
        max_deliver=5, refresh_ms=600, hold_limit_ms=c.hold_limit_ms
    )
    intake = Intake(
        verify=VerifyStage(verifier, c.name_set),
        tallies=Tallies(TallyBook(c.quorum, c.electorate, max_open=c.max_open_tallies)),
        ledger=ledger,
        verdict_ttl_ms=c.verdict_ttl_ms,
        counts=Counters(),
        handles={},
        last_vote={},
        log=lambda *a, **k: None,
    )
    out = []
    for b in range(batches):
        now = SYSTEM_CLOCK.now_ms()
        qnames = [f"o{b}-{i}-{now}.{ORIGIN}" for i in range(names)]
        turn = [
            (
                r,
                LiveCopy(
                    r,
                    vote_subject(r, agent_id(r)),
                    agents.sealed_ballot(r, now // ROUND_MS, qnames, now),
                ),
            )
            for r in REGIONS
        ]
        decided = intake.turn(turn, time.monotonic(), now).decided
        assert len(decided) == names, len(decided)
        out.append(decided)
    return out


async def measure(batches: int, names: int, profile: Path | None) -> dict[str, Any]:
    c = _config()
    work = decisions(c, 2 * batches + 1, names)  # the first one warms up
    key = SigningKey.generate(SuiteId.HYBRID)
    with tempfile.TemporaryDirectory() as tmp:
        fabric = await NatsFabric.astart(Path(tmp), nodes=1, regions=[REGION])
        try:
            nc = await connect(fabric.urls, fabric.users["admin"], name="bench", for_tests=True)
            try:
                await ensure_streams(nc.jetstream(), [REGION], fabric.stream_replicas)
                return await _run(c, nc, key, work[: batches + 1], work[batches + 1 :], profile)
            finally:
                await nc.close()
        finally:
            await fabric.astop()


async def _run(
    c: CoordinatorConfig,
    nc: Any,
    key: SigningKey,
    work: list[list[tuple[AnyKey, Decision]]],
    alone: list[list[tuple[AnyKey, Decision]]],
    profile: Path | None,
) -> dict[str, Any]:
    stopping = asyncio.Event()
    publisher = Publisher(nc, SYSTEM_CLOCK)
    executor = ThreadPoolExecutor(2)
    batcher = batch_stage(c, key, publisher, executor, stopping, SYSTEM_CLOCK)
    assert batcher is not None
    log = CoordinatorLog(nc, c.coordinator, key)
    await log.attach(batcher)
    settled: list[AnyKey] = []

    async def settle(k: AnyKey) -> None:
        settled.append(k)

    decider = Deciders(Decider(c.quorum, c.coordinator, c.verdict_ttl_ms, SYSTEM_CLOCK))
    signer = Signer(key, c.publish_regions)
    counts = Counters()
    outbox = Outbox(
        decider=decider,
        signer=signer,
        publisher=publisher,
        counts=counts,
        executor=executor,
        workers=2,
        stopping=stopping,
        settle=settle,
        latency=lambda _k: None,
        log=lambda *a, **k: None,
        batcher=batcher,
        expected_stream=verdict_stream_of,
    )
    # the policy stage's part of Outbox.run (Decider.verdict, Signer.targets), alone, on other
    # decisions of the same shape (new names, as in the run)
    t0 = time.process_time()
    for decided in alone:
        for k, d in decided:
            signer.targets(decider.verdict(k, d))  # type: ignore[arg-type]
    decide_s = (time.process_time() - t0) / max(1, len(alone)) * (len(work) - 1)
    prof = cProfile.Profile() if profile is not None else None
    spent = 0.0
    verdicts = 0
    try:
        for i, decided in enumerate(work):
            await asyncio.sleep(0.02)  # the previous batch's window has passed: sealed at once
            if i == 1 and prof is not None:
                prof.enable()
            t0 = time.process_time()
            await outbox.run(decided)
            while outbox.storing:
                await asyncio.wait(list(outbox.storing))
            t1 = time.process_time()
            if i:
                spent += t1 - t0
                verdicts += len(decided)
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(profile))
        assert len(settled) == sum(len(d) for d in work), "every key settled"
        assert counts.verdict_messages == len(settled), "every verdict stored"
    finally:
        await batcher.stop()
        log.close()
        executor.shutdown(wait=False)
    per = 1000.0 / max(verdicts, 1)
    return {
        "what": "CPU ms per verdict of Outbox.run with signing: batch (decide, seal, head, log "
        "append, publish, every acknowledgement, settle): one process, a real nats-server",
        "verdicts": verdicts,
        "names_per_batch": len(work[0]),
        "batches": batcher.stats.batches - 1,
        "cpu_ms_per_verdict": round(spent * per, 4),
        "decide_cpu_ms_per_verdict": round(decide_s * per, 4),
        "output_cpu_ms_per_verdict": round((spent - decide_s) * per, 4),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--names", type=int, default=500)
    p.add_argument("--profile", type=Path, default=None)
    a = p.parse_args()
    telemetry.configure_logging(json=True, level="warning", stream=sys.stderr)
    gc.set_threshold(*GC_THRESHOLDS)  # as `cctf coordinator run` does once started
    print(json.dumps(asyncio.run(measure(a.batches, a.names, a.profile)), indent=2))


if __name__ == "__main__":
    main()
