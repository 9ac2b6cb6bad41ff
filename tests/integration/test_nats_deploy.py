"""The static deploy/nats configs, `cctf nats`, and the connect policy, against real nats-server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from natshelpers import ErrorLog

from cctf.bus.accounts import (
    DEFAULT_REGIONS,
    NatsUser,
)
from cctf.bus.connect import connect
from cctf.bus.credentials import load_credentials
from cctf.bus.settings import NatsSettings
from cctf.devfabric.nats import (
    NatsFabric,
    find_nats_server,
)
from cctf.devfabric.nats_config import render_accounts_conf

if TYPE_CHECKING:
    pass

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "nats"


# ----------------------------------------------------------------------------------------------
# static deploy configs and the CLI


def _static_env(monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, str]:
    env = dict(os.environ)
    names = ["SYS", "ADMIN", "COORDINATOR", "CLIENT", "CA"]
    names += [f"AGENT_{r.upper().replace('-', '_')}" for r in DEFAULT_REGIONS]
    for name in names:
        env[f"CCTF_NATS_{name}_PASSWORD"] = f"p{name.lower().replace('_', '')}{os.getpid()}x"
    env["CCTF_NATS_ROUTE_PASSWORD"] = "proutepw"
    for i in (1, 2, 3):
        env[f"CCTF_NATS_ROUTE_NODE_{i}"] = f"nats-route://route:proutepw@node-{i}:6222"
    return env


STATIC_CONFIGS = [
    "single.conf",
    "cluster/node-1.conf",
    "cluster/node-2.conf",
    "cluster/node-3.conf",
]


@pytest.mark.parametrize("name", STATIC_CONFIGS)
def test_static_configs_pass_nats_server_t(name: str) -> None:
    binary = str(find_nats_server())
    path = DEPLOY / name
    ok = subprocess.run(
        [binary, "-t", "-c", str(path)], env=_static_env(), capture_output=True, timeout=30
    )
    assert ok.returncode == 0, ok.stderr.decode()
    # a missing password variable is an error, not an empty password
    env = _static_env()
    del env["CCTF_NATS_ADMIN_PASSWORD"]
    bad = subprocess.run([binary, "-t", "-c", str(path)], env=env, capture_output=True, timeout=30)
    assert bad.returncode != 0
    assert b"CCTF_NATS_ADMIN_PASSWORD" in bad.stdout + bad.stderr


def test_static_accounts_conf_is_the_generated_one() -> None:
    # regenerate with: python -m cctf.devfabric.nats_cli accounts-conf > deploy/nats/accounts.conf
    assert (DEPLOY / "accounts.conf").read_text() == render_accounts_conf(DEFAULT_REGIONS)


@pytest.fixture
def static_single(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """deploy/nats/single.conf started for real (store and ports moved to the test's own)."""
    conf = tmp_path / "static"
    conf.mkdir()
    (conf / "accounts.conf").write_text((DEPLOY / "accounts.conf").read_text())
    text = (DEPLOY / "single.conf").read_text()
    assert "/var/lib/nats/jetstream" in text
    (conf / "single.conf").write_text(text.replace("/var/lib/nats/jetstream", str(conf / "js")))
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        port, http_port = a.getsockname()[1], b.getsockname()[1]
    env = _static_env()
    log = (conf / "nats.log").open("wb")
    proc = subprocess.Popen(
        [
            *(str(find_nats_server()), "-c", str(conf / "single.conf")),
            *("-a", "127.0.0.1", "-p", str(port), "-m", str(http_port)),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (conf / "nats.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, (conf / "nats.log").read_text()
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", env
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


async def test_static_single_conf_enforces_pinning(
    static_single: tuple[str, dict[str, str]],
) -> None:
    url, env = static_single
    errors = ErrorLog()
    clients: list[Client] = []
    try:
        agent = await connect(
            url,
            NatsUser("agent-us-east", env["CCTF_NATS_AGENT_US_EAST_PASSWORD"]),
            name="static-agent",
            for_tests=True,
            error_cb=errors,
        )
        clients.append(agent)
        client = await connect(
            url,
            NatsUser("client", env["CCTF_NATS_CLIENT_PASSWORD"]),
            name="static-client",
            for_tests=True,
            error_cb=errors,
        )
        clients.append(client)
        await agent.publish("cctf.v1.vote.eu-west.a1", b"x")
        await agent.flush()
        await errors.wait_for('publish to "cctf.v1.vote.eu-west.a1"')
        await client.publish("cctf.v1.verdict.us-east.x.A", b"x")
        await client.flush()
        await errors.wait_for('publish to "cctf.v1.verdict.us-east.x.A"')
        await agent.publish("cctf.v1.vote.us-east.a1", b"x")
        await agent.flush()
        assert not any("us-east.a1" in e for e in errors.errors)
        # a wrong password is refused
        with pytest.raises(nats.errors.Error):
            await connect(
                url,
                NatsUser("admin", "pwrong"),
                name="static-wrong",
                for_tests=True,
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
    finally:
        for nc in clients:
            await nc.close()


def test_cli_up_runs_until_sigterm_and_stops_every_server(tmp_path: Path) -> None:
    workdir = tmp_path / "fabric"
    creds_path = tmp_path / "secret" / "creds.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cctf.devfabric.nats_cli", "up", "--nodes", "1"),
            *("--dir", str(workdir), "--regions", "us-east,eu-west"),
            *("--credentials", str(creds_path)),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("press Ctrl-C"):
                break
        assert proc.poll() is None, "".join(out)
        text = "".join(out)
        assert f"credentials: {creds_path.resolve()}" in text
        assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
        creds = load_credentials(creds_path)
        assert set(creds.users) >= {"admin", "agent-us-east", "agent-eu-west"}
        assert "agent-us-west" not in creds.users
        for url in creds.urls:
            assert f"client url: {url}" in text
        # every component's own file: only its user's password (the agent never sees admin's)
        own_dir = creds_path.parent / "credentials.d"
        assert f"own credentials: {own_dir.resolve()}/<user>.json" in text
        for name, user in creds.users.items():
            own = load_credentials(own_dir / f"{name}.json")
            assert own.users == {name: user} and own.urls == creds.urls
            assert stat.S_IMODE((own_dir / f"{name}.json").stat().st_mode) == 0o600
            settings = NatsSettings(user=name, credentials=str(own_dir / f"{name}.json"))
            assert settings.nats_user() == user
        for user in creds.users.values():
            assert user.password not in text
        pids = [int((workdir / "node-1" / "nats.pid").read_text())]
        os.kill(pids[0], 0)  # alive
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, text + rest
        assert "stopping" in rest
        for user in creds.users.values():
            assert user.password not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_connect_for_tests_gives_up_quickly() -> None:
    started = time.monotonic()
    with pytest.raises((nats.errors.Error, OSError)):
        await connect("nats://127.0.0.1:1", NatsUser("admin", "x"), name="nobody", for_tests=True)
    assert time.monotonic() - started < 5


async def test_connect_initial_retries_fail_fast_then_reconnect_forever(
    nats_single: NatsFabric,
) -> None:
    user = nats_single.users["client"]
    started = time.monotonic()
    with pytest.raises(nats.errors.NoServersError):
        # production policy (reconnect forever), but the first connection is bounded
        await connect(
            ["nats://127.0.0.1:1", "nats://127.0.0.1:2"], user, name="x", initial_retries=2
        )
    assert time.monotonic() - started < 5
    nc = await connect(nats_single.urls, user, name="fine", initial_retries=1)
    try:
        assert nc.options["max_reconnect_attempts"] == -1  # unbounded once connected
        assert 0.1 <= nc.options["reconnect_time_wait"] <= 0.2  # design D1: fast reconnect
        assert nc.new_inbox().startswith("_INBOX.client.")
    finally:
        await nc.close()
    with pytest.raises(ValueError, match="inbox"):
        await connect(nats_single.urls, user, name="x", inbox_prefix="_INBOX")
