"""docs/test-vectors/translog/: stored roots, proofs and one signed checkpoint, checked against the
module under test and the clean-room RFC 9162 recursion (tests/support/independent_merkle.py).

Regenerate after an intended change::

    CCTF_REGEN_VECTORS=1 .venv/bin/pytest -q tests/unit/test_translog_vectors.py -k regenerate
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import independent_merkle as ref
import pytest

from cctf.crypto.keys import PublicKeySet, SigningKey
from cctf.crypto.suites import SuiteId
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.merkle import MerkleTree, verify_consistency, verify_inclusion
from cctf.translog.note import NoteVerifier, open_checkpoint, sign_checkpoint

FILE = Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "translog" / "merkle.json"
ENTRIES = [f"cctf-vector-entry-{i}".encode() for i in range(13)]
SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 13]
INCLUSION = [(0, 1), (0, 2), (1, 2), (2, 3), (0, 8), (5, 8), (7, 8), (0, 13), (6, 13), (12, 13)]
CONSISTENCY = [(1, 2), (1, 8), (3, 7), (4, 8), (6, 8), (2, 13), (7, 13), (8, 13), (12, 13)]
NAME = "log.cctf.example/test-vector"


def _seed(component: str) -> bytes:
    return hashlib.sha256(f"cctf-test-vector/log/{component}".encode()).digest()


def _build() -> dict[str, Any]:
    tree = MerkleTree()
    for e in ENTRIES:
        tree.append(e)
    key = SigningKey(SuiteId.HYBRID, (_seed("ed25519"), _seed("ml-dsa-65")))
    cp = Checkpoint(NAME, 13, tree.root(13), ("cctf-vector extension line",))
    return {
        "note": "RFC 9162 SHA-256 tree over entries[i] (UTF-8); hashes are lower-case hex. "
        "ML-DSA-65 signing is randomised: verify the stored note, do not compare a re-signed one.",
        "entries": [e.decode() for e in ENTRIES],
        "roots": {str(n): tree.root(n).hex() for n in SIZES},
        "leaf_hashes": [tree.leaf_hash(i).hex() for i in range(len(ENTRIES))],
        "inclusion": [
            {"index": m, "size": n, "proof": [h.hex() for h in tree.inclusion_proof(m, n)]}
            for m, n in INCLUSION
        ],
        "consistency": [
            {"size1": m, "size2": n, "proof": [h.hex() for h in tree.consistency_proof(m, n)]}
            for m, n in CONSISTENCY
        ],
        "signed_checkpoint": {
            "key_name": NAME,
            "suite": SuiteId.HYBRID.value,
            "public_keys": [base64.b64encode(r).decode() for r in key.public.raw],
            "test_only_seeds_hex": [_seed("ed25519").hex(), _seed("ml-dsa-65").hex()],
            "body": cp.encode().decode(),
            "signed_note": sign_checkpoint(cp, NAME, key),
        },
    }


@pytest.mark.skipif(not os.environ.get("CCTF_REGEN_VECTORS"), reason="CCTF_REGEN_VECTORS not set")
def test_regenerate() -> None:
    FILE.write_text(json.dumps(_build(), indent=2) + "\n")


def _stored() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FILE.read_text())
    return data


def test_stored_roots_match_both_implementations() -> None:
    data = _stored()
    entries = [e.encode() for e in data["entries"]]
    tree = MerkleTree()
    for e in entries:
        tree.append(e)
    for n, root in data["roots"].items():
        assert tree.root(int(n)).hex() == root == ref.mth(entries[: int(n)]).hex()


def test_stored_proofs_verify_and_match_reference() -> None:
    data = _stored()
    entries = [e.encode() for e in data["entries"]]
    roots = {int(n): bytes.fromhex(r) for n, r in data["roots"].items()}
    for case in data["inclusion"]:
        m, n, proof = case["index"], case["size"], [bytes.fromhex(h) for h in case["proof"]]
        assert proof == ref.path(m, entries[:n])
        leaf = bytes.fromhex(data["leaf_hashes"][m])
        verify_inclusion(leaf, m, n, proof, roots.get(n, ref.mth(entries[:n])))
    for case in data["consistency"]:
        m, n, proof = case["size1"], case["size2"], [bytes.fromhex(h) for h in case["proof"]]
        assert proof == ref.proof(m, entries[:n])
        verify_consistency(m, n, proof, ref.mth(entries[:m]), ref.mth(entries[:n]))


def test_stored_signed_checkpoint_verifies() -> None:
    data = _stored()["signed_checkpoint"]
    public = PublicKeySet(
        SuiteId(data["suite"]), tuple(base64.b64decode(k) for k in data["public_keys"])
    )
    seeds = tuple(bytes.fromhex(s) for s in data["test_only_seeds_hex"])
    assert SigningKey(SuiteId.HYBRID, seeds).public.raw == public.raw
    cp = open_checkpoint(
        data["signed_note"], NoteVerifier(data["key_name"], public), data["key_name"]
    )
    assert cp.encode().decode() == data["body"]
    assert cp.root_hash.hex() == _stored()["roots"]["13"]


# The eight-leaf reference tree of the certificate-transparency project's RFC 6962 tests (the
# hashing is unchanged in RFC 9162): an external known answer for both implementations.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_certificate_transparency_reference_roots() -> None:
    tree = MerkleTree()
    for leaf in CT_LEAVES:
        tree.append(leaf)
    for n, root in enumerate(CT_ROOTS, start=1):
        assert tree.root(n).hex() == root == ref.mth(CT_LEAVES[:n]).hex()
