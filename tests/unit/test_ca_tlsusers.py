"""``cctf ca tls-users``'s pure part: which agents keep a certificate-mapped NATS user given the CA
log's revocations (only key reasons remove one), and its exit codes without a bus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from capki import START_MS, TRUST_DOMAIN, make_ca_world

from cctf.bus.tlsauth import agent_tls_users
from cctf.ca.entries import RevocationReason, RevokeEntry, encode_entry
from cctf.ca.tlsusers import RevokedKey, agent_users, revoked_keys
from cctf.crypto.keys import SigningKey, save_signing_key

AGENTS = (("a1", "us-east"), ("a2", "us-east"), ("b1", "eu-west"))


def test_only_agents_whose_key_was_revoked_with_a_key_reason_lose_their_user() -> None:
    world = make_ca_world(AGENTS, now_ms=START_MS)
    kid = {a: world.agents[a].key.kid for a, _r in AGENTS}

    def revoke(agent_kid: str, reason: RevocationReason) -> bytes:
        return encode_entry(RevokeEntry("1f", agent_kid, reason, START_MS))

    entries = [
        world.issue("a1", START_MS).entry,  # a certificate: no effect
        revoke(kid["a1"], RevocationReason.SUPERSEDED),  # one certificate: the agent keeps its user
        revoke(kid["a2"], RevocationReason.UNSPECIFIED),
        b"\x93not an entry",  # skipped (the registry refuses it too)
        revoke(SigningKey.generate().kid, RevocationReason.KEY_COMPROMISE),  # no agent of ours
        revoke(kid["b1"], RevocationReason.CESSATION),
        revoke(kid["b1"], RevocationReason.KEY_COMPROMISE),  # the first key revocation stays
    ]
    revoked = revoked_keys(world.trust, entries)
    assert revoked == {kid["b1"]: RevokedKey(kid["b1"], "eu-west", "b1", "cessation")}
    users = agent_users(world.trust, TRUST_DOMAIN, revoked)
    assert users == agent_tls_users(TRUST_DOMAIN, [("us-east", "a1"), ("us-east", "a2")])
    assert agent_users(world.trust, TRUST_DOMAIN, {}) == agent_tls_users(
        TRUST_DOMAIN, [("eu-west", "b1"), ("us-east", "a1"), ("us-east", "a2")]
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # a child process: the CLI configures logging onto its own stderr
    return subprocess.run(
        [sys.executable, "-m", "cctf", *args], capture_output=True, text=True, timeout=60
    )


def test_exit_codes_without_a_bus(tmp_path: Path) -> None:
    assert _cli("ca", "tls-users", "--config", str(tmp_path / "missing.yaml")).returncode == 2
    config = {
        "trust_domain": TRUST_DOMAIN,
        "intermediate": "i.pem",
        "intermediate_key": "i.key",
        "log_key": str(tmp_path / "missing-key.json"),
        "trust_file": str(tmp_path / "missing-trust.json"),
        "nats": {"urls": ["nats://127.0.0.1:1"], "user": "ca", "password": "x"},
    }
    (tmp_path / "ca.yaml").write_text(json.dumps(config))
    assert _cli("ca", "tls-users", "--config", str(tmp_path / "ca.yaml"), "--json").returncode == 2
    world = make_ca_world(AGENTS, now_ms=START_MS)
    world.trust.save(tmp_path / "trust.json")
    save_signing_key(tmp_path / "key.json", SigningKey.generate())
    config |= {"log_key": str(tmp_path / "key.json"), "trust_file": str(tmp_path / "trust.json")}
    (tmp_path / "ca.yaml").write_text(json.dumps(config))
    failed = _cli("ca", "tls-users", "--config", str(tmp_path / "ca.yaml"), "--json")
    assert failed.returncode == 1 and "cannot reach NATS" in failed.stderr
    assert failed.stdout == ""  # nothing on stdout when it fails
