"""``cctf log verify|head|proof|consistency|serve`` as real processes over a real nats-server, and
the log API client (D4: scopes 3 monitoring and 6)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
from natshelpers import setup_streams

from cctf.bus.connect import jetstream
from cctf.bus.headers import EXPECTED_LAST_SUBJECT_SEQUENCE, MSG_ID
from cctf.bus.logstream import log_msg_id, log_subject, open_log
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric
from cctf.logmon.apiclient import LogApiClient
from cctf.translog.api import ApiError
from cctf.translog.logstate import LogState
from cctf.translog.merkle import leaf_hash, verify_consistency, verify_inclusion
from cctf.translog.note import NoteVerifier, open_checkpoint

if TYPE_CHECKING:
    from conftest import NatsConnect

KEY = SigningKey.generate()
BATCHES = ([b"a", b"b"], [b"c"], [b"d", b"e", b"f"])


async def _cctf(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_log_commands_and_api(
    nats_single: NatsFabric, nats_connect: NatsConnect, tmp_path: Path
) -> None:
    admin = await nats_connect(nats_single, "admin")
    await setup_streams(jetstream(admin), nats_single.regions)
    coord = await nats_connect(nats_single, "coordinator")
    state, writer = await open_log(coord, "c1", KEY)
    for batch in BATCHES:
        await writer.append(state.append(batch))
    creds = nats_single.write_credentials(tmp_path / "creds.json")
    trust = tmp_path / "trust.json"
    other = SigningKey.generate()
    TrustConfig(
        [
            TrustEntry(Role.COORDINATOR, "c1", "us-east", KEY.public),
            TrustEntry(Role.COORDINATOR, "c2", "us-east", other.public),
        ]
    ).save(trust)
    base = ["--credentials", str(creds), "--trust", str(trust), "--json"]

    code, out, err = await _cctf("log", "verify", "--log", "c1", *base)
    assert code == 0, err
    assert json.loads(out) == {
        "log": {
            "id": "c1",
            "size": 6,
            "root": state.root.hex(),
            "verified": True,
            "records": 3,
            "heads": 3,
        }
    }
    code, out, err = await _cctf(
        "log",
        "verify",
        "--log",
        "c1",
        "--size",
        "3",
        "--root",
        state.mirror.heads[1].root.hex(),
        *base,
    )
    assert code == 0, err
    code, _out, err = await _cctf(
        "log", "verify", "--log", "c1", "--size", "3", "--root", "00" * 32, *base
    )
    assert code == 1 and "head-mismatch" in err

    code, out, err = await _cctf("log", "head", "--log", "c1", *base)
    assert code == 0, err
    head = json.loads(out)
    assert (head["size"], head["root"]) == (6, state.root.hex())
    origin = state.origin
    assert open_checkpoint(head["checkpoint"], NoteVerifier(origin, KEY.public)).size == 6

    code, out, err = await _cctf(
        "log", "proof", "--log", "c1", "--index", "4", "--size", "6", *base
    )
    assert code == 0, err
    proof = json.loads(out)
    verify_inclusion(leaf_hash(b"e"), 4, 6, [bytes.fromhex(p) for p in proof["proof"]], state.root)
    code, out, err = await _cctf("log", "consistency", "--log", "c1", "--size1", "2", *base)
    assert code == 0, err
    cons = json.loads(out)
    verify_consistency(
        2, 6, [bytes.fromhex(p) for p in cons["proof"]], state.mirror.heads[0].root, state.root
    )
    code, _out, err = await _cctf("log", "proof", "--log", "c1", "--index", "6", *base)
    assert code == 1

    # a tampered log: a record whose head does not match its entries -> exit 1 with the reason
    forged = LogState(other).append([b"x"])
    first = LogState(other).append([b"y"])
    js = jetstream(admin)
    await js.publish(
        log_subject("c2"),
        first.encode(),
        headers={MSG_ID: log_msg_id("c2", 0), EXPECTED_LAST_SUBJECT_SEQUENCE: "0"},
    )
    await js.publish(
        log_subject("c2"),
        type(forged)(forged.origin, 1, forged.entries, forged.checkpoint).encode(),
        headers={MSG_ID: log_msg_id("c2", 1)},
    )
    code, out, err = await _cctf("log", "verify", "--log", "c2", *base)
    assert code == 1 and json.loads(out)["log"]["verified"] is False
    assert "size-mismatch" in err
    # usage errors: unknown key (c1's log checked with c2's key), no key at all
    code, _out, err = await _cctf("log", "verify", "--log", "c1", "--credentials", str(creds))
    assert code == 2
    keyfile = tmp_path / "other.pub.json"
    keyfile.write_text(json.dumps(other.public.to_json()))
    code, _out, err = await _cctf(
        "log", "verify", "--log", "c1", "--credentials", str(creds), "--key", str(keyfile)
    )
    assert code == 2 and "unknown-key" in err

    # cctf log serve: the API over NATS request-reply, answered from a mirror that follows the log
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        "log",
        "serve",
        "--log",
        "c1",
        "--credentials",
        str(creds),
        "--trust",
        str(trust),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    try:
        client_nc = await nats_connect(nats_single, "client")
        api = LogApiClient(client_nc, timeout_s=1.0)
        for _ in range(100):
            try:
                size, root, _note = await api.head("c1")
                break
            except ApiError:
                await asyncio.sleep(0.1)
        assert (size, root) == (6, state.root)
        await writer.append(state.append([b"g"]))  # followed live
        for _ in range(100):
            size, root, _note = await api.head("c1")
            if size == 7:
                break
            await asyncio.sleep(0.05)
        assert (size, root) == (7, state.root)
        inc = await api.inclusion("c1", 2, 3)
        verify_inclusion(leaf_hash(b"c"), 2, 3, inc["proof"], state.mirror.heads[1].root)
        proof = await api.consistency("c1", 3, 7)
        verify_consistency(3, 7, proof, state.mirror.heads[1].root, state.root)
        assert await api.entries("c1", 1, 5) == [b"b", b"c", b"d", b"e", b"f"]
        assert await api.entries("c1", 5, 100) == [b"f", b"g"]
        await _http_checks(api, state)
        for bad in (api.consistency("c1", 4, 7), api.inclusion("c1", 9), api.entries("c1", 7, 1)):
            try:
                await bad
            except ApiError as exc:
                assert exc.reason in ("unknown-head", "out-of-range")
            else:
                raise AssertionError("refused request answered")
    finally:
        serve.send_signal(signal.SIGTERM)
        _out, err_bytes = await asyncio.wait_for(serve.communicate(), 20)
    assert serve.returncode == 143, err_bytes.decode()[-2000:]


async def _http_checks(api: LogApiClient, state: LogState) -> None:
    """The gateway serves the same over HTTP (scope 6), proofs checkable by the client."""
    from cctf.gateway.app import create_app
    from cctf.gateway.openapi import _NoBackend
    from cctf.gateway.server import GatewayServer

    server = GatewayServer(create_app(_NoBackend(), log=api))
    await server.start()
    try:
        async with httpx2.AsyncClient(base_url=server.url, timeout=10) as http:
            head = (await http.get("/v1/log/c1/head")).json()
            assert (head["size"], head["root"]) == (7, state.root.hex())
            r = (await http.get("/v1/log/c1/inclusion", params={"index": 6})).json()
            verify_inclusion(
                leaf_hash(b"g"), 6, 7, [bytes.fromhex(p) for p in r["proof"]], state.root
            )
            r = (await http.get("/v1/log/c1/consistency", params={"size1": 2})).json()
            assert r["size2"] == 7
            verify_consistency(
                2, 7, [bytes.fromhex(p) for p in r["proof"]], state.mirror.heads[0].root, state.root
            )
            r = (await http.get("/v1/log/c1/entries", params={"start": 5, "count": 2})).json()
            assert [base64.b64decode(e) for e in r["entries"]] == [b"f", b"g"]
            missing = await http.get("/v1/log/c1/inclusion", params={"index": 1, "size": 4})
            assert missing.status_code == 404 and missing.json()["type"].endswith(
                "log_unknown_head"
            )
            nobody = await http.get("/v1/log/nobody/head")
            assert nobody.status_code == 404 and nobody.json()["code"] == "log_not_served"
            bad = await http.get("/v1/log/Bad.Id/head")
            assert bad.status_code in (400, 404, 422)
    finally:
        await server.stop()
