"""``cctf.agents.plan``: an agent's questions and round timing, checked once at construction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.agents.plan import RoundTiming, questions, round_timing
from cctf.bus_schemas import limits as L


def test_a_one_second_round_has_the_documented_defaults() -> None:
    # query 60 %, one publish attempt the rest of the round, start lag 2/5 of it (400 ms)
    assert round_timing(1_000) == RoundTiming(1_000, 600, 400, 400)
    assert round_timing(1_000, 900) == RoundTiming(1_000, 900, 100, 400)
    assert round_timing(1_000, 300, 50, 7) == RoundTiming(1_000, 300, 50, 7)


@given(st.integers(10, 10**7), st.data())
def test_defaults_always_leave_query_time_after_a_late_start(
    round_ms: int, data: st.DataObject
) -> None:
    query = data.draw(st.integers(1, round_ms - 1) | st.none())
    t = round_timing(round_ms, query)
    assert 0 < t.query_deadline_ms < round_ms and t.publish_timeout_ms > 0
    assert 1 <= t.max_start_lag_ms <= max(1, t.query_deadline_ms * 2 // 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((9,), "round_ms must be an integer >= 10"),
        ((True,), "round_ms must be an integer >= 10"),
        ((1_000, 0), "query_deadline_ms must be in 1..round_ms-1"),
        ((1_000, 1_000), "query_deadline_ms must be in 1..round_ms-1"),
        ((1_000, 600, 0), "publish_timeout_ms must be positive"),
    ],
)
def test_out_of_range_timing_is_one_line_error(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        round_timing(*args)


def test_questions_are_normalized_and_refused_as_a_round_would_refuse_them() -> None:
    assert questions([("Example.COM", "A")], 3) == (("example.com.", "A"),)
    with pytest.raises(ValueError, match="at least one name"):
        questions([], 3)
    with pytest.raises(ValueError, match="duplicate"):
        questions([("example.com.", "A"), ("EXAMPLE.com", "A")], 3)
    with pytest.raises(ValueError):
        questions([("bad..name", "A")], 3)
    with pytest.raises(ValueError, match="resolvers"):
        questions([("example.com.", "A")], L.MAX_VOTERS + 1)
    many = [(f"n{i}.example.", "A") for i in range(L.MAX_VOTES_PER_ROUND // 2 + 1)]
    with pytest.raises(ValueError, match="votes per round"):
        questions(many, 2)
