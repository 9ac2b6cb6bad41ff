"""Tests for `cctf keys` (generate, trust, show) through the real CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wirefactories import make_identity, make_key

from cctf.cli import main
from cctf.crypto.keys import (
    load_signing_key,
    save_signing_key,
)
from cctf.crypto.suites import (
    SuiteId,
)
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

TBS = b"CCTF test message \x00\xff"
KEYS = {suite: make_key(suite, "test-crypto") for suite in SuiteId}


def _entry_json(key_suite: SuiteId = SuiteId.HYBRID, /, **override: Any) -> dict[str, Any]:
    """A valid trust entry (agent-a, us-east) as JSON, with fields overridden by name."""
    entry = TrustEntry(Role.AGENT, "agent-a", "us-east", KEYS[key_suite].public).to_json()
    entry.update(override)
    return entry


# ---------------------------------------------------------------------------------------------- CLI


Result = subprocess.CompletedProcess[str]


def cli(*args: str | Path) -> Result:
    """Run ``python -m cctf keys ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "cctf", "keys", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def here(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``cctf keys ARGS`` through :func:`cctf.cli.main` in this process: the same parser, output
    and exit codes as :func:`cli`, without an interpreter start-up per call."""

    def run(*args: str | Path) -> Result:
        argv = ["keys", *map(str, args)]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, captured.out, captured.err)

    return run


def _secrets(key_file: Path) -> list[str]:
    obj = json.loads(key_file.read_text())
    return [v for k, v in obj.items() if k.endswith("-seed")]


def test_cli_generate_plain(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    r = cli(
        "generate",
        "--role",
        "agent",
        "--principal",
        "agent-us-east",
        "--region",
        "us-east",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    key_file, pub_file = out / "agent-us-east.key.json", out / "agent-us-east.pub.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_signing_key(key_file)
    assert key.suite is SuiteId.HYBRID
    entry = TrustEntry.from_json(json.loads(pub_file.read_text()))
    assert (entry.role, entry.principal, entry.region, entry.kid) == (
        Role.AGENT,
        "agent-us-east",
        "us-east",
        key.kid,
    )
    assert key.kid in r.stdout and str(key_file) in r.stdout and str(pub_file) in r.stdout
    for secret in _secrets(key_file):
        assert secret not in r.stdout + r.stderr
        assert secret not in pub_file.read_text()
    key.public.verify(TBS, key.sign(TBS))


@pytest.mark.parametrize("suite", list(SuiteId))
def test_cli_generate_json(tmp_path: Path, suite: SuiteId, here: Callable[..., Result]) -> None:
    r = here(
        "generate",
        "--role",
        "coordinator",
        "--principal",
        "coord-1",
        "--region",
        "eu-west",
        "--suite",
        suite.value,
        "--out",
        tmp_path,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    key = load_signing_key(Path(info["key_file"]))
    assert info == {
        "kid": key.kid,
        "suite": suite.value,
        "role": "coordinator",
        "principal": "coord-1",
        "region": "eu-west",
        "key_file": str(tmp_path / "coord-1.key.json"),
        "pub_file": str(tmp_path / "coord-1.pub.json"),
    }
    assert key.suite is suite


def test_cli_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    args = (
        "generate",
        "--role",
        "agent",
        "--principal",
        "a1",
        "--region",
        "us-east",
        "--out",
        tmp_path,
    )
    assert cli(*args, "--suite", "ed25519").returncode == 0
    key_file = tmp_path / "a1.key.json"
    before = key_file.read_text()
    r = cli(*args, "--suite", "ed25519")
    assert r.returncode == 1
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert key_file.read_text() == before
    r = cli(*args, "--suite", "ed25519", "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert key_file.read_text() != before
    assert json.loads(r.stdout)["kid"] == load_signing_key(key_file).kid


@pytest.mark.parametrize(
    "bad",
    [
        ["--principal", "Agent_1"],
        ["--principal", "a.>"],
        ["--principal", "../../etc"],
        ["--region", "us east"],
        ["--region", "*"],
        ["--region", "x" * 33],
        ["--suite", "rsa"],
        ["--role", "admin"],
    ],
)
def test_cli_generate_bad_arguments_exit_2(
    tmp_path: Path, bad: list[str], here: Callable[..., Result]
) -> None:
    args = {"--role": "agent", "--principal": "a1", "--region": "us-east", "--suite": "ed25519"}
    args[bad[0]] = bad[1]
    flat = [x for kv in args.items() for x in kv]
    r = here("generate", *flat, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "invalid" in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_bad_arguments_exit_2_in_a_fresh_process(tmp_path: Path) -> None:
    r = cli("generate", "--role", "agent", "--principal", "a.*", "--region", "r", "--out", tmp_path)
    assert r.returncode == 2
    assert "invalid principal 'a.*'" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_arguments_exit_2(tmp_path: Path, here: Callable[..., Result]) -> None:
    assert (
        here("generate", "--role", "agent", "--principal", "a1", "--region", "us-east").returncode
        == 2
    )
    assert here("trust", "--out", tmp_path / "t.json").returncode == 2
    assert here().returncode == 2


def _write_pub(path: Path, identity_entry: TrustEntry) -> Path:
    path.write_text(json.dumps(identity_entry.to_json()))
    return path


def test_cli_trust_merges_entries(tmp_path: Path) -> None:
    a = make_identity("agent-a", "us-east")
    b = make_identity("agent-b", "eu-west", suite=SuiteId.ED25519)
    c = make_identity("coord-a", "us-east", role=Role.COORDINATOR)
    pa, pb, pc = (_write_pub(tmp_path / f"{i.principal}.pub.json", i.entry) for i in (a, b, c))
    out = tmp_path / "trust.json"
    r = cli("trust", "--out", out, pa, pb)
    assert r.returncode == 0, r.stderr
    assert "2 keys" in r.stdout
    config = TrustConfig.load(out)
    assert config.get(a.kid, Role.AGENT) == a.entry
    assert config.get(b.kid, Role.AGENT) == b.entry
    # merging into the existing file keeps its entries; re-adding identical entries is idempotent
    r = cli("trust", "--out", out, pa, pc, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["keys"], info["added"], info["already_present"]) == (3, 1, 1)
    config = TrustConfig.load(out)
    assert len(config) == 3
    assert config.get(c.kid, Role.COORDINATOR) == c.entry


def test_cli_trust_rejects_duplicates_and_malformed_files(
    tmp_path: Path, here: Callable[..., Result]
) -> None:
    a = make_identity("agent-a", "us-east")
    pa = _write_pub(tmp_path / "a.pub.json", a.entry)
    out = tmp_path / "trust.json"
    copy = _write_pub(tmp_path / "copy.pub.json", a.entry)
    r = cli("trust", "--out", out, pa, copy)
    assert r.returncode == 1
    assert "duplicate key id" in r.stderr and a.kid in r.stderr
    assert not out.exists()

    bad = tmp_path / "bad.pub.json"
    bad.write_text(json.dumps(_entry_json(region="US-EAST")))
    r = here("trust", "--out", out, pa, bad)
    assert r.returncode == 1
    assert str(bad) in r.stderr and "invalid region" in r.stderr
    assert not out.exists()

    garbage = tmp_path / "garbage.pub.json"
    garbage.write_text("not json")
    r = here("trust", "--out", out, garbage)
    assert r.returncode == 1 and "not valid JSON" in r.stderr

    r = here("trust", "--out", out, tmp_path / "missing.pub.json")
    assert r.returncode == 1 and "cannot read" in r.stderr

    key_file = tmp_path / "a.key.json"
    save_signing_key(key_file, a.key)
    r = here("trust", "--out", out, key_file)
    assert r.returncode == 1 and "private key file" in r.stderr
    assert not out.exists()

    # the same key id already in --out with another principal is a conflict
    assert here("trust", "--out", out, pa).returncode == 0
    moved = _write_pub(
        tmp_path / "moved.pub.json", TrustEntry(Role.AGENT, "agent-z", "us-east", a.key.public)
    )
    r = here("trust", "--out", out, moved)
    assert r.returncode == 1 and "already in" in r.stderr
    assert TrustConfig.load(out).get(a.kid, Role.AGENT).principal == "agent-a"


def test_cli_show(tmp_path: Path, here: Callable[..., Result]) -> None:
    r = cli(
        "generate",
        "--role",
        "agent",
        "--principal",
        "a1",
        "--region",
        "ap-south",
        "--out",
        tmp_path,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    kid = json.loads(r.stdout)["kid"]
    key_file, pub_file = tmp_path / "a1.key.json", tmp_path / "a1.pub.json"
    secrets = _secrets(key_file)
    expected = {
        "kid": kid,
        "suite": SuiteId.HYBRID.value,
        "role": "agent",
        "principal": "a1",
        "region": "ap-south",
    }

    r = cli("show", pub_file, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {**expected, "file": str(pub_file), "type": "public-key"}

    r = here("show", key_file, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {**expected, "file": str(key_file), "type": "signing-key"}
    for secret in secrets:
        assert secret not in r.stdout

    r = cli("show", key_file)
    assert r.returncode == 0, r.stderr
    for value in expected.values():
        assert value in r.stdout
    for secret in secrets:
        assert secret not in r.stdout + r.stderr

    # a key file without its public sibling: role, principal and region are unknown
    lone = tmp_path / "lone" / "x.key.json"
    save_signing_key(lone, KEYS[SuiteId.ED25519])
    r = here("show", lone, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kid"] == KEYS[SuiteId.ED25519].kid and info["role"] is None

    trust = tmp_path / "trust.json"
    assert here("trust", "--out", trust, pub_file).returncode == 0
    r = here("show", trust, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"file": str(trust), "type": "trust-config", "keys": [expected]}


def test_cli_show_malformed_files_exit_1(tmp_path: Path, here: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_entry_json(suite="rsa")))
    r = here("show", bad)
    assert r.returncode == 1 and "unknown signature suite" in r.stderr
    r = here("show", tmp_path / "missing.json")
    assert r.returncode == 1 and "cannot read" in r.stderr
    key_file = tmp_path / "k.key.json"
    obj = KEYS[SuiteId.ED25519].private_json()
    obj["public"]["kid"] = "k" + "0" * 32
    key_file.write_text(json.dumps(obj))
    r = here("show", key_file)
    assert r.returncode == 1 and "does not match" in r.stderr
