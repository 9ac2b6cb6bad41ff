"""Red team: the server pushes a consumer's deliveries to any subject that has a subscriber.

A ``client`` (every relying party holds that credential) may create ephemeral consumers on verdict
streams and on the control stream, and nats-server does not check a push consumer's
``deliver_subject`` against the creator's permissions: it delivers there as soon as *someone*
subscribes to it, and a stream listening on that subject would store every delivery, displacing the
real messages there.

The live path (design D1) needs core subscribers on stream subjects: coordinators receive every
ballot and evidence message (``cctf.v1.vote.>``, ``cctf.v1.evidence.>``) and every CA log record
(``cctf.v1.log.ca``), clients every verdict of their region. So interest exists. Defence: every message that a restricted role may consume carries
``Nats-Expected-Stream`` naming the one stream that may store it (verdicts, safe-mode announcements,
operator commands; ballots and evidence too), and a push delivery keeps the original headers, so any
other stream refuses the copy; a consumer delivering into its own stream is refused by the server at
creation ("deliver subject forms a cycle").
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from cctf.bus.accounts import CLIENT_JS_API_PREFIX
from cctf.bus.headers import MSG_ID
from cctf.bus.publisher import Publisher
from cctf.bus.streams import LOG_STREAM, ensure_streams, verdict_stream_name, votes_stream_name
from cctf.clock import SYSTEM_CLOCK
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

SOURCE = verdict_stream_name("us-east")
TARGETS = {  # deliver subject -> the stream listening there
    "cctf.v1.verdict.eu-west.example_com.A": verdict_stream_name("eu-west"),
    "cctf.v1.vote.eu-west.agent-eu-west": votes_stream_name("eu-west"),
    "cctf.v1.log.ca": LOG_STREAM,  # the coordinators' live copy of the CA log (cctf.ca.follow)
}


async def _push_consumer(nc: Any, deliver_subject: str) -> dict[str, Any]:
    body = {
        "stream_name": SOURCE,
        "config": {
            "deliver_subject": deliver_subject,
            "deliver_policy": "all",
            "ack_policy": "none",
            "inactive_threshold": 600 * 10**9,
        },
    }
    create = f"{CLIENT_JS_API_PREFIX}.CONSUMER.CREATE.{SOURCE}"
    reply = await nc.request(create, json.dumps(body).encode(), 2)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def _stored(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_copies_pushed_onto_another_streams_subject_are_refused(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin_nc = await nats_connect(nats_single, "admin")
    admin = admin_nc.jetstream(timeout=2)
    await ensure_streams(admin, nats_single.regions, 1)
    await admin.add_consumer(votes_stream_name("eu-west"), durable_name="keep")  # interest: store
    coord = await nats_connect(nats_single, "coordinator")
    publisher = Publisher(coord, SYSTEM_CLOCK, timeout_s=2)
    stop = asyncio.Event()
    for i in range(3):  # genuine (here: stand-in) verdicts of us-east, published as coordinators do
        r = await publisher.publish(
            f"cctf.v1.verdict.us-east.n{i}.A",
            b"v%d" % i,
            f"v{i}",
            SYSTEM_CLOCK.now_ms() + 10_000,
            stop,
            expected_stream=SOURCE,
        )
        assert r.outcome.value == "published"

    # the live path's core subscribers give every deliver subject interest
    for subject in TARGETS:
        await coord.subscribe(subject)
    client = await nats_connect(nats_single, "client")
    await client.subscribe("cctf.v1.verdict.eu-west.>")
    await coord.flush()
    await client.flush()
    names = {}
    for subject in TARGETS:
        answer = await _push_consumer(client, subject)
        assert "error" not in answer, answer
        names[subject] = answer["name"]
    # into its own stream: refused by the server at creation
    own = await _push_consumer(client, "cctf.v1.verdict.us-east.other.A")
    assert "error" in own and "cycle" in own["error"]["description"], own

    vote_target = names["cctf.v1.vote.eu-west.agent-eu-west"]
    deadline = time.monotonic() + 5  # the coordinator's subscription gives this one interest
    while (await admin.consumer_info(SOURCE, vote_target)).delivered.consumer_seq < 3:
        assert time.monotonic() < deadline, "the copies were never pushed"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    for stream in TARGETS.values():
        assert await _stored(admin, stream) == 0, f"{stream} stored a copy"

    # control (the attack is real): a message without the header is copied and stored (an
    # unrestricted subscriber in CCTF gives the verdict target interest; the client's own live
    # subscription, a cross-account stream import, gives a push consumer none)
    await admin_nc.subscribe("cctf.v1.verdict.eu-west.example_com.A")
    await admin_nc.flush()
    await admin.publish("cctf.v1.verdict.us-east.bare.A", b"bare", headers={MSG_ID: "bare"})
    deadline = time.monotonic() + 10
    while await _stored(admin, TARGETS["cctf.v1.verdict.eu-west.example_com.A"]) < 1:
        assert time.monotonic() < deadline, "control: deliveries never reached the verdict stream"
        await asyncio.sleep(0.1)
