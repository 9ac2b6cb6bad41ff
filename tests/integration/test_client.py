"""TrustClient and the ``cctf check`` / ``cctf watch`` commands against a real nats-server.

The pure verifier is tested in tests/unit/test_client_verify.py; the time, sequence and replay rules
against a real server in tests/integration/test_client_time.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from clientbus import (  # noqa: F401 - fixtures bus, cli_files
    LENIENT,
    Bus,
    bus_fixture,
    cli_files_fixture,
    n,
    run_cli,
    take,
    trust_client,
    wait_consumers,
)
from clientcases import NAME, OTHER, REGION, bad_messages, sealed, verdict
from wirefactories import ROUND_MS, World, flip_byte, make_world, seal_verdict

from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.sdk import FetchError, NoVerdict, TrustClient, VerdictRejected


async def test_check_returns_the_latest_verified_verdict(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    for seq in (1, 2, 3):
        await bus.publish(*sealed(world, verdict(world, seq=seq)))
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.DISPUTED)))
    latest = await client.check("EXAMPLE.com")
    assert n(latest) == 3 and latest.outcome is Outcome.TRUSTED
    assert n(await client.check(NAME)) == 3  # the same message again: a harmless duplicate
    assert (await client.check(OTHER)).outcome is Outcome.DISPUTED
    with pytest.raises(NoVerdict):
        await client.check(NAME, "AAAA")
    with pytest.raises(NoVerdict):
        await client.check("missing.example.")
    assert client.rejected == Counter()
    assert client.accepted == 3


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "unknown_key",
        "agent_key",
        "ed25519_only",
        "expired_verdict",
        "moved_subject",
        "garbage",
        "empty",
        "payload_for_other_name",
    ],
)
async def test_check_fails_closed(bus: Bus, case: str) -> None:
    world = make_world()
    subject, data, expected = bad_messages(world)[case]
    await bus.publish(subject, data)
    client = trust_client(bus, world)
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is expected
    assert client.rejected == Counter({expected.value: 1})


async def test_check_fails_closed_once_the_verdict_expires(bus: Bus) -> None:
    world = make_world()
    v = verdict(world, seq=1)
    await bus.publish(*sealed(world, v))
    client = trust_client(bus, world)
    assert (await client.check(NAME)) == v
    assert (await client.check(NAME, cached=True)) == v
    world.clock.set(v.expires_ms)
    for cached in (False, True):
        with pytest.raises(VerdictRejected) as info:
            await client.check(NAME, cached=cached)
        assert info.value.reason is Reason.EXPIRED


async def test_check_rollback(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    now = world.clock.now_ms()
    v3, v4 = verdict(world, seq=3), verdict(world, seq=4)
    await bus.publish(*sealed(world, verdict(world, seq=5, expires_ms=now + 2_000)))
    assert n(await client.check(NAME)) == 5
    # an older verdict becomes the stream's latest: never handed out; the newer known one is
    await bus.publish(*sealed(world, v4))
    assert n(await client.check(NAME)) == 5
    assert client.rejected == Counter({"rollback": 1})
    # once the newer one has expired there is nothing valid to fall back on: fail closed
    world.clock.advance(2_000)
    await bus.publish(*sealed(world, v3))
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.ROLLBACK
    assert client.rejected == Counter({"rollback": 2})
    await bus.publish(*sealed(world, verdict(world, seq=6)))
    assert n(await client.check(NAME)) == 6


async def test_verdicts_yields_in_order_and_cleans_up(bus: Bus) -> None:
    world = make_world()
    sent = [verdict(world, NAME, seq=1), verdict(world, OTHER, seq=1), verdict(world, seq=2)]
    for v in sent:
        await bus.publish(*sealed(world, v))
    client = trust_client(bus, world)
    it = client.verdicts(deliver="all")
    assert await take(it, 3) == sent
    assert await bus.consumer_count() == 1
    await it.aclose()
    await wait_consumers(bus, 0)

    fresh = trust_client(bus, world)  # no state: the first message would be accepted
    latest = fresh.verdicts(deliver="last_per_subject")
    assert await take(latest, 2) == [sent[1], sent[2]]  # one per subject, stream order
    # live: a new verdict arrives on the open iterator
    pending = asyncio.ensure_future(anext(latest))
    await asyncio.sleep(0.2)
    newer = verdict(world, OTHER, seq=2)
    await bus.publish(*sealed(world, newer))
    assert await asyncio.wait_for(pending, 10) == newer
    await latest.aclose()
    await wait_consumers(bus, 0)
    # the iterators fed the cache
    assert fresh.cached(OTHER) == newer
    assert client.cached(OTHER) == sent[1]


async def test_deliver_new_only_sees_later_verdicts(bus: Bus) -> None:
    world = make_world()
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    client = trust_client(bus, world)
    async with await client.stream(deliver="new") as vs:
        later = verdict(world, seq=2)
        await bus.publish(*sealed(world, later))
        assert await take(vs, 1) == [later]


async def test_cancelling_the_consumer_task_removes_the_subscription(bus: Bus) -> None:
    world = make_world()
    client = trust_client(bus, world)
    got: list[Verdict] = []

    async def consume() -> None:
        async for v in client.verdicts(deliver="all"):
            got.append(v)

    task = asyncio.create_task(consume())
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.05)
    assert [n(v) for v in got] == [1]
    assert await bus.consumer_count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_consumers(bus, 0)


async def test_verdicts_skip_count_and_keep_going(bus: Bus) -> None:
    world = make_world()
    bad = bad_messages(world)
    first = verdict(world, seq=100)
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(*sealed(world, first))
    kinds = [
        "tampered",
        "unknown_key",
        "agent_key",
        "ed25519_only",
        "expired_verdict",
        "moved_subject",
        "garbage",
        "payload_for_other_name",
        "other_subject_garbage",
    ]
    for kind in kinds:
        subject, data, _ = bad[kind]
        await bus.publish(subject, data)
    await bus.publish(*sealed(world, verdict(world, seq=99)))  # rollback after 100
    last = verdict(world, seq=101)
    await bus.publish(*sealed(world, last))

    client = trust_client(bus, world)
    it = client.verdicts(deliver="all")
    got = await take(it, 3)
    await it.aclose()
    assert [n(v) for v in got] == [1, 100, 101]
    assert got[-1] == last
    assert client.rejected == Counter(
        {
            "signature": 2,  # tampered, moved
            "unknown_key": 2,  # unknown coordinator key, agent key
            "suite": 1,
            "expired": 1,
            "malformed": 2,  # garbage on two subjects
            "subject": 1,
            "rollback": 1,
        }
    )


async def test_other_region_stream_uses_its_own_state(bus: Bus) -> None:
    world = make_world()
    v_us = verdict(world, seq=5)
    v_eu = verdict(world, seq=1)
    await bus.publish(*sealed(world, v_us))
    await bus.publish(*sealed(world, v_eu, region="eu-west"))
    client = trust_client(bus, world)
    assert n(await client.check(NAME)) == 5
    it = client.verdicts("eu-west", deliver="all")
    assert await take(it, 1) == [v_eu]  # seq 1 < 5 is fine: another region, another sequence
    await it.aclose()
    assert client.cached(NAME, region="eu-west") == v_eu


async def test_connect_classmethod_and_close(bus: Bus) -> None:
    world = make_world()
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    user = bus.fabric.users["client"]
    client = await TrustClient.connect(
        bus.fabric.urls,
        user.name,
        user.password,
        world.trust,
        REGION,
        clock=world.clock,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
    )
    async with client:
        assert n(await client.check(NAME)) == 1
        vs = await client.stream(deliver="all")
        assert await take(vs, 1) != []
    assert client.nc.is_closed
    # the open stream ended with the client
    with pytest.raises(StopAsyncIteration):
        await anext(vs)
    with pytest.raises(FetchError):
        await client.check(NAME)


async def test_check_without_stream_is_a_fetch_error(bus: Bus) -> None:
    world = make_world()
    client = TrustClient(
        bus.client_nc, world.trust, "ap-south", clock=world.clock, request_timeout=0.5
    )
    with pytest.raises(FetchError):
        await client.check(NAME)


# ------------------------------------------------------------------------------------------ CLI


async def test_cli_check_exit_codes(bus: Bus, cli_files: tuple[World, list[str]]) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.UNAVAILABLE)))
    tampered_subject, tampered = sealed(world, verdict(world, "bad.example.", seq=1))
    await bus.publish(tampered_subject, flip_byte(tampered, len(tampered) - 3))

    rc, out, _ = await run_cli("check", "example.com", *opts, *LENIENT)
    assert rc == 0
    assert out.strip().startswith("example.com. A round=") and "TRUSTED 93.184.216.34" in out
    rc, out, _ = await run_cli("check", OTHER, *opts, "--json", *LENIENT)
    assert rc == 3
    assert json.loads(out)["outcome"] == "unavailable"
    rc, _, err = await run_cli("check", "missing.example", *opts)
    assert rc == 1 and "no verdict" in err
    rc, _, err = await run_cli("check", "bad.example", *opts, *LENIENT)
    assert rc == 1 and "rejected (signature)" in err
    rc, _, err = await run_cli("check", "example.com", *opts, "--user", "nobody")
    assert rc == 1 and "nobody" in err


async def test_cli_watch(bus: Bus, cli_files: tuple[World, list[str]]) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world, seq=1)))
    await bus.publish(verdict_subject(REGION, NAME, "A"), b"garbage")
    await bus.publish(*sealed(world, verdict(world, OTHER, seq=1, outcome=Outcome.DISPUTED)))
    await bus.publish(*sealed(world, verdict(world, seq=2)))
    rc, out, err = await run_cli("watch", *opts, "--deliver", "all", "--count", "3", "--json")
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["name"], x["seq"] % 1000, x["outcome"]) for x in lines] == [
        (NAME, 1, "trusted"),
        (OTHER, 1, "disputed"),
        (NAME, 2, "trusted"),
    ]
    assert "verdict_rejected" in err and "malformed" in err
    rc, out, _ = await run_cli("watch", *opts, "--deliver", "last_per_subject", "--count", "1")
    assert rc == 0
    assert out.splitlines() == [
        f"{OTHER} A round={world.clock.now_ms() // ROUND_MS} DISPUTED agree=0/3"
    ]


def test_cli_help_documents_exit_codes() -> None:
    from cctf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, Any] = sub.choices  # type: ignore[assignment]
    check_help = choices["check"].format_help()
    assert "3    the latest verified verdict is DISPUTED or UNAVAILABLE" in check_help
    assert "exit codes" in choices["watch"].format_help()


async def test_cli_check_coordinators_policy(bus: Bus, cli_files: tuple[World, list[str]]) -> None:
    """``--coordinators 2:<c>,c2,c3``: the world's coordinator alone on its own subject is not
    enough (exit 1, coordinator_quorum); without the policy its verdict is read as before."""
    world, opts = cli_files
    v = verdict(world, seq=1)
    subject = verdict_subject(REGION, v.qname, v.qtype, v.coordinator)
    data = seal_verdict(
        world.coordinator,
        v,
        now_ms=v.issued_ms,
        subject=subject,
        lifetime_ms=v.expires_ms - v.issued_ms,
    )
    await bus.publish(subject, data)
    policy = f"2:{v.coordinator},c2,c3"
    rc, _, err = await run_cli("check", "example.com", *opts, *LENIENT, "--coordinators", policy)
    assert rc == 1 and "coordinator_quorum" in err, err
