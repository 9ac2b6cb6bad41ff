"""``cctf agent run`` with an ``identity:`` block, as a user runs it: relative ``ca_file`` paths are
anchored at the config file, evidence is published every round, and SIGTERM while identity fetches
hang still exits 0 within 5 s (real nats-server, real DNS server, the identity fabric fixture)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from test_agent_cli import EXIT_WITHIN_S, REGION, AgentProcess, dns_port, write_config

from cctf.bus.streams import ensure_streams
from cctf.devfabric.identity import IdentityFabric, Mode
from cctf.devfabric.nats import NatsFabric

__all__ = ["dns_port"]  # the fixture, re-used

pytestmark = pytest.mark.timeout(90)


def _identity_block(fabric: IdentityFabric, config_dir: Path) -> dict[str, Any]:
    """The fabric's targets for the agent's region, with the web CA copied next to the config and
    named by a relative path."""
    (config_dir / "ca").mkdir()
    shutil.copy(fabric.web_ca_file, config_dir / "ca" / "web.pem")
    doc = fabric.targets_document(REGION)
    for entry in (*doc["trust_domains"], *doc["issuers"]):
        if "ca_file" in entry:
            entry["ca_file"] = "ca/web.pem"
    return doc


async def test_agent_process_publishes_evidence_and_exits_on_sigterm_during_hung_fetches(
    nats_single: NatsFabric,
    nats_connect: Any,
    tmp_path: Path,
    dns_port: int,
    identity_fabric: IdentityFabric,
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [REGION], 1)
    creds = nats_single.write_credentials(tmp_path / "creds.json")
    config = write_config(
        tmp_path,
        dns_port,
        {"credentials": str(creds), "user": "agent-us-east"},
        identity=_identity_block(identity_fabric, tmp_path),
        round_ms=1000,
    )
    agent = await AgentProcess.start(config)
    try:
        await agent.wait_event("evidence.published", 30)
        first = agent.events("evidence.published")[0]
        workloads = len(identity_fabric.workloads)
        assert first["statuses"] == {"ok": 2 + workloads}, first
        assert first["parts"] == first["parts_ok"] == 1
        # every identity endpoint hangs: fetches run to the round's deadline, the agent keeps going
        identity_fabric.bundle.set_mode(Mode.HANG)
        identity_fabric.issuer.set_mode(Mode.HANG)
        for w in identity_fabric.workloads.values():
            w.set_mode(Mode.HANG)
        seen = len(agent.events("evidence.published"))
        await agent.wait_event("evidence.published", 30, count=seen + 2)
        last = agent.events("evidence.published")[-1]
        assert last["statuses"].get("timeout", 0) >= 1 + workloads, last
        assert not agent.events("evidence.error") and not agent.events("round.error")
        code, took = await agent.terminate_and_time()
        assert code == 0 and took < EXIT_WITHIN_S, (code, took, agent.lines[-10:])
    finally:
        agent.kill()
