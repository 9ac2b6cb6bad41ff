"""The pipelined TCP reader's framing (cctf.agents.tcppipe._Pipe) as a decoder: however the byte
stream is split into reads, the same answers are matched; stray frames (unknown ids, other
questions, no QR bit, short) are ignored and counted; arbitrary bytes never raise and the buffer
never holds more than one partial frame."""

from __future__ import annotations

import asyncio
import itertools

import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.agents.tcppipe import PipeStats, Result, _Pipe
from cctf.agents.udpfast import question_bytes

QUERIES = [dns.message.make_query(f"n{i}.demo.test.", "A") for i in range(8)]


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def _pipe(ids: list[bytes]) -> tuple[_Pipe, list[Result | None], PipeStats]:
    questions = [question_bytes(q.to_wire()).lower() for q in QUERIES[: len(ids)]]
    results: list[Result | None] = [None] * len(ids)
    stats = PipeStats()
    pending = {qid: i for i, qid in enumerate(ids)}
    return _Pipe(pending, questions, results, stats, asyncio.Event()), results, stats


def _answer(i: int, qid: bytes) -> bytes:
    return qid + dns.message.make_response(QUERIES[i]).to_wire()[2:]


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 8),
    order=st.randoms(use_true_random=False),
    strays=st.lists(st.binary(max_size=40), max_size=5),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_any_split_of_the_stream_matches_the_same_answers(
    count: int, order: object, strays: list[bytes], cuts: list[int]
) -> None:
    ids = [bytes([0x40 + i, i]) for i in range(count)]
    answers = [_answer(i, qid) for i, qid in enumerate(ids)]
    frames = [*answers, *(b"\x00\x00" + s for s in strays)]  # id 0: never asked
    order.shuffle(frames)  # type: ignore[attr-defined]
    stream = b"".join(_frame(f) for f in frames)
    pipe, results, stats = _pipe(ids)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        pipe.data_received(stream[a:b])
    assert [r[0] if isinstance(r, tuple) else r for r in results] == answers
    assert stats.frames == len(frames) and stats.ignored == len(strays)


def test_an_answer_to_another_question_or_without_qr_is_ignored() -> None:
    ids = [b"\x12\x34", b"\x56\x78"]
    pipe, results, stats = _pipe(ids)
    wrong_question = ids[0] + dns.message.make_response(QUERIES[1]).to_wire()[2:]
    echoed = ids[1] + QUERIES[1].to_wire()[2:]  # the query itself: no QR bit
    pipe.data_received(_frame(wrong_question) + _frame(echoed) + _frame(b"\x12\x34\x80"))
    assert results == [None, None] and stats.ignored == 3
    pipe.data_received(_frame(_answer(1, ids[1])))
    assert results[0] is None and isinstance(results[1], tuple)
    pipe.data_received(_frame(_answer(1, ids[1])))  # answered already: ignored
    assert stats.ignored == 4


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise_and_the_buffer_stays_bounded(chunks: list[bytes]) -> None:
    pipe, results, _stats = _pipe([b"\x00\x01", b"\x00\x02"])
    for chunk in chunks:
        pipe.data_received(chunk)
        assert len(pipe._buf) <= 65_537
    assert all(r is None or isinstance(r, tuple) for r in results)
