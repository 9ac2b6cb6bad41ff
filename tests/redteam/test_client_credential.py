"""Red team: what the ``client`` credential (held by every relying party) can do to the fabric.

Holding it, every JetStream API call on the coordinator's durable consumer (pause, update, delete,
pull, ack, info) and on the vote streams (purge, delete, update, message delete) is refused by the
server, and ballots keep flowing to the coordinator and verdicts to the clients. An agent credential
cannot read other users' deliveries (``_INBOX.>`` and another user's inbox are refused).

Two coordinators: a stand-in that makes exactly the bus calls a coordinator makes (a durable pull
consumer per region vote stream, fetch, ack, verdict publish with ``Nats-Msg-Id``), to try every call
on one durable; and the real coordinator with five signing agents, whose verdicts the client verifies
before, during and after the attacks on all its durables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from wirefactories import make_ballot, make_vote, make_world, seal_ballot

from cctf.bus.accounts import CLIENT_JS_API_PREFIX, DEFAULT_REGIONS
from cctf.bus.connect import jetstream
from cctf.bus.headers import MSG_ID
from cctf.bus.streams import (
    ensure_streams,
    verdict_stream_name,
    votes_stream_config,
    votes_stream_name,
    votes_subjects,
)
from cctf.bus_schemas.envelope import verify_envelope
from cctf.bus_schemas.messages import MessageType, Outcome, decode_verdict
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.service import Coordinator
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

REGION = "us-east"
VOTES = votes_stream_name(REGION)
VERDICTS = verdict_stream_name(REGION)
DURABLE = "coord-us-east"
VERDICT_SUBJECT = "cctf.v1.verdict.us-east.example_com.A"


class Violations:
    def __init__(self) -> None:
        self.errors: list[str] = []

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def wait_for(self, action: str, subject: str, timeout_s: float = 3.0) -> None:
        needle = f'permissions violation for {action} to "{subject.lower()}"'
        deadline = time.monotonic() + timeout_s
        while not any(needle in e for e in self.errors):
            assert time.monotonic() < deadline, f"not refused: {action} {subject}; {self.errors}"
            await asyncio.sleep(0.02)


async def _refused(call: Callable[[], Awaitable[Any]]) -> None:
    """A JetStream API call the server drops: no response ever comes (timeout), or an error."""
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await call()


class Flow:
    """Agent -> vote stream -> coordinator durable -> verdict stream -> client, one round at a time."""

    def __init__(self, agent: Client, coordinator: Client, client: Client) -> None:
        self.agent = jetstream(agent, timeout=2)
        self.coord = jetstream(coordinator, timeout=2)
        self.client = jetstream(client, timeout=2)
        self.psub: Any = None
        self.round = 0

    async def start(self) -> None:
        await self.coord.add_consumer(
            VOTES,
            ConsumerConfig(
                durable_name=DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=votes_subjects(REGION),
                ack_wait=5,
                max_deliver=5,
            ),
        )
        self.psub = await self.coord.pull_subscribe_bind(durable=DURABLE, stream=VOTES)

    async def one_round(self) -> None:
        self.round += 1
        ballot = f"ballot-{self.round}".encode()
        ack = await self.agent.publish(
            "cctf.v1.vote.us-east.a1", ballot, headers={MSG_ID: f"b-{self.round}"}
        )
        assert ack.stream == VOTES
        msgs = await self.psub.fetch(1, timeout=3)
        assert [m.data for m in msgs] == [ballot]
        await msgs[0].ack_sync()
        verdict = f"verdict-{self.round}".encode()
        await self.coord.publish(VERDICT_SUBJECT, verdict, headers={MSG_ID: f"v-{self.round}"})
        got = await self.client.get_last_msg(VERDICTS, VERDICT_SUBJECT, direct=True)
        assert got.data == verdict


@pytest.fixture
async def flow(nats_single: NatsFabric, nats_connect: NatsConnect) -> Flow:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), nats_single.regions, 1)
    f = Flow(
        await nats_connect(nats_single, "agent-us-east"),
        await nats_connect(nats_single, "coordinator"),
        await nats_connect(nats_single, "client"),
    )
    await f.start()
    await f.one_round()
    return f


async def test_client_credential_cannot_touch_the_coordinator_consumer_or_vote_streams(
    nats_single: NatsFabric, nats_connect: NatsConnect, flow: Flow
) -> None:
    seen = Violations()
    nc = await nats_connect(nats_single, "client", error_cb=seen)
    js = jetstream(nc, timeout=0.5)
    api = CLIENT_JS_API_PREFIX  # the client reaches CCTF's JetStream API only there

    # the coordinator's durable: pause until 2099, retarget its filter, delete, read its state
    await _refused(lambda: js.pause_consumer(VOTES, DURABLE, "2099-01-01T00:00:00Z"))
    await seen.wait_for("publish", f"{api}.CONSUMER.PAUSE.{VOTES}.{DURABLE}")
    retarget = ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        filter_subject="cctf.v1.vote.us-east.nobody",
    )
    await _refused(lambda: js.add_consumer(VOTES, retarget))
    await _refused(lambda: js.delete_consumer(VOTES, DURABLE))
    await seen.wait_for("publish", f"{api}.CONSUMER.DELETE.{VOTES}.{DURABLE}")
    await _refused(lambda: js.consumer_info(VOTES, DURABLE))
    # the same through the unnamed (ephemeral) create subject, naming the durable in the body
    body = json.dumps({"stream_name": VOTES, "config": {"name": DURABLE, "ack_policy": "none"}})
    await _refused(lambda: nc.request(f"{api}.CONSUMER.CREATE.{VOTES}", body.encode(), 0.5))
    await seen.wait_for("publish", f"{api}.CONSUMER.CREATE.{VOTES}")

    # steal ballots: pull from it and acknowledge
    agent_js = flow.agent
    await agent_js.publish("cctf.v1.vote.us-east.a1", b"ballot-stolen?", headers={MSG_ID: "s"})
    steal = await js.pull_subscribe_bind(durable=DURABLE, stream=VOTES)
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await steal.fetch(1, timeout=0.5)
    await seen.wait_for("publish", f"{api}.CONSUMER.MSG.NEXT.{VOTES}.{DURABLE}")
    forged_ack = f"$JS.ACK.{VOTES}.{DURABLE}.1.2.2.{time.time_ns()}.0"
    await nc.publish(forged_ack, b"+ACK")
    await seen.wait_for("publish", forged_ack)

    # the vote streams: purge, delete, update, delete a message, list consumers
    await _refused(lambda: js.purge_stream(VOTES))
    await _refused(lambda: js.delete_stream(VOTES))
    await _refused(lambda: js.update_stream(votes_stream_config(REGION)))
    await _refused(lambda: js.delete_msg(VOTES, 1))
    await _refused(lambda: js.stream_info(VOTES))
    for verb in ("STREAM.PURGE", "STREAM.DELETE", "STREAM.UPDATE", "STREAM.MSG.DELETE"):
        await seen.wait_for("publish", f"{api}.{verb}.{VOTES}")
    # ... nor create a durable of its own on a verdict stream (its names cannot collide)
    durable = json.dumps({"stream_name": VERDICTS, "config": {"durable_name": DURABLE}})
    reply = await nc.request(f"{api}.CONSUMER.CREATE.{VERDICTS}", durable.encode(), 2)
    assert json.loads(reply.data)["error"]["err_code"] == 10020  # "expected to be ephemeral"
    await _refused(lambda: js.add_consumer(VERDICTS, durable_name="mine"))

    # nothing changed: the durable is there, not paused, same filter; the ballot waits for it
    admin = (await nats_connect(nats_single, "admin")).jetstream()
    info = await admin.consumer_info(VOTES, DURABLE)
    assert info.config.filter_subject == votes_subjects(REGION)
    assert not info.paused and info.config.pause_until is None
    assert info.num_pending == 1 and info.num_ack_pending == 0
    msgs = await flow.psub.fetch(1, timeout=3)
    assert [m.data for m in msgs] == [b"ballot-stolen?"]
    await msgs[0].ack_sync()
    # and the fabric keeps going: ballots reach the coordinator, verdicts the clients
    for _ in range(3):
        await flow.one_round()


async def test_client_consumer_pushing_into_a_vote_subject_stores_nothing(
    nats_single: NatsFabric, nats_connect: NatsConnect, flow: Flow
) -> None:
    # A client may create ephemeral consumers on verdict streams, and the server does not check the
    # deliver subject: it can make the server push stored verdicts to any subject. Nobody but admin
    # may subscribe to a stream subject, so the consumer never has interest and nothing is stored
    # (with a subscriber, a stream would store the deliveries: tests/redteam/test_push_delivery.py).
    nc = await nats_connect(nats_single, "client")
    body = {
        "stream_name": VERDICTS,
        "config": {"deliver_subject": "cctf.v1.vote.us-east.a1", "ack_policy": "none"},
    }
    create = f"{CLIENT_JS_API_PREFIX}.CONSUMER.CREATE.{VERDICTS}"
    reply = await nc.request(create, json.dumps(body).encode(), 2)
    assert "error" not in json.loads(reply.data)
    await asyncio.sleep(0.5)
    admin = (await nats_connect(nats_single, "admin")).jetstream()
    info = await admin.consumer_info(VOTES, DURABLE)
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert (await admin.stream_info(VOTES)).state.last_seq == flow.round
    await flow.one_round()


@pytest.mark.parametrize("user", ["agent-us-east", "client"])
async def test_no_credential_reads_other_users_deliveries(
    nats_single: NatsFabric, nats_connect: NatsConnect, flow: Flow, user: str
) -> None:
    seen = Violations()
    nc = await nats_connect(nats_single, user, error_cb=seen)
    got: list[str] = []

    async def record(msg: Any) -> None:
        got.append(msg.subject)

    for subject in ("_INBOX.>", "_INBOX.coordinator.>", "_INBOX.agent-eu-west.>", "$JS.ACK.>"):
        with contextlib.suppress(nats.errors.Error):
            await nc.subscribe(subject, cb=record)
        await seen.wait_for("subscription", subject)
    await nc.flush()
    for _ in range(2):  # the coordinator's pulls and acks travel meanwhile
        await flow.one_round()
    await nc.flush()
    assert got == []


# ----------------------------------------------------------------------------------------------
# the same attacks against the real coordinator, verdicts verified as a client would


NAMES = [f"n{i}.fabric.test." for i in range(5)]


async def _real_coordinator_round(
    agents: dict[str, Any], agent_nc: dict[str, Client], seen: dict[tuple[str, int], Any]
) -> None:
    """One round of signed ballots from all five agents; wait for every name's verified verdict."""
    now = SYSTEM_CLOCK.now_ms()
    round_ = now // 1000 + 1
    await asyncio.sleep((round_ * 1000 + 100 - now) / 1000)
    now = SYSTEM_CLOCK.now_ms()
    for region, agent in agents.items():
        votes = [
            make_vote(
                agent.principal, region, round_, qname=n, answer=("192.0.2.7",), resolver_id="r1"
            )
            for n in NAMES
        ]
        ballot = make_ballot(agent.principal, region, round_, votes=votes, issued_ms=now)
        await (
            agent_nc[region]
            .jetstream()
            .publish(agent.subject, seal_ballot(agent, ballot, now_ms=now), timeout=5)
        )
    deadline = time.monotonic() + 8
    while not all((n, round_) in seen for n in NAMES):
        assert time.monotonic() < deadline, f"round {round_}: verdicts missing"
        await asyncio.sleep(0.01)
    assert {seen[(n, round_)] for n in NAMES} == {Outcome.TRUSTED}


