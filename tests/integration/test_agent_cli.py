"""``cctf agent run`` as a user runs it (a subprocess): exit codes, and an exit within 5 s of SIGTERM in
every state (connecting, running, NATS gone), against a real nats-server that the test kills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from wirefactories import make_identity

from cctf.bus.streams import ensure_streams
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.zone import demo_zone
from cctf.crypto.keys import save_signing_key
from cctf.devfabric.nats import NatsFabric

pytestmark = pytest.mark.timeout(90)

REGION = "us-east"
AGENT = "agent-us-east"
#: SIGTERM to exit, required by the issue (a generous margin is already in it: the agent aims at 4 s).
EXIT_WITHIN_S = 5.0
REGION_USER = f"agent-{REGION}"


@pytest.fixture
async def dns_port() -> AsyncIterator[int]:
    server = FaultyDnsServer(demo_zone(), "127.0.0.1", 0)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


def write_config(tmp_path: Path, dns_port: int, nats: dict[str, Any], **extra: Any) -> Path:
    ident = make_identity(AGENT, REGION)
    save_signing_key(tmp_path / f"{AGENT}.key.json", ident.key)
    path = tmp_path / "agent.yaml"
    obj = {
        "agent": AGENT,
        "region": REGION,
        "key_file": f"{AGENT}.key.json",
        "nats": nats,
        "resolvers": [{"id": "r1", "address": "127.0.0.1", "port": dns_port, "transport": "udp"}],
        "names": [["www.demo.test.", "A"]],
        "round_ms": 500,
        **extra,
    }
    path.write_text(json.dumps(obj))  # JSON is YAML
    return path


class AgentProcess:
    """``python -m cctf agent run`` with its stderr (JSON log lines) collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr))

    @classmethod
    async def start(cls, config: Path, *args: str) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cctf",
            "agent",
            "run",
            "--config",
            str(config),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out

    async def wait_event(self, name: str, timeout_s: float, count: int = 1) -> None:
        end = time.monotonic() + timeout_s
        while len(self.events(name)) < count:
            if time.monotonic() > end or self.proc.returncode is not None:
                raise AssertionError(f"no {name!r} event; stderr:\n" + "\n".join(self.lines[-30:]))
            await asyncio.sleep(0.05)

    async def exit_code(self, timeout_s: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await self._reader
        return code

    async def terminate_and_time(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await self.exit_code(EXIT_WITHIN_S + 10)
        finally:
            self.kill()
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nats_unreachable_exits_1_with_one_line(tmp_path: Path, dns_port: int) -> None:
    nats = {"urls": [f"nats://127.0.0.1:{_closed_port()}"], "user": AGENT, "password": "pw"}
    agent = await AgentProcess.start(write_config(tmp_path, dns_port, nats))
    try:
        assert await agent.exit_code(30) == 1
    finally:
        agent.kill()
    plain = [line for line in agent.lines if line.startswith("cctf agent:")]
    assert len(plain) == 1 and "cannot reach NATS" in plain[0], agent.lines
    assert agent.events("agent.nats_unreachable")


async def test_invalid_config_exits_2(tmp_path: Path, dns_port: int) -> None:
    nats = {"urls": ["nats://127.0.0.1:4222"], "user": "agent-eu-west", "password": "pw"}
    agent = await AgentProcess.start(write_config(tmp_path, dns_port, nats))
    assert await agent.exit_code(30) == 2
    assert any("must connect as 'agent-us-east'" in line for line in agent.lines), agent.lines


async def test_tls_form_needs_usable_files_and_the_agent_inbox_name(
    tmp_path: Path, dns_port: int
) -> None:
    tls = {"ca": "ca.pem", "cert": "missing.cert.pem", "key": "missing.key.pem"}
    nats = {"urls": ["tls://127.0.0.1:4222"], "user": f"{REGION_USER}.{AGENT}", "tls": tls}
    (tmp_path / "ca.pem").write_text("not a certificate")
    agent = await AgentProcess.start(write_config(tmp_path, dns_port, nats))
    assert await agent.exit_code(30) == 2
    assert any("TLS CA file" in line and "cannot be used" in line for line in agent.lines), (
        agent.lines
    )
    nats["user"] = REGION_USER  # the password user's name is not a certificate user's inbox
    agent = await AgentProcess.start(write_config(tmp_path, dns_port, nats))
    assert await agent.exit_code(30) == 2
    assert any(f"must connect as '{REGION_USER}.{AGENT}'" in line for line in agent.lines)


async def test_sigterm_while_connecting_exits_0_within_5s(tmp_path: Path, dns_port: int) -> None:
    # a server that accepts TCP connections and never speaks: the client waits in its connect
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        nats = {"urls": [f"nats://127.0.0.1:{port}"], "user": AGENT, "password": "pw"}
        agent = await AgentProcess.start(write_config(tmp_path, dns_port, nats))
        await agent.wait_event("agent.config", 30)
        await asyncio.sleep(1.0)
        assert agent.proc.returncode is None  # still connecting
        code, took = await agent.terminate_and_time()
        assert code == 0 and took < EXIT_WITHIN_S, (code, took, agent.lines[-10:])
        assert agent.events("agent.cancelled")[0]["state"] == "connecting"
    finally:
        silent.close()


async def _running_agent(
    fabric: NatsFabric, nats_connect: Any, tmp_path: Path, dns_port: int, **extra: Any
) -> AgentProcess:
    admin = await nats_connect(fabric, "admin")
    await ensure_streams(admin.jetstream(), [REGION], 1)
    creds = fabric.write_credentials(tmp_path / "creds.json")
    config = write_config(tmp_path, dns_port, {"credentials": str(creds), "user": AGENT}, **extra)
    agent = await AgentProcess.start(config)
    await agent.wait_event("ballot.published", 30)
    return agent


async def test_sigterm_while_running_exits_0_within_5s(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path, dns_port: int
) -> None:
    agent = await _running_agent(nats_single, nats_connect, tmp_path, dns_port)
    code, took = await agent.terminate_and_time()
    assert code == 0 and took < EXIT_WITHIN_S, (code, took, agent.lines[-10:])
    assert agent.events("agent.stop")


async def test_sigterm_during_a_long_query_phase_exits_0_within_5s(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path, dns_port: int
) -> None:
    # a resolver that never answers and a 20 s query deadline: the round would block for 20 s
    agent = await _running_agent(nats_single, nats_connect, tmp_path, dns_port)
    agent.kill()
    await agent.exit_code(10)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        config = write_config(
            tmp_path,
            silent.getsockname()[1],
            {"credentials": str(tmp_path / "creds.json"), "user": AGENT},
            round_ms=30_000,
            query_deadline_ms=20_000,
        )
        agent = await AgentProcess.start(config)
        await agent.wait_event("agent.start", 30)
        await asyncio.sleep(0.5)
        code, took = await agent.terminate_and_time()
        assert code == 0 and took < EXIT_WITHIN_S, (code, took, agent.lines[-10:])
    finally:
        silent.close()


async def test_sigterm_with_nats_gone_exits_0_within_5s(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path, dns_port: int
) -> None:
    agent = await _running_agent(nats_single, nats_connect, tmp_path, dns_port)
    for server in nats_single.servers:
        server.kill()
    await agent.wait_event("ballot.failed", 30)  # running on, NATS gone: rounds fail, no exit
    assert agent.proc.returncode is None
    code, took = await agent.terminate_and_time()
    assert code == 0 and took < EXIT_WITHIN_S, (code, took, agent.lines[-10:])
