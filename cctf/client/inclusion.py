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

:meth:`NodeMemo.verify_inclusion` is :func:`~cctf.translog.merkle.verify_inclusion` through the
memo with the look-ups inline (one call per proof instead of one per level, issue #9): the same
walk, and whatever is not a well-formed proof that leads to the root (a shape it does not expect, an
extra or a missing hash, another root) goes to the reference function, which then accepts or
refuses it with its own reason, so both accept exactly the same proofs.

Bounded: past :data:`DEFAULT_NODE_MEMO` pairs the oldest are forgotten (first in, first out), so
proofs full of garbage only evict useful entries (the checks are then as slow as without the memo,
never wrong: a value in the memo is always the hash of its key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cctf.translog.merkle import HASH_SIZE, MAX_PROOF_HASHES, MAX_TREE_SIZE, node_hash
from cctf.translog.merkle import verify_inclusion as reference_verify_inclusion

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
        return self._miss(key)

    def _miss(self, key: tuple[bytes, bytes]) -> bytes:
        self.misses += 1
        value = node_hash(key[0], key[1])
        nodes = self._nodes
        if len(nodes) >= self._capacity:
            del nodes[next(iter(nodes))]
        nodes[key] = value
        return value

    def verify_inclusion(
        self, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
    ) -> None:
        """``verify_inclusion(leaf, index, size, proof, root, self)``
        (:func:`cctf.translog.merkle.verify_inclusion`, RFC 9162 §2.1.3.2) with the memo's look-ups
        inline. Raises :class:`~cctf.translog.errors.ProofError` (the reference's reasons: every
        case off the accepting path is handed to it)."""
        if (
            type(leaf) is not bytes
            or type(root) is not bytes
            or len(leaf) != HASH_SIZE
            or len(root) != HASH_SIZE
            or type(index) is not int
            or type(size) is not int
            or not 0 <= index < size <= MAX_TREE_SIZE
            or (type(proof) is not list and type(proof) is not tuple)
            or len(proof) > MAX_PROOF_HASHES
        ):
            reference_verify_inclusion(leaf, index, size, proof, root, self)
            return
        nodes = self._nodes
        hits = 0
        fn, sn, r = index, size - 1, leaf
        for p in proof:
            if sn == 0 or type(p) is not bytes or len(p) != HASH_SIZE:
                break  # an extra or a malformed hash: the reference's to name
            if fn & 1 or fn == sn:
                key = (p, r)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                key = (r, p)
            value = nodes.get(key)
            if value is None:
                value = self._miss(key)
            else:
                hits += 1
            r = value
            fn >>= 1
            sn >>= 1
        else:
            if sn == 0 and r == root:
                self.hits += hits
                return
        self.hits += hits
        reference_verify_inclusion(leaf, index, size, proof, root, self)
