"""The log API's pure part (wire-protocol.md §9.4): request/reply codecs and answers from a mirror."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.crypto.keys import SigningKey
from cctf.translog.api import (
    ApiError,
    answer,
    api_subject,
    decode_reply,
    decode_request,
    parse_api_subject,
    plan_entries,
    reply_proof,
)
from cctf.translog.logstate import LogState
from cctf.translog.merkle import leaf_hash, verify_consistency, verify_inclusion
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier

KEY = SigningKey.generate()
STATE = LogState(KEY)
RECORDS = [STATE.append(b) for b in ([b"a", b"b"], [b"c"], [b"d", b"e", b"f"])]
MIRROR = LogMirror(STATE.origin, NoteVerifier(STATE.origin, KEY.public))
for _r in RECORDS:
    MIRROR.apply(_r)
enc = msgspec.msgpack.encode


def test_answers_verify() -> None:
    head = decode_reply(answer(MIRROR, "head", b""))
    assert (head["size"], head["root"]) == (6, STATE.root)
    inc = decode_reply(answer(MIRROR, "inclusion", enc({"index": 2, "size": 3})))
    verify_inclusion(leaf_hash(b"c"), 2, 3, reply_proof(inc), MIRROR.heads[1].root)
    con = decode_reply(answer(MIRROR, "consistency", enc({"size1": 2})))
    verify_consistency(2, 6, reply_proof(con), MIRROR.heads[0].root, STATE.root)
    plan = plan_entries(MIRROR, enc({"start": 1, "count": 10}))
    assert (plan.start, plan.count) == (1, 5)
    assert [h.first_index for h in plan.records] == [0, 2, 3]


@pytest.mark.parametrize(
    ("op", "req", "reason"),
    [
        ("inclusion", {"index": 6}, "out-of-range"),
        ("inclusion", {"index": 0, "size": 4}, "unknown-head"),
        ("inclusion", {"index": -1}, "bad-request"),
        ("inclusion", {"index": True}, "bad-request"),
        ("inclusion", {"index": 0, "extra": 1}, "bad-request"),
        ("consistency", {"size1": 6, "size2": 2}, "out-of-range"),
        ("consistency", {"size1": 5}, "unknown-head"),
        ("head", {"x": 1}, "bad-request"),
        ("nope", {}, "bad-request"),
    ],
)
def test_refusals(op: str, req: object, reason: str) -> None:
    with pytest.raises(ApiError) as err:
        decode_reply(answer(MIRROR, op, enc(req)))
    assert err.value.reason == reason


def test_entries_refusals_and_empty_log() -> None:
    for req, reason in (
        ({"start": 6, "count": 1}, "out-of-range"),
        ({"start": 0, "count": 0}, "bad-request"),
    ):
        with pytest.raises(ApiError) as err:
            plan_entries(MIRROR, enc(req))
        assert err.value.reason == reason
    empty = LogMirror(STATE.origin, NoteVerifier(STATE.origin, KEY.public))
    with pytest.raises(ApiError) as err:
        decode_reply(answer(empty, "head", b""))
    assert err.value.reason == "not-ready"


def test_subjects() -> None:
    assert api_subject("c1", "head") == "cctf.v1.logapi.c1.head"
    assert parse_api_subject("cctf.v1.logapi.c1.entries") == ("c1", "entries")
    for bad in ("cctf.v1.logapi.c1", "cctf.v1.logapi.C1.head", "cctf.v1.log.c1.head", "x.y.z.a.b"):
        with pytest.raises(ApiError):
            parse_api_subject(bad)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(["head", "entries", "inclusion", "consistency", "x"]),
    data=st.binary(max_size=64),
)
def test_answer_and_decoders_never_raise_other_errors(op: str, data: bytes) -> None:
    reply = answer(MIRROR, op, data)  # never raises
    with contextlib.suppress(ApiError):
        decode_reply(reply)
    with contextlib.suppress(ApiError):
        decode_request(op, data)
    with contextlib.suppress(ApiError):
        decode_reply(data)
