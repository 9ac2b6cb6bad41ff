"""RFC 9162 Merkle tree: roots and proofs against the clean-room recursion, every mutation refused."""

from __future__ import annotations

import hashlib

import independent_merkle as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.errors import CctfError
from cctf.translog.errors import ProofError, TranslogError
from cctf.translog.merkle import (
    EMPTY_ROOT,
    MAX_PROOF_HASHES,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

entries_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


def _tree(entries: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for i, e in enumerate(entries):
        assert tree.append(e) == i
    return tree


def _reason(excinfo: pytest.ExceptionInfo[ProofError]) -> str:
    return excinfo.value.reason


def test_error_root() -> None:
    assert issubclass(ProofError, TranslogError) and issubclass(TranslogError, CctfError)


def test_hashing_constants() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


@settings(max_examples=60, deadline=None)
@given(entries_st)
def test_roots_and_proofs_match_independent_rfc9162(entries: list[bytes]) -> None:
    tree = _tree(entries)
    assert tree.size == len(entries)
    for n in range(len(entries) + 1):
        root = tree.root(n)
        assert root == ref.mth(entries[:n])
        for m in range(n):
            p = tree.inclusion_proof(m, n)
            assert p == ref.path(m, entries[:n])
            verify_inclusion(tree.leaf_hash(m), m, n, p, root)
        for m in range(1, n):
            c = tree.consistency_proof(m, n)
            assert c == ref.proof(m, entries[:n])
            verify_consistency(m, n, c, tree.root(m), root)
        verify_consistency(0, n, tree.consistency_proof(0, n), EMPTY_ROOT, root)
        verify_consistency(n, n, tree.consistency_proof(n, n), root, root)


def test_large_tree_sampled_against_reference() -> None:
    entries = [i.to_bytes(4, "big") for i in range(1000)]
    tree = _tree(entries)
    for n in (1, 2, 3, 255, 256, 257, 511, 999, 1000):
        assert tree.root(n) == ref.mth(entries[:n])
        for m in (0, n // 3, n - 1):
            assert tree.inclusion_proof(m, n) == ref.path(m, entries[:n])
        for m in (1, n // 2, n - 1):
            if 0 < m < n:
                assert tree.consistency_proof(m, n) == ref.proof(m, entries[:n])


@st.composite
def inclusion_case(draw: st.DrawFn) -> tuple[MerkleTree, int, int]:
    entries = draw(entries_st)
    n = draw(st.integers(1, len(entries)))
    m = draw(st.integers(0, n - 1))
    return _tree(entries), m, n


@st.composite
def consistency_case(draw: st.DrawFn) -> tuple[MerkleTree, int, int]:
    entries = draw(st.lists(st.binary(max_size=8), min_size=2, max_size=70))
    n = draw(st.integers(2, len(entries)))
    m = draw(st.integers(1, n - 1))
    return _tree(entries), m, n


H = st.binary(min_size=32, max_size=32)


@settings(max_examples=150, deadline=None)
@given(inclusion_case(), st.data())
def test_inclusion_mutations_rejected(
    case: tuple[MerkleTree, int, int], data: st.DataObject
) -> None:
    tree, m, n = case
    leaf, root, proof = tree.leaf_hash(m), tree.root(n), tree.inclusion_proof(m, n)
    verify_inclusion(leaf, m, n, proof, root)
    kind = data.draw(
        st.sampled_from(
            ["index", "size", "truncate", "extend", "flip", "leaf", "root", "length", "huge"]
        )
    )
    args: list[object] = [leaf, m, n, list(proof), root]
    if kind == "index":  # another index, including index >= size
        args[1] = data.draw(st.integers(0, n + 3).filter(lambda i: i != m))
    elif kind == "size":  # index >= size (a size the proof's shape also fits is no refusal:
        # the size is authenticated by the signed checkpoint, not by the proof)
        args[2] = data.draw(st.integers(0, m))
    elif kind == "truncate":
        if not proof:
            return
        args[3] = proof[: data.draw(st.integers(0, len(proof) - 1))]
    elif kind == "extend":
        args[3] = [*proof, data.draw(H)]
    elif kind == "flip":
        if not proof:
            return
        i = data.draw(st.integers(0, len(proof) - 1))
        args[3] = [*proof[:i], data.draw(H.filter(lambda h: h != proof[i])), *proof[i + 1 :]]
    elif kind == "leaf":
        args[0] = data.draw(H.filter(lambda h: h != leaf))
    elif kind == "root":
        args[4] = data.draw(H.filter(lambda h: h != root))
    elif kind == "length":
        where = data.draw(st.sampled_from([0, 3, 4] if proof else [0, 4]))
        bad = data.draw(st.binary(max_size=40).filter(lambda b: len(b) != 32))
        if where == 3:
            args[3] = [bad, *proof[1:]]
        else:
            args[where] = bad
    else:
        args[3] = [root] * (MAX_PROOF_HASHES + 1)
    try:
        verify_inclusion(*args)  # type: ignore[arg-type]
    except ProofError:
        return
    # Only another index holding the very same leaf hash (a duplicate entry) may verify.
    assert kind == "index"
    a_m = args[1]
    assert isinstance(a_m, int) and a_m < n and tree.leaf_hash(a_m) == leaf


def test_inclusion_reasons() -> None:
    tree = _tree([b"a", b"b", b"c", b"d", b"e"])
    root, leaf, p = tree.root(), tree.leaf_hash(2), tree.inclusion_proof(2)
    cases: list[tuple[list[object], str]] = [
        ([leaf, 5, 5, p, root], "index-out-of-range"),
        ([leaf, 0, 0, [], EMPTY_ROOT], "index-out-of-range"),
        ([leaf, 2, 5, p[:-1], root], "proof-incomplete"),
        ([leaf, 2, 5, [*p, p[0]], root], "proof-not-consumed"),
        ([tree.leaf_hash(3), 2, 5, p, root], "root-mismatch"),
        ([leaf, 2, 5, p, tree.root(4)], "root-mismatch"),
        ([leaf[:31], 2, 5, p, root], "hash-length"),
        ([leaf, 2, 5, [*p[:-1], p[-1] + b"x"], root], "hash-length"),
        ([leaf, 2, 5, [root] * 65, root], "proof-too-long"),
        ([leaf, -1, 5, p, root], "size-out-of-range"),
        ([leaf, 2, 2**63, p, root], "size-out-of-range"),
        ([leaf, 2, True, p, root], "size-out-of-range"),
        ([leaf, 2, 5, None, root], "bad-proof"),
        ([leaf, 2, 5, b"".join(p), root], "bad-proof"),
        ([leaf, 2, 5, [*p[:-1], "x" * 32], root], "hash-length"),
    ]
    for args, reason in cases:
        with pytest.raises(ProofError) as exc:
            verify_inclusion(*args)  # type: ignore[arg-type]
        assert _reason(exc) == reason, (args[1:3], reason)


@settings(max_examples=150, deadline=None)
@given(consistency_case(), st.data())
def test_consistency_mutations_rejected(
    case: tuple[MerkleTree, int, int], data: st.DataObject
) -> None:
    tree, m, n = case
    r1, r2, proof = tree.root(m), tree.root(n), tree.consistency_proof(m, n)
    verify_consistency(m, n, proof, r1, r2)
    kind = data.draw(
        st.sampled_from(
            [
                "swap-sizes",
                "swap-roots",
                "truncate",
                "extend",
                "flip",
                "root1",
                "root2",
                "length",
                "size1",
                "size2",
                "empty",
            ]
        )
    )
    args: list[object] = [m, n, list(proof), r1, r2]
    if kind == "swap-sizes":
        args[0], args[1] = n, m
    elif kind == "swap-roots":
        args[3], args[4] = r2, r1
    elif kind == "truncate":
        args[2] = proof[: data.draw(st.integers(0, len(proof) - 1))]
    elif kind == "extend":
        args[2] = [*proof, data.draw(H)]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(proof) - 1))
        args[2] = [*proof[:i], data.draw(H.filter(lambda h: h != proof[i])), *proof[i + 1 :]]
    elif kind == "root1":
        args[3] = data.draw(H.filter(lambda h: h != r1))
    elif kind == "root2":
        args[4] = data.draw(H.filter(lambda h: h != r2))
    elif kind == "length":
        bad = data.draw(st.binary(max_size=40).filter(lambda b: len(b) != 32))
        where = data.draw(st.sampled_from([2, 3, 4]))
        args[where] = [bad, *proof[1:]] if where == 2 else bad
    elif kind == "size1":  # 0 (empty tree: no proof expected) or size1 > size2
        args[0] = data.draw(st.sampled_from([0, n + 1, n + 7]))
    elif kind == "size2":  # size2 < size1
        args[1] = data.draw(st.integers(0, m - 1))
    else:
        args[2] = []
    try:
        verify_consistency(*args)  # type: ignore[arg-type]
    except ProofError:
        return
    # Only swapping two equal roots is no change at all.
    assert kind == "swap-roots" and r1 == r2


def test_consistency_reasons() -> None:
    tree = _tree([bytes([i]) for i in range(7)])
    r3, r7, p = tree.root(3), tree.root(7), tree.consistency_proof(3, 7)
    cases: list[tuple[list[object], str]] = [
        ([7, 3, p, r7, r3], "size-order"),
        ([3, 7, p, r7, r3], "root-mismatch"),  # swapped roots
        ([3, 7, p[:-1], r3, r7], "proof-incomplete"),
        ([3, 7, [*p, p[0]], r3, r7], "proof-not-consumed"),
        ([3, 7, [], r3, r7], "proof-empty"),
        ([0, 7, p, EMPTY_ROOT, r7], "proof-not-empty"),
        ([0, 7, [], r3, r7], "root-mismatch"),
        ([7, 7, [], r7, r3], "root-mismatch"),
        ([7, 7, p, r7, r7], "proof-not-empty"),
        ([0, 0, [], EMPTY_ROOT, r7], "root-mismatch"),
        ([3, 7, p, r3[:16], r7], "hash-length"),
        ([3, 7, [r3] * 65, r3, r7], "proof-too-long"),
        ([4, 7, [r3] * 64, tree.root(4), r7], "proof-too-long"),  # 64 + prepended root1
        ([3, 2**63, p, r3, r7], "size-out-of-range"),
    ]
    for args, reason in cases:
        with pytest.raises(ProofError) as exc:
            verify_consistency(*args)  # type: ignore[arg-type]
        assert _reason(exc) == reason, (args[:2], reason)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


def test_tree_refuses_bad_requests() -> None:
    tree = _tree([b"a", b"b", b"c"])
    with pytest.raises(ProofError, match="index-out-of-range"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ProofError, match="size-out-of-range"):
        tree.root(4)
    with pytest.raises(ProofError, match="size-order"):
        tree.consistency_proof(3, 2)
    with pytest.raises(ProofError, match="size-out-of-range"):
        tree.consistency_proof(1, 4)
    with pytest.raises(ProofError, match="hash-length"):
        tree.append_leaf_hash(b"short")


def test_resume_from_leaf_hashes_gives_same_tree() -> None:
    entries = [bytes([i]) * 3 for i in range(37)]
    tree = _tree(entries)
    resumed = MerkleTree()
    for i in range(tree.size):
        resumed.append_leaf_hash(tree.leaf_hash(i))
    assert resumed.root() == tree.root() == ref.mth(entries)


@settings(max_examples=15, deadline=None)
@given(st.integers(70, 3000), st.data())
def test_bigger_trees_sampled_against_reference(size: int, data: st.DataObject) -> None:
    entries = [i.to_bytes(2, "big") * 3 for i in range(size)]
    tree = _tree(entries)
    assert tree.root() == ref.mth(entries)
    for _ in range(3):
        n = data.draw(st.integers(2, size))
        m = data.draw(st.integers(1, n - 1))
        assert tree.inclusion_proof(m, n) == ref.path(m, entries[:n])
        assert tree.consistency_proof(m, n) == ref.proof(m, entries[:n])
        verify_consistency(m, n, tree.consistency_proof(m, n), tree.root(m), tree.root(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_batch_inclusion_proofs_equal_the_per_leaf_proofs(size: int, data: st.DataObject) -> None:
    """A sealed batch's proofs (one call, shared right-edge subtrees hashed once) are exactly
    the per-leaf RFC 9162 PATHs, in order, and each verifies against the root of ``n``."""
    tree = _tree([i.to_bytes(2, "big") for i in range(size)])
    n = data.draw(st.integers(1, size))
    first = data.draw(st.integers(0, n))
    proofs = tree.inclusion_proofs(first, n)
    assert proofs == [tree.inclusion_proof(m, n) for m in range(first, n)]
    root = tree.root(n)
    for m, proof in zip(range(first, n), proofs, strict=True):
        verify_inclusion(tree.leaf_hash(m), m, n, proof, root)
    if size == n:
        assert tree.inclusion_proofs(first) == proofs


def test_batch_inclusion_proofs_refuse_what_the_per_leaf_proof_refuses() -> None:
    tree = _tree([b"a", b"b", b"c"])
    assert tree.inclusion_proofs(3) == []
    for first, n in ((4, 3), (-1, 3), (0, 4)):
        with pytest.raises(ProofError):
            tree.inclusion_proofs(first, n)
