"""The bench harness's simulated agents (``benchmarks/bench_fabric.Agents``) build one ballot per
batch with the agents' own builder and derive the other regions' from it: each derived ballot must be
the ballot ``cctf.agents.ballot.build_ballot`` makes for that region (else the bench would measure
other ballots than the agents send)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_fabric
from harness import ORIGIN, REGIONS

from cctf.bus_schemas.messages import encode


def test_every_region_gets_the_ballot_build_ballot_makes_for_it() -> None:
    agents = bench_fabric.Agents({})
    t_ms = 1_700_000_000_123
    for batch in range(2):
        names = [f"t{batch}-{j}.{ORIGIN}" for j in range(40)]
        for region in REGIONS:
            derived = agents.ballot(region, t_ms // 1000, names, t_ms)
            built = agents.built_ballot(region, t_ms // 1000, names, t_ms)
            assert derived == built and encode(derived) == encode(built)
            assert {v.agent for v in derived.votes} == {bench_fabric.agent_id(region)}
