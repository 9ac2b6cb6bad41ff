"""deploy/nats/tls/: the production shape of NATS over TLS (verify_and_map), with no static
per-region or component password: the file is the generated one, holds one password (the system
account's, from the environment), and nats-server accepts the config."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tlspki import leaf, pem, write_pair

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.ca.issuer import make_test_hierarchy
from cctf.devfabric.nats import find_nats_server
from cctf.devfabric.nats_config import render_tls_accounts_conf

TLS_DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "tls"


def test_tls_accounts_conf_is_the_generated_one_with_no_password_but_sys() -> None:
    # regenerate with: python -m cctf.devfabric.nats_cli accounts-conf --tls > deploy/nats/tls/accounts.conf
    text = (TLS_DEPLOY / "accounts.conf").read_text()
    agents = [(r, f"agent-{r}") for r in DEFAULT_REGIONS]
    assert text == render_tls_accounts_conf("cctf.example", agents, DEFAULT_REGIONS)
    assert text.count("password:") == 1 and "password: $CCTF_NATS_SYS_PASSWORD" in text
    for r, a in agents:
        assert f'user: "spiffe://cctf.example/cctf/agent/{r}/{a}"' in text
        assert f'user: "spiffe://cctf.example/cctf/join/{r}/{a}"' in text


def test_tls_single_conf_is_accepted_by_nats_server(tmp_path: Path) -> None:
    ops = make_test_hierarchy("cctf.example", now_ms=int(time.time() * 1000))
    cert, key = write_pair(tmp_path, "server", *leaf(ops.root, ops.root_key, server=True))
    (tmp_path / "client-cas.pem").write_bytes(pem(ops.intermediate) + pem(ops.root))
    text = (TLS_DEPLOY / "single.conf").read_text()
    for old, new in (
        ("/etc/nats/tls/server.pem", str(cert)),
        ("/etc/nats/tls/server-key.pem", str(key)),
        ("/etc/nats/tls/client-cas.pem", str(tmp_path / "client-cas.pem")),
        ("/var/lib/nats/jetstream", str(tmp_path / "js")),
    ):
        assert old in text
        text = text.replace(old, new)
    assert "verify_and_map: true" in text
    (tmp_path / "single.conf").write_text(text)
    (tmp_path / "accounts.conf").write_text((TLS_DEPLOY / "accounts.conf").read_text())
    env = dict(os.environ, CCTF_NATS_SYS_PASSWORD="psys1x")
    binary = str(find_nats_server())
    ok = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "single.conf")],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    del env["CCTF_NATS_SYS_PASSWORD"]  # the one password is required, not empty
    bad = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "single.conf")],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode != 0
