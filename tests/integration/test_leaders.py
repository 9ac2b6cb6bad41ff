"""Stream leaders spread over a real 3-node cluster (``cctf.bus.leaders`` and ``cctf nats
balance``): leaders piled on one node (as after the others restarted, or by chance) are moved with
preferred-leader stepdowns until each group of per-region streams is spread evenly."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.leaders import balance_leaders, stream_group
from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.devfabric.nats import NatsFabric
from cctf.devfabric.nats_cli import main as nats_main

pytestmark = pytest.mark.cluster


async def _pile_on(admin: Any, streams: list[str], node: str) -> None:
    """Move every stream of ``streams`` to ``node`` (the engine's preferred stepdown)."""
    js = admin.jetstream()
    for name in streams:
        deadline = time.monotonic() + 15
        while (await js.stream_info(name)).cluster.leader != node:
            assert time.monotonic() < deadline, f"{name} did not move to {node}"
            await admin.request(
                f"$JS.API.STREAM.LEADER.STEPDOWN.{name}",
                json.dumps({"placement": {"preferred": node}}).encode(),
                timeout=2,
            )
            await asyncio.sleep(0.3)


def _spread(leaders: dict[str, str | None], group: str) -> list[int]:
    counts = Counter(v for k, v in leaders.items() if stream_group(k) == group)
    return sorted(counts.get(n, 0) for n in ("n1", "n2", "n3"))


async def test_verdict_leaders_on_one_node_are_spread(
    nats_cluster: NatsFabric, nats_connect: Any
) -> None:
    admin = await nats_connect(nats_cluster, "admin")
    await ensure_streams(admin.jetstream(), DEFAULT_REGIONS, 3, timeout_s=60)
    verdicts = [verdict_stream_name(r) for r in DEFAULT_REGIONS]
    await _pile_on(admin, verdicts, "n2")
    report = await balance_leaders(admin, timeout_s=30)
    assert report.errors == {} and report.done == report.moved
    assert _spread(report.before, "CCTF_VERDICTS") == [0, 0, 5]
    assert _spread(report.after, "CCTF_VERDICTS") == [1, 2, 2]
    for group in ("CCTF_VOTES", "CCTF_HEADS"):
        assert _spread(report.after, group) == [1, 2, 2]
    totals = Counter(report.after.values())
    assert max(totals.values()) - min(totals.values()) <= 1
    again = await balance_leaders(admin, timeout_s=30)  # balanced: nothing to move
    assert again.moved == [] and again.errors == {}


async def test_cli_balance_json(
    nats_cluster: NatsFabric, nats_connect: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await nats_connect(nats_cluster, "admin")
    await ensure_streams(admin.jetstream(), DEFAULT_REGIONS, 3, timeout_s=60)
    await _pile_on(admin, [verdict_stream_name(r) for r in DEFAULT_REGIONS[:3]], "n1")
    creds = nats_cluster.write_credentials(tmp_path / "creds.json")
    capsys.readouterr()
    rc = await asyncio.to_thread(nats_main, ["balance", "--credentials", str(creds), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["errors"] == {} and out["moved"] == out["asked"]
    assert sorted(out["per_node"]["CCTF_VERDICTS"].values()) == [1, 2, 2]
    assert rc == 0


def test_cli_balance_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nats_main(["balance", "--credentials", str(tmp_path / "none.json")]) == 2
    assert "cannot use the credentials" in capsys.readouterr().err
    assert nats_main(["balance", "--credentials", "x", "--timeout", "0"]) == 2


async def test_a_refused_stepdown_is_reported_not_raised(
    nats_cluster: NatsFabric, nats_connect: Any
) -> None:
    """A preferred node that holds no replica: the server refuses each stepdown; every refusal is
    in the report and nothing raises (``cctf nats up`` and the demo then go on unspread)."""
    admin = await nats_connect(nats_cluster, "admin")
    await ensure_streams(admin.jetstream(), DEFAULT_REGIONS, 3, timeout_s=60)
    report = await balance_leaders(admin, nodes=["n9"], timeout_s=10)
    assert report.moved and set(report.errors) == set(report.moved) and report.done == []
    assert all("refused" in e or "n9" in e for e in report.errors.values())
    assert set(report.after.values()) <= {"n1", "n2", "n3"}  # nobody moved anywhere odd
