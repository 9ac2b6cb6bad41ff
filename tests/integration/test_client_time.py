"""Time, sequence and replay rules of the subscriber against a real nats-server (SDK and CLI).

Issue #7: a far-future ``seq`` is refused and later genuine verdicts are accepted; a replayed verdict
older than the maximum age is refused by ``cctf check`` and the SDK; a payload expiry beyond the
envelope's is never reported.
"""

from __future__ import annotations

import json
from collections import Counter

import msgspec
import pytest
from clientbus import (  # noqa: F401 - fixtures bus, cli_files
    Bus,
    bus_fixture,
    cli_files_fixture,
    run_cli,
    take,
    trust_client,
)
from clientcases import DAY_MS, NAME, OTHER, sealed, verdict
from wirefactories import World, make_world

from cctf.bus_schemas.envelope import Reason, decode_envelope
from cctf.bus_schemas.messages import Outcome
from cctf.client.sdk import VerdictRejected


async def test_far_future_seq_is_refused_then_genuine_verdicts_are_accepted(bus: Bus) -> None:
    """A coordinator's clock jumped: one verdict with a seq 10 days ahead. A long-running client
    (one-shot look-ups and a stream) refuses it and accepts every later genuine verdict."""
    world = make_world()
    client = trust_client(bus, world)
    stream = await client.stream(deliver="new")
    first = verdict(world, seq=1)
    await bus.publish(*sealed(world, first))
    assert await take(stream, 1) == [first]
    assert await client.check(NAME) == first
    now = world.clock.now_ms()
    jumped = msgspec.structs.replace(verdict(world, seq=2), seq=(now + 10 * DAY_MS) * 1000)
    await bus.publish(*sealed(world, jumped))
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.SEQUENCE
    for _ in range(3):  # later genuine verdicts, a round apart: the stream skipped the jumped one
        world.clock.advance(1_000)
        genuine = verdict(world, seq=1)
        await bus.publish(*sealed(world, genuine))
        assert await take(stream, 1) == [genuine]
        assert await client.check(NAME) == genuine
    await stream.aclose()
    assert client.rejected == Counter({"sequence": 2})  # once by check, once by the stream


async def test_replay_older_than_max_age_is_refused_by_check_and_the_sdk(
    bus: Bus, cli_files: tuple[World, list[str]]
) -> None:
    """TRUSTED, then DISPUTED, then the older TRUSTED verdict re-published (same signed bytes):
    the stream's latest message is the replay. A fresh ``cctf check`` / ``TrustClient.check`` does
    not take it as the current answer once it is older than the maximum age (two rounds); a client
    that saw the DISPUTED verdict keeps answering with it."""
    world, opts = cli_files
    now = world.clock.now_ms()
    trusted = verdict(world, seq=1, issued_ms=now - 5_000)
    disputed = verdict(world, seq=1, issued_ms=now - 1_000, outcome=Outcome.DISPUTED)
    subject, trusted_bytes = sealed(world, trusted)
    await bus.publish(subject, trusted_bytes)
    await bus.publish(*sealed(world, disputed))
    watcher = trust_client(bus, world)
    assert await watcher.check(NAME) == disputed
    await bus.publish(subject, trusted_bytes)  # the replay

    fresh = trust_client(bus, world)
    with pytest.raises(VerdictRejected) as info:
        await fresh.check(NAME)
    assert info.value.reason is Reason.STALE
    assert await watcher.check(NAME) == disputed  # refused; the newer verdict it knows stands
    assert watcher.rejected == Counter({"stale": 1})
    # a larger maximum age is a larger replay window (docs/threat-model.md)
    lenient = trust_client(bus, world, max_age_ms=10_000)
    assert await lenient.check(NAME) == trusted

    rc, out, err = await run_cli("check", NAME, *opts)
    assert (rc, out) == (1, "")
    assert "rejected (stale)" in err and "maximum age 2000 ms" in err
    rc, out, err = await run_cli("check", NAME, *opts, "--round-ms", "1000", "--max-age-ms", "1500")
    assert rc == 1 and "maximum age 1500 ms" in err
    rc, out, _ = await run_cli("check", NAME, *opts, "--max-age-ms", "60000")
    assert rc == 0 and "TRUSTED" in out  # within the window the replay is still the answer


async def test_payload_expiry_beyond_the_envelope_is_never_reported(
    bus: Bus, cli_files: tuple[World, list[str]]
) -> None:
    """A verdict whose payload says one year, in a 10-minute envelope: the SDK refuses it,
    ``cctf check --json`` prints nothing and exits 1, ``cctf watch`` skips it; no output ever
    reports a validity beyond an envelope's expiry."""
    world, opts = cli_files
    now = world.clock.now_ms()
    long = verdict(world, seq=1, expires_ms=now + 365 * DAY_MS)
    subject, data = sealed(world, long, lifetime_ms=10 * 60_000)
    assert decode_envelope(data).exp == now + 10 * 60_000
    await bus.publish(subject, data)
    ok_subject, ok = sealed(world, verdict(world, OTHER, seq=1))
    await bus.publish(ok_subject, ok)

    client = trust_client(bus, world)
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME)
    assert info.value.reason is Reason.LIFETIME
    stream = client.verdicts(deliver="all")
    (only,) = await take(stream, 1)
    await stream.aclose()
    assert only.qname == OTHER and client.rejected["lifetime"] == 2

    rc, out, err = await run_cli("check", NAME, *opts, "--json", "--max-age-ms", "60000")
    assert (rc, out) == (1, "")
    assert "rejected (lifetime)" in err
    rc, out, err = await run_cli("watch", *opts, "--deliver", "all", "--count", "1", "--json")
    assert rc == 0, err
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["name"] == OTHER
    assert line["expires_ms"] <= decode_envelope(ok).exp
    assert "lifetime" in err  # the refused verdict is logged with its reason


async def test_cached_answers_respect_the_maximum_age(bus: Bus) -> None:
    """``check(cached=True)`` and ``cached()`` are one-shot answers too: a cached verdict older
    than the maximum age is not returned, and the bus is asked again (fail closed if stale)."""
    world = make_world()
    client = trust_client(bus, world, round_ms=1_000)
    v = verdict(world, seq=1)
    await bus.publish(*sealed(world, v))
    assert await client.check(NAME) == v
    world.clock.advance(2_000)
    assert client.cached(NAME) == v
    assert await client.check(NAME, cached=True) == v
    world.clock.advance(1)
    assert client.cached(NAME) is None
    with pytest.raises(VerdictRejected) as info:
        await client.check(NAME, cached=True)
    assert info.value.reason is Reason.STALE
    fresh = verdict(world, seq=1)
    await bus.publish(*sealed(world, fresh))
    assert await client.check(NAME, cached=True) == fresh
