"""The resolver agent: config validation, ballot building, and the real loop against a real nats-server
and real fault-injecting DNS servers on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from wirefactories import make_identity

from cctf.agents.ballot import (
    ballot_id_secret,
    ballot_msg_id,
    build_ballot,
)
from cctf.agents.canonical import Transport, VoteStatus
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.resolver import MSG_ID_HEADER, BallotReport, ResolverAgent
from cctf.bus.streams import ensure_streams, votes_stream_config, votes_stream_name
from cctf.bus_schemas.envelope import MessageType, Reason, Rejected, decode_envelope, seal
from cctf.bus_schemas.messages import Ballot, answer_digest, decode_ballot, encode
from cctf.bus_schemas.subjects import vote_subject
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.zone import demo_zone
from cctf.clock import FakeClock
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import save_signing_key
from cctf.crypto.trust import TrustConfig
from cctf.devfabric.nats import NatsFabric

HOST = "127.0.0.1"
REGION = "us-east"
AGENT = "agent-1"
FORGED = "203.0.113.66"
ME = make_identity(AGENT, REGION)
TRUST = TrustConfig([ME.entry])

WWW = ("www.demo.test.", "A")
API = ("api.demo.test.", "A")
WWW6 = ("www.demo.test.", "AAAA")
HONEST = {
    WWW: ["www.demo.test. A 192.0.2.10"],
    API: ["api.demo.test. A 192.0.2.20"],
    WWW6: ["www.demo.test. AAAA 2001:db8::10"],
}

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
async def dns_servers() -> AsyncIterator[list[FaultyDnsServer]]:
    servers = [FaultyDnsServer(demo_zone(), HOST, 0) for _ in range(4)]
    for srv in servers:
        await srv.start()
    try:
        yield servers
    finally:
        for srv in servers:
            await srv.stop()


def specs_for(
    servers: list[FaultyDnsServer], transports: list[Transport] | None = None
) -> list[ResolverSpec]:
    transports = transports or [Transport.UDP] * len(servers)
    return [
        ResolverSpec(f"r{i + 1}", HOST, srv.port, transports[i]) for i, srv in enumerate(servers)
    ]


VOTES = votes_stream_name(REGION)


async def votes_js(fabric: NatsFabric, nats_connect: Any) -> Any:
    """The region's vote stream, with a consumer that never acknowledges: the interest-retention
    stream keeps every ballot, so a test can read them back."""
    admin = await nats_connect(fabric, "admin")
    js = admin.jetstream()
    await ensure_streams(js, [REGION], 1)
    await js.add_consumer(
        VOTES, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT)
    )
    return js


async def stream_msgs(js: Any) -> list[Any]:
    info = await js.stream_info(VOTES)
    first, last = info.state.first_seq, info.state.last_seq
    if info.state.messages == 0:
        return []
    return [await js.get_msg(VOTES, seq) for seq in range(first, last + 1)]


def verify(data: bytes, subject: str, round_ms: int) -> Ballot:
    """Verify with the coordinator's verifier, at the envelope's own issue time (deterministic)."""
    clock = FakeClock(decode_envelope(data).iat)
    verifier = BallotVerifier(TRUST, clock, rounds=RoundPolicy(round_ms=round_ms))
    return verifier.verify(data, subject)


def make_agent(nc: Any, specs: list[ResolverSpec], **kw: Any) -> ResolverAgent:
    args: dict[str, Any] = {
        "agent": AGENT,
        "region": REGION,
        "key": ME.key,
        "resolvers": specs,
        "names": [WWW, API, WWW6],
        "nc": nc,
        "round_ms": 400,
        "query_deadline_ms": 250,
    }
    args.update(kw)
    return ResolverAgent(**args)


async def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------ the loop, real NATS + DNS


async def test_agent_publishes_one_signed_ballot_per_round(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    js = await votes_js(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    specs = specs_for(dns_servers, [Transport.UDP, Transport.TCP, Transport.UDP, Transport.TCP])
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs, on_ballot=reports.append)
    stats = await agent.run(rounds=2)

    assert stats.rounds == 2 and stats.ballots_published == 2 and stats.ballots_failed == 0
    assert [r.ok for r in reports] == [True, True]
    assert reports[1].round == reports[0].round + 1
    msgs = await stream_msgs(js)
    assert len(msgs) == 2
    subject = vote_subject(REGION, AGENT)
    for msg, report in zip(msgs, reports, strict=True):
        assert msg.subject == subject == "cctf.v1.vote.us-east.agent-1"
        assert msg.headers[MSG_ID_HEADER] == ballot_msg_id(
            AGENT, report.round, secret=ballot_id_secret(ME.key)
        )
        ballot = verify(msg.data, msg.subject, 400)
        assert (ballot.agent, ballot.region, ballot.round) == (AGENT, REGION, report.round)
        assert len(ballot.votes) == 3 * 4 == report.votes
        got = {(v.qname, v.qtype, v.resolver_id) for v in ballot.votes}
        assert got == {(n, t, s.id) for n, t in (WWW, API, WWW6) for s in specs}
        for v in ballot.votes:
            assert v.status is VoteStatus.ANSWER, v
            assert list(v.answer) == HONEST[(v.qname, v.qtype)]
            assert v.answer_digest == answer_digest(0, HONEST[(v.qname, v.qtype)])
            assert v.transport is specs[int(v.resolver_id[1:]) - 1].transport
        # issued inside the round, after the query deadline at the latest (plus scheduling slack)
        start = ballot.round * 400
        assert start <= ballot.issued_ms <= start + 250 + 400
    # a ballot replayed onto another region's subject fails verification
    with pytest.raises(Rejected) as info:
        verify(msgs[0].data, vote_subject("eu-west", AGENT), 400)
    assert info.value.reason is Reason.SIGNATURE


async def test_blackholed_and_poisoned_resolvers(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    js = await votes_js(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    dns_servers[2].set_faults(Faults(blackhole=True))
    dns_servers[3].set_faults(Faults(poison=FORGED))
    specs = specs_for(dns_servers)
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs, names=[WWW, API], on_ballot=reports.append)
    await agent.run(rounds=1)

    assert len(reports) == 1 and reports[0].ok
    assert reports[0].statuses == {"answer": 6, "timeout": 2}
    (msg,) = await stream_msgs(js)
    ballot = verify(msg.data, msg.subject, 400)
    start = ballot.round * 400
    assert ballot.issued_ms - start <= 250 + 150, "the blackhole must not stretch the round"
    by = {(v.qname, v.resolver_id): v for v in ballot.votes}
    for name in (WWW, API):
        honest = answer_digest(0, HONEST[name])
        assert by[(name[0], "r1")].answer_digest == by[(name[0], "r2")].answer_digest == honest
        hole = by[(name[0], "r3")]
        assert hole.status is VoteStatus.TIMEOUT and hole.answer_digest == b"" and hole.answer == ()
        poisoned = by[(name[0], "r4")]
        assert poisoned.status is VoteStatus.ANSWER
        assert poisoned.answer == (f"{name[0]} A {FORGED}",)
        assert poisoned.answer_digest == answer_digest(0, poisoned.answer) != honest


async def test_same_msg_id_lands_once(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    js = await votes_js(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    agent_js = nc.jetstream()
    subject = vote_subject(REGION, AGENT)
    now = int(time.time() * 1000)
    ballot = build_ballot(AGENT, REGION, now // 400, [], now)
    data = seal(ME.key, subject, MessageType.BALLOT, encode(ballot), now_ms=now, lifetime_ms=30_000)
    msg_id = ballot_msg_id(AGENT, ballot.round, secret=ballot_id_secret(ME.key))
    first = await agent_js.publish(subject, data, headers={MSG_ID_HEADER: msg_id})
    second = await agent_js.publish(subject, data, headers={MSG_ID_HEADER: msg_id})
    assert not first.duplicate and second.duplicate and first.seq == second.seq

    # the agent itself: running the same round twice publishes a second ballot under the same id,
    # which the stream drops; one ballot per agent per round
    agent = make_agent(
        nc, specs_for(dns_servers[:2]), names=[WWW], round_ms=1000, query_deadline_ms=200
    )
    round_ = int(time.time() * 1000) // 1000
    r1 = await agent.run_round(round_)
    r2 = await agent.run_round(round_)
    assert r1.ok and not r1.duplicate and r2.ok and r2.duplicate
    assert agent.stats.duplicates == 1 and agent.stats.ballots_published == 2
    msgs = await stream_msgs(js)
    assert [m.headers[MSG_ID_HEADER] for m in msgs] == [
        msg_id,
        ballot_msg_id(AGENT, round_, secret=ballot_id_secret(ME.key)),
    ]


async def test_publish_retries_then_gives_up_without_stream(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    # no CCTF_VOTES stream: every attempt gets "no responders"; the agent retries with backoff until
    # the round's end, gives up, and the next round runs on time
    nc = await nats_connect(nats_single, "agent-us-east")
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs_for(dns_servers[:1]), names=[WWW], on_ballot=reports.append)
    t0 = time.monotonic()
    stats = await agent.run(rounds=2)
    assert time.monotonic() - t0 < 3 * 0.4 + 0.5
    assert [r.ok for r in reports] == [False, False]
    assert all(r.attempts >= 2 for r in reports), reports
    assert all(r.publish_ms < 400 for r in reports)
    assert reports[1].round == reports[0].round + 1
    assert stats.ballots_failed == 2 and stats.rounds_skipped == 0


async def test_overrunning_round_skips_missed_rounds(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    await votes_js(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    reports: list[BallotReport] = []

    def stall_once(report: BallotReport) -> None:
        reports.append(report)
        if len(reports) == 1:
            # block the event loop until 120 ms into round r+2: the agent misses two boundaries
            time.sleep(max(0.0, ((report.round + 2) * 200 + 120) / 1000 - time.time()))

    agent = make_agent(
        nc,
        specs_for(dns_servers[:1]),
        names=[WWW],
        round_ms=200,
        query_deadline_ms=80,
        max_start_lag_ms=100,
        on_ballot=stall_once,
    )
    stats = await agent.run(rounds=3)
    rounds = [r.round for r in reports]
    assert len(rounds) == 3 and all(r.ok for r in reports)
    assert rounds[1] == rounds[0] + 3, rounds  # the stalled-over rounds were skipped, not replayed
    assert rounds[2] == rounds[1] + 1
    assert stats.rounds_skipped == rounds[1] - rounds[0] - 1


async def test_a_round_window_is_not_made_up_after_missed_rounds(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    """``run(rounds, first_round=f)`` votes in rounds f..f+rounds-1 only (the demo gives every
    agent the same window): rounds missed in the window are skipped, never published later."""
    await votes_js(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    reports: list[BallotReport] = []

    def stall_once(report: BallotReport) -> None:
        reports.append(report)
        if len(reports) == 1:  # block the loop until 300 ms into round f+2 (lag > 250 ms)
            time.sleep(max(0.0, ((report.round + 2) * 400 + 300) / 1000 - time.time()))

    agent = make_agent(
        nc,
        specs_for(dns_servers[:1]),
        names=[WWW],
        round_ms=400,
        query_deadline_ms=150,
        max_start_lag_ms=250,
        on_ballot=stall_once,
    )
    first = int(time.time() * 1000) // 400 + 2
    stats = await agent.run(rounds=3, first_round=first)
    assert [r.round for r in reports] == [first] and reports[0].ok, reports
    assert stats.rounds == 1 and stats.rounds_skipped == 2


async def test_agent_survives_nats_server_restart(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    js = await votes_js(nats_single, nats_connect)
    nc = await nats_connect(
        nats_single, "agent-us-east", max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs_for(dns_servers[:2]), names=[WWW], on_ballot=reports.append)
    task = asyncio.create_task(agent.run())
    server = nats_single.servers[0]
    try:
        await wait_for(lambda: any(r.ok for r in reports), 5, "a first ballot")
        # 1. a plain restart (the agent may or may not have a round in flight)
        await asyncio.to_thread(server.restart)
        after = reports[-1].round
        await wait_for(
            lambda: sum(r.ok and r.round > after for r in reports) >= 2, 20, "ballots after restart"
        )
        # 2. an outage long enough for a whole round to fail, then the server comes back
        await asyncio.to_thread(server.stop)
        down = len(reports)
        await wait_for(lambda: any(not r.ok for r in reports[down:]), 5, "a failed ballot")
        await asyncio.to_thread(server.start)
        back = reports[-1].round
        await wait_for(
            lambda: sum(r.ok and r.round > back for r in reports) >= 2, 20, "ballots after outage"
        )
    finally:
        agent.stop()
        await asyncio.wait_for(task, 5)
    assert not task.exception()
    failed = [r for r in reports if not r.ok]
    assert failed and all(r.attempts >= 2 and r.publish_ms < 400 + 100 for r in failed), failed
    assert agent.stats.ballots_failed == len(failed)
    # the admin connection gave up during the outage: read the stream with a fresh one
    js = await votes_js(nats_single, nats_connect)
    msgs = await stream_msgs(js)
    landed = [decode_ballot(decode_envelope(m.data).payload).round for m in msgs]
    assert len(landed) == len(set(landed))  # at most one ballot per round, retries included
    assert {r.round for r in reports if r.ok} <= set(landed)
    assert max(landed) > back
    ids = [m.headers[MSG_ID_HEADER] for m in msgs]
    assert ids == [ballot_msg_id(AGENT, r, secret=ballot_id_secret(ME.key)) for r in landed]
    for m in msgs:
        verify(m.data, m.subject, 400)


# --------------------------------------------------------------------------------------------- CLI


async def _cli_config(tmp_path: Path, fabric: NatsFabric, servers: list[FaultyDnsServer]) -> Path:
    creds = fabric.write_credentials(tmp_path / "creds.json")
    key_path = tmp_path / f"{AGENT}.key.json"
    save_signing_key(key_path, ME.key)
    (tmp_path / f"{AGENT}.pub.json").write_text(json.dumps(ME.entry.to_json()))
    cfg = {
        "agent": AGENT,
        "region": REGION,
        "key_file": key_path.name,
        "nats": {"credentials": creds.name, "user": "agent-us-east"},
        "resolvers": [s.to_dict() for s in specs_for(servers[:2])],
        "names": [list(WWW)],
        "round_ms": 400,
        "query_deadline_ms": 200,
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(cfg))
    return path


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        "agent",
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _until(cond: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.1)


async def test_cli_runs_n_rounds_and_stops_cleanly_on_sigterm(
    tmp_path: Path, nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    js = await votes_js(nats_single, nats_connect)
    config = await _cli_config(tmp_path, nats_single, dns_servers)

    proc = await _spawn("--config", str(config), "--rounds", "2", "--log-level", "info")
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert len(await stream_msgs(js)) == 2
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("event") == "ballot.published") == 2
    password = nats_single.users["agent-us-east"].password
    assert password not in err.decode() and password not in out.decode()

    proc = await _spawn("--config", str(config))
    try:

        async def more() -> bool:
            return len(await stream_msgs(js)) >= 3

        await _until(more, 15)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b'"agent.stop"' in err

    bad = tmp_path / "bad.json"
    cfg = json.loads(config.read_text())
    cfg["nats"]["user"] = "agent-eu-west"
    bad.write_text(json.dumps(cfg))
    proc = await _spawn("--config", str(bad), "--rounds", "1")
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"agent-us-east" in err


# ------------------------------------------------------- the engine refusing a publish (own stream)


async def test_a_full_subject_is_a_counted_refusal_and_the_agent_keeps_going(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    # the region's stream, bounded to one unacknowledged ballot per agent subject (discard new)
    admin = await nats_connect(nats_single, "admin")
    js = admin.jetstream()
    config = dataclasses.replace(votes_stream_config(REGION), max_msgs_per_subject=1)
    await js.add_stream(config)
    await js.add_consumer(
        VOTES, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT)
    )
    nc = await nats_connect(nats_single, "agent-us-east")
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs_for(dns_servers[:1]), names=[WWW], on_ballot=reports.append)
    assert agent.stream == VOTES
    stats = await agent.run(rounds=3)
    assert [r.ok for r in reports] == [True, False, False]
    assert [r.error for r in reports] == [None, "stream_full", "stream_full"]
    assert stats.ballots_published == 1 and stats.ballots_failed == 2 and stats.round_errors == 0
    assert stats.publish_failures["stream_full"] >= 2  # retried until each round's end
    assert sum(stats.publish_failures.values()) == stats.publish_failures["stream_full"]
    assert len(await stream_msgs(js)) == 1


async def test_a_subject_bound_to_another_stream_is_refused_not_retried(
    nats_single: NatsFabric, nats_connect: Any, dns_servers: list[FaultyDnsServer]
) -> None:
    # the old single vote stream holds the subject: the agent expects its region's stream
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), [REGION], 1, votes_per_region=False)
    nc = await nats_connect(nats_single, "agent-us-east")
    reports: list[BallotReport] = []
    agent = make_agent(nc, specs_for(dns_servers[:1]), names=[WWW], on_ballot=reports.append)
    stats = await agent.run(rounds=2)
    assert [(r.ok, r.error, r.attempts) for r in reports] == [(False, "wrong_stream", 1)] * 2
    assert stats.publish_failures["wrong_stream"] == 2 and stats.round_errors == 0
    # with no expectation it lands in whichever stream holds the subject
    agent = make_agent(nc, specs_for(dns_servers[:1]), names=[WWW], stream=None)
    assert (await agent.run(rounds=1)).ballots_published == 1
