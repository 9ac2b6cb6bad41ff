"""``cctf ca init|serve|issue|list|revoke`` as real processes over a real nats-server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from wirefactories import make_identity, make_trust

from cctf.bus.streams import ensure_streams
from cctf.crypto.keys import save_signing_key
from cctf.devfabric.nats import NatsFabric

AGENT, REGION = "agent-us-east", "us-east"


async def _cctf(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_ca_cli_init_serve_issue_list_revoke(
    nats_single: NatsFabric, nats_connect: Any, tmp_path: Path
) -> None:
    admin = await nats_connect(nats_single, "admin", name="test-admin")
    await ensure_streams(admin.jetstream(), [REGION], 1)
    ident = make_identity(AGENT, REGION)
    save_signing_key(tmp_path / "agent.key.json", ident.key)
    make_trust(ident).save(tmp_path / "trust.json")
    creds = nats_single.write_credentials(tmp_path / "creds.json")

    rc, _out, err = await _cctf(
        "ca",
        "init",
        str(tmp_path / "ca"),
        "--trust-domain",
        "Bad_TD",
        "--trust",
        str(tmp_path / "trust.json"),
    )
    assert rc == 2 and "trust domain" in err.lower(), err
    rc, out, err = await _cctf(
        "ca",
        "init",
        str(tmp_path / "ca"),
        "--trust-domain",
        "cctf.test",
        "--trust",
        str(tmp_path / "trust.json"),
        "--nats-credentials",
        str(creds),
    )
    assert rc == 0, err
    config = json.loads(out)["config"]
    assert (tmp_path / "ca" / "intermediate.key.pem").stat().st_mode & 0o077 == 0

    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        "ca",
        "serve",
        "--config",
        config,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert serve.stderr is not None
    try:
        deadline = time.monotonic() + 30
        while b"ca_started" not in await asyncio.wait_for(serve.stderr.readline(), 30):
            assert time.monotonic() < deadline and serve.returncode is None
        agent_cfg = tmp_path / "agent.yaml"
        agent_cfg.write_text(
            json.dumps(
                {
                    "agent": AGENT,
                    "region": REGION,
                    "key_file": "agent.key.json",
                    "trust": "trust.json",
                    "nats": {"credentials": str(creds), "user": f"agent-{REGION}"},
                    "resolvers": [
                        {"id": "r1", "address": "127.0.0.1", "port": 53, "transport": "udp"}
                    ],
                    "names": [["www.demo.test.", "A"]],
                    "ca": {
                        "trust_domain": "cctf.test",
                        "intermediate": "ca/intermediate.pem",
                        "cert_dir": "certs",
                        "lifetime_ms": 60_000,
                    },
                }
            )
        )
        rc, out, err = await _cctf("ca", "issue", "--agent-config", str(agent_cfg))
        assert rc == 0, err
        issued = json.loads(out)
        assert issued["spiffe_id"] == f"spiffe://cctf.test/cctf/agent/{REGION}/{AGENT}"
        assert issued["kid"] == ident.kid
        assert issued["not_after_ms"] - issued["not_before_ms"] == 60_000
        assert Path(issued["cert"]).read_text().count("BEGIN CERTIFICATE") == 2  # leaf + chain

        rc, out, err = await _cctf("ca", "list", "--config", config, "--json")
        assert rc == 0, err
        listed = json.loads(out)
        assert listed["log"]["size"] == 1
        assert [(e["type"], e["serial"]) for e in listed["entries"]] == [("cert", issued["serial"])]

        rc, out, err = await _cctf("ca", "revoke", "--config", config, "--serial", "ab")
        assert rc == 1 and "no logged certificate" in err, err
        rc, out, err = await _cctf(
            "ca",
            "revoke",
            "--config",
            config,
            "--serial",
            issued["serial"],
            "--reason",
            "key_compromise",
        )
        assert rc == 0, err
        assert json.loads(out) == {"revoked": [issued["serial"]], "log_index": 1}
        rc, out, err = await _cctf("ca", "list", "--config", config, "--json")
        entries = json.loads(out)["entries"]
        assert [e["type"] for e in entries] == ["cert", "revoke"]
        assert entries[1]["reason"] == "key_compromise"
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(serve.wait(), 10)
    assert rc == 0


async def test_agent_with_an_unreadable_ca_intermediate_is_a_config_error(tmp_path: Path) -> None:
    ident = make_identity(AGENT, REGION)
    save_signing_key(tmp_path / "agent.key.json", ident.key)
    make_trust(ident).save(tmp_path / "trust.json")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        json.dumps(
            {
                "agent": AGENT,
                "region": REGION,
                "key_file": "agent.key.json",
                "trust": "trust.json",
                "nats": {
                    "urls": ["nats://127.0.0.1:1"],
                    "user": f"agent-{REGION}",
                    "password": "x",
                },
                "resolvers": [{"id": "r1", "address": "127.0.0.1", "port": 53, "transport": "udp"}],
                "names": [["www.demo.test.", "A"]],
                "ca": {"trust_domain": "cctf.test", "intermediate": "nope.pem", "cert_dir": "c"},
            }
        )
    )
    rc, _out, err = await _cctf("agent", "run", "--config", str(cfg))
    assert rc == 2 and "nope.pem" in err, err
