"""``cctf watch`` and ``cctf check`` as processes: SIGTERM in every state, one-line failures.

``cctf watch`` exits with 143 within 5 s of SIGTERM whether it is connecting (to a server that
accepts TCP but never speaks NATS), streaming, or waiting for a NATS server that went away.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from clientbus import Bus, bus_fixture, cli_files_fixture, run_cli  # noqa: F401 - fixtures
from clientcases import sealed, verdict
from cliproc import SIGTERM_BOUND_S, CliProcess, StartCli, start_cli_fixture  # noqa: F401
from wirefactories import World

from cctf.client.cli import EXIT_TERMINATED


@pytest.fixture
def start_watch(start_cli: StartCli) -> StartCli:
    """``cctf watch`` with the given arguments, as a :class:`cliproc.CliProcess`."""

    async def start(*args: str) -> CliProcess:
        return await start_cli("watch", *args)

    return start


def creds_for(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "unreachable-creds.json"
    users = {"client": {"user": "client", "password": "not-a-secret"}}
    path.write_text(json.dumps({"urls": urls, "users": users}))
    os.chmod(path, 0o600)
    return path


def with_credentials(opts: list[str], creds: Path) -> list[str]:
    out = list(opts)
    out[out.index("--credentials") + 1] = str(creds)
    return out


async def test_watch_exits_on_sigterm_while_connecting(
    start_watch: object, cli_files: tuple[World, list[str]], tmp_path: Path
) -> None:
    """A server that accepts TCP and never sends INFO: the watch hangs in its connect timeout."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, opts = cli_files
        creds = creds_for(tmp_path, [f"nats://127.0.0.1:{port}"])
        assert callable(start_watch)
        watch = await start_watch(*with_credentials(opts, creds))
        await asyncio.wait_for(accepted.wait(), 30)
        rc, elapsed = await watch.terminate()
        assert rc == EXIT_TERMINATED, watch.err
        assert elapsed < SIGTERM_BOUND_S
        assert not any("Traceback" in line for line in watch.err), watch.err
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_watch_exits_on_sigterm_while_running(
    bus: Bus, start_watch: object, cli_files: tuple[World, list[str]]
) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world)))
    assert callable(start_watch)
    watch = await start_watch(*opts, "--deliver", "all")
    assert "TRUSTED" in await watch.line()
    rc, elapsed = await watch.terminate()
    assert rc == EXIT_TERMINATED, watch.err
    assert elapsed < SIGTERM_BOUND_S


async def test_watch_exits_on_sigterm_after_nats_went_away(
    bus: Bus, start_watch: object, cli_files: tuple[World, list[str]]
) -> None:
    world, opts = cli_files
    await bus.publish(*sealed(world, verdict(world)))
    assert callable(start_watch)
    watch = await start_watch(*opts, "--deliver", "all")
    assert "TRUSTED" in await watch.line()
    bus.fabric.stop()  # the server is gone: the watch keeps trying to reconnect
    await asyncio.sleep(1.5)
    assert watch.proc.returncode is None
    rc, elapsed = await watch.terminate()
    assert rc == EXIT_TERMINATED, watch.err
    assert elapsed < SIGTERM_BOUND_S


async def test_watch_gives_up_on_an_unreachable_server_with_one_line(
    cli_files: tuple[World, list[str]], tmp_path: Path
) -> None:
    _, opts = cli_files
    creds = creds_for(tmp_path, ["nats://127.0.0.1:1", "nats://127.0.0.1:2"])
    rc, out, err = await run_cli("watch", *with_credentials(opts, creds))
    assert (rc, out) == (1, "")
    assert err.startswith("cctf: cannot connect to nats://127.0.0.1:1, nats://127.0.0.1:2")


async def test_check_without_a_server_fails_with_one_line(
    cli_files: tuple[World, list[str]], tmp_path: Path
) -> None:
    """No JSON warnings per connection attempt: one line on stderr, exit 1."""
    _, opts = cli_files
    urls = ["nats://127.0.0.1:1", "nats://127.0.0.1:2", "nats://127.0.0.1:3"]
    creds = creds_for(tmp_path, urls)
    for extra in ((), ("--json",)):
        rc, out, err = await run_cli("check", "example.com", *with_credentials(opts, creds), *extra)
        assert (rc, out) == (1, "")
        assert err.splitlines() == [
            f"cctf: cannot connect to {', '.join(urls)}: nats: no servers available for connection"
        ]
