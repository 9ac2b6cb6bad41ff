"""Run one chaos scenario against the local fabric and score every trust check (adapter).

The run: start the fabric (:mod:`cctf.chaos.runfabric`), wait until the subscriber holds a verified
TRUSTED verdict for every name, then from the next round boundary apply the scenario's schedule
(faults through the chaos control channel, process-level actions on the fabric) while a checker
makes ``checks`` trust checks spread evenly over the run. A check asks the subscriber's verified view
(:meth:`TrustClient.cached`, fed by a verified verdict stream) for one name — the answer a relying
party would act on at that moment — and scores it against the ground truth at that moment
(:mod:`cctf.chaos.scenarios.score`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from cctf.bus_schemas import messages as wire
from cctf.bus_schemas.envelope import decode_envelope, seal
from cctf.bus_schemas.messages import MessageType, Outcome, Verdict
from cctf.bus_schemas.subjects import vote_subject
from cctf.chaos.faults import Faults
from cctf.chaos.runfabric import ChaosFabric, a_answer, honest_answers, zone_with
from cctf.chaos.scenarios.catalog import FORGED, Scenario, Step
from cctf.chaos.scenarios.score import (
    GroundTruth,
    Report,
    Score,
    Seen,
    TruthChange,
    answer_of,
    score,
)
from cctf.chaos.zone import DEMO_NAMES
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.devfabric.demo import VERDICT_REGION, agent_id
from cctf.util.deadline import stop_task, stop_tasks

Progress = Callable[[str], None]

#: A legitimate change is acceptable either way for this many rounds (the round in flight, and the
#: subscriber's two-round freshness window), plus the hold in safe mode.
CHANGE_GRACE_ROUNDS = 3
CHECK_TICKS_PER_ROUND = 10
WARMUP_TIMEOUT_S = 60.0


def ground_truth(sc: Scenario) -> GroundTruth:
    initial = honest_answers(zone_with())
    changes = [
        TruthChange(
            f"{s.args['label']}.demo.test.",
            s.at_round * sc.round_ms,
            a_answer(f"{s.args['label']}.demo.test.", [s.args["address"]]),
            grace_ms=CHANGE_GRACE_ROUNDS * sc.round_ms,
        )
        for s in sc.steps
        if s.action == "zone"
    ]
    return GroundTruth(initial, changes)


def seen_of(v: Verdict | None) -> tuple[Seen, tuple[str, ...]]:
    if v is None:
        return Seen.UNAVAILABLE, ()
    if v.outcome is Outcome.TRUSTED:
        return (Seen.LKG if v.is_lkg else Seen.TRUSTED), answer_of(v.answer)
    if v.outcome is Outcome.DISPUTED:
        return Seen.DISPUTED, ()
    return Seen.UNAVAILABLE, ()


class _Run:
    def __init__(self, sc: Scenario, fabric: ChaosFabric, checks: int, progress: Progress) -> None:
        self.sc = sc
        self.fabric = fabric
        self.checks = checks
        self.progress = progress
        self.truth = ground_truth(sc)
        self.report = Report(
            sc.phase_list(),
            recover_from_ms=None if sc.recover_round is None else sc.recover_round * sc.round_ms,
        )
        self.beyond = Report(())  # false trust within phases beyond the threat model
        # the checks of the names a legitimate change touches, alone (the hold shows there, not
        # drowned in the other names' noise)
        self.changed_names = {c.name.lower() for c in self.truth.changes}
        self.changed = Report(sc.phase_list())
        self.captured: list[tuple[str, bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.flood_task: asyncio.Task[None] | None = None
        self.flood_sent = 0
        self.killed: list[Any] = []
        self.cut_region_ballots: Counter[str] = Counter()
        self.t0 = 0.0

    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    async def consume(self) -> None:
        client = self.fabric.client
        assert client is not None
        while True:
            try:
                stream = await client.stream(VERDICT_REGION, deliver="new")
                async with stream:
                    async for _v in stream:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus went away (node loss): open a new stream
                self.progress(f"verdict stream: {type(exc).__name__}: {exc}; re-opening")
                await asyncio.sleep(0.2)

    async def warmup(self) -> None:
        client = self.fabric.client
        assert client is not None
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while time.monotonic() < deadline:
            views = [seen_of(client.cached(n)) for n in DEMO_NAMES]
            agents_up = self.sc.partition is None or self.cut_region_ballots["warm-up"] > 0
            if agents_up and all(s is Seen.TRUSTED for s, _ in views):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(
            "the fabric gave no TRUSTED verdict for every name (or the namespaced agent did not "
            "vote) within 60 s"
        )

    async def check_loop(self) -> None:
        client = self.fabric.client
        assert client is not None
        sc = self.sc
        ticks = sc.rounds * CHECK_TICKS_PER_ROUND
        tick_s = sc.round_ms / 1000 / CHECK_TICKS_PER_ROUND
        names = [n.lower() for n in DEMO_NAMES]
        done = 0
        for tick in range(ticks):
            target = self.t0 + tick * tick_s
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            n = (self.checks * (tick + 1)) // ticks - done
            t = self.now_ms()
            phase_beyond = self.report.phase_at(t) in sc.beyond_model
            for j in range(n):
                name = names[(done + j) % len(names)]
                seen, answer = seen_of(client.cached(name))
                s = score(seen, answer, self.truth.acceptable(name, t))
                self.report.add(t, s, lkg=seen is Seen.LKG)
                if name in self.changed_names:
                    self.changed.add(t, s, lkg=seen is Seen.LKG)
                if phase_beyond and s is Score.FALSE_TRUST:
                    self.beyond.add(t, s, lkg=seen is Seen.LKG)
            done += n
            if tick % (CHECK_TICKS_PER_ROUND * max(1, sc.rounds // 8)) == 0:
                self.progress(
                    f"{sc.name}: round {tick // CHECK_TICKS_PER_ROUND}/{sc.rounds}, "
                    f"{self.report.total.checks} checks, {self.report.total.false_trust} false trust"
                )

    async def schedule(self) -> None:
        for step in self.sc.steps:
            target = self.t0 + step.at_round * self.sc.round_ms / 1000
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.apply(step)
            except Exception as exc:
                self.events.append(
                    {"round": step.at_round, "action": step.action, "error": str(exc)}
                )
                self.progress(f"step {step.action} at round {step.at_round} failed: {exc}")

    async def apply(self, step: Step) -> None:
        f = self.fabric
        a = step.args
        self.events.append({"round": step.at_round, "action": step.action, **_jsonable(a)})
        if step.action == "dns":
            for index, faults in a["faults"].items():
                await f.endpoints[int(index)].client().set(Faults.from_dict(faults))
        elif step.action == "zone":
            f.change_zone(a["label"], a["address"])
        elif step.action == "coordinator":
            if a["op"] == "crash":
                await f.crash_coordinator()
            elif a["op"] == "stop":
                await f.stop_coordinator()
            else:
                await f.start_coordinator()
        elif step.action == "nats":
            assert f.nats is not None
            if a["op"] == "kill":
                leader = await asyncio.to_thread(f.nats.meta_leader)
                node = f.nats.server(leader) if leader else next(iter(f.nats))
                self.killed.append(node)
                node.kill()
                self.events.append({"killed": node.name})
            else:
                for node in self.killed:
                    await asyncio.to_thread(node.start)
                self.killed.clear()
        elif step.action == "replay":
            await self.replay()
        elif step.action == "downgrade":
            await self.downgrade()
        elif step.action == "flood":
            if a["op"] == "start":
                self.flood_task = asyncio.create_task(self.flood(int(a["region"])))
            elif self.flood_task is not None:
                await stop_task(self.flood_task, 2.0, what="chaos flood")
        elif step.action == "partition":
            assert f.partition is not None
            if a["op"] == "cut":
                f.partition.cut()
            else:
                f.partition.heal()
        elif step.action == "skew":
            if a["target"] == "coordinator":
                f.coord_clock.offset_ms = int(a["offset_ms"])
            else:
                f.agent_clocks[int(a["index"])].offset_ms = int(a["offset_ms"])
        else:
            raise ValueError(f"unknown action {step.action!r}")

    async def capture(self) -> Any:
        async def on_msg(msg: Any) -> None:
            if len(self.captured) < 10_000 and msg.subject.endswith(".A"):
                self.captured.append((msg.subject, msg.data))

        sc = self.sc
        if sc.partition is not None:
            region = self.fabric.regions[sc.partition]

            async def on_ballot(_msg: Any) -> None:
                phase = (self.report.phase_at(self.now_ms()) if self.t0 else None) or "warm-up"
                self.cut_region_ballots[phase] += 1

            await self.fabric.admin.subscribe(vote_subject(region, agent_id(region)), cb=on_ballot)
        return await self.fabric.admin.subscribe("cctf.v1.verdict.>", cb=on_msg)

    async def replay(self) -> None:
        old = list(self.captured)
        for subject, data in old:
            await self.fabric.admin.publish(subject, data)
        await self.fabric.admin.flush()
        self.progress(f"replayed {len(old)} genuine verdicts of earlier rounds")

    async def downgrade(self) -> None:
        """Forged verdicts signed with the Ed25519 half of the coordinator's key alone."""
        f = self.fabric
        assert f.coord_key is not None
        weak = SigningKey(SuiteId.ED25519, (f.coord_key._seeds[0],))
        latest: dict[str, bytes] = {}
        for subject, data in self.captured:
            latest[subject] = data
        sent = 0
        now = f.coord_clock.now_ms()
        for subject in latest:
            v = _verdict_of(latest[subject])
            if v is None:
                continue
            forged = _replace(v, answer=(FORGED[0],), issued_ms=now, expires_ms=now + 30_000)
            payload = wire.encode(forged)
            env = seal(weak, subject, MessageType.VERDICT, payload, now_ms=now, lifetime_ms=30_000)
            await f.admin.publish(subject, env)
            sent += 1
        await f.admin.flush()
        self.events.append({"downgraded_sent": sent})

    async def flood(self, region_index: int) -> None:
        f = self.fabric
        assert f.nats is not None
        region = f.regions[region_index]
        nc = await f.nats.connect(f"agent-{region}", name=f"{agent_id(region)}-flood")
        subject = vote_subject(region, agent_id(region))
        garbage = os.urandom(200)
        try:
            while True:
                for _ in range(200):
                    await nc.publish(subject, garbage)
                    self.flood_sent += 1
                await asyncio.sleep(0.005)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()


