"""Tests for cctf.crypto: suites, key ids, key files, suite policy, trust config, and `cctf keys`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirefactories import make_identity, make_key, make_trust

from cctf.cli import main
from cctf.crypto.errors import KeyError_, KeyFileError, SignatureError, SuiteError
from cctf.crypto.keys import (
    PublicKeySet,
    SigningKey,
    load_signing_key,
    save_signing_key,
)
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import (
    COMPONENTS,
    RANK,
    SIGNATURE_BYTES,
    Component,
    SuiteId,
    label,
    parse_suite,
    verify_component,
)
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.errors import CctfError, ConfigError
from cctf.util.files import MAX_FILE_BYTES

TBS = b"CCTF test message \x00\xff"
KEYS = {suite: make_key(suite, "test-crypto") for suite in SuiteId}
OTHER = {suite: make_key(suite, "test-crypto-other") for suite in SuiteId}
SIGS = {suite: KEYS[suite].sign(TBS) for suite in SuiteId}
KID_RE = re.compile(r"k[0-9a-f]{32}")


def _flip(sig: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(sig)
    out[pos] ^= mask
    return bytes(out)


# ------------------------------------------------------------------------------------------- suites


@pytest.mark.parametrize("suite", list(SuiteId))
def test_every_suite_signs_and_verifies(suite: SuiteId) -> None:
    key = KEYS[suite]
    sigs = SIGS[suite]
    assert len(sigs) == len(COMPONENTS[suite])
    for comp, sig in zip(COMPONENTS[suite], sigs, strict=True):
        assert len(sig) == SIGNATURE_BYTES[comp]
    key.public.verify(TBS, sigs)
    key.public.verify(TBS, list(sigs))
    with pytest.raises(SignatureError):
        key.public.verify(TBS + b"x", sigs)
    with pytest.raises(SignatureError):
        OTHER[suite].public.verify(TBS, sigs)


@pytest.mark.parametrize("suite", list(SuiteId))
def test_freshly_generated_keys_work(suite: SuiteId) -> None:
    a, b = SigningKey.generate(suite), SigningKey.generate(suite)
    assert a.kid != b.kid
    a.public.verify(TBS, a.sign(TBS))
    with pytest.raises(SignatureError):
        b.public.verify(TBS, a.sign(TBS))


@settings(max_examples=20, deadline=None)
@given(tbs=st.binary(max_size=512), other=st.binary(max_size=512))
def test_hybrid_signature_covers_exactly_the_message(tbs: bytes, other: bytes) -> None:
    key = KEYS[SuiteId.HYBRID]
    sigs = key.sign(tbs)
    key.public.verify(tbs, sigs)
    if other != tbs:
        with pytest.raises(SignatureError):
            key.public.verify(other, sigs)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_tampered_component_fails(data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from(SuiteId))
    sigs = list(SIGS[suite])
    index = data.draw(st.integers(0, len(sigs) - 1))
    pos = data.draw(st.integers(0, len(sigs[index]) - 1))
    mask = data.draw(st.integers(1, 255))
    sigs[index] = _flip(sigs[index], pos, mask)
    with pytest.raises(SignatureError):
        KEYS[suite].public.verify(TBS, sigs)


@pytest.mark.parametrize("suite", list(SuiteId))
def test_tampering_each_component_at_its_ends_fails(suite: SuiteId) -> None:
    for index, sig in enumerate(SIGS[suite]):
        for pos in (0, len(sig) // 2, len(sig) - 1):
            sigs = list(SIGS[suite])
            sigs[index] = _flip(sig, pos)
            with pytest.raises(SignatureError):
                KEYS[suite].public.verify(TBS, sigs)
        for bad in (b"", sig[:-1], sig + b"\x00"):  # wrong lengths
            sigs = list(SIGS[suite])
            sigs[index] = bad
            with pytest.raises(SignatureError, match="wrong length"):
                KEYS[suite].public.verify(TBS, sigs)


def test_hybrid_with_a_half_stripped_swapped_or_mixed_fails() -> None:
    public = KEYS[SuiteId.HYBRID].public
    ed, ml = SIGS[SuiteId.HYBRID]
    o_ed, o_ml = OTHER[SuiteId.HYBRID].sign(TBS)
    for sigs in ([ed], [ml], [], [ml, ed], [ed, ml, ml], [ed, ed], [ml, ml]):
        with pytest.raises(SignatureError):
            public.verify(TBS, sigs)
    for sigs in ([ed, o_ml], [o_ed, ml]):  # one half from another signer
        with pytest.raises(SignatureError):
            public.verify(TBS, sigs)
    ed2, ml2 = KEYS[SuiteId.HYBRID].sign(TBS + b"!")  # one half over another message
    for sigs in ([ed, ml2], [ed2, ml]):
        with pytest.raises(SignatureError):
            public.verify(TBS, sigs)


def test_hybrid_halves_cannot_be_relabelled_as_single_suites() -> None:
    """The labels bind the suite: same component keys, same tbs, other suite label -> fails."""
    hybrid = make_key(SuiteId.HYBRID, "relabel")
    ed_only = make_key(SuiteId.ED25519, "relabel")
    ml_only = make_key(SuiteId.ML_DSA_65, "relabel")
    # make_key derives each component seed from the label alone: the raw keys really are shared.
    assert ed_only.public.raw[0] == hybrid.public.raw[0]
    assert ml_only.public.raw[0] == hybrid.public.raw[1]
    h_ed, h_ml = hybrid.sign(TBS)
    # sanity: each half is a valid signature under its hybrid label
    verify_component(SuiteId.HYBRID, Component.ED25519, hybrid.public._keys[0], h_ed, TBS)
    verify_component(SuiteId.HYBRID, Component.ML_DSA_65, hybrid.public._keys[1], h_ml, TBS)
    with pytest.raises(SignatureError):
        ed_only.public.verify(TBS, [h_ed])
    with pytest.raises(SignatureError):
        ml_only.public.verify(TBS, [h_ml])
    # and two single-suite signatures cannot be glued into a hybrid one
    (s_ed,) = ed_only.sign(TBS)
    (s_ml,) = ml_only.sign(TBS)
    with pytest.raises(SignatureError):
        hybrid.public.verify(TBS, [s_ed, s_ml])
    with pytest.raises(SignatureError):
        hybrid.public.verify(TBS, [s_ed, h_ml])
    with pytest.raises(SignatureError):
        hybrid.public.verify(TBS, [h_ed, s_ml])


def test_labels_name_suite_and_component() -> None:
    labels = {label(s, c) for s in SuiteId for c in COMPONENTS[s]}
    assert len(labels) == 4
    assert label(SuiteId.HYBRID, Component.ED25519) == b"CCTF-v1/hybrid-ed25519-ml-dsa-65/ed25519"


def test_ed25519_signature_under_another_key_id_fails() -> None:
    a, b = KEYS[SuiteId.ED25519], OTHER[SuiteId.ED25519]
    assert a.kid != b.kid
    with pytest.raises(SignatureError):
        b.public.verify(TBS, a.sign(TBS))
    trust = make_trust(
        make_identity("agent-a", key=a),
        make_identity("agent-b", key=b),
    )
    with pytest.raises(SignatureError):
        trust.get(b.kid, Role.AGENT).keys.verify(TBS, a.sign(TBS))


def test_parse_suite() -> None:
    for suite in SuiteId:
        assert parse_suite(suite.value) is suite
    for bad in ("", "ED25519", "hybrid", "rsa", "ed25519 ", "ml-dsa-87"):
        with pytest.raises(SuiteError, match="unknown signature suite"):
            parse_suite(bad)


# ------------------------------------------------------------------------------------------ key ids


def test_key_ids_differ_across_suites_for_the_same_seeds() -> None:
    ed_seed, ml_seed = bytes(range(32)), bytes(range(32, 64))
    ed = SigningKey(SuiteId.ED25519, (ed_seed,))
    ml = SigningKey(SuiteId.ML_DSA_65, (ml_seed,))
    hy = SigningKey(SuiteId.HYBRID, (ed_seed, ml_seed))
    assert hy.public.raw == (ed.public.raw[0], ml.public.raw[0])
    assert len({ed.kid, ml.kid, hy.kid}) == 3
    # the same seed under the ML-DSA-only suite also gets another id than under Ed25519-only
    assert SigningKey(SuiteId.ML_DSA_65, (ed_seed,)).kid != ed.kid
    for key in (ed, ml, hy):
        assert KID_RE.fullmatch(key.kid)
        # the documented derivation: the suite id is hashed in, so it is bound to the id
        digest = hashlib.sha256(
            b"CCTF-kid-v1\x00" + key.suite.value.encode() + b"\x00" + b"".join(key.public.raw)
        ).hexdigest()
        assert key.kid == "k" + digest[:32]
        # the id is a function of suite and public keys only
        assert PublicKeySet(key.suite, key.public.raw).kid == key.kid
        assert SigningKey(key.suite, key._seeds).kid == key.kid


def test_public_key_set_rejects_wrong_shapes() -> None:
    raw = KEYS[SuiteId.HYBRID].public.raw
    with pytest.raises(KeyFileError, match="needs 2 public keys"):
        PublicKeySet(SuiteId.HYBRID, raw[:1])
    with pytest.raises(KeyFileError, match="must be 32 bytes"):
        PublicKeySet(SuiteId.ED25519, (raw[0][:31],))
    with pytest.raises(KeyFileError, match="must be 1952 bytes"):
        PublicKeySet(SuiteId.ML_DSA_65, (raw[0],))
    with pytest.raises(KeyFileError, match="needs 1 private seeds"):
        SigningKey(SuiteId.ED25519, (b"\x00" * 32, b"\x00" * 32))
    with pytest.raises(KeyFileError, match="seed must be 32 bytes"):
        SigningKey(SuiteId.ML_DSA_65, (b"\x00" * 31,))


@pytest.mark.parametrize("suite", list(SuiteId))
def test_signing_key_repr_and_str_hold_no_secret(suite: SuiteId) -> None:
    key = SigningKey.generate(suite)
    private = key.private_json()
    seeds = [base64.b64decode(private[f"{c.value}-seed"]) for c in COMPONENTS[suite]]
    shown = [repr(key), str(key), f"{key}", f"{key!r}", format(key), repr(key.public)]
    for text in shown:
        assert key.kid in shown[0]
        for seed in seeds:
            for form in (
                seed.hex(),
                seed.hex().upper(),
                base64.b64encode(seed).decode(),
                base64.urlsafe_b64encode(seed).decode(),
                repr(seed),
                seed[:8].hex(),
                base64.b64encode(seed).decode()[:12],
            ):
                assert form not in text


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


# ------------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize("minimum", list(SuiteId))
@pytest.mark.parametrize("suite", list(SuiteId))
def test_suite_policy_enforces_its_minimum(minimum: SuiteId, suite: SuiteId) -> None:
    policy = SuitePolicy(minimum)
    if RANK[suite] < RANK[minimum]:
        with pytest.raises(SuiteError, match="below the required minimum"):
            policy.check(suite.value)
    else:
        assert policy.check(suite.value) is suite


def test_suite_policy_defaults_and_unknown_suites() -> None:
    assert SuitePolicy().minimum is SuiteId.HYBRID
    assert RANK[SuiteId.HYBRID] > RANK[SuiteId.ML_DSA_65] > RANK[SuiteId.ED25519]
    for minimum in SuiteId:
        for bad in ("", "rsa", "HYBRID-ED25519-ML-DSA-65", "hybrid-ed25519-ml-dsa-65\n"):
            with pytest.raises(SuiteError, match="unknown signature suite"):
                SuitePolicy(minimum).check(bad)
    assert SuitePolicy.parse("ml-dsa-65").minimum is SuiteId.ML_DSA_65
    with pytest.raises(SuiteError):
        SuitePolicy.parse("none")


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
