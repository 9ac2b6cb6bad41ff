"""``NodeMemo``: a memoised RFC 9162 interior-node hash for checking many inclusion proofs of one
batch (pure, no I/O).

A batch-signed verdict's inclusion proof (envelope step 7c, ``"tlog"``) hashes its way from its leaf
to the root: one ``H(0x01||left||right)`` per level, 17–18 for a log of 200,000 entries. The proofs
of the verdicts of one batch share their upper nodes, so a subscriber that checks them all computes
the same interior nodes again and again. :class:`NodeMemo` remembers ``(left, right) → H(0x01 ||
left || right)`` for the last :data:`DEFAULT_NODE_MEMO` pairs: a pure function memoised, so every
proof is still checked in full by :func:`cctf.translog.merkle.verify_inclusion` (every step of its
algorithm, its length rules and the final root comparison) and accepted or refused exactly as
without it; only the hash of a pair already hashed is looked up (a dictionary look-up instead of
SHA-256 of 65 bytes). In a batch of ``B`` verdicts about two of each proof's hashes are new.

Bounded: past :data:`DEFAULT_NODE_MEMO` pairs the oldest are forgotten (first in, first out), so
proofs full of garbage only evict useful entries (the checks are then as slow as without the memo,
never wrong: a value in the memo is always the hash of its key).
"""

from __future__ import annotations

from typing import Final

from cctf.translog.merkle import node_hash

__all__ = ["DEFAULT_NODE_MEMO", "NodeMemo"]

#: Pairs remembered (each ≈ 250 bytes with its two 32-byte keys: ≈ 8 MiB at this size).
DEFAULT_NODE_MEMO: Final = 32_768


class NodeMemo:
    """``memo(left, right) == node_hash(left, right)``, remembered for the last ``capacity``
    pairs."""

    __slots__ = ("_capacity", "_nodes", "hits", "misses")

    def __init__(self, capacity: int = DEFAULT_NODE_MEMO) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._nodes: dict[tuple[bytes, bytes], bytes] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def __call__(self, left: bytes, right: bytes) -> bytes:
        key = (left, right)
        value = self._nodes.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = node_hash(left, right)
        nodes = self._nodes
        if len(nodes) >= self._capacity:
            del nodes[next(iter(nodes))]
        nodes[key] = value
        return value
