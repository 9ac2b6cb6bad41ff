"""Red team: the server pushes a consumer's deliveries to any subject that has a subscriber.

A ``client`` (every relying party holds that credential) may create ephemeral consumers on verdict
streams, and nats-server does not check a push consumer's ``deliver_subject`` against the creator's
permissions: it delivers there as soon as *someone* subscribes to it, and a stream listening on that
subject stores every delivery. A client that could also subscribe to a verdict subject (core) would
thereby copy genuine signed verdicts of one region or name onto another region's or name's verdict
subject, where they displace the real ones (``max_msgs_per_subject`` with discard old).

Defence: no role but ``admin`` may subscribe to a stream subject (core); every other user receives
only on its own inbox, so no restricted credential can give such a consumer the interest it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import nats.errors

from cctf.bus.accounts import CLIENT_JS_API_PREFIX
from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams, verdict_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

SOURCE = verdict_stream_name("us-east")
TARGET = verdict_stream_name("eu-west")
TARGET_SUBJECT = "cctf.v1.verdict.eu-west.example_com.A"


class Errors:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, exc: Exception) -> None:
        self.seen.append(str(exc).lower())


async def _push_consumer(nc: Any, deliver_subject: str) -> str:
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
    answer = json.loads(reply.data)
    assert "error" not in answer, answer
    return str(answer["name"])


async def _stored(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_no_restricted_credential_can_give_a_push_consumer_a_stream_subject(
    nats_single: NatsFabric, nats_connect: NatsConnect
) -> None:
    admin_nc = await nats_connect(nats_single, "admin")
    admin = admin_nc.jetstream(timeout=2)
    await ensure_streams(admin, nats_single.regions, 1)
    coord = (await nats_connect(nats_single, "coordinator")).jetstream(timeout=2)
    for i in range(3):  # genuine (here: stand-in) verdicts of us-east
        await coord.publish(
            f"cctf.v1.verdict.us-east.n{i}.A", b"v%d" % i, headers={MSG_ID: f"v{i}"}
        )

    errors: dict[str, Errors] = {}
    for user in ("client", "coordinator", "agent-us-east"):
        errors[user] = Errors()
        nc = await nats_connect(nats_single, user, error_cb=errors[user])
        got: list[bytes] = []

        async def record(msg: Any, got: list[bytes] = got) -> None:
            got.append(msg.data)

        for subject in (TARGET_SUBJECT, "cctf.v1.verdict.>", "cctf.v1.vote.>", "cctf.v1.>"):
            with contextlib.suppress(nats.errors.Error):
                await nc.subscribe(subject, cb=record)
        await nc.flush()

    client = await nats_connect(nats_single, "client")
    name = await _push_consumer(client, TARGET_SUBJECT)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not all(
        any("permissions violation for subscription" in e for e in errs.seen)
        for errs in errors.values()
    ):
        await asyncio.sleep(0.05)
    for user, errs in errors.items():
        refused = [e for e in errs.seen if "permissions violation for subscription" in e]
        assert len(refused) == 4, f"{user} may subscribe to a stream subject: {errs.seen}"
    await asyncio.sleep(1.0)  # a consumer with interest delivers within milliseconds
    assert (await admin.consumer_info(SOURCE, name)).delivered.consumer_seq == 0
    assert await _stored(admin, TARGET) == 0

    # control (the attack is real): once an unrestricted user subscribes, the copies are stored
    await admin_nc.subscribe(TARGET_SUBJECT)
    await admin_nc.flush()
    deadline = time.monotonic() + 10
    while await _stored(admin, TARGET) < 3:
        assert time.monotonic() < deadline, "control: deliveries never reached the verdict stream"
        await asyncio.sleep(0.1)