def _verdict_of(data: bytes) -> Verdict | None:
    try:
        env = decode_envelope(data)
        return wire.decode_verdict(env.payload)
    except Exception:
        return None


def _replace(v: Verdict, **changes: Any) -> Verdict:
    return msgspec.structs.replace(v, **changes)


def _jsonable(args: Any) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dict(args), default=str)))


async def run_scenario(sc: Scenario, checks: int, progress: Progress) -> dict[str, Any]:
    """Run ``sc`` with ``checks`` trust checks; returns its report object."""
    if checks < 1:
        raise ValueError("--checks must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="cctf-chaos-"))
    progress(f"{sc.name}: working directory {root}")
    try:
        async with contextlib.AsyncExitStack() as stack:
            fabric = ChaosFabric(sc, root, progress, stack)
            stack.push_async_callback(fabric.aclose)
            await fabric.start()
            run = _Run(sc, fabric, checks, progress)
            sub = await run.capture()
            consumer = asyncio.create_task(run.consume())
            try:
                await run.warmup()
                round_s = sc.round_ms / 1000
                now = time.time()
                # align the run's rounds with the fabric's (wall-clock) rounds
                wait = round_s - (now % round_s)
                run.t0 = time.monotonic() + wait
                progress(f"{sc.name}: fabric healthy; {sc.rounds} rounds, {checks} checks")
                await asyncio.gather(run.check_loop(), run.schedule())
            finally:
                await stop_tasks([consumer, run.flood_task], 2.0, what="chaos run")
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            assert fabric.client is not None
            out: dict[str, Any] = {"scenario": sc.name, "parameters": sc.to_params()}
            out.update(run.report.to_dict(sc.groups))
            out["false_trust_beyond_model"] = run.beyond.total.false_trust
            if run.changed_names:
                out["changed_names"] = {
                    "names": sorted(run.changed_names),
                    **run.changed.to_dict(),
                }
            out["client_rejected"] = dict(Counter(fabric.client.rejected))
            if sc.partition is not None:
                # ballot messages of the cut-off region's agent seen on the bus, per phase
                out["partitioned_agent_messages"] = dict(run.cut_region_ballots)
            if run.flood_sent:
                out["flood_sent"] = run.flood_sent
            out["events"] = run.events
            return out
    finally:
        shutil.rmtree(root, ignore_errors=True)
