"""LKG with real agents and the chaos DNS servers (the local fabric of ``cctf demo``, in-process):
resolvers made to time out through their control channels; verdicts as a verifying ``TrustClient``
stream sees them.

* 3 of 5 resolvers blackholed after the names were TRUSTED: every name stays TRUSTED from LKG (same
  answer, evidence of a round before the blackhole), then fresh again once the faults are cleared.
* 2 blackholed and 1 poisoned (a different answer in the outage): never attested, UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.chaos.control import ChaosControlClient, load_fabric_resolvers
from cctf.chaos.faults import Faults
from cctf.chaos.zone import DEMO_NAMES
from cctf.devfabric.demo import DemoOptions, run_demo

pytestmark = pytest.mark.slow
NAMES = DEMO_NAMES[:3]


@dataclass
class Fabric:
    by_round: dict[int, dict[str, Verdict]] = field(default_factory=lambda: defaultdict(dict))
    controls: dict[str, ChaosControlClient] = field(default_factory=dict)
    demo: asyncio.Task[int] | None = None

    def on_verdict(self, v: Verdict) -> None:
        if v.qtype == "A" and v.qname in NAMES:
            self.by_round[v.round][v.qname] = v

    def complete(self) -> list[int]:
        return sorted(r for r, got in self.by_round.items() if len(got) == len(NAMES))

    async def rounds_after(self, after: int, n: int, timeout_s: float = 90) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while len(done := [r for r in self.complete() if r > after]) < n:
            assert self.demo is not None and not self.demo.done(), "the demo ended"
            assert time.monotonic() < deadline, f"fewer than {n} complete rounds after {after}"
            await asyncio.sleep(0.1)
        return done[:n]

    async def set(self, faults: dict[str, Faults]) -> int:
        """Apply faults (resolver id -> faults); returns the last round seen before."""
        last = max(self.by_round)
        for rid, f in faults.items():
            await self.controls[rid].set(f)
        return last

    async def clear(self) -> int:
        last = max(self.by_round)
        for c in self.controls.values():
            await c.clear()
        return last


@pytest_asyncio.fixture
async def fabric(tmp_path: Path) -> AsyncIterator[Fabric]:
    fab = Fabric()
    fabric_file = tmp_path / "fabric.json"
    opts = DemoOptions(
        nodes=1, names=tuple(NAMES), fabric_file=fabric_file, workdir=tmp_path / "work"
    )
    stop = asyncio.Event()
    fab.demo = asyncio.create_task(
        run_demo(opts, out=io.StringIO(), err=io.StringIO(), stop=stop, on_verdict=fab.on_verdict)
    )
    try:
        await fab.rounds_after(0, 2)
        fab.controls = {
            rid: ChaosControlClient(ep.control.host, ep.control.port, ep.token)
            for rid, ep in load_fabric_resolvers(fabric_file).items()
        }
        yield fab
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fab.demo, 60)


def resolvers(fab: Fabric) -> list[str]:
    return sorted(fab.controls)


def all_of(fab: Fabric, rounds: list[int], pred: Callable[[Verdict], bool]) -> bool:
    return all(pred(fab.by_round[r][n]) for r in rounds for n in NAMES)


async def test_blackhole_of_three_is_carried_by_lkg_then_fresh_again(fabric: Fabric) -> None:
    fab = fabric
    before = fab.complete()[-1]
    trusted = {n: fab.by_round[before][n] for n in NAMES}
    assert all(v.outcome is Outcome.TRUSTED and not v.is_lkg for v in trusted.values())
    switch = await fab.set({rid: Faults(blackhole=True) for rid in resolvers(fab)[-3:]})
    outage = (await fab.rounds_after(switch + 1, 4))[1:]  # the switch round may go either way
    for r in outage:
        for n in NAMES:
            v = fab.by_round[r][n]
            assert v.outcome is Outcome.TRUSTED and v.is_lkg, (r, n, v.outcome)
            assert v.answer == trusted[n].answer and v.basis_round <= switch + 1
            assert v.expires_ms - v.issued_ms <= 30_000
    cleared = await fab.clear()
    back = (await fab.rounds_after(cleared + 1, 2))[1:]
    assert all_of(fab, back, lambda v: v.outcome is Outcome.TRUSTED and not v.is_lkg)


async def test_an_outage_with_a_poisoned_answer_in_it_is_never_attested(fabric: Fabric) -> None:
    fab = fabric
    ids = resolvers(fab)
    faults = {ids[0]: Faults(poison="203.0.113.66")}
    faults.update({rid: Faults(blackhole=True) for rid in ids[-2:]})
    switch = await fab.set(faults)
    outage = (await fab.rounds_after(switch + 1, 4))[1:]
    # 2 honest, 1 forged, 2 timeouts: UNAVAILABLE with another answer in it -> no LKG, and the
    # basis is forgotten, so the later rounds of the outage are not attested either
    assert all_of(fab, outage, lambda v: v.outcome is not Outcome.TRUSTED and not v.is_lkg)
