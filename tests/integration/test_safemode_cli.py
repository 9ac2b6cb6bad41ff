"""``cctf safe-mode`` against a real nats-server and a running coordinator (real clock): the
operator's signed command enters and leaves safe mode and the CLI prints the coordinator's verified
answer; ``status`` shows the region's state; a command signed with a key that is not an operator's
is refused by the coordinator (no answer: exit 4, counted with its reason)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from clientbus import run_cli
from cliproc import SIGTERM_BOUND_S, StartCli, start_cli_fixture  # noqa: F401 - fixture start_cli
from wirefactories import make_identity, make_trust, make_world

from cctf.bus.streams import ensure_streams
from cctf.client.cli import EXIT_TERMINATED
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.keys import save_signing_key
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

EAST = "us-east"
ELECTORATE = ["agent-us-east/r1", "agent-us-east/r2", "agent-us-east/r3"]


@pytest_asyncio.fixture
async def setup(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path
) -> AsyncIterator[tuple[Coordinator, list[str], list[str]]]:
    world = make_world((EAST,), start_ms=time.time_ns() // 1_000_000)
    operator = make_identity("ops-alice", EAST, role=Role.OPERATOR)
    trust = make_trust(*world.agents.values(), world.coordinator, operator)
    trust.save(tmp_path / "trust.json")
    save_signing_key(tmp_path / "ops.key.json", operator.key)
    save_signing_key(tmp_path / "agent.key.json", world.agents[EAST].key)
    creds = nats_single.write_credentials(tmp_path / "creds.json")
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [EAST], 1)
    nc = await nats_connect(nats_single, "coordinator", max_reconnect_attempts=-1)
    config = CoordinatorConfig(
        coordinator=world.coordinator.principal,
        region=EAST,
        rule=RuleConfig(k=2, n=3),
        electorate=ELECTORATE,
        names=[("www.demo.test.", "A")],
    )
    coord = Coordinator(config, nc, key=world.coordinator.key, trust=trust)
    await coord.start()
    common = [
        "--credentials",
        str(creds),
        "--region",
        EAST,
        "--trust",
        str(tmp_path / "trust.json"),
    ]
    op = ["--key", str(tmp_path / "ops.key.json"), "--operator", "ops-alice"]
    try:
        yield coord, common, op
    finally:
        await coord.stop()


async def test_operator_enters_and_leaves_from_the_cli(
    setup: tuple[Coordinator, list[str], list[str]], tmp_path: Path
) -> None:
    coord, common, op = setup
    rc, out, err = await run_cli("safe-mode", "status", *common, "--json")
    assert rc == 0, err
    assert json.loads(out)["active"] == [] and json.loads(out)["cause"] == "start"
    rc, out, err = await run_cli(
        "safe-mode", "enter", *common, *op, "--name", "WWW.demo.test", "--reason", "drill"
    )
    assert rc == 0, err
    assert "us-east www.demo.test. ENTERED cause=operator active=www.demo.test." in out
    assert coord.safe_mode.active(EAST) == ["www.demo.test."]
    rc, out, _ = await run_cli("safe-mode", "status", *common, "--json")
    status = json.loads(out)
    assert rc == 0 and status["active"] == ["www.demo.test."] and "ops-alice" in status["reason"]
    # signed with the agent's key (trusted, but not an operator's): refused, nothing changes
    bad = ["--key", str(tmp_path / "agent.key.json"), "--operator", "agent-us-east"]
    rc, _out, err = await run_cli(
        "safe-mode",
        "leave",
        *common,
        *bad,
        "--name",
        "www.demo.test.",
        "--reason",
        "x",
        "--timeout",
        "3",
    )
    assert rc == 4, err
    assert coord.safe_mode.stats.commands.get("unknown_key") == 1
    assert coord.safe_mode.active(EAST) == ["www.demo.test."]
    rc, out, err = await run_cli(
        "safe-mode", "leave", *common, *op, "--name", "www.demo.test.", "--reason", "done", "--json"
    )
    assert rc == 0, err
    assert json.loads(out)["state"] == "left" and coord.safe_mode.active(EAST) == []
    rc, _out, err = await run_cli(
        "safe-mode", "enter", *common, *op, "--name", "a..b", "--reason", "x"
    )
    assert rc == 2 and "empty label" in err
    await asyncio.sleep(0)


async def test_watch_streams_announcements_and_exits_on_sigterm(
    setup: tuple[Coordinator, list[str], list[str]], start_cli: StartCli
) -> None:
    """``cctf safe-mode watch`` (a long-running command) prints the region's last announcement and
    exits with 143 within 5 s of SIGTERM, no traceback."""
    _coord, common, _op = setup
    watch = await start_cli("safe-mode", "watch", *common)
    assert "us-east" in await watch.line(), watch.err
    rc, elapsed = await watch.terminate()
    assert rc == EXIT_TERMINATED, watch.err
    assert elapsed < SIGTERM_BOUND_S
    assert not any("Traceback" in line for line in watch.err), watch.err
