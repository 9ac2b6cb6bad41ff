"""Tests for cctf.crypto key and trust files: round trips, modes, malformed and oversized files."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirefactories import make_identity, make_key, make_trust

from cctf.cli import main
from cctf.crypto.errors import KeyError_, KeyFileError
from cctf.crypto.keys import (
    SigningKey,
    load_signing_key,
    save_signing_key,
)
from cctf.crypto.suites import (
    SuiteId,
)
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.errors import CctfError, ConfigError
from cctf.util.files import MAX_FILE_BYTES

TBS = b"CCTF test message \x00\xff"
KEYS = {suite: make_key(suite, "test-crypto") for suite in SuiteId}
KID_RE = re.compile(r"k[0-9a-f]{32}")


# ---------------------------------------------------------------------------------------- key files


@pytest.mark.parametrize("suite", list(SuiteId))
def test_key_file_is_private_and_round_trips(tmp_path: Path, suite: SuiteId) -> None:
    key = SigningKey.generate(suite)
    path = tmp_path / "sub" / "agent.key.json"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        save_signing_key(path, key)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["agent.key.json"]  # no temp file left
    loaded = load_signing_key(path)
    assert loaded.kid == key.kid and loaded.suite is suite
    key.public.verify(TBS, loaded.sign(TBS))
    on_disk = json.loads(path.read_text())
    assert on_disk["public"]["kid"] == key.kid


def test_saving_over_a_world_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "k.key.json"
    path.write_text("{}")
    path.chmod(0o644)
    save_signing_key(path, KEYS[SuiteId.ED25519])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).kid == KEYS[SuiteId.ED25519].kid


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_SEED = _b64(b"\x01" * 32)
_MALFORMED_KEY_FILES: list[tuple[str, str]] = [
    ("", "not valid JSON"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('"key"', "must hold a JSON object"),
    ("{}", "not a cctf signing key file"),
    ('{"kind": "cctf-trust", "suite": "ed25519"}', "not a cctf signing key file"),
    ('{"kind": "cctf-signing-key", "suite": "rsa"}', "unknown signature suite 'rsa'"),
    ('{"kind": "cctf-signing-key"}', "unknown signature suite"),
    ('{"kind": "cctf-signing-key", "suite": "ed25519"}', "ed25519 seed must be a base64 string"),
    ('{"kind": "cctf-signing-key", "suite": "ed25519", "ed25519-seed": 7}', "base64 string"),
    ('{"kind": "cctf-signing-key", "suite": "ed25519", "ed25519-seed": "!!"}', "not valid base64"),
    (
        '{"kind": "cctf-signing-key", "suite": "ed25519", "ed25519-seed": "ünï"}',
        "not valid base64",
    ),
    (
        json.dumps(
            {"kind": "cctf-signing-key", "suite": "ed25519", "ed25519-seed": _b64(b"1" * 31)}
        ),
        "ed25519 seed must be 32 bytes",
    ),
    (
        json.dumps(
            {"kind": "cctf-signing-key", "suite": "hybrid-ed25519-ml-dsa-65", "ed25519-seed": _SEED}
        ),
        "ml-dsa-65 seed must be a base64 string",
    ),
]


@pytest.mark.parametrize(("content", "message"), _MALFORMED_KEY_FILES)
def test_malformed_key_files_raise_key_file_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.key.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=re.escape(message)):
        load_signing_key(path)


def test_unreadable_key_files_raise_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_signing_key(tmp_path / "missing.key.json")
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_signing_key(tmp_path)  # a directory
    binary = tmp_path / "binary.key.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        load_signing_key(binary)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b" " * (MAX_FILE_BYTES + 1), f"larger than {MAX_FILE_BYTES} bytes"),  # the one size cap
        (b"[" * 200_000, "not valid JSON"),  # absurd nesting: one line, not a RecursionError
    ],
)
def test_oversized_or_absurd_key_and_trust_files_are_one_line_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(content)
    for load in (load_signing_key, TrustConfig.load):
        with pytest.raises(KeyFileError, match=re.escape(message)) as info:
            load(path)
        assert "\n" not in str(info.value)
        assert isinstance(info.value, CctfError) and isinstance(info.value, ConfigError)


def test_key_writes_use_fresh_temp_names_and_never_leave_them(tmp_path: Path) -> None:
    """A stale ``<name>.tmp`` (the old fixed temp name), even a symlink elsewhere, is not used."""
    path = tmp_path / "agent.key.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    (tmp_path / "agent.key.json.tmp").symlink_to(elsewhere)
    save_signing_key(path, KEYS[SuiteId.ED25519])
    assert elsewhere.read_text() == "untouched"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent.key.json",
        "agent.key.json.tmp",
        "elsewhere",
    ]


def test_public_key_file_is_world_readable_and_private_key_is_not(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        args = "keys generate --role agent --principal agent-x --region r1 --suite ed25519"
        rc = main([*args.split(), "--out", str(tmp_path)])
    finally:
        os.umask(old_umask)
    assert rc == 0
    assert stat.S_IMODE((tmp_path / "agent-x.key.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "agent-x.pub.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-x.key.json", "agent-x.pub.json"]


# --------------------------------------------------------------------------------------- trust files


def _entry_json(key_suite: SuiteId = SuiteId.HYBRID, /, **override: Any) -> dict[str, Any]:
    """A valid trust entry (agent-a, us-east) as JSON, with fields overridden by name."""
    entry = TrustEntry(Role.AGENT, "agent-a", "us-east", KEYS[key_suite].public).to_json()
    entry.update(override)
    return entry


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


_MALFORMED_TRUST: list[tuple[Any, str]] = [
    ([], "version 1"),
    ({"keys": []}, "version 1"),
    ({"version": 2, "keys": []}, "version 1"),
    ({"version": 1}, "'keys' list"),
    ({"version": 1, "keys": {}}, "'keys' list"),
    ({"version": 1, "keys": ["x"]}, "trust entry must be an object"),
    ({"version": 1, "keys": [_entry_json(role="admin")]}, "unknown role 'admin'"),
    ({"version": 1, "keys": [_without(_entry_json(), "role")]}, "unknown role None"),
    ({"version": 1, "keys": [_entry_json(principal="Agent.A")]}, "invalid principal"),
    ({"version": 1, "keys": [_entry_json(principal="a.>")]}, "invalid principal"),
    ({"version": 1, "keys": [_without(_entry_json(), "principal")]}, "invalid principal"),
    ({"version": 1, "keys": [_entry_json(region="us east")]}, "invalid region"),
    ({"version": 1, "keys": [_entry_json(suite="rsa")]}, "unknown signature suite 'rsa'"),
    ({"version": 1, "keys": [_entry_json(kid="k" + "0" * 32)]}, "does not match its public keys"),
    ({"version": 1, "keys": [_entry_json(ed25519=_b64(b"\x00" * 31))]}, "must be 32 bytes"),
    ({"version": 1, "keys": [_without(_entry_json(), "ml-dsa-65")]}, "must be a base64 string"),
    ({"version": 1, "keys": [_entry_json(), _entry_json()]}, "duplicate key id"),
]


@pytest.mark.parametrize(("document", "message"), _MALFORMED_TRUST)
def test_malformed_trust_configs_raise_key_file_error(
    tmp_path: Path, document: Any, message: str
) -> None:
    with pytest.raises(KeyFileError, match=re.escape(message)):
        TrustConfig.from_json(document)
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(document))
    if not isinstance(document, dict):
        message = "must hold a JSON object"
    with pytest.raises(KeyFileError, match=re.escape(message)):
        TrustConfig.load(path)


def test_trust_file_errors_on_read(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read trust config"):
        TrustConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "keys": [')
    with pytest.raises(KeyFileError, match="not valid JSON"):
        TrustConfig.load(bad)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_json_values)
def test_arbitrary_trust_documents_raise_only_key_file_error(document: Any) -> None:
    with contextlib.suppress(KeyFileError):
        TrustConfig.from_json(document)


_ENTRY_FIELDS = sorted(_entry_json(SuiteId.ED25519))


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(_ENTRY_FIELDS),
    value=_json_values | st.sampled_from(["ed25519", "ml-dsa-65", "agent", "coordinator", _SEED]),
    drop=st.booleans(),
)
def test_mutated_trust_entries_raise_only_key_file_error(
    field: str, value: Any, drop: bool
) -> None:
    entry = _entry_json(SuiteId.ED25519)
    original = dict(entry)
    if drop:
        del entry[field]
    else:
        entry[field] = value
    try:
        config = TrustConfig.from_json({"version": 1, "keys": [entry]})
    except KeyFileError:
        return
    # accepted: the entry must still be consistent (a claimed kid matches the public keys)
    (parsed,) = config
    assert KID_RE.fullmatch(parsed.kid)
    if "kid" in entry:
        assert parsed.kid == entry["kid"]
    if parsed.keys.suite is SuiteId.ED25519 and parsed.keys.raw == KEYS[SuiteId.ED25519].public.raw:
        assert parsed.kid == original["kid"]


def test_trust_config_round_trips_and_is_private(tmp_path: Path) -> None:
    agent = make_identity("agent-a", "us-east")
    coord = make_identity("coord-a", "eu-west", role=Role.COORDINATOR, suite=SuiteId.ED25519)
    config = make_trust(agent, coord)
    path = tmp_path / "trust.json"
    config.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = TrustConfig.load(path)
    assert len(loaded) == 2
    assert loaded.get(agent.kid, Role.AGENT) == agent.entry
    assert loaded.get(coord.kid, Role.COORDINATOR) == coord.entry
    assert loaded.to_json() == config.to_json()


def test_trust_config_role_mismatch_and_unknown_key_raise() -> None:
    agent = make_identity("agent-a", "us-east")
    coord = make_identity("coord-a", "us-east", role=Role.COORDINATOR)
    config = make_trust(agent, coord)
    assert config.get(agent.kid, Role.AGENT) is not None
    with pytest.raises(KeyError_, match="belongs to a agent, not a coordinator"):
        config.get(agent.kid, Role.COORDINATOR)
    with pytest.raises(KeyError_, match="belongs to a coordinator, not a agent"):
        config.get(coord.kid, Role.AGENT)
    with pytest.raises(KeyError_, match="unknown key id"):
        config.get("k" + "f" * 32, Role.AGENT)
    with pytest.raises(KeyFileError, match="duplicate key id"):
        config.with_entries([agent.entry])
    other = make_identity("agent-b", "eu-west")
    assert len(config.with_entries([other.entry])) == 3
    assert len(config) == 2  # immutable
