"""The subscriber's fast paths equal what they replaced (issue #9, engineer perfclient).

* name tokens: :func:`name_from_token` and the escaped form (``name_token``) of plain names skip
  the per-character loop; both are compared with the previous implementations, kept here as the
  reference, on random tokens and names (including every kind of invalid one);
* verdict step 11 compares the verdict's qname with the subject's decoded name instead of
  re-encoding it: the reason of every (verdict qname, subject) pair equals the previous check's;
* inclusion proofs hashed through :class:`cctf.client.inclusion.NodeMemo` are accepted and refused
  exactly as without it (random trees, every proof mutated), and the memo stays bounded.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from clientcases import REGION, reason_of, verdict
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_wire_names import valid_names
from wirefactories import LIFETIME_MS, make_world, seal_verdict

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import Outcome, Verdict, VoterRecord, VoterState, answer_digest
from cctf.bus_schemas.subjects import (
    Kind,
    SubjectError,
    is_digest_token,
    name_from_token,
    name_token,
    normalize_name,
    parse_subject,
    verdict_subject,
)
from cctf.client.inclusion import NodeMemo
from cctf.client.verify import VerdictVerifier, _check_structure
from cctf.translog.errors import ProofError
from cctf.translog.merkle import MerkleTree, node_hash, verify_inclusion

# ------------------------------------------------------------------------- the previous versions

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _old_escaped(n: str) -> str:
    out: list[str] = []
    for ch in n[:-1]:
        if ch in _PLAIN:
            out.append(ch)
        elif ch == ".":
            out.append("_")
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def _old_name_token(name: str) -> str:
    n = normalize_name(name)
    if n == ".":
        return "~2e"
    token = _old_escaped(n)
    if len(token) <= L.MAX_NAME_TOKEN_CHARS:
        return token
    return name_token(n)  # the digest form (unchanged)


def _old_name_from_token(token: str) -> str:
    import re

    if token == "~2e":
        return "."
    if not isinstance(token, str) or re.fullmatch(r"(?:[a-z0-9-]|_|~[0-9a-f]{2})+", token) is None:
        raise SubjectError("invalid name token")
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "~":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
            continue
        raw.append(ord("." if ch == "_" else ch))
        i += 1
    try:
        name = raw.decode("utf-8") + "."
    except UnicodeDecodeError:
        raise SubjectError("not valid UTF-8") from None
    try:
        canonical = _old_name_token(name)
    except SubjectError:
        raise SubjectError("encodes an invalid name") from None
    if canonical != token:
        raise SubjectError("not in canonical form")
    return name


def _outcome(fn: object, arg: object) -> tuple[str, object]:
    try:
        return ("ok", fn(arg))  # type: ignore[operator]
    except SubjectError:
        return ("error", None)


_TOKEN_CHARS = st.sampled_from([*"abz09-_~.A=*", "~2e", "~5f", "~41", "~c3~a9", "~ff"])


@settings(max_examples=600)
@given(token=st.lists(_TOKEN_CHARS, max_size=80).map("".join))
@example(token="a" * 63 + "_" + "b" * 64)  # a label over 63 octets
@example(token="_".join(["a" * 63] * 4))  # a name over 253 octets
@example(token="_a")
@example(token="a__b")
@example(token="a_")
@example(token="")
def test_name_from_token_equals_the_previous_implementation(token: str) -> None:
    assert _outcome(name_from_token, token) == _outcome(_old_name_from_token, token)


@settings(max_examples=150)
@given(name=valid_names())
def test_name_token_equals_the_previous_implementation(name: str) -> None:
    token = name_token(name)
    assert token == _old_name_token(name)
    assert token[0] == "=" or name_from_token(token) == normalize_name(name)


# --------------------------------------------------------------------------------- step 11

WORLD = make_world()
_NAMES = ["a.example.", "A.example.", "b.example.", "\u00e9.example.", "a.example", "a..example."]
_LONG = ".".join(["\u00e9" * 31] * 4) + "."  # escaped form too long: a digest token


def _old_step_11(qname: str, subject_name: str) -> Reason | None:
    try:
        normal = normalize_name(qname)
    except SubjectError:
        return Reason.MALFORMED
    if normal != qname:
        return Reason.MALFORMED
    return None if name_token(normal) == name_token(subject_name) else Reason.SUBJECT


@settings(max_examples=60, deadline=None)
@given(
    qname=st.sampled_from([*_NAMES, ".", _LONG, _LONG.upper()]),
    subject_name=st.sampled_from(["a.example.", "b.example.", "\u00e9.example.", ".", _LONG]),
)
def test_step_11_gives_the_previous_reason(qname: str, subject_name: str) -> None:
    v = verdict(WORLD, qname=qname)
    subject = verdict_subject(REGION, subject_name, "A")
    data = seal_verdict(
        WORLD.coordinator, v, now_ms=v.issued_ms, subject=subject, lifetime_ms=LIFETIME_MS
    )
    expected = _old_step_11(qname, subject_name)
    verifier = VerdictVerifier(WORLD.trust, WORLD.clock, region=REGION)
    if expected is None:
        assert verifier.check(data, subject).verdict == v
    else:
        assert reason_of(lambda: verifier.check(data, subject)) is expected


# --------------------------------------------------------------------------- inclusion memo


def _verdict_of(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except ProofError as exc:
        return exc.reason
    return "ok"


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 70),
    data=st.data(),
)
def test_inclusion_through_the_memo_is_accepted_and_refused_as_without(
    size: int, data: st.DataObject
) -> None:
    tree = MerkleTree()
    for i in range(size):
        tree.append(b"entry %d" % i)
    root = tree.root()
    memo = NodeMemo(capacity=data.draw(st.sampled_from([1, 7, 10_000])))
    for index in data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=12)):
        leaf = hashlib.sha256(b"\x00" + b"entry %d" % index).digest()
        proof = tree.inclusion_proof(index, size)
        cases = [(leaf, index, proof)]
        if proof:
            k = data.draw(st.integers(0, len(proof) - 1))
            flipped = bytes([proof[k][0] ^ 1]) + proof[k][1:]
            cases += [
                (leaf, index, [*proof[:k], flipped, *proof[k + 1 :]]),
                (leaf, index, proof[:-1]),
                (leaf, index, [*proof, proof[0]]),
            ]
        cases += [(leaf, (index + 1) % size, proof), (leaf[::-1], index, proof)]
        for lf, ix, pr in cases:
            plain = _verdict_of(
                lambda lf=lf, ix=ix, pr=pr: verify_inclusion(lf, ix, size, pr, root)
            )
            memoised = _verdict_of(
                lambda lf=lf, ix=ix, pr=pr: verify_inclusion(lf, ix, size, pr, root, memo)
            )
            fused = _verdict_of(
                lambda lf=lf, ix=ix, pr=pr: memo.verify_inclusion(lf, ix, size, pr, root)
            )
            assert memoised == plain
            assert fused == plain
        assert len(memo) <= memo._capacity


_HASH = b"h" * 32


@settings(max_examples=300, deadline=None)
@given(
    leaf=st.one_of(st.just(_HASH), st.binary(max_size=33), st.integers(), st.none()),
    index=st.one_of(st.integers(-2, 40), st.booleans(), st.just(2**63), st.just(1.0)),
    size=st.one_of(st.integers(-1, 41), st.booleans(), st.just(2**63), st.just(2**63 - 1)),
    proof=st.one_of(
        st.lists(st.one_of(st.just(_HASH), st.binary(min_size=31, max_size=33), st.integers())),
        st.lists(st.just(_HASH), min_size=60, max_size=70),
        st.tuples(st.just(_HASH), st.just(_HASH)),
        st.just(_HASH),
        st.none(),
    ),
    root=st.one_of(st.just(_HASH), st.binary(max_size=33), st.none()),
)
def test_the_fused_proof_check_refuses_every_shape_as_the_reference(
    leaf: object, index: object, size: object, proof: object, root: object
) -> None:
    """Whatever the shapes, ``NodeMemo.verify_inclusion`` gives the reference's verdict (reason)."""
    args = (leaf, index, size, proof, root)
    memo = NodeMemo()
    plain = _verdict_of(lambda: verify_inclusion(*args))  # type: ignore[arg-type]
    assert _verdict_of(lambda: memo.verify_inclusion(*args)) == plain  # type: ignore[arg-type]


