"""Restart every process, nats-server included (issue #9 acceptance, D4): a batch-signing coordinator
process publishes verdicts; then the coordinator (SIGTERM) and the nats-server are stopped and
started again. The log's size and root are intact, the next head is consistent with the last one
(the whole log re-derives, and ``cctf log verify --size --root`` finds the old head in it), and no
verdict published before the restart is missing from the log."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from nats.aio.msg import Msg
from wirefactories import make_trust, make_world, seal_ballot

from cctf.bus.connect import connect
from cctf.bus.logstream import read_records
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.envelope import TlogAuth, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import log_origin
from cctf.crypto.keys import save_signing_key
from cctf.devfabric.nats import NatsFabric
from cctf.translog.merkle import leaf_hash
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier

EAST, WEST = "us-east", "eu-west"


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cctf", "coordinator", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=config.parent,
    )


async def _wait(pred, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_restart_every_process_keeps_the_log(tmp_path: Path) -> None:
    world = make_world((EAST, WEST))
    coord = world.coordinator
    save_signing_key(tmp_path / "coord.key.json", coord.key)
    make_trust(*world.agents.values(), coord).save(tmp_path / "trust.json")
    fabric = await NatsFabric.astart(tmp_path / "nats", nodes=1)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fabric.write_credentials(tmp_path / "creds.json")
        config = tmp_path / "coord.yaml"
        config.write_text(
            json.dumps(
                {
                    "coordinator": coord.principal,
                    "region": EAST,
                    "key_file": "coord.key.json",
                    "trust_file": "trust.json",
                    "nats": {"credentials": "creds.json", "user": "coordinator"},
                    "rule": {"k": 2, "n": 3},
                    "electorate": ["agent-us-east/r1", "agent-us-east/r2", "agent-eu-west/r1"],
                    "names": [["example.com.", "A"]],
                    "verdict_regions": [EAST, WEST],
                    "signing": "batch",
                }
            )
        )
        admin = await connect(
            fabric.urls,
            fabric.users["admin"],
            name="t-admin",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
        )
        await ensure_streams(admin.jetstream(), [EAST, WEST], 1)
        published: list[bytes] = []

        async def on_verdict(msg: Msg) -> None:
            published.append(msg.data)

        await admin.subscribe("cctf.v1.verdict.>", cb=on_verdict)
        agent_nc = await connect(
            fabric.urls,
            fabric.users["agent-us-east"],
            name="t-agent",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
        )
        log = tmp_path / "coordinator.log"

        async def rounds(n: int) -> None:
            """``n`` rounds of the east agent's ballot (2 of 3 votes: decided at once)."""
            before = len(published)
            for _ in range(n):
                now = int(time.time() * 1000)
                data = seal_ballot(world.agents[EAST], now_ms=now)
                for _try in range(100):  # the stream may still be recovering after the restart
                    try:
                        await agent_nc.jetstream().publish(
                            f"cctf.v1.vote.{EAST}.{world.agents[EAST].principal}",
                            data,
                            timeout=1.0,
                        )
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                await asyncio.sleep(1.0 - (time.time() % 1.0) + 0.05)  # the next round
            await _wait(lambda: len(published) >= before + 2 * n, f"{n} rounds of verdicts")

        async def log_state() -> tuple[LogMirror, set[bytes]]:
            origin = log_origin(coord.key.kid)
            mirror = LogMirror(origin, NoteVerifier(origin, coord.key.public))
            leaves: set[bytes] = set()
            async for stored in read_records(admin, coord.principal):
                mirror.apply(stored.record)
                leaves |= {leaf_hash(e) for e in stored.record.entries}
            return mirror, leaves

        def published_leaves() -> set[bytes]:
            out = set()
            for data in published:
                env = decode_envelope(data)
                assert isinstance(env.auth, TlogAuth)
                out.add(leaf_hash(envelope_log_entry(env)))
            return out

        def stop(proc: subprocess.Popen[bytes]) -> None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]

        procs.append(_spawn(config, log))
        await _wait(lambda: '"event": "coordinator_started"' in log.read_text(), "start")
        await rounds(3)
        stop(procs[-1])
        mirror, leaves = await log_state()
        size, root = mirror.size, mirror.root
        assert size >= 3 and published_leaves() <= leaves  # every published verdict is logged

        # restart every process: the nats-server (its store kept), then the coordinator
        server = fabric.servers[0]
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        again, _ = await log_state()
        assert (again.size, again.root) == (size, root)  # size and root intact
        procs.append(_spawn(config, log))
        await _wait(lambda: log.read_text().count('"event": "coordinator_started"') == 2, "restart")
        assert f'"size": {size}' in log.read_text()  # log_resumed at the stored size
        await rounds(2)
        stop(procs[-1])
        (
            final,
            leaves,
        ) = await log_state()  # every head re-derived, each consistent with the one before
        assert final.size > size
        old = final.head_at(size)
        assert old is not None and old.root == root
        final.check_consistency(size, final.size)
        assert published_leaves() <= leaves  # no verdict published, before or after, is missing
        # the CLI finds the pre-restart head in the log too
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cctf",
            "log",
            "verify",
            "--log",
            coord.principal,
            "--credentials",
            str(tmp_path / "creds.json"),
            "--trust",
            str(tmp_path / "trust.json"),
            "--size",
            str(size),
            "--root",
            root.hex(),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["log"]["size"] == final.size
        await agent_nc.close()
        await admin.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await fabric.astop()
