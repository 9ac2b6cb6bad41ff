"""The NATS fabric against real nats-server processes: config, permissions, streams, failover."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from cctf.bus.accounts import (
    DEFAULT_REGIONS,
    NatsUser,
    build_users,
    permissions_for,
    validate_region,
)
from cctf.bus.connect import connect
from cctf.bus.credentials import load_credentials
from cctf.bus.streams import (
    StreamSetupError,
    ensure_streams,
    verdict_stream_name,
    votes_stream_name,
)
from cctf.devfabric.nats import (
    ENV_NATS_SERVER,
    MIN_NATS_SERVER,
    NatsFabric,
    NatsServer,
    NatsServerNotFoundError,
    PortInUseError,
    check_nats_server_version,
    find_nats_server,
    render_server_config,
)
from cctf.devfabric.nats_config import render_accounts_conf

if TYPE_CHECKING:
    from conftest import NatsConnect

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "nats"


class ErrorLog:
    """An ``error_cb`` that records errors and lets a test wait for a specific one."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._changed = asyncio.Event()

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self._changed.set()

    async def wait_for(self, needle: str, timeout_s: float = 3.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            for err in self.errors:
                if needle.lower() in err.lower():
                    return err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no error containing {needle!r}; got {self.errors}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)


async def _vote_count(js: JetStreamContext, region: str) -> int:
    info = await js.stream_info(votes_stream_name(region))
    return int(info.state.messages)


async def _keep_votes(js: JetStreamContext, region: str) -> None:
    """A durable on the region's vote stream: with interest retention, nothing is stored without one."""
    await js.add_consumer(
        votes_stream_name(region),
        durable_name="keep",
        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
    )


async def _setup(js: JetStreamContext, regions: tuple[str, ...], replicas: int = 1) -> None:
    await ensure_streams(js, regions, replicas=replicas, timeout_s=30, votes_per_region=True)


async def _nothing_stored(js: JetStreamContext, stream: str, subject: str) -> bool:
    try:
        await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return True
    return False


# ----------------------------------------------------------------------------------------------
# pure parts: users, permissions, config rendering


def test_find_nats_server_default_and_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_NATS_SERVER, raising=False)
    found = find_nats_server()
    assert found.name.startswith("nats-server")
    assert os.access(found, os.X_OK)
    monkeypatch.setenv(ENV_NATS_SERVER, str(tmp_path / "missing"))
    with pytest.raises(NatsServerNotFoundError, match=ENV_NATS_SERVER):
        find_nats_server()
    monkeypatch.setenv(ENV_NATS_SERVER, str(found))
    assert find_nats_server() == found


def test_find_nats_server_prefers_the_wheel_and_refuses_old_versions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    old = tmp_path / "bin" / "nats-server"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'nats-server: v2.9.10'\n")
    old.chmod(0o755)
    monkeypatch.delenv(ENV_NATS_SERVER, raising=False)
    # Debian's older build first on PATH does not shadow the one beside the interpreter
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    found = find_nats_server()
    assert found == Path(sys.executable).parent / "nats-server"
    assert check_nats_server_version(found) >= MIN_NATS_SERVER
    # ... and an old one, when chosen, is refused in one line
    monkeypatch.setenv(ENV_NATS_SERVER, str(old))
    with pytest.raises(
        NatsServerNotFoundError, match=r"is nats-server 2\.9\.10; CCTF needs >= 2\.10"
    ):
        find_nats_server()