@pytest.mark.slow
async def test_the_real_coordinator_keeps_deciding_while_the_client_credential_attacks(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    world = make_world(DEFAULT_REGIONS)
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(admin.jetstream(), DEFAULT_REGIONS, 1)
    config = CoordinatorConfig(
        coordinator=world.coordinator.principal,
        region="us-east",
        rule=RuleConfig(k=3, n=5),
        electorate=[f"agent-{r}/r1" for r in DEFAULT_REGIONS],
        names=[(n, "A") for n in NAMES],
        verdict_regions=["us-east"],
        round_ms=1000,
        round_grace_ms=500,
    )
    coordinator = Coordinator(
        config,
        await nats_connect(nats_single, "coordinator"),
        key=world.coordinator.key,
        trust=world.trust,
        clock=SYSTEM_CLOCK,
    )
    agent_nc = {r: await nats_connect(nats_single, f"agent-{r}") for r in DEFAULT_REGIONS}
    violations = Violations()
    client = await nats_connect(nats_single, "client", error_cb=violations)
    seen: dict[tuple[str, int], Any] = {}

    async def on_verdict(msg: Any) -> None:  # read with the client credential, verified
        checked = verify_envelope(
            msg.data,
            msg.subject,
            expected_type=MessageType.VERDICT,
            role=Role.COORDINATOR,
            trust=world.trust,
            policy=SuitePolicy(),
            now_ms=SYSTEM_CLOCK.now_ms(),
        )
        v = decode_verdict(checked.envelope.payload)
        seen[(v.qname, v.round)] = v.outcome

    # as a relying party reads: an ordered consumer (core subscriptions to stream subjects are
    # refused to every restricted role, tests/redteam/test_push_delivery.py)
    await jetstream(client).subscribe(
        "cctf.v1.verdict.us-east.>",
        stream=verdict_stream_name("us-east"),
        cb=on_verdict,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    await coordinator.start()
    try:
        await _real_coordinator_round(world.agents, agent_nc, seen)
        ajs = admin.jetstream()
        targets = [(c.stream, c.spec.name) for c in coordinator._consumers]
        assert len(targets) == len(DEFAULT_REGIONS)
        before = {t: (await ajs.consumer_info(*t)).config for t in targets}
        js = jetstream(client, timeout=0.3)
        for stream, durable in targets:
            await _refused(
                lambda s=stream, d=durable: js.pause_consumer(s, d, "2099-01-01T00:00:00Z")
            )
            cfg = ConsumerConfig(durable_name=durable, filter_subject="cctf.v1.vote.nowhere.x")
            await _refused(lambda s=stream, c=cfg: js.add_consumer(s, c))
            await _refused(lambda s=stream, d=durable: js.delete_consumer(s, d))
            steal = await js.pull_subscribe_bind(durable=durable, stream=stream)
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await steal.fetch(1, timeout=0.3)
            await _refused(lambda s=stream: js.purge_stream(s))
            await _refused(lambda s=stream: js.delete_stream(s))
            pause = f"{CLIENT_JS_API_PREFIX}.CONSUMER.PAUSE.{stream}.{durable}"
            await seen_refusal(violations, pause)
        for target, config_before in before.items():
            info = await ajs.consumer_info(*target)
            assert info.config.filter_subject == config_before.filter_subject
            assert not info.paused
        for _ in range(2):  # verdicts keep flowing, verified by the client
            await _real_coordinator_round(world.agents, agent_nc, seen)
    finally:
        await coordinator.stop()


async def seen_refusal(violations: Violations, subject: str) -> None:
    await violations.wait_for("publish", subject)
