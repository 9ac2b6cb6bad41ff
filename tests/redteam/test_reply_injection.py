"""Red team: a reply subject must not make the server write into a stream.

nats-server checks a publisher's permissions on the subject, never on the reply subject, and answers
to the reply subject itself: a JetStream publish acknowledgement (``{"stream":...,"seq":...}``), a
JetStream API response, an error response. All are published inside the ``CCTF`` account, so a stream
listening on the reply subject stores them. Hence, with no more than its own permissions:

* an agent of one region fills another region's vote stream (each publish on its own vote subject
  with ``reply=cctf.v1.vote.<other>.<agent>`` stores one ack there; once its own stream refuses, the
  error responses keep coming), defeating "a flooding region fills only its own stream";
* any credential (agent, client, coordinator) stores garbage as the latest message of any verdict
  subject, displacing the genuine verdict (``max_msgs_per_subject``, discard old): ``cctf check``
  then finds no valid verdict for that name.

Defence (``cctf.bus.accountmap.accounts_for``): publishers that must not write arbitrary subjects of
``CCTF`` live in accounts of their own and reach ``CCTF`` only through *service* imports, whose reply
subjects the server rewrites to ``_R_.`` subjects; the answers go back to the requester's own
account, where no stream listens. Each region's agents have their account ``AGENT_<REGION>``, the
client its account ``CLIENTS`` (its JetStream API under the prefix ``JS.CCTF.API``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from nats.js.api import AckPolicy, ConsumerConfig

from cctf.bus.accounts import CLIENT_JS_API_PREFIX
from cctf.bus.connect import jetstream
from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams, verdict_stream_name, votes_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

VERDICT = "cctf.v1.verdict.us-east.example_com.A"


async def _setup(fabric: NatsFabric, nats_connect: NatsConnect) -> Any:
    admin = (await nats_connect(fabric, "admin")).jetstream(timeout=2)
    await ensure_streams(admin, fabric.regions, 1)
    coord_nc = await nats_connect(fabric, "coordinator")
    coord = coord_nc.jetstream(timeout=2)
    # the coordinator's durable keeps eu-west's (interest-retention) vote stream storing
    await coord.add_consumer(
        votes_stream_name("eu-west"),
        ConsumerConfig(durable_name="coord-eu-west", ack_policy=AckPolicy.EXPLICIT),
    )
    await coord.publish(VERDICT, b"genuine-verdict", headers={MSG_ID: "v1"})
    return admin


async def _untouched(admin: Any) -> tuple[int, bytes]:
    """(messages in eu-west's vote stream, latest data of VERDICT), watched for 2 s: the stores
    would happen asynchronously."""
    deadline = time.monotonic() + 2
    while True:
        last = await admin.get_last_msg(verdict_stream_name("us-east"), VERDICT)
        stored = (await admin.stream_info(votes_stream_name("eu-west"))).state.messages
        if (stored, last.data) != (0, b"genuine-verdict") or time.monotonic() > deadline:
            return stored, last.data
        await asyncio.sleep(0.1)


async def test_an_agent_writes_into_no_stream_through_a_reply_subject(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await _setup(nats_single, nats_connect)
    agent = await nats_connect(nats_single, "agent-us-east")
    # its own vote subject (a PubAck answers) and its evidence subject (nobody answers)
    for subject in ("cctf.v1.vote.us-east.agent-us-east", "cctf.v1.evidence.us-east.a"):
        await agent.publish(subject, b"x", reply="cctf.v1.vote.eu-west.a")
        await agent.publish(subject, b"y", reply=VERDICT)
    await agent.flush()
    # nothing but the agents of eu-west may add to eu-west's vote stream, and the latest message of
    # a verdict subject is the coordinator's
    assert await _untouched(admin) == (0, b"genuine-verdict")
    # the agent's own publish still lands and is acknowledged on its inbox (service response)
    ack = await agent.jetstream(timeout=2).publish(
        "cctf.v1.vote.us-east.agent-us-east", b"z", stream=votes_stream_name("us-east")
    )
    assert ack.stream == votes_stream_name("us-east")


async def test_the_client_writes_into_no_stream_through_a_reply_subject(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = await _setup(nats_single, nats_connect)
    client = await nats_connect(nats_single, "client")
    stream = verdict_stream_name("us-east")
    # its granted API calls (answered: stream info, direct get) and a flow-control reply
    for subject in (
        f"{CLIENT_JS_API_PREFIX}.STREAM.INFO.{stream}",
        f"{CLIENT_JS_API_PREFIX}.DIRECT.GET.{stream}.{VERDICT}",
        f"{CLIENT_JS_API_PREFIX}.STREAM.NAMES",
        f"$JS.FC.{stream}.probe.abcd",
    ):
        await client.publish(subject, b"", reply=VERDICT)
        await client.publish(subject, b"", reply="cctf.v1.vote.eu-west.a")
    await client.flush()
    assert await _untouched(admin) == (0, b"genuine-verdict")
    # the client's own calls still get their answers (through the service imports)
    info = await jetstream(client, timeout=2).stream_info(stream)
    assert info.config.name == stream