def test_users_passwords_and_permissions() -> None:
    users = build_users(DEFAULT_REGIONS)
    assert set(users) == {
        "admin",
        "coordinator",
        "client",
        "sys",
        *(f"agent-{r}" for r in DEFAULT_REGIONS),
    }
    passwords = [u.password for u in users.values()]
    assert len(set(passwords)) == len(passwords)
    assert all(len(p) >= 24 for p in passwords)
    # the password never shows in a repr
    assert users["admin"].password not in repr(users["admin"])
    assert users["admin"].password not in repr(users)

    given_pw = build_users(["us-east"], {"admin": "fixed-admin-pw"})
    assert given_pw["admin"].password == "fixed-admin-pw"
    with pytest.raises(ValueError, match="admin"):
        build_users(["us-east"], {"admin": 'bad"quote'})
    with pytest.raises(ValueError):
        build_users(["us-east"], {"nobody": "x"})
    for bad in ("US-EAST", "-x", "a.b", "a>", "", "x" * 33):
        with pytest.raises(ValueError):
            validate_region(bad)

    agent = permissions_for("agent-us-east", DEFAULT_REGIONS)
    assert agent is not None
    assert agent.publish_allow == ("cctf.v1.vote.us-east.>", "cctf.v1.evidence.us-east.>")
    assert agent.subscribe_allow == ("_INBOX.agent-us-east.>",)
    client = permissions_for("client", DEFAULT_REGIONS)
    assert client is not None
    assert not any(s.startswith("cctf.v1.") for s in client.publish_allow)
    assert not any("STREAM.CREATE" in s or "CCTF_VOTES" in s for s in client.publish_allow)
    assert permissions_for("admin", DEFAULT_REGIONS) is None
    with pytest.raises(ValueError):
        permissions_for("agent-EU", DEFAULT_REGIONS)


def test_render_server_config_blocks() -> None:
    users = build_users(["us-east", "eu-west"])
    text = render_server_config(
        server_name="n1",
        port=4222,
        http_port=8222,
        users=users,
        store_dir=Path("/tmp/store"),
        cluster_port=6222,
        route_ports=[6223, 6224],
        route_user=NatsUser("route", "route-secret"),
    )
    assert 'listen: "127.0.0.1:4222"' in text
    assert 'http: "127.0.0.1:8222"' in text
    assert "max_payload: 1048576" in text
    assert 'store_dir: "/tmp/store"' in text
    assert "nats-route://route:route-secret@127.0.0.1:6223" in text
    assert 'name: "cctf"' in text
    assert "jetstream: enabled" in text
    assert "system_account: SYS" in text
    assert '"cctf.v1.vote.us-east.>"\n' in text and '"cctf.v1.evidence.us-east.>"\n' in text
    assert "max_subscriptions: 1024" in text
    for user in users.values():
        assert f'password: "{user.password}"' in text
    single = render_server_config(
        server_name="n1", port=1, http_port=2, users=users, store_dir=None
    )
    assert "cluster {" not in single
    assert "jetstream {" not in single
    with pytest.raises(ValueError):
        render_server_config(
            server_name="bad name", port=1, http_port=2, users=users, store_dir=None
        )


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True))
def test_verdict_stream_name_is_valid_and_injective(region: str) -> None:
    name = verdict_stream_name(region)
    assert re.fullmatch(r"CCTF_VERDICTS_[A-Z0-9_]+", name)
    # '-' -> '_' is reversible because '_' is not allowed in region tokens
    assert name.removeprefix("CCTF_VERDICTS_").lower().replace("_", "-") == region


# ----------------------------------------------------------------------------------------------
# a single node


def test_server_reports_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        server = NatsServer(
            name="n1",
            directory=tmp_path / "n1",
            port=taken,
            http_port=http_port,
            users=build_users(["us-east"]),
        )
        try:
            with pytest.raises(PortInUseError):
                server.start(timeout_s=10)
        finally:
            server.stop()
    assert server.returncode is not None


