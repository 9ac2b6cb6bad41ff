"""Tests for cctf.crypto: suites, key ids, suite policy (key and trust files: test_crypto_files.py; `cctf keys`: test_crypto_cli.py)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_identity, make_key, make_trust

from cctf.crypto.errors import KeyFileError, SignatureError, SuiteError
from cctf.crypto.keys import (
    PublicKeySet,
    SigningKey,
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
from cctf.crypto.trust import Role

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