def test_the_memo_is_node_hash_and_bounded() -> None:
    memo = NodeMemo(capacity=3)
    pairs = [(bytes([i]) * 32, bytes([i + 1]) * 32) for i in range(5)]
    for left, right in pairs + pairs:
        assert memo(left, right) == node_hash(left, right)
    assert len(memo) == 3 and memo.misses == 10 and memo.hits == 0  # FIFO: each one evicted
    assert memo(*pairs[-1]) == node_hash(*pairs[-1]) and memo.hits == 1
    with pytest.raises(ValueError):
        NodeMemo(capacity=0)


def test_a_batch_of_proofs_mostly_hits_the_memo() -> None:
    tree = MerkleTree()
    for i in range(1000):
        tree.append(b"e%d" % i)
    root, memo = tree.root(), NodeMemo()
    for i in range(1000):
        leaf = hashlib.sha256(b"\x00e%d" % i).digest()
        verify_inclusion(leaf, i, 1000, tree.inclusion_proof(i, 1000), root, memo)
    assert memo.misses < 2.1 * 1000 < memo.hits  # ~2 of the ~10 hashes of each proof are new


# ------------------------------------------------------------------ step 13 and subject parsing


def _old_voter_checks(v: Verdict) -> str | None:
    """The voter part of step 13 before it was one pass (its checks, in its order)."""
    if len(v.voters) != v.n:
        return f"{len(v.voters)} voters listed, n={v.n}"
    if len({r.voter for r in v.voters}) != len(v.voters):
        return "a voter is listed twice"
    if v.issued_ms >= v.expires_ms:
        return f"issued_ms {v.issued_ms} is not before expires_ms {v.expires_ms}"
    if v.outcome is Outcome.TRUSTED:
        if v.answer_digest != answer_digest(v.rcode, v.answer):
            return "answer digest does not match the answer"
        agreeing = [r for r in v.voters if r.state is VoterState.AGREE]
        if any(r.answer_digest not in (b"", v.answer_digest) for r in agreeing):
            return "an agreeing voter carries another answer digest"
        if (agree := len(agreeing)) < v.k:
            return f"TRUSTED with only {agree} agreeing voters, k={v.k}"
    return None