async def test_single_node_serves_jetstream(
    nats_single: NatsFabric, nats_connect: NatsConnect, tmp_path: Path
) -> None:
    fabric = nats_single
    assert len(fabric.servers) == 1 and fabric.stream_replicas == 1
    server = fabric.servers[0]
    assert fabric.urls == [f"nats://127.0.0.1:{server.port}"]
    assert server.healthz()
    assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600

    nc = await nats_connect(fabric, "admin")
    js = nc.jetstream()
    account = await js.account_info()
    assert account.limits is not None
    infos = await ensure_streams(
        js, fabric.regions, replicas=1, timeout_s=10, votes_per_region=True
    )
    assert set(infos) == {
        *(votes_stream_name(r) for r in DEFAULT_REGIONS),
        *(verdict_stream_name(r) for r in DEFAULT_REGIONS),
    }
    votes = await js.stream_info("CCTF_VOTES_US_EAST")
    assert votes.config.subjects == ["cctf.v1.vote.us-east.>"]
    assert votes.config.duplicate_window == 120.0
    assert votes.config.retention == nats.js.api.RetentionPolicy.INTEREST
    assert votes.config.discard == nats.js.api.DiscardPolicy.NEW
    assert votes.config.discard_new_per_subject is True
    verdicts = await js.stream_info("CCTF_VERDICTS_EU_WEST")
    assert verdicts.config.subjects == ["cctf.v1.verdict.eu-west.>"]
    assert verdicts.config.allow_direct is True
    assert verdicts.config.max_msgs_per_subject == 64
    # idempotent
    await _setup(js, fabric.regions)

    await _keep_votes(js, "us-east")
    ack = await js.publish("cctf.v1.vote.us-east.a1", b"persisted")
    assert ack.stream == "CCTF_VOTES_US_EAST"

    # credentials file: 0600, round-trips
    path = fabric.write_credentials(tmp_path / "sub" / "creds.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = load_credentials(path)
    assert creds.urls == fabric.urls
    assert creds.users == fabric.users

    # a restart keeps the JetStream data
    await nc.close()
    old_pid = server.pid
    server.restart()
    assert server.pid != old_pid and server.running
    nc2 = await nats_connect(fabric, "admin")
    msg = await nc2.jetstream().get_last_msg("CCTF_VOTES_US_EAST", "cctf.v1.vote.us-east.a1")
    assert msg.data == b"persisted"


async def test_core_only_fabric_without_jetstream(tmp_path: Path) -> None:
    with NatsFabric.start(tmp_path / "core", nodes=1, regions=["us-east"], jetstream=False) as fab:
        assert "jetstream {" not in fab.servers[0].config_path.read_text()
        nc = await connect(fab.urls, fab.users["admin"], name="core", for_tests=True)
        try:
            sub = await nc.subscribe("cctf.v1.vote.>")
            await nc.publish("cctf.v1.vote.us-east.a1", b"core")
            assert (await sub.next_msg(timeout=2)).data == b"core"
            with pytest.raises(nats.errors.Error):
                await nc.jetstream(timeout=0.5).account_info()
        finally:
            await nc.close()
    assert all(s.returncode is not None for s in fab.servers)


async def test_same_msg_id_is_stored_once(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await _setup(admin.jetstream(), nats_single.regions)
    await _keep_votes(admin.jetstream(), "us-east")
    agent = await nats_connect(nats_single, "agent-us-east")
    js = agent.jetstream()
    headers = {"Nats-Msg-Id": "round-42-agent-a1"}
    first = await js.publish("cctf.v1.vote.us-east.a1", b"ballot", headers=headers)
    second = await js.publish("cctf.v1.vote.us-east.a1", b"ballot", headers=dict(headers))
    assert not first.duplicate
    assert second.duplicate is True
    assert second.seq == first.seq
    other = await js.publish(
        "cctf.v1.vote.us-east.a1", b"ballot", headers={"Nats-Msg-Id": "round-43-agent-a1"}
    )
    assert not other.duplicate
    assert await _vote_count(admin.jetstream(), "us-east") == 2


async def test_regional_pinning_is_enforced_by_the_server(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await _setup(ajs, nats_single.regions)
    for region in ("us-east", "eu-west"):
        await _keep_votes(ajs, region)
    evidence: list[Msg] = []

    async def _on_evidence(msg: Msg) -> None:
        evidence.append(msg)

    await admin.subscribe("cctf.v1.evidence.>", cb=_on_evidence)
    await admin.flush()

    errors = ErrorLog()
    agent = await nats_connect(nats_single, "agent-us-east", error_cb=errors)
    js = agent.jetstream()

    # another region's subject: the server drops it and reports a permissions violation
    await agent.publish("cctf.v1.vote.eu-west.a1", b"forged")
    await agent.flush()
    err = await errors.wait_for('publish to "cctf.v1.vote.eu-west.a1"')
    assert "permissions violation" in err.lower()
    # as a JetStream publish it is never acknowledged
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish("cctf.v1.vote.eu-west.a1", b"forged", timeout=0.5)

    # its own region's subject lands
    ack = await js.publish("cctf.v1.vote.us-east.a1", b"genuine")
    assert ack.stream == "CCTF_VOTES_US_EAST"
    assert await _vote_count(ajs, "us-east") == 1
    assert await _vote_count(ajs, "eu-west") == 0
    assert await _nothing_stored(ajs, "CCTF_VOTES_EU_WEST", "cctf.v1.vote.eu-west.a1")
    last = await ajs.get_last_msg("CCTF_VOTES_US_EAST", "cctf.v1.vote.us-east.a1")
    assert last.data == b"genuine"

    # evidence: own region only
    await agent.publish("cctf.v1.evidence.eu-west.a1", b"forged")
    await agent.publish("cctf.v1.evidence.us-east.a1", b"genuine")
    await agent.flush()
    await errors.wait_for('publish to "cctf.v1.evidence.eu-west.a1"')
    await admin.flush()
    deadline = time.monotonic() + 3
    while not evidence and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert [(m.subject, m.data) for m in evidence] == [("cctf.v1.evidence.us-east.a1", b"genuine")]

    # no verdicts, no subscriptions outside _INBOX
    await agent.publish("cctf.v1.verdict.us-east.x.A", b"forged")
    await agent.subscribe("cctf.v1.vote.>")
    await agent.flush()
    await errors.wait_for('publish to "cctf.v1.verdict.us-east.x.A"')
    await errors.wait_for('subscription to "cctf.v1.vote.>"')
    assert await _nothing_stored(ajs, "CCTF_VERDICTS_US_EAST", "cctf.v1.verdict.us-east.x.A")
    assert await _vote_count(ajs, "us-east") == 1


async def test_client_reads_verdicts_but_cannot_publish_or_change_streams(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await _setup(ajs, nats_single.regions)
    await _keep_votes(ajs, "us-east")
    coordinator = await nats_connect(nats_single, "coordinator")
    cjs = coordinator.jetstream()
    subject = "cctf.v1.verdict.us-east.example.A"
    ack = await cjs.publish(subject, b"signed-verdict", headers={"Nats-Msg-Id": "v1"})
    assert ack.stream == "CCTF_VERDICTS_US_EAST"

    errors = ErrorLog()
    client = await nats_connect(nats_single, "client", error_cb=errors)
    js = client.jetstream(timeout=1.0)
    # reads: direct get, and an ordered consumer
    got = await js.get_last_msg("CCTF_VERDICTS_US_EAST", subject, direct=True)
    assert got.data == b"signed-verdict"
    sub = await js.subscribe("cctf.v1.verdict.us-east.>", ordered_consumer=True)
    first = await sub.next_msg(timeout=3)
    assert first.data == b"signed-verdict"
    await sub.unsubscribe()

    # writes under cctf.v1 are refused by the server
    await client.publish(subject, b"forged")
    await client.publish("cctf.v1.vote.us-east.a1", b"forged")
    await client.flush()
    await errors.wait_for(f'publish to "{subject}"')
    await errors.wait_for('publish to "cctf.v1.vote.us-east.a1"')
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(subject, b"forged", timeout=0.5)
    # and so are stream changes
    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream("CCTF_VERDICTS_US_EAST")
    with pytest.raises(StreamSetupError, match=r"within 1\.0s"):
        await ensure_streams(js, ["us-east"], replicas=1, timeout_s=1.0)

    info = await ajs.stream_info("CCTF_VERDICTS_US_EAST")
    assert info.state.messages == 1
    assert (await ajs.get_last_msg("CCTF_VERDICTS_US_EAST", subject)).data == b"signed-verdict"
    assert await _vote_count(ajs, "us-east") == 0


async def test_coordinator_consumes_votes_but_cannot_vote_or_delete(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await _setup(ajs, nats_single.regions)
    errors = ErrorLog()
    coordinator = await nats_connect(nats_single, "coordinator", error_cb=errors)
    js = coordinator.jetstream(timeout=1.0)
    stream = votes_stream_name("eu-west")
    psub = await js.pull_subscribe("cctf.v1.vote.eu-west.>", durable="coordinator", stream=stream)
    await _keep_votes(ajs, "eu-west")
    agent = await nats_connect(nats_single, "agent-eu-west")
    await agent.jetstream().publish("cctf.v1.vote.eu-west.a7", b"ballot")
    msgs = await psub.fetch(1, timeout=3)
    assert [m.data for m in msgs] == [b"ballot"]
    await msgs[0].ack()

    await coordinator.publish("cctf.v1.vote.eu-west.a7", b"forged")
    await coordinator.flush()
    await errors.wait_for('publish to "cctf.v1.vote.eu-west.a7"')
    with pytest.raises(nats.errors.TimeoutError):
        await js.purge_stream(stream)
    assert await _vote_count(ajs, "eu-west") == 1  # still held for the "keep" durable


# ----------------------------------------------------------------------------------------------
# a 3-node cluster


@pytest.mark.cluster
async def test_cluster_creates_replicated_streams(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    fabric = nats_cluster
    assert len(fabric.servers) == 3 and fabric.stream_replicas == 3
    assert fabric.meta_leader() in {s.name for s in fabric.servers}
    admin = await nats_connect(fabric, "admin", max_reconnect_attempts=5)
    js = admin.jetstream()
    infos = await ensure_streams(
        js, fabric.regions, replicas=3, timeout_s=30, votes_per_region=True
    )
    assert len(infos) == 2 * len(fabric.regions)
    for name in infos:
        info = await js.stream_info(name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2

    await _keep_votes(js, "ap-south")
    agent = await nats_connect(fabric, "agent-ap-south", max_reconnect_attempts=5)
    headers = {"Nats-Msg-Id": "dup-1"}
    first = await agent.jetstream().publish("cctf.v1.vote.ap-south.a1", b"x", headers=headers)
    again = await agent.jetstream().publish("cctf.v1.vote.ap-south.a1", b"x", headers=dict(headers))
    assert again.duplicate is True and again.seq == first.seq
    assert await _vote_count(js, "ap-south") == 1

    # no password (users' or the route password) ever reaches a log
    secrets_in_configs = set()
    for server in fabric.servers:
        secrets_in_configs |= set(
            re.findall(r'password: "([^"]+)"', server.config_path.read_text())
        )
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    assert {u.password for u in fabric.users.values()} < secrets_in_configs  # + route password
    logs = "".join(s.log_path.read_text() for s in fabric.servers)
    assert "Route connection created" in logs
    leaked = [p for p in secrets_in_configs if p in logs]
    assert not leaked, "a password appears in a nats-server log"


async def _publish_retrying(js: JetStreamContext, subject: str, seq: int, deadline: float) -> None:
    while True:
        try:
            await js.publish(
                subject, str(seq).encode(), headers={"Nats-Msg-Id": f"m-{seq}"}, timeout=1.0
            )
            return
        except nats.errors.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _consume_until(
    psub: JetStreamContext.PullSubscription, want: set[int], deadline: float
) -> set[int]:
    got: set[int] = set()
    while not want <= got:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer stalled: missing {sorted(want - got)}")
        try:
            msgs = await psub.fetch(50, timeout=1.0)
        except nats.errors.Error:
            await asyncio.sleep(0.05)
            continue
        for msg in msgs:
            got.add(int(msg.data))
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
    return got


@pytest.mark.cluster
@pytest.mark.slow
async def test_failover_when_a_node_is_killed(
    nats_cluster: NatsFabric, nats_connect: NatsConnect
) -> None:
    fabric = nats_cluster
    failover = {"max_reconnect_attempts": 30, "reconnect_time_wait": 0.1}
    admin = await nats_connect(fabric, "admin", **failover)
    ajs = admin.jetstream()
    await _setup(ajs, fabric.regions, replicas=3)
    stream = votes_stream_name("us-east")

    # the victim is the stream leader, and both clients sit on it first: the stream needs a new
    # leader and both connections must move to the surviving nodes
    leader = (await ajs.stream_info(stream)).cluster
    assert leader is not None and leader.leader
    victim = fabric.server(leader.leader)
    urls = [victim.client_url] + [s.client_url for s in fabric.servers if s is not victim]
    publisher = await nats_connect(
        fabric, "agent-us-east", servers=urls, dont_randomize=True, **failover
    )
    consumer = await nats_connect(
        fabric, "coordinator", servers=urls, dont_randomize=True, **failover
    )
    assert publisher.connected_url is not None
    assert publisher.connected_url.port == victim.port
    pjs = publisher.jetstream()
    psub = await consumer.jetstream().pull_subscribe(
        "cctf.v1.vote.us-east.>", durable="failover", stream=stream
    )

    deadline = time.monotonic() + 30
    for seq in range(20):
        await _publish_retrying(pjs, "cctf.v1.vote.us-east.a1", seq, deadline)
    assert await _consume_until(psub, set(range(20)), deadline) == set(range(20))

    killed_at = time.monotonic()
    assert victim.kill() == -signal.SIGKILL
    assert not victim.running

    deadline = time.monotonic() + 40
    for seq in range(20, 40):
        await _publish_retrying(pjs, "cctf.v1.vote.us-east.a1", seq, deadline)
    got = await _consume_until(psub, set(range(20, 40)), deadline)
    assert set(range(20, 40)) <= got
    recovery_s = time.monotonic() - killed_at

    assert publisher.connected_url is not None and publisher.connected_url.port != victim.port
    assert consumer.connected_url is not None and consumer.connected_url.port != victim.port
    info = await ajs.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader != victim.name
    # retried publishes were deduplicated: exactly 40 messages
    assert info.state.last_seq == 40
    assert recovery_s < 40

    # the killed node comes back on the same ports and catches up (its /healthz turns ok only
    # once its streams are current)
    victim.start(timeout_s=30)
    deadline = time.monotonic() + 20
    while True:
        info = await ajs.stream_info(stream)
        assert info.cluster is not None
        peers = {r.name: r.current for r in info.cluster.replicas or []}
        if peers.get(victim.name) is True or info.cluster.leader == victim.name:
            break
        assert time.monotonic() < deadline, f"{victim.name} did not catch up: {peers}"
        await asyncio.sleep(0.2)


# ----------------------------------------------------------------------------------------------
# static deploy configs and the CLI


def _static_env(monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, str]:
    env = dict(os.environ)
    names = ["SYS", "ADMIN", "COORDINATOR", "CLIENT"]
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
        assert 0.2 <= nc.options["reconnect_time_wait"] <= 0.5
        assert nc.new_inbox().startswith("_INBOX.client.")
    finally:
        await nc.close()
    with pytest.raises(ValueError, match="inbox"):
        await connect(nats_single.urls, user, name="x", inbox_prefix="_INBOX")
