"""Red team, KNOWN HOLE (strict xfail): a reply subject makes the server write into any stream.

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

The defence needs the account layout to change (streams in an account of their own that publishers
reach through *service* imports, whose replies the server rewrites to ``_R_.`` subjects), which is
beyond a surgical fix; see docs/threat-model.md. Remove the xfail when that lands.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams, verdict_stream_name, votes_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

VERDICT = "cctf.v1.verdict.us-east.example_com.A"


@pytest.mark.xfail(strict=True, reason="reply-subject injection: needs a separate stream account")
async def test_no_credential_writes_into_a_stream_through_a_reply_subject(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin = (await nats_connect(nats_single, "admin")).jetstream(timeout=2)
    await ensure_streams(admin, nats_single.regions, 1)
    coord_nc = await nats_connect(nats_single, "coordinator")
    coord = coord_nc.jetstream(timeout=2)
    # the coordinator's durable keeps eu-west's (interest-retention) vote stream storing
    await coord.add_consumer(
        votes_stream_name("eu-west"),
        ConsumerConfig(durable_name="coord-eu-west", ack_policy=AckPolicy.EXPLICIT),
    )
    await coord.publish(VERDICT, b"genuine-verdict", headers={MSG_ID: "v1"})

    agent = await nats_connect(nats_single, "agent-us-east")
    client = await nats_connect(nats_single, "client")
    await agent.publish("cctf.v1.vote.us-east.agent-us-east", b"x", reply="cctf.v1.vote.eu-west.a")
    await agent.publish("cctf.v1.vote.us-east.agent-us-east", b"y", reply=VERDICT)
    info_api = f"$JS.API.STREAM.INFO.{verdict_stream_name('us-east')}"
    await client.publish(info_api, b"", reply=VERDICT)
    for nc in (agent, client):
        await nc.flush()
    await coord_nc.flush()

    # nothing but the agents of eu-west may add to eu-west's vote stream, and the latest message of
    # a verdict subject is the coordinator's (watched for 2 s: the stores happen asynchronously)
    deadline = time.monotonic() + 2
    while True:
        last = await admin.get_last_msg(verdict_stream_name("us-east"), VERDICT)
        stored = (await admin.stream_info(votes_stream_name("eu-west"))).state.messages
        if (stored, last.data) != (0, b"genuine-verdict") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert (stored, last.data) == (0, b"genuine-verdict")
