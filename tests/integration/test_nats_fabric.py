"""The NATS fabric against real nats-server processes: config, permissions, streams, failover."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from natshelpers import ErrorLog, keep_votes, nothing_stored, setup_streams, vote_count

from cctf.bus.accounts import (
    DEFAULT_REGIONS,
    NatsUser,
    build_users,
    permissions_for,
    validate_region,
)
from cctf.bus.connect import connect, jetstream
from cctf.bus.credentials import load_credentials
from cctf.bus.streams import (
    CONTROL_STREAM,
    LOG_STREAM,
    StreamSetupError,
    ensure_streams,
    heads_stream_name,
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

if TYPE_CHECKING:
    from conftest import NatsConnect


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
        "ca",
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
    # its own region's votes and evidence, and certificate requests for its own region (cctf.ca)
    assert agent.publish_allow == (
        "cctf.v1.vote.us-east.>",
        "cctf.v1.evidence.us-east.>",
        "cctf.v1.ca.issue.us-east.>",
    )
    ca = permissions_for("ca", DEFAULT_REGIONS)  # cctf ca serve: its requests and its log only
    assert ca is not None and ca.allow_responses
    assert ca.subscribe_allow == ("_INBOX.ca.>", "cctf.v1.ca.>")
    assert [s for s in ca.publish_allow if not s.startswith("$JS.")] == [
        "cctf.v1.log.ca",
        "cctf.v1.ca.admin.>",
    ]
    assert all("CCTF_LOG" in s or s == "$JS.API.STREAM.NAMES" for s in ca.publish_allow[2:])
    assert agent.subscribe_allow == ("_INBOX.agent-us-east.>",)
    client = permissions_for("client", DEFAULT_REGIONS)
    assert client is not None
    # the bus subjects a client publishes on: the heads it gossips (core, no stream stores it) and
    # the log API (request-reply)
    assert [s for s in client.publish_allow if s.startswith("cctf.v1.")] == [
        "cctf.v1.gossip.>",
        "cctf.v1.logapi.>",
    ]
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
        *(heads_stream_name(r) for r in DEFAULT_REGIONS),
        CONTROL_STREAM,
        LOG_STREAM,
    }
    log = await js.stream_info(LOG_STREAM)
    assert log.config.subjects == ["cctf.v1.log.>"] and log.config.max_age in (0, None)
    assert log.config.discard == nats.js.api.DiscardPolicy.NEW and log.config.deny_purge
    control = await js.stream_info(CONTROL_STREAM)
    assert control.config.subjects == ["cctf.v1.control.>", "cctf.v1.operator.>"]
    assert control.config.deny_delete and control.config.deny_purge and control.config.allow_direct
    votes = await js.stream_info("CCTF_VOTES_US_EAST")
    assert votes.config.subjects == ["cctf.v1.vote.us-east.>", "cctf.v1.evidence.us-east.>"]
    assert votes.config.duplicate_window == 120.0
    assert votes.config.retention == nats.js.api.RetentionPolicy.INTEREST
    assert votes.config.discard == nats.js.api.DiscardPolicy.NEW
    assert votes.config.discard_new_per_subject is True
    verdicts = await js.stream_info("CCTF_VERDICTS_EU_WEST")
    assert verdicts.config.subjects == ["cctf.v1.verdict.eu-west.>"]
    assert verdicts.config.allow_direct is True
    assert verdicts.config.max_msgs_per_subject == 64
    heads = await js.stream_info("CCTF_HEADS_EU_WEST")
    assert heads.config.subjects == ["cctf.v1.head.eu-west.>"]
    assert heads.config.allow_direct is True and heads.config.max_msgs_per_subject == 1
    assert heads.config.discard == nats.js.api.DiscardPolicy.OLD
    # idempotent
    await setup_streams(js, fabric.regions)

    await keep_votes(js, "us-east")
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
    await setup_streams(admin.jetstream(), nats_single.regions)
    await keep_votes(admin.jetstream(), "us-east")
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
    assert await vote_count(admin.jetstream(), "us-east") == 2


async def test_regional_pinning_is_enforced_by_the_server(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await setup_streams(ajs, nats_single.regions)
    for region in ("us-east", "eu-west"):
        await keep_votes(ajs, region)
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
    assert await vote_count(ajs, "us-east") == 1
    assert await vote_count(ajs, "eu-west") == 0
    assert await nothing_stored(ajs, "CCTF_VOTES_EU_WEST", "cctf.v1.vote.eu-west.a1")
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
    # ... and the region's vote stream holds its evidence, never another region's
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish("cctf.v1.evidence.eu-west.a1", b"forged", timeout=0.5)
    ack = await js.publish("cctf.v1.evidence.us-east.a1", b"genuine-js")
    assert ack.stream == "CCTF_VOTES_US_EAST"
    last = await ajs.get_last_msg("CCTF_VOTES_US_EAST", "cctf.v1.evidence.us-east.a1")
    assert last.data == b"genuine-js"
    assert await nothing_stored(ajs, "CCTF_VOTES_EU_WEST", "cctf.v1.evidence.eu-west.a1")
    assert await vote_count(ajs, "us-east") == 3  # the ballot, the core and the JetStream evidence
    assert await vote_count(ajs, "eu-west") == 0

    # no verdicts, no subscriptions outside _INBOX
    await agent.publish("cctf.v1.verdict.us-east.x.A", b"forged")
    await agent.subscribe("cctf.v1.vote.>")
    await agent.flush()
    await errors.wait_for('publish to "cctf.v1.verdict.us-east.x.A"')
    await errors.wait_for('subscription to "cctf.v1.vote.>"')
    assert await nothing_stored(ajs, "CCTF_VERDICTS_US_EAST", "cctf.v1.verdict.us-east.x.A")
    assert await vote_count(ajs, "us-east") == 3


async def test_client_reads_verdicts_but_cannot_publish_or_change_streams(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await setup_streams(ajs, nats_single.regions)
    await keep_votes(ajs, "us-east")
    coordinator = await nats_connect(nats_single, "coordinator")
    cjs = coordinator.jetstream()
    subject = "cctf.v1.verdict.us-east.example.A"
    ack = await cjs.publish(subject, b"signed-verdict", headers={"Nats-Msg-Id": "v1"})
    assert ack.stream == "CCTF_VERDICTS_US_EAST"

    errors = ErrorLog()
    client = await nats_connect(nats_single, "client", error_cb=errors)
    js = jetstream(client, timeout=1.0)
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
    assert await vote_count(ajs, "us-east") == 0


async def test_coordinator_consumes_votes_but_cannot_vote_or_delete(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await nats_connect(nats_single, "admin")
    ajs = admin.jetstream()
    await setup_streams(ajs, nats_single.regions)
    errors = ErrorLog()
    coordinator = await nats_connect(nats_single, "coordinator", error_cb=errors)
    js = coordinator.jetstream(timeout=1.0)
    stream = votes_stream_name("eu-west")
    psub = await js.pull_subscribe("cctf.v1.vote.eu-west.>", durable="coordinator", stream=stream)
    await keep_votes(ajs, "eu-west")
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
    assert await vote_count(ajs, "eu-west") == 1  # still held for the "keep" durable
