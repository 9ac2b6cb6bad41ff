"""Red team: a client's live subscription to head subjects must not give push deliveries a target.

Clients core-subscribe to ``cctf.v1.head.>`` (the live copy of log heads, design D3), and a client
may create ephemeral push consumers on the streams it reads; nats-server does not check a push
consumer's ``deliver_subject`` against its creator's permissions (``test_push_delivery.py``). Were
the client's subscription interest in the streams' account, a consumer of one region's heads stream
aimed at another region's head subject would copy notes there, and the heads stream (one message
per subject, discard old) would store them over the genuine head: every subscriber fetching that
head would read a note of another size (refused, ``wrong_size``) and fail closed (``head_unknown``).

Defence: the client lives in account ``CLIENTS`` and receives heads through a *stream import*; the
server does not count that as interest for a push consumer's deliveries in ``CCTF`` (measured here),
and a consumer aimed at its own stream's subjects is refused ("forms a cycle"). The control at the
end shows the consumer delivers as soon as a subscriber inside ``CCTF`` has interest.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from cctf.bus.accounts import CLIENT_JS_API_PREFIX
from cctf.bus.headers import MSG_ID
from cctf.bus.reader import last_message
from cctf.bus.streams import ensure_streams, heads_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

STREAM = heads_stream_name("us-east")
SOURCE = heads_stream_name("eu-west")  # another stream the client reads: no "cycle" refusal
OLD = "cctf.v1.head.us-east.coord-a.5"
NEW = "cctf.v1.head.us-east.coord-a.7"


async def test_a_client_cannot_displace_a_stored_head(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin_nc = await nats_connect(nats_single, "admin")
    admin = admin_nc.jetstream(timeout=2)
    await ensure_streams(admin, nats_single.regions, 1)
    coord = (await nats_connect(nats_single, "coordinator")).jetstream(timeout=2)
    await coord.publish(OLD, b"genuine head 5", headers={MSG_ID: "head.coord-a.5"})
    await coord.publish(NEW, b"genuine head 7", headers={MSG_ID: "head.coord-a.7"})
    await coord.publish("cctf.v1.head.eu-west.coord-a.5", b"eu-west head 5")

    client = await nats_connect(nats_single, "client")
    got: list[bytes] = []

    async def record(msg: Any) -> None:
        got.append(msg.data)

    await client.subscribe("cctf.v1.head.>", cb=record)  # the live copy every client holds
    await client.flush()
    body = {
        "stream_name": SOURCE,
        "config": {
            "deliver_subject": NEW,
            "deliver_policy": "all",
            "ack_policy": "none",
            "inactive_threshold": 600 * 10**9,
        },
    }
    reply = await client.request(
        f"{CLIENT_JS_API_PREFIX}.CONSUMER.CREATE.{SOURCE}", json.dumps(body).encode(), 2
    )
    answer = json.loads(reply.data)
    assert "error" not in answer, answer
    await asyncio.sleep(1.0)  # a consumer with interest delivers within milliseconds
    info = await admin.consumer_info(SOURCE, answer["name"])
    assert info.delivered.consumer_seq == 0 and got == []
    assert await last_message(admin_nc, STREAM, NEW) == b"genuine head 7"

    # control (the test can fail): once a subscriber inside CCTF has interest, it delivers
    await admin_nc.subscribe(NEW)
    await admin_nc.flush()
    deadline = time.monotonic() + 10
    while (await admin.consumer_info(SOURCE, answer["name"])).delivered.consumer_seq == 0:
        assert time.monotonic() < deadline, "control: the consumer never delivered"
        await asyncio.sleep(0.1)
