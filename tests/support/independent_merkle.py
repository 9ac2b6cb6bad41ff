"""A clean-room RFC 9162 §2.1 Merkle tree, written from the RFC's recursive definitions.

It never imports ``cctf.translog``: the tests compare the module under test against it. Deliberately
naive (recursion over lists of entries, O(n) per call): clarity over speed.

    MTH({}) = SHA-256()
    MTH({d(0)}) = SHA-256(0x00 || d(0))
    MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))    k = largest power of 2 < n

    PATH(m, {d(0)}) = {}
    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
    PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k

    PROOF(m, D[n]) = SUBPROOF(m, D[n], true)
    SUBPROOF(m, D[m], true) = {}
    SUBPROOF(m, D[m], false) = {MTH(D[m])}
    SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          for m <= k
    SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  for m > k
"""

from __future__ import annotations

import hashlib


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    return _subproof(m, entries, True)


def _subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), mth(entries[:k])]
