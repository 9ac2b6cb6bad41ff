"""The pure batch-sign stage (cctf.coordinator.pipeline.batchsign) and head subjects
(cctf.bus_schemas.heads): every envelope of every batch is a valid "tlog" message of the log (entry,
leaf, proof against the clean-room RFC 9162 recursion, head note), heads stay consistent, bad input is
refused with one clear error."""

from __future__ import annotations

import dataclasses

import independent_merkle as ref
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_key

from cctf.bus_schemas.envelope import TlogAuth, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import (
    head_filter,
    head_msg_id,
    head_subject,
    log_origin,
    parse_head_subject,
)
from cctf.bus_schemas.messages import MessageType
from cctf.coordinator.pipeline.batchsign import MAX_BATCH, BatchItem, BatchLog
from cctf.crypto.suites import SuiteId
from cctf.ids import IdError
from cctf.translog.merkle import MerkleTree, verify_consistency
from cctf.translog.note import NoteVerifier, open_checkpoint

KEY = make_key(SuiteId.HYBRID, "batchsign")
VERIFIER = NoteVerifier(log_origin(KEY.kid), KEY.public)


def _item(i: int, regions: int = 2) -> BatchItem:
    subjects = tuple(f"cctf.v1.verdict.r{r}.n{i}_test.A" for r in range(regions))
    payload = msgspec.msgpack.encode(["payload", i])
    return BatchItem(MessageType.VERDICT, subjects, payload, 1_000 + i, 31_000 + i)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(1, 3))
def test_every_envelope_is_a_leaf_of_its_head(sizes: list[int], regions: int) -> None:
    log = BatchLog(KEY)
    entries: list[bytes] = []
    heads: list[tuple[int, bytes]] = []
    n = 0
    for count in sizes:
        items = [_item(n + j, regions) for j in range(count)]
        sealed = log.seal(items)
        assert sealed.first_index == n and sealed.size == n + count
        cp = open_checkpoint(sealed.checkpoint, VERIFIER, log_origin(KEY.kid))
        assert (cp.size, cp.root_hash) == (sealed.size, sealed.root)
        entries.extend(sealed.entries)
        assert sealed.root == ref.mth(entries)
        for j, (item, data) in enumerate(zip(items, sealed.envelopes, strict=True)):
            env = decode_envelope(data)
            assert isinstance(env.auth, TlogAuth)
            assert env.auth.subjects == list(item.subjects)
            assert env.auth.index == n + j
            assert (env.auth.head.size, env.auth.head.root) == (sealed.size, sealed.root)
            assert envelope_log_entry(env) == sealed.entries[j]
            assert env.auth.proof == ref.path(n + j, entries)
            assert (env.kid, env.payload, env.iat, env.exp) == (
                KEY.kid,
                item.payload,
                item.iat,
                item.exp,
            )
        for size1, root1 in heads:  # every earlier head is a prefix of this one
            verify_consistency(
                size1, sealed.size, log.tree.consistency_proof(size1), root1, sealed.root
            )
        heads.append((sealed.size, sealed.root))
        n += count


def test_resume_from_a_tree_continues_the_log() -> None:
    first = BatchLog(KEY)
    a = first.seal([_item(0), _item(1)])
    tree = MerkleTree()
    for entry in a.entries:
        tree.append(entry)
    resumed = BatchLog(KEY, tree)
    b = resumed.seal([_item(2)])
    assert (b.first_index, b.size) == (2, 3)
    assert b.root == ref.mth([*a.entries, *b.entries])


def test_nonces_are_fresh_unless_fixed() -> None:
    log = BatchLog(KEY)
    s = log.seal([_item(0), _item(0)])
    n0, n1 = (decode_envelope(d).nonce for d in s.envelopes)
    assert n0 != n1 and s.entries[0] != s.entries[1]


@pytest.mark.parametrize(
    ("subjects", "payload", "iat", "exp", "match"),
    [
        ((), b"", 0, 1, r"1\.\.16 subjects"),
        (tuple(f"s.{i}" for i in range(17)), b"", 0, 1, r"1\.\.16 subjects"),
        (("a.b", "a.b"), b"", 0, 1, "twice"),
        (("a.b",), b"x" * (600 * 1024), 0, 1, "exceeds"),
        (("a.b",), b"", 2, 1, "iat"),
    ],
)
def test_bad_items_are_refused(
    subjects: tuple[str, ...], payload: bytes, iat: int, exp: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        BatchItem(MessageType.VERDICT, subjects, payload, iat, exp)


def test_batch_bounds() -> None:
    log = BatchLog(KEY)
    with pytest.raises(ValueError, match=r"1\.\."):
        log.seal([])
    assert MAX_BATCH >= 1024


@given(
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True),
    st.integers(1, 2**63 - 1),
)
def test_head_subjects_round_trip(region: str, coordinator: str, size: int) -> None:
    subject = head_subject(region, coordinator, size)
    assert parse_head_subject(subject) == (parsed := parse_head_subject(subject))
    assert (parsed.region, parsed.coordinator, parsed.size) == (region, coordinator, size)
    assert subject.startswith(head_filter(region)[:-1])
    assert head_msg_id(coordinator, size) == f"head.{coordinator}.{size}"


@pytest.mark.parametrize(
    "subject",
    [
        "cctf.v1.head.us-east.coord.0",
        "cctf.v1.head.us-east.coord.01",
        "cctf.v1.head.us-east.coord.+1",
        "cctf.v1.head.us-east.coord.9223372036854775808",
        "cctf.v1.head.us-east.coord",
        "cctf.v1.head.us-east.coord.1.x",
        "cctf.v1.head.US.coord.1",
        "cctf.v1.verdict.us-east.coord.1",
        "cctf.v2.head.us-east.coord.1",
    ],
)
def test_bad_head_subjects(subject: str) -> None:
    with pytest.raises(IdError):
        parse_head_subject(subject)


def test_bad_head_arguments() -> None:
    for size in (0, -1, 2**63, True):
        with pytest.raises(IdError):
            head_subject("us-east", "coord", size)  # type: ignore[arg-type]
    with pytest.raises(IdError):
        log_origin("K/bad")
    assert log_origin(KEY.kid) == "cctf/v1/log/" + KEY.kid


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_signed_first_and_enveloped_later_is_the_one_step_seal(sizes: list[int]) -> None:
    """The batch stage signs a batch (its append goes out) and makes its envelopes afterwards,
    possibly after later batches were signed: the same entries and envelope bytes as
    :meth:`BatchLog.seal` batch after batch (fixed nonces; the note's signature may differ)."""
    key = make_key(SuiteId.HYBRID)
    one, split = BatchLog(key), BatchLog(key)
    batches, start = [], 0
    for n in sizes:
        batches.append(
            [
                dataclasses.replace(_item(j), nonce=j.to_bytes(16, "big"))
                for j in range(start, start + n)
            ]
        )
        start += n
    sealed = [one.seal(b) for b in batches]
    signed = [split.sign(b) for b in batches]  # every batch signed before any envelope
    for s, g in zip(sealed, signed, strict=True):
        assert (g.first_index, g.size, g.root, g.entries) == (
            s.first_index,
            s.size,
            s.root,
            s.entries,
        )
        assert split.envelopes(g) == s.envelopes
