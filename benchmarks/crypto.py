#!/usr/bin/env python3
"""Crypto cost per operation: sign and verify µs of Ed25519, ML-DSA-65 and the hybrid suite, over a
600-byte message (about a verdict's to-be-signed bytes), with the project's own ``SigningKey``.

    .venv/bin/python benchmarks/crypto.py [--iterations N]

Prints one JSON object on stdout; ``run.py`` (``make bench``) runs this with the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId


def measure(iterations: int) -> dict[str, Any]:
    """Mean µs per sign and per verify of each suite (Ed25519 runs 10x the iterations)."""
    tbs = os.urandom(600)
    out: dict[str, Any] = {"message_bytes": len(tbs), "iterations": iterations}
    for suite, label in (
        (SuiteId.ED25519, "ed25519"),
        (SuiteId.ML_DSA_65, "ml_dsa_65"),
        (SuiteId.HYBRID, "hybrid"),
    ):
        key = SigningKey.generate(suite)
        n = iterations * (10 if suite is SuiteId.ED25519 else 1)
        key.sign(tbs)  # warm
        t = time.perf_counter()
        sigs = [key.sign(tbs) for _ in range(n)]
        sign_us = (time.perf_counter() - t) / n * 1e6
        pub = key.public
        t = time.perf_counter()
        for sig in sigs:
            pub.verify(tbs, sig)
        verify_us = (time.perf_counter() - t) / n * 1e6
        out[f"{label}_sign"] = round(sign_us, 1)
        out[f"{label}_verify"] = round(verify_us, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CCTF sign/verify cost per operation (JSON on stdout)")
    p.add_argument("--iterations", type=int, default=300, help="operations per suite (1..100000)")
    a = p.parse_args(argv)
    if not 1 <= a.iterations <= 100_000:
        p.error("--iterations takes 1..100000")
    print(json.dumps(measure(a.iterations), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
