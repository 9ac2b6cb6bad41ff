"""SPIFFE bundles, federation state and OIDC issuers: parse rules with reason codes, canonical
digests (invariant under encoding, sensitive to key material; recomputed independently from the
documented byte layout), sequence rollback, empty bundle, refresh bounds, discovery and JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from svidpki import JwtAuthority, SvidPki

from cctf.identity.bundle import (
    MAX_BUNDLE_KEYS,
    MAX_REFRESH_MS,
    MIN_REFRESH_MS,
    FederationState,
    bundle_digest,
    parse_bundle,
)
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.oidc import jwks_digest, parse_discovery, parse_jwks

TD = "demo.test"
PKI = SvidPki(TD)


def enc(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def refused(reason: Reason, data: bytes, td: str = TD) -> None:
    with pytest.raises(IdentityError) as info:
        parse_bundle(td, data)
    assert info.value.reason is reason, str(info.value)
    assert "\n" not in str(info.value)


def test_parse_valid_bundle() -> None:
    b = parse_bundle(TD, PKI.bundle_bytes(sequence=7, refresh_hint=60))
    assert (b.trust_domain, b.sequence, b.refresh_hint_s, b.authority_count) == (TD, 7, 60, 2)
    assert b.x509_authorities[0] == PKI.root.cert
    assert b.jwt_key("jwt-1") is not None and b.jwt_key("nope") is None
    b2 = parse_bundle(TD, PKI.bundle_bytes(sequence=None, refresh_hint=None))
    assert (b2.sequence, b2.refresh_hint_s) == (None, None)


def test_empty_bundle() -> None:
    refused(Reason.EMPTY_BUNDLE, enc({"keys": []}))
    refused(Reason.EMPTY_BUNDLE, PKI.bundle_bytes(x509=False, jwt_keys=False))
    # only keys of unknown use: ignored, hence empty
    refused(Reason.EMPTY_BUNDLE, enc({"keys": [{"kty": "EC", "use": "enc"}, {"kty": "EC"}]}))


def test_unknown_use_ignored_and_not_in_digest() -> None:
    plain = parse_bundle(TD, PKI.bundle_bytes())
    extra = parse_bundle(TD, PKI.bundle_bytes(extra_keys=[{"kty": "EC", "use": "future"}]))
    assert extra.ignored == 1 and extra.digest == plain.digest


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"\xff", Reason.BUNDLE_MALFORMED),
        (b"[]", Reason.BUNDLE_MALFORMED),
        (enc({"keys": {}}), Reason.BUNDLE_MALFORMED),
        (enc({"keys": [1]}), Reason.KEY_MALFORMED),
        (enc({**PKI.bundle_document(), "spiffe_sequence": -1}), Reason.BUNDLE_MALFORMED),
        (enc({**PKI.bundle_document(), "spiffe_sequence": 1 << 64}), Reason.BUNDLE_MALFORMED),
        (enc({**PKI.bundle_document(), "spiffe_sequence": True}), Reason.BUNDLE_MALFORMED),
        (enc({**PKI.bundle_document(), "spiffe_refresh_hint": "60"}), Reason.BUNDLE_MALFORMED),
        (enc({"keys": [{**PKI.x509_authority_jwk(), "x5c": []}]}), Reason.X5C_COUNT),
        (enc({"keys": [{**PKI.x509_authority_jwk(), "x5c": ["AA==", "AA=="]}]}), Reason.X5C_COUNT),
        (enc({"keys": [{**PKI.x509_authority_jwk(), "x5c": ["!!"]}]}), Reason.KEY_MALFORMED),
        (enc({"keys": [{**PKI.x509_authority_jwk(), "x5c": ["AAAA"]}]}), Reason.KEY_MALFORMED),
        (
            enc(
                {
                    "keys": [
                        {
                            k: v
                            for k, v in PKI.jwt_authorities[0].jwk(use="jwt-svid").items()
                            if k != "kid"
                        }
                    ]
                }
            ),
            Reason.KEY_MALFORMED,
        ),
        (enc({"keys": [PKI.jwt_authorities[0].jwk(use="jwt-svid")] * 2}), Reason.DUPLICATE_KID),
        (
            enc({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h", "use": "jwt-svid"}]}),
            Reason.KEY_MALFORMED,
        ),
        (
            enc({"keys": [{**PKI.jwt_authorities[0].jwk(use="jwt-svid"), "d": "AAAA"}]}),
            Reason.KEY_MALFORMED,
        ),
        (
            enc({"keys": [{**PKI.jwt_authorities[0].jwk(use="jwt-svid"), "alg": "HS256"}]}),
            Reason.ALG_HMAC,
        ),
        (
            enc({"keys": [{**PKI.jwt_authorities[0].jwk(use="jwt-svid"), "alg": "RS256"}]}),
            Reason.KEY_MALFORMED,
        ),
        (
            enc({"keys": [{**PKI.jwt_authorities[0].jwk(use="jwt-svid"), "crv": "P-192"}]}),
            Reason.KEY_MALFORMED,
        ),
        (
            enc(
                {
                    "keys": [
                        {
                            "kty": "EC",
                            "crv": "P-256",
                            "x": "AA",
                            "y": "AA",
                            "kid": "z",
                            "use": "jwt-svid",
                        }
                    ]
                }
            ),
            Reason.KEY_MALFORMED,
        ),
        (enc({"keys": [{"use": "x"}] * (MAX_BUNDLE_KEYS + 1)}), Reason.TOO_MANY_KEYS),
        (b" " * ((1 << 20) + 1), Reason.BUNDLE_TOO_LARGE),
    ],
)
def test_refused(doc: bytes, reason: Reason) -> None:
    refused(reason, doc)


def test_x509_authority_key_must_match_its_certificate() -> None:
    other = SvidPki(TD)
    jwk = {**other.x509_authority_jwk(), "x5c": PKI.x509_authority_jwk()["x5c"]}
    with pytest.raises(IdentityError, match="do not match") as info:
        parse_bundle(TD, enc({"keys": [jwk]}))
    assert info.value.reason is Reason.KEY_MALFORMED
    # without key parameters the certificate alone is the authority
    bare = {"use": "x509-svid", "x5c": PKI.x509_authority_jwk()["x5c"]}
    assert parse_bundle(TD, enc({"keys": [bare]})).x509_authorities == (PKI.root.cert,)


def test_private_key_never_echoed() -> None:
    jwk = {**PKI.jwt_authorities[0].jwk(use="jwt-svid"), "d": "SECRETSECRET"}
    with pytest.raises(IdentityError) as info:
        parse_bundle(TD, enc({"keys": [jwk]}))
    assert "SECRET" not in str(info.value)


def independent_bundle_digest(td: str, doc: dict[str, Any]) -> bytes:
    """The digest from the documented layout (docs/identity.md §3), without cctf.identity."""
    ders, rows = set(), set()
    for k in doc["keys"]:
        if k.get("use") == "x509-svid":
            ders.add(base64.b64decode(k["x5c"][0]))
        elif k.get("use") == "jwt-svid":
            key = PKI_KEYS[k["kid"]]
            spki = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            rows.add((k["kid"], k.get("alg", ""), spki))
    body = [
        td,
        sorted(ders),
        [list(r) for r in sorted(rows, key=lambda r: (r[0].encode(), r[1].encode(), r[2]))],
    ]
    return hashlib.sha256(b"CCTF-bundle-v1\x00" + msgspec.msgpack.encode(body)).digest()


PKI_KEYS = {a.kid: a.key.public_key() for a in PKI.jwt_authorities}


def test_digest_matches_documented_layout() -> None:
    doc = PKI.bundle_document()
    assert parse_bundle(TD, enc(doc)).digest == independent_bundle_digest(TD, doc)


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 1 << 63), st.booleans())
def test_digest_invariant_under_encoding(rnd: random.Random, seq: int, indent: bool) -> None:
    doc = PKI.bundle_document(sequence=seq, extra_keys=[{"use": "other"}])
    keys = list(doc["keys"])
    rnd.shuffle(keys)
    shuffled = {
        "spiffe_refresh_hint": 5,
        "keys": [dict(sorted(k.items(), reverse=True)) for k in keys],
    }
    a = parse_bundle(TD, enc(doc))
    b = parse_bundle(TD, json.dumps(shuffled, indent=2 if indent else None).encode())
    assert a.digest == b.digest == bundle_digest(b)


def test_digest_sensitive_to_key_material_and_domain() -> None:
    base = parse_bundle(TD, PKI.bundle_bytes()).digest
    other = SvidPki(TD)
    assert parse_bundle(TD, other.bundle_bytes()).digest != base
    assert parse_bundle(TD, PKI.bundle_bytes(jwt_keys=False)).digest != base
    assert parse_bundle(TD, PKI.bundle_bytes(x509=False)).digest != base
    renamed = PKI.bundle_document()
    renamed["keys"][1] = {**renamed["keys"][1], "kid": "jwt-2"}
    assert parse_bundle(TD, enc(renamed)).digest != base
    assert parse_bundle("other.test", PKI.bundle_bytes()).digest != base


# -- federation ----------------------------------------------------------------------------------
def test_federation_sequence_rollback() -> None:
    st0 = FederationState(TD, 300_000)
    up = st0.observe(PKI.bundle_bytes(sequence=5), 1_000)
    assert up.error is None and up.state.sequence == 5
    back = up.state.observe(PKI.bundle_bytes(sequence=4), 2_000)
    assert back.error is not None and back.error.reason is Reason.SEQUENCE_ROLLBACK
    assert back.state.bundle == up.state.bundle and back.state.sequence == 5
    gone = up.state.observe(PKI.bundle_bytes(sequence=None), 2_000)
    assert gone.error is not None and gone.error.reason is Reason.SEQUENCE_ROLLBACK
    same = up.state.observe(PKI.bundle_bytes(sequence=5), 3_000)
    assert same.error is None
    conflict = up.state.observe(SvidPki(TD).bundle_bytes(sequence=5), 3_000)
    assert conflict.error is not None and conflict.error.reason is Reason.SEQUENCE_CONFLICT
    fwd = back.state.observe(SvidPki(TD).bundle_bytes(sequence=6), 4_000)
    assert fwd.error is None and fwd.state.sequence == 6


def test_federation_empty_bundle_invalidates_domain() -> None:
    ok = FederationState(TD, 300_000).observe(PKI.bundle_bytes(sequence=5), 0).state
    up = ok.observe(enc({"keys": [], "spiffe_sequence": 6}), 10)
    assert up.error is not None and up.error.reason is Reason.EMPTY_BUNDLE
    assert up.state.bundle is None and up.state.invalid is Reason.EMPTY_BUNDLE
    assert up.state.sequence == 5  # rollback detection continues across it
    assert (
        up.state.observe(PKI.bundle_bytes(sequence=4), 20).error.reason is Reason.SEQUENCE_ROLLBACK
    )  # type: ignore[union-attr]
    back = up.state.observe(PKI.bundle_bytes(sequence=7), 30)
    assert back.error is None and back.state.invalid is None and back.state.bundle is not None


def test_federation_malformed_keeps_last_bundle() -> None:
    ok = FederationState(TD, 300_000).observe(PKI.bundle_bytes(sequence=5), 0).state
    up = ok.observe(b"not json", 10)
    assert up.error is not None and up.state.bundle == ok.bundle and up.state.invalid is None


@pytest.mark.parametrize(
    ("hint", "refresh_ms", "expected"),
    [
        (60, 300_000, 60_000),
        (None, 300_000, 300_000),
        (0, 300_000, MIN_REFRESH_MS),
        ((1 << 31) - 1, 300_000, MAX_REFRESH_MS),
        (None, 1_000, 1_000),
    ],
)
def test_refresh_per_hint_with_bounds(hint: int | None, refresh_ms: int, expected: int) -> None:
    up = FederationState(TD, refresh_ms).observe(PKI.bundle_bytes(refresh_hint=hint), 1_000_000)
    assert up.state.next_refresh_ms == 1_000_000 + expected
    assert not up.state.due(1_000_000 + expected - 1) and up.state.due(1_000_000 + expected)


def test_refresh_after_refusal_is_sooner() -> None:
    up = FederationState(TD, 300_000).observe(b"{}", 0)
    assert up.state.next_refresh_ms == 30_000
    with pytest.raises(ValueError):
        FederationState(TD, 10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 20) | st.none(), min_size=1, max_size=12))
def test_federation_sequence_never_goes_backwards(seqs: list[int | None]) -> None:
    state = FederationState(TD, 300_000)
    best: int | None = None
    for i, s in enumerate(seqs):
        up = state.observe(PKI.bundle_bytes(sequence=s), i)
        accepted = up.error is None
        if best is None:
            assert accepted
        else:
            assert accepted == (s is not None and s >= best)
        state = up.state
        if accepted and s is not None:
            best = s
        assert state.sequence == best


# -- OIDC --------------------------------------------------------------------------------------
ISS = "https://login.example.com/tenant/v2.0"


def test_discovery() -> None:
    d = parse_discovery(ISS, enc({"issuer": ISS, "jwks_uri": "https://login.example.com/keys"}))
    assert d.jwks_uri == "https://login.example.com/keys"
    for doc, reason in [
        ({"issuer": ISS + "/", "jwks_uri": "https://x/k"}, Reason.ISSUER_MISMATCH),
        ({"issuer": ISS.upper(), "jwks_uri": "https://x/k"}, Reason.ISSUER_MISMATCH),
        ({"jwks_uri": "https://x/k"}, Reason.ISSUER_MISMATCH),
        ({"issuer": ISS, "jwks_uri": "http://x/k"}, Reason.JWKS_URI_INVALID),
        ({"issuer": ISS}, Reason.JWKS_URI_INVALID),
        ([ISS], Reason.DISCOVERY_MALFORMED),
    ]:
        with pytest.raises(IdentityError) as info:
            parse_discovery(ISS, enc(doc))
        assert info.value.reason is reason
    with pytest.raises(IdentityError) as info:
        parse_discovery(ISS, b" " * 70_000)
    assert info.value.reason is Reason.DISCOVERY_MALFORMED


def test_jwks() -> None:
    a, b = (JwtAuthority(f"k{i}", ec.generate_private_key(ec.SECP256R1())) for i in range(2))
    ks = parse_jwks(
        enc({"keys": [a.jwk(use="sig"), b.jwk(), {**a.jwk(), "kid": "e", "use": "enc"}]})
    )
    assert [k.kid for k in ks.keys] == ["k0", "k1"] and ks.unusable_kids == {"e"}
    # digest: order and enc keys do not matter, key material does
    ks2 = parse_jwks(enc({"keys": [b.jwk(), a.jwk()]}))
    assert jwks_digest(ks) == jwks_digest(ks2) == ks2.digest
    assert parse_jwks(enc({"keys": [a.jwk()]})).digest != ks.digest
    spki = sorted(
        (
            [
                k.kid,
                "",
                k.key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ]
            for k in (a, b)
        ),
        key=lambda r: r[0].encode(),
    )
    assert ks.digest == hashlib.sha256(b"CCTF-jwks-v1\x00" + msgspec.msgpack.encode(spki)).digest()
    for doc, reason in [
        ({"keys": [{**a.jwk(), "use": "enc"}]}, Reason.EMPTY_JWKS),
        ({"keys": []}, Reason.EMPTY_JWKS),
        ({"keys": [{**a.jwk(), "key_ops": ["encrypt"]}]}, Reason.EMPTY_JWKS),
        ({"keys": [a.jwk(), a.jwk()]}, Reason.DUPLICATE_KID),
        ({"keys": "x"}, Reason.JWKS_MALFORMED),
        ({"keys": [a.jwk()] * 65}, Reason.TOO_MANY_KEYS),
    ]:
        with pytest.raises(IdentityError) as info:
            parse_jwks(enc(doc))
        assert info.value.reason is reason, doc
    with pytest.raises(IdentityError) as info:
        parse_jwks(b" " * (256 * 1024 + 1))
    assert info.value.reason is Reason.JWKS_TOO_LARGE
