"""Least privilege on the bus, checked by a real nats-server for every role and every JetStream verb.

The table is generated from the pure data in :mod:`cctf.bus.accounts` (``JS_API`` x ``GRANTS``): for
each restricted role, each verb, and each kind of stream, the role publishes the verb's request
subject and the server either lets it through or answers with a permissions violation. Granted verbs
are probed with harmless targets (a consumer named ``probe`` that does not exist, empty bodies).
Subscriptions (inbox isolation) are checked against an independent, hand-written table.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from cctf.bus.accounts import (
    GRANTS,
    JS_API,
    Role,
    StreamKind,
    api_subject,
    client_api_subject,
    inbox_prefix,
    role_of,
)
from cctf.bus.connect import jetstream
from cctf.bus.kv import LKG_BUCKET, kv_stream_name
from cctf.bus.streams import LOG_STREAM, ensure_streams, verdict_stream_name, votes_stream_name
from cctf.devfabric.nats import NatsFabric

if TYPE_CHECKING:
    from conftest import NatsConnect

USERS = ("client", "coordinator", "agent-us-east")
KIND_STREAM = {
    StreamKind.VOTES: votes_stream_name("us-east"),
    StreamKind.VERDICTS: verdict_stream_name("us-east"),
    StreamKind.LKG: kv_stream_name(LKG_BUCKET),
    StreamKind.LOG: LOG_STREAM,
}
# what a ".>" tail of a verb stands for, concretely (a published subject holds no wildcard)
TAILS = {
    "DIRECT.GET.LAST": "cctf.v1.verdict.us-east.probe.A",
    "CONSUMER.CREATE.FILTERED": "cctf.v1.vote.us-east.probe",
    "ACK": "probe.1.1.1.1.0",
    "FC": "probe.abcd",
}


def _cases() -> list[tuple[str, str, StreamKind, bool]]:
    cases = []
    for user in USERS:
        grants = GRANTS[role_of(user)]
        for verb, template in JS_API.items():
            kinds = tuple(KIND_STREAM) if "{stream}" in template else ()
            for kind in kinds or (StreamKind.NONE,):
                cases.append((user, verb, kind, (verb, kind) in grants))
    return cases


CASES = _cases()


def _subject(verb: str, kind: StreamKind, user: str) -> str:
    """The verb's request subject as ``user`` reaches it: the client (account ``CLIENTS``) reaches
    ``CCTF``'s JetStream API under its own prefix (its ``$JS.API`` is refused outright)."""
    subject = api_subject(verb, KIND_STREAM.get(kind, ""), consumer="probe")
    if subject.endswith(".>"):
        subject = subject[:-1] + TAILS[verb]
    if role_of(user) is Role.CLIENT:
        subject = client_api_subject(subject) or subject
    return subject


class Violations:
    def __init__(self) -> None:
        self.errors: list[str] = []

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    def refused(self, action: str, subject: str) -> bool:
        needle = f'permissions violation for {action} to "{subject.lower()}"'
        return any(needle in e for e in self.errors)


async def _probe_publish(
    fabric: NatsFabric, nats_connect: NatsConnect, user: str, subjects: list[str]
) -> Violations:
    seen = Violations()
    nc = await nats_connect(fabric, user, error_cb=seen)
    for subject in subjects:
        await nc.publish(subject, b"", reply=inbox_prefix(user) + ".probe")
    await nc.flush()
    await asyncio.sleep(0.3)  # the -ERR lines precede the PONG; let error_cb run
    await nc.flush()
    return seen


@pytest.fixture
async def fabric(nats_single: NatsFabric, nats_connect: NatsConnect) -> NatsFabric:
    admin = await nats_connect(nats_single, "admin")
    await ensure_streams(
        admin.jetstream(), nats_single.regions, 1, timeout_s=10, votes_per_region=True
    )
    return nats_single


def test_every_role_and_verb_is_in_the_table() -> None:
    assert {u for u, *_ in CASES} == set(USERS)
    assert len(CASES) >= 3 * 2 * 25
    # sanity of the data itself: no restricted role may change or destroy a stream
    for role in (Role.AGENT, Role.CLIENT, Role.COORDINATOR):
        verbs = {v for v, _ in GRANTS[role]}
        assert not verbs & {"STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE"}
        assert not verbs & {"STREAM.MSG.DELETE", "CONSUMER.PAUSE", "ACCOUNT.PURGE"}
    assert GRANTS[Role.AGENT] == frozenset()
    assert all(kind is not StreamKind.VOTES for _, kind in GRANTS[Role.CLIENT])


@pytest.mark.parametrize("user", USERS)
async def test_js_api_verbs_allowed_or_refused_by_the_server(
    fabric: NatsFabric, nats_connect: NatsConnect, user: str
) -> None:
    cases = [(verb, kind, allowed) for u, verb, kind, allowed in CASES if u == user]
    subjects = [_subject(verb, kind, user) for verb, kind, _ in cases]
    seen = await _probe_publish(fabric, nats_connect, user, subjects)
    wrong = [
        f"{verb} on {kind.value}: {'refused' if allowed else 'allowed'} by the server"
        for (verb, kind, allowed), subject in zip(cases, subjects, strict=True)
        if seen.refused("publish", subject) == allowed
    ]
    assert not wrong, f"{user}: " + "; ".join(wrong)


