#!/usr/bin/env python3
"""Transparency-log core cost on one core: appends/s of :class:`cctf.translog.merkle.MerkleTree`,
root / proof computation and verification rates, proof sizes, and the cost of signing and
verifying one hybrid C2SP checkpoint note.

    .venv/bin/python benchmarks/translog.py [--entries N]

Prints one JSON object on stdout. Baseline of the same run: ``sha256_per_s`` (bare SHA-256 of a
65-byte node input, the unit every append pays about twice).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.merkle import MerkleTree, verify_consistency, verify_inclusion
from cctf.translog.note import NoteVerifier, open_checkpoint, sign_checkpoint


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def measure(entries: int) -> dict[str, Any]:
    data = [os.urandom(200) for _ in range(entries)]  # about a verdict's size
    out: dict[str, Any] = {"entries": entries, "entry_bytes": 200}

    node = os.urandom(65)
    t = time.perf_counter()
    for _ in range(entries):
        hashlib.sha256(node).digest()
    out["sha256_per_s"] = _rate(entries, time.perf_counter() - t)

    tree = MerkleTree()
    t = time.perf_counter()
    for e in data:
        tree.append(e)
    out["appends_per_s"] = _rate(entries, time.perf_counter() - t)

    n = tree.size
    k = min(2000, n)
    idx = [(i * 7919) % n for i in range(k)]
    t = time.perf_counter()
    for _ in range(k):
        tree.root()
    out["root_per_s"] = _rate(k, time.perf_counter() - t)
    root = tree.root()

    t = time.perf_counter()
    proofs = [tree.inclusion_proof(i, n) for i in idx]
    out["inclusion_proofs_per_s"] = _rate(k, time.perf_counter() - t)
    t = time.perf_counter()
    for i, p in zip(idx, proofs, strict=True):
        verify_inclusion(tree.leaf_hash(i), i, n, p, root)
    out["inclusion_verifies_per_s"] = _rate(k, time.perf_counter() - t)

    sizes1 = [max(1, i) for i in idx]  # 1 <= size1 < n: a real proof each
    t = time.perf_counter()
    cproofs = [tree.consistency_proof(m, n) for m in sizes1]
    out["consistency_proofs_per_s"] = _rate(k, time.perf_counter() - t)
    roots1 = [tree.root(m) for m in sizes1]
    t = time.perf_counter()
    for m, p, r1 in zip(sizes1, cproofs, roots1, strict=True):
        verify_consistency(m, n, p, r1, root)
    out["consistency_verifies_per_s"] = _rate(k, time.perf_counter() - t)

    out["proof_hashes"] = {
        "inclusion_max": max(len(p) for p in proofs),
        "inclusion_mean": round(sum(len(p) for p in proofs) / k, 2),
        "consistency_max": max(len(p) for p in cproofs),
        "inclusion_bytes_max": 32 * max(len(p) for p in proofs),
    }

    key = SigningKey.generate(SuiteId.HYBRID)
    name = "log.cctf.example/bench"
    verifier = NoteVerifier(name, key.public)
    cp = Checkpoint(name, n, root)
    reps = 50
    t = time.perf_counter()
    notes = [sign_checkpoint(cp, name, key) for _ in range(reps)]
    out["checkpoint_sign_us"] = round((time.perf_counter() - t) / reps * 1e6, 1)
    t = time.perf_counter()
    for note in notes:
        open_checkpoint(note, verifier, name)
    out["checkpoint_verify_us"] = round((time.perf_counter() - t) / reps * 1e6, 1)
    out["checkpoint_note_bytes"] = len(notes[0].encode())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CCTF transparency-log core cost (JSON on stdout)")
    p.add_argument("--entries", type=int, default=200_000, help="appends (1..10000000)")
    a = p.parse_args(argv)
    if not 1 <= a.entries <= 10_000_000:
        p.error("--entries takes 1..10000000")
    print(json.dumps(measure(a.entries), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
