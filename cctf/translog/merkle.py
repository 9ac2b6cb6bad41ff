"""RFC 9162 §2.1 Merkle trees: hashing, an append-only tree, proofs and their verifiers.

Hashing (SHA-256)::

    MTH({})        = SHA-256("")
    leaf hash      = SHA-256(0x00 || entry)
    interior node  = SHA-256(0x01 || left || right)

:class:`MerkleTree` stores leaf hashes (an entry itself is never kept) in levels: ``levels[h][i]``
is the hash of the complete, aligned subtree of ``2**h`` leaves starting at leaf ``i * 2**h``.
An append adds one leaf hash and completes at most ``log2(n)`` subtrees (amortised O(1) hashes);
the last node of every level is the compact range ("frontier") of the tree. Any subtree hash
``MTH(D[a:a+n])`` the RFC's recursive definitions need is assembled from at most ``2 log2(n)``
stored nodes, so roots of any earlier size are O(log n) and proofs O(log² n) (no hashing of
entries again, nothing O(n)).

The verifiers follow RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) step by step, and
raise :class:`ProofError` with a reason code; they never return a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from cctf.translog.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
MAX_PROOF_HASHES: Final = 64
"""A proof for a tree of at most 2**63 leaves has at most 63 (inclusion) or 64 (consistency, when
``size1`` is a power of two the verifier prepends ``root1``) hashes; longer ones are refused."""
MAX_TREE_SIZE: Final = 2**63 - 1
"""The largest tree size a checkpoint or verifier accepts (sizes are uint64 on the wire, kept within
int64 for every consumer)."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes. Not thread-safe; pure."""

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    def append(self, entry: bytes) -> int:
        """Append one entry (hashed as a leaf); returns its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, leaf: bytes) -> int:
        """Append an already computed leaf hash (e.g. when resuming from storage); returns its
        index."""
        if len(leaf) != HASH_SIZE:
            raise ProofError("hash-length", f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
        levels = self._levels
        index = len(levels[0])
        if index >= MAX_TREE_SIZE:
            raise ProofError("tree-full", "the tree holds the maximum number of leaves")
        levels[0].append(leaf)
        h, count, node = 0, index + 1, leaf
        while count % 2 == 0:  # this append completed a subtree of 2**(h+1) leaves
            node = node_hash(levels[h][-2], node)
            h += 1
            count //= 2
            if h == len(levels):
                levels.append([])
            levels[h].append(node)
        return index

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """``MTH(D[0:size])``: the root of the tree when it held ``size`` leaves (default: now)."""
        n = self.size if size is None else size
        self._check_size(n)
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def root_after(self, leaves: Sequence[bytes]) -> bytes:
        """The root the tree WOULD have with ``leaves`` (leaf hashes) appended, leaving it as it is:
        the complete subtrees of its right edge, then the new leaves merged in as a binary counter,
        folded right to left (for a record checked before it may be applied)."""
        n = self.size
        stack: list[tuple[int, bytes]] = []  # (height, subtree root), heights strictly decreasing
        start = 0
        for h in range(n.bit_length() - 1, -1, -1):
            if n >> h & 1:
                stack.append((h, self._levels[h][start >> h]))
                start += 1 << h
        for leaf in leaves:
            if len(leaf) != HASH_SIZE:
                raise ProofError("hash-length", f"a leaf hash is {HASH_SIZE} bytes")
            h, node = 0, leaf
            while stack and stack[-1][0] == h:
                node = node_hash(stack.pop()[1], node)
                h += 1
            stack.append((h, node))
        if not stack:
            return EMPTY_ROOT
        node = stack[-1][1]
        for _h, left in reversed(stack[:-1]):
            node = node_hash(left, node)
        return node

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 ``PATH(index, D[0:size])``."""
        n = self.size if size is None else size
        self._check_size(n)
        self._check_index(index, n)
        proof: list[bytes] = []
        start, m = 0, index
        while n > 1:  # iterative PATH: descend, collecting siblings, then reverse (leaf first)
            k = _split(n)
            if m < k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, m, n = start + k, m - k, n - k
        proof.reverse()
        return proof

    def inclusion_proofs(self, first: int, size: int | None = None) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of every leaf ``first .. size - 1`` in the tree of ``size``
        leaves (a sealed batch's proofs), equal to calling it per leaf, computed bottom-up: every
        hash but the partial right-edge subtrees is read from the levels, and each of those
        (shared by the proofs) is hashed once per call instead of once per proof."""
        n0 = self.size if size is None else size
        self._check_size(n0)
        if first == n0:
            return []
        self._check_index(first, n0)
        # Bottom-up (the same hashes as the RFC's top-down PATH): with ``inner`` the bit length
        # of ``index ^ (size - 1)``, the proof is the sibling of the leaf's ancestor at each level
        # below ``inner`` (complete aligned subtrees, read from the levels, except the one at
        # level ``inner - 1``, which may be the partial right edge: hashed once per start and
        # shared), then, above, the left sibling at each level where the index's bit is set.
        levels = self._levels
        last = n0 - 1
        top = n0.bit_length()
        edges: dict[int, bytes] = {}  # partial right-edge subtree roots, by their first leaf
        out: list[list[bytes]] = []
        for index in range(first, n0):
            inner = (index ^ last).bit_length()
            proof = [levels[h][(index >> h) ^ 1] for h in range(inner - 1)]
            if inner:
                h = inner - 1
                sib = (index >> h) ^ 1
                begin = sib << h
                if begin + (1 << h) <= n0:
                    proof.append(levels[h][sib])
                else:
                    node = edges.get(begin)
                    if node is None:
                        node = edges[begin] = self._subtree(begin, n0 - begin)
                    proof.append(node)
            for h in range(inner, top):
                if (index >> h) & 1:
                    proof.append(levels[h][(index >> h) ^ 1])
            out.append(proof)
        return out

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 ``PROOF(size1, D[0:size2])``; empty when ``size1`` is 0 or equals
        ``size2`` (nothing to prove, see :func:`verify_consistency`)."""
        n = self.size if size2 is None else size2
        self._check_size(n)
        if not 0 <= size1 <= n:
            raise ProofError("size-order", f"size1 {size1} is not within 0..size2 {n}")
        if size1 in (0, n):
            return []
        proof: list[bytes] = []
        start, m, complete = 0, size1, True
        while m != n:  # iterative SUBPROOF(m, D[start:start+n], complete)
            k = _split(n)
            if m <= k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, m, n, complete = start + k, m - k, n - k, False
        if not complete:
            proof.append(self._subtree(start, m))
        proof.reverse()
        return proof

    def _subtree(self, start: int, n: int) -> bytes:
        """``MTH(D[start:start+n])`` for a range the RFC recursion produces (n > 0): its left
        parts are complete aligned subtrees, read from the levels."""
        levels = self._levels
        rights: list[bytes] = []
        while n & (n - 1) or start % n:  # not one complete aligned subtree
            k = _split(n)
            h = k.bit_length() - 1
            rights.append(levels[h][start >> h])
            start, n = start + k, n - k
        h = n.bit_length() - 1
        node = levels[h][start >> h]
        for left in reversed(rights):
            node = node_hash(left, node)
        return node

    def _check_size(self, n: int) -> None:
        if not 0 <= n <= self.size:
            raise ProofError("size-out-of-range", f"size {n} is not within 0..{self.size}")

    @staticmethod
    def _check_index(index: int, n: int) -> None:
        if not 0 <= index < n:
            raise ProofError("index-out-of-range", f"index {index} is not below size {n}")


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        n = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ProofError("hash-length", f"{what} must be {HASH_SIZE} bytes, got {n}")
    return value


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    if not isinstance(proof, list | tuple):
        raise ProofError("bad-proof", "a proof is a list of hashes")
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError("proof-too-long", f"a proof holds at most {MAX_PROOF_HASHES} hashes")
    return [_check_hash(p, "proof hash") for p in proof]


def _check_tree_size(size: int, what: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError("size-out-of-range", f"{what} {size!r} is not within 0..2^63-1")


def verify_inclusion(
    leaf: bytes,
    index: int,
    size: int,
    proof: Sequence[bytes],
    root: bytes,
    node: Callable[[bytes, bytes], bytes] = node_hash,
) -> None:
    """Verify that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` leaves whose root
    is ``root`` (RFC 9162 §2.1.3.2). Raises :class:`ProofError`.

    0. Shapes: sizes within 0..2^63-1, every hash 32 bytes, at most 64 proof hashes.
    1. ``index`` < ``size`` (so a tree of size 0 proves nothing): else ``index-out-of-range``.
    2. ``fn = index``, ``sn = size - 1``, ``r = leaf``.
    3. For each proof hash ``p``: ``sn == 0`` here means the proof is too long
       (``proof-not-consumed``); if ``LSB(fn)`` or ``fn == sn``: ``r = H(0x01||p||r)`` and, if
       ``LSB(fn)`` was not set, shift ``fn``, ``sn`` right until ``LSB(fn)`` or ``fn == 0``;
       otherwise ``r = H(0x01||r||p)``; then shift both right once.
    4. ``sn == 0`` (else the proof is truncated: ``proof-incomplete``) and ``r == root``
       (else ``root-mismatch``).

    ``node``: computes ``H(0x01||left||right)`` (a receiver may pass a memoised :func:`node_hash`,
    e.g. ``cctf.client.inclusion.NodeMemo``: the proofs of one batch share their upper nodes).
    """
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    _check_tree_size(size, "tree size")
    _check_tree_size(index, "leaf index")
    path = _check_proof(proof)
    if index >= size:
        raise ProofError("index-out-of-range", f"leaf index {index} is not below size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("proof-not-consumed", "the inclusion proof has extra hashes")
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof-incomplete", "the inclusion proof is missing hashes")
    if r != root:
        raise ProofError("root-mismatch", "the inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree of ``size1`` leaves with root ``root1`` is a prefix of the tree of
    ``size2`` leaves with root ``root2`` (RFC 9162 §2.1.4.2). Raises :class:`ProofError`.

    0. Shapes: sizes within 0..2^63-1, every hash 32 bytes, at most 64 proof hashes.
    1. ``size1 <= size2``, else ``size-order``.
    2. ``size1 == 0``: the empty tree is a prefix of every tree; the proof must be empty
       (``proof-not-empty``) and ``root1`` must be ``SHA-256("")`` (``root-mismatch``).
    3. ``size1 == size2``: the proof must be empty and ``root1 == root2`` (``root-mismatch``).
    4. Otherwise the proof must not be empty (``proof-empty``); if ``size1`` is a power of two,
       ``root1`` is prepended.
    5. ``fn = size1 - 1``, ``sn = size2 - 1``; while ``LSB(fn)``: shift both right.
    6. ``fr = sr = proof[0]``; for each further ``c``: ``sn == 0`` here means extra hashes
       (``proof-not-consumed``); if ``LSB(fn)`` or ``fn == sn``: ``fr = H(0x01||c||fr)``,
       ``sr = H(0x01||c||sr)`` and, if ``LSB(fn)`` was not set, shift until ``LSB(fn)`` or
       ``fn == 0``; otherwise ``sr = H(0x01||sr||c)``; then shift both right once.
    7. ``sn == 0`` (else ``proof-incomplete``), ``fr == root1`` and ``sr == root2``
       (else ``root-mismatch``).
    """
    _check_hash(root1, "first root hash")
    _check_hash(root2, "second root hash")
    _check_tree_size(size1, "first tree size")
    _check_tree_size(size2, "second tree size")
    path = _check_proof(proof)
    if size1 > size2:
        raise ProofError("size-order", f"first size {size1} is larger than second size {size2}")
    if size1 == 0 or size1 == size2:
        if path:
            raise ProofError("proof-not-empty", "no proof hashes are expected for these sizes")
        expected = EMPTY_ROOT if size1 == 0 else root2
        if root1 != expected:
            raise ProofError("root-mismatch", "the first root does not match")
        if size1 == 0 and size2 == 0 and root2 != EMPTY_ROOT:
            raise ProofError("root-mismatch", "an empty tree has the empty root")
        return
    if not path:
        raise ProofError("proof-empty", "a consistency proof between these sizes has hashes")
    if size1 & (size1 - 1) == 0:
        if len(path) == MAX_PROOF_HASHES:
            raise ProofError("proof-too-long", f"a proof holds at most {MAX_PROOF_HASHES} hashes")
        path = [root1, *path]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof-not-consumed", "the consistency proof has extra hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof-incomplete", "the consistency proof is missing hashes")
    if fr != root1 or sr != root2:
        raise ProofError("root-mismatch", "the consistency proof does not lead to both roots")