# (user, subject, allowed): core publishes outside the JetStream API
PUBLISH_TABLE = [
    ("agent-us-east", "cctf.v1.vote.us-east.a1", True),
    ("agent-us-east", "cctf.v1.vote.eu-west.a1", False),
    ("agent-us-east", "cctf.v1.verdict.us-east.x.A", False),
    ("agent-us-east", "_INBOX.client.x", False),
    ("agent-us-east", "_INBOX.coordinator.x", False),  # a forged publish ack (threat model)
    ("client", "cctf.v1.verdict.us-east.x.A", False),
    ("client", "cctf.v1.vote.us-east.a1", False),
    ("client", "_INBOX.coordinator.x", False),
    # its account's own $JS.API (the server's, answering "not enabled") is closed to it
    ("client", "$JS.API.STREAM.INFO.CCTF_VERDICTS_US_EAST", False),
    ("client", "$JS.API.DIRECT.GET.CCTF_VERDICTS_US_EAST", False),
    ("coordinator", "cctf.v1.verdict.us-east.x.A", True),
    ("coordinator", "cctf.v1.vote.us-east.a1", False),
    ("coordinator", "_INBOX.agent-us-east.x", False),
]

# (user, subject, allowed): subscriptions, i.e. what a user can receive
SUBSCRIBE_TABLE = [
    (user, subject, allowed)
    for user in USERS
    for subject, allowed in (
        ("_INBOX.>", False),
        ("_INBOX.*", False),
        (f"_INBOX.{user}.>", True),
        (f"_INBOX.{user}.abc.*", True),
        ("$JS.>", False),
        ("$JS.ACK.>", False),
        ("$JS.API.>", False),
    )
] + [
    ("agent-us-east", "_INBOX.coordinator.>", False),
    ("agent-us-east", "_INBOX.agent-eu-west.>", False),
    ("agent-us-east", "cctf.v1.vote.>", False),
    ("agent-us-east", "cctf.v1.verdict.>", False),
    ("client", "_INBOX.coordinator.>", False),
    ("client", "cctf.v1.vote.>", False),
    ("client", "cctf.v1.verdict.>", True),  # the live path (D1)
    ("client", "cctf.v1.verdict.us-east.example_com.A", True),
    ("coordinator", "_INBOX.client.>", False),
    # the live path (D1): a coordinator also receives every region's ballots and evidence (core)
    ("coordinator", "cctf.v1.vote.>", True),
    ("coordinator", "cctf.v1.evidence.>", True),
    ("coordinator", "cctf.v1.verdict.>", False),
]


@pytest.mark.parametrize("user", USERS)
async def test_core_publish_and_inbox_isolation(
    fabric: NatsFabric, nats_connect: NatsConnect, user: str
) -> None:
    pubs = [(s, a) for u, s, a in PUBLISH_TABLE if u == user]
    subs = [(s, a) for u, s, a in SUBSCRIBE_TABLE if u == user]
    seen = Violations()
    nc = await nats_connect(fabric, user, error_cb=seen)
    for subject, _ in pubs:
        await nc.publish(subject, b"probe")
    for subject, _ in subs:
        await nc.subscribe(subject)
    await nc.flush()
    await asyncio.sleep(0.3)
    await nc.flush()
    wrong = [f"publish {s}" for s, a in pubs if seen.refused("publish", s) == a]
    wrong += [f"subscribe {s}" for s, a in subs if seen.refused("subscription", s) == a]
    assert not wrong, f"{user}: wrong outcome for " + ", ".join(wrong)


async def test_client_ordered_consumer_flow_control_passes_the_permissions(
    fabric: NatsFabric, nats_connect: NatsConnect
) -> None:
    # 20 MB of verdicts make the server ask the client's ordered consumer for flow control
    # ($JS.FC.<stream>.<consumer>.<rand>); the narrowed grant must let the replies through.
    admin = await nats_connect(fabric, "admin")
    replies: list[str] = []

    async def on_fc(msg: Any) -> None:
        replies.append(msg.subject)

    await admin.subscribe("$JS.FC.>", cb=on_fc)
    big = b"v" * 500_000
    for i in range(40):
        await admin.jetstream().publish(f"cctf.v1.verdict.us-east.n{i}.A", big)
    seen = Violations()
    client = await nats_connect(fabric, "client", error_cb=seen)
    stream = verdict_stream_name("us-east")
    sub = await jetstream(client).subscribe(
        "cctf.v1.verdict.us-east.>", stream=stream, ordered_consumer=True
    )
    await sub.next_msg(timeout=10)
    await asyncio.sleep(1.0)  # let the deliveries pile up past the flow-control window
    for _ in range(39):
        await sub.next_msg(timeout=10)
    await admin.flush()
    assert replies and all(r.startswith(f"$JS.FC.{stream}.") for r in replies)
    assert seen.errors == []
