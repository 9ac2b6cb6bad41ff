"""Known-answer vectors for the canonical key-material digests (docs/identity.md §3), checked with
the reference code and with a clean-room computation from the document (no ``cctf`` imports in
``independent_*`` below: JWK -> SubjectPublicKeyInfo with ``cryptography``, MessagePack by hand).

Regenerate after an intended change with
``CCTF_REGEN_VECTORS=1 .venv/bin/pytest -q tests/unit/test_identity_vectors.py -k regenerate``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cctf.identity.bundle import parse_bundle
from cctf.identity.oidc import parse_jwks

VECTORS = (
    Path(__file__).resolve().parents[2]
    / "docs"
    / "test-vectors"
    / "identity-keys"
    / "key-digests.json"
)


# -- clean room ----------------------------------------------------------------------------------
def _b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _spki(jwk: dict[str, Any]) -> bytes:
    kty = jwk["kty"]
    if kty == "RSA":
        n, e = (int.from_bytes(_b64u(jwk[k]), "big") for k in ("n", "e"))
        key: Any = rsa.RSAPublicNumbers(e, n).public_key()
    elif kty == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[
            jwk["crv"]
        ]
        x, y = (int.from_bytes(_b64u(jwk[k]), "big") for k in ("x", "y"))
        key = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    else:
        key = ed25519.Ed25519PublicKey.from_public_bytes(_b64u(jwk["x"]))
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _mp(v: Any) -> bytes:
    """The shortest-form MessagePack of str / bytes / list (wire-protocol.md §1)."""
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        head = (
            bytes([0xA0 | n])
            if n < 32
            else b"\xd9" + bytes([n])
            if n < 256
            else b"\xda" + struct.pack(">H", n)
            if n < 65536
            else b"\xdb" + struct.pack(">I", n)
        )
        return head + b
    if isinstance(v, bytes):
        n = len(v)
        head = (
            b"\xc4" + bytes([n])
            if n < 256
            else b"\xc5" + struct.pack(">H", n)
            if n < 65536
            else b"\xc6" + struct.pack(">I", n)
        )
        return head + v
    n = len(v)
    head = (
        bytes([0x90 | n])
        if n < 16
        else b"\xdc" + struct.pack(">H", n)
        if n < 65536
        else b"\xdd" + struct.pack(">I", n)
    )
    return head + b"".join(_mp(x) for x in v)


def _rows(keys: list[dict[str, Any]]) -> list[list[Any]]:
    rows = {(k.get("kid", ""), k.get("alg", ""), _spki(k)) for k in keys}
    return [list(r) for r in sorted(rows, key=lambda r: (r[0].encode(), r[1].encode(), r[2]))]


def independent_bundle_digest(td: str, doc: dict[str, Any]) -> str:
    ders = sorted(
        {base64.b64decode(k["x5c"][0]) for k in doc["keys"] if k.get("use") == "x509-svid"}
    )
    jwts = _rows([k for k in doc["keys"] if k.get("use") == "jwt-svid"])
    return hashlib.sha256(b"CCTF-bundle-v1\x00" + _mp([td, ders, jwts])).hexdigest()


def independent_jwks_digest(doc: dict[str, Any]) -> str:
    usable = [
        k
        for k in doc["keys"]
        if k.get("use", "sig") == "sig" and "verify" in k.get("key_ops", ["verify"])
    ]
    return hashlib.sha256(b"CCTF-jwks-v1\x00" + _mp(_rows(usable))).hexdigest()


# -- vectors ---------------------------------------------------------------------------------------
def _generate() -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
    from svidpki import JwtAuthority, SvidPki

    pki = SvidPki("demo.test", intermediates=0)
    pki.jwt_authorities.append(
        JwtAuthority("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    pki.jwt_authorities.append(JwtAuthority("ed-1", ed25519.Ed25519PrivateKey.generate()))
    bundle = pki.bundle_document(
        sequence=42, refresh_hint=60, extra_keys=[{"kty": "EC", "use": "future"}]
    )
    same = {"spiffe_sequence": 43, "keys": list(reversed(bundle["keys"]))}
    idp = [
        JwtAuthority("idp-a", ec.generate_private_key(ec.SECP384R1())),
        JwtAuthority("idp-b", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ]
    jwks = {
        "keys": [
            idp[0].jwk(use="sig", alg="ES384"),
            idp[1].jwk(),
            {**idp[1].jwk(), "kid": "enc-1", "use": "enc"},
        ]
    }
    return {
        "description": "canonical key-material digests, docs/identity.md section 3",
        "bundles": [
            {
                "trust_domain": "demo.test",
                "document": bundle,
                "digest_hex": independent_bundle_digest("demo.test", bundle),
            },
            {
                "trust_domain": "demo.test",
                "document": same,
                "digest_hex": independent_bundle_digest("demo.test", same),
                "note": "same keys, other order and sequence: same digest",
            },
            {
                "trust_domain": "other.test",
                "document": bundle,
                "digest_hex": independent_bundle_digest("other.test", bundle),
                "note": "trust domain is part of the digest",
            },
        ],
        "jwks": [
            {
                "document": jwks,
                "digest_hex": independent_jwks_digest(jwks),
                "note": "the use=enc key is not part of the digest",
            }
        ],
    }


def test_regenerate() -> None:
    if not os.environ.get("CCTF_REGEN_VECTORS"):
        pytest.skip(
            "set CCTF_REGEN_VECTORS=1 to regenerate docs/test-vectors/identity-keys/key-digests.json"
        )
    VECTORS.write_text(json.dumps(_generate(), indent=1) + "\n")


def test_vectors_agree_with_reference_and_clean_room() -> None:
    data = json.loads(VECTORS.read_text())
    for v in data["bundles"]:
        ref = parse_bundle(v["trust_domain"], json.dumps(v["document"]).encode()).digest.hex()
        assert ref == v["digest_hex"] == independent_bundle_digest(v["trust_domain"], v["document"])
    b = data["bundles"]
    assert b[0]["digest_hex"] == b[1]["digest_hex"] != b[2]["digest_hex"]
    for v in data["jwks"]:
        ref = parse_jwks(json.dumps(v["document"]).encode()).digest.hex()
        assert ref == v["digest_hex"] == independent_jwks_digest(v["document"])


def test_clean_room_agrees_on_fresh_keys() -> None:
    data = _generate()
    for v in data["bundles"]:
        ref = parse_bundle(v["trust_domain"], json.dumps(v["document"]).encode()).digest.hex()
        assert ref == v["digest_hex"]
    for v in data["jwks"]:
        assert parse_jwks(json.dumps(v["document"]).encode()).digest.hex() == v["digest_hex"]