_ANSWER = ["192.0.2.1"]
_DIGESTS = [answer_digest(0, _ANSWER), b"", b"x" * 32]


@settings(max_examples=400, deadline=None)
@given(
    voters=st.lists(
        st.builds(
            VoterRecord,
            st.sampled_from(["a/r", "b/r", "c/r", "d/r", "e/r"]),
            st.sampled_from(list(VoterState)),
            st.sampled_from(_DIGESTS),
        ),
        max_size=6,
    ),
    k=st.integers(1, 4),
    n=st.integers(1, 6),
    digest=st.sampled_from(_DIGESTS),
    expires_delta=st.sampled_from([-1, 0, 1]),
)
def test_step_13_voters_give_the_previous_detail(
    voters: list[VoterRecord], k: int, n: int, digest: bytes, expires_delta: int
) -> None:
    v = verdict(WORLD, voters=voters, k=k, n=n, answer=_ANSWER)
    v = msgspec.structs.replace(v, expires_ms=v.issued_ms + expires_delta, answer_digest=digest)
    if not v.k <= v.n < 2 * v.k:
        return  # refused before the voters are read, by both
    try:
        _check_structure(v)
        new = None
    except Rejected as exc:
        new = exc.detail
    old = _old_voter_checks(v)
    if old is None:
        assert new is None or ("voter" not in new and "digest" not in new)  # later checks
    else:
        assert new == f"verdict for {v.qname} {v.qtype}: {old}"


@settings(max_examples=100)
@given(
    body=st.text(st.sampled_from("a.\u00e9\U0001f600"), min_size=250, max_size=1100),
)
def test_a_subject_is_too_long_exactly_when_its_utf8_is(body: str) -> None:
    subject = f"cctf.v1.control.{body}"
    too_long = len(subject.encode()) > L.MAX_SUBJECT_BYTES
    try:
        parse_subject(subject)
        refused = ""
    except SubjectError as exc:
        refused = str(exc)
    assert (refused == "subject missing or too long") is too_long


@given(token=st.text(st.sampled_from("=abz27-_~"), max_size=60) | st.just("=" + "a" * 52))
def test_digest_tokens_are_recognised_as_by_the_pattern_alone(token: str) -> None:
    import base64
    import re

    expected = (
        re.fullmatch(r"=[a-z2-7]{52}", token) is not None
        and (
            "="
            + base64.b32encode(base64.b32decode(token[1:].upper() + "====")).decode().rstrip("=")
        ).lower()
        == token
    )
    assert is_digest_token(token) is expected


def test_an_unknown_subject_kind_is_named() -> None:
    with pytest.raises(SubjectError, match="unknown subject kind 'votes'"):
        parse_subject("cctf.v1.votes.us-east.a")
    assert parse_subject("cctf.v1.vote.us-east.a").kind is Kind.VOTE
