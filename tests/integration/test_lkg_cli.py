"""``cctf check`` / ``cctf watch`` with LKG attestations (real nats-server, real processes): shown
apart (exit code 4, JSON ``lkg``, text ``LKG age=``), refused with ``--no-lkg``."""

from __future__ import annotations

import json

import msgspec
from clientbus import Bus, bus_fixture, cli_files_fixture, run_cli  # noqa: F401 - fixtures
from clientcases import NAME, sealed, verdict
from wirefactories import World

from cctf.bus_schemas.messages import Verdict
from cctf.client.cli import EXIT_FAILURE, EXIT_LKG, EXIT_OK

LENIENT = ("--max-age-ms", "60000")


def attestation(world: World, age_ms: int = 5_000, seq: int = 2) -> tuple[Verdict, Verdict]:
    """A basis verdict ``age_ms`` ago and its LKG attestation issued now."""
    now = world.clock.now_ms()
    basis = verdict(world, seq=1, issued_ms=now - age_ms)
    lkg = msgspec.structs.replace(
        basis,
        round=now // 1000,
        issued_ms=now,
        expires_ms=now + 30_000,
        seq=now * 1000 + seq,
        basis_round=basis.round,
        basis_ms=basis.issued_ms,
    )
    return basis, lkg


async def test_check_shows_lkg_with_its_own_exit_code_and_refuses_it_with_no_lkg(
    bus: Bus, cli_files: tuple[World, list[str]]
) -> None:
    world, opts = cli_files
    basis, lkg = attestation(world)
    await bus.publish(*sealed(world, lkg))
    rc, out, err = await run_cli("check", NAME, *opts, "--json", *LENIENT)
    assert rc == EXIT_LKG == 4, err
    got = json.loads(out)
    assert got["outcome"] == "trusted"
    assert got["lkg"] == {"age_ms": 5_000, "basis_round": basis.round, "basis_ms": basis.issued_ms}
    rc, out, _ = await run_cli("check", NAME, *opts, *LENIENT)
    assert rc == EXIT_LKG and "TRUSTED 93.184.216.34 agree=" in out
    assert out.strip().endswith(f"LKG age=5.0s basis={basis.round}")
    rc, out, err = await run_cli("check", NAME, *opts, "--no-lkg", *LENIENT)
    assert rc == EXIT_FAILURE and out == "" and "rejected (lkg)" in err


async def test_watch_shows_lkg_and_skips_it_with_no_lkg(
    bus: Bus, cli_files: tuple[World, list[str]]
) -> None:
    world, opts = cli_files
    _basis, lkg = attestation(world)
    await bus.publish(*sealed(world, lkg))
    fresh = verdict(world, seq=3)
    await bus.publish(*sealed(world, fresh))
    rc, out, err = await run_cli("watch", *opts, "--deliver", "all", "--count", "2", "--json")
    assert rc == EXIT_OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["lkg"] is not None for x in lines] == [True, False]
    rc, out, err = await run_cli(
        "watch", *opts, "--deliver", "all", "--count", "1", "--json", "--no-lkg"
    )
    assert rc == EXIT_OK, err
    (only,) = [json.loads(line) for line in out.splitlines()]
    assert only["lkg"] is None and only["seq"] == fresh.seq
