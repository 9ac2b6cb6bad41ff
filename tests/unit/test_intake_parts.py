"""A turn is processed in parts (the service yields between them so decided keys go on to the output
stages): every message in exactly one part, in order; every part but the last reaches the byte
bound, and none is longer than needed to reach it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.coordinator.intake import PART_BYTES, turn_parts
from cctf.coordinator.pipeline.live import LiveCopy


def _turn(sizes: list[int]) -> list[tuple[str, LiveCopy]]:
    return [("r", LiveCopy("r", f"cctf.v1.vote.r.a{i}", b"x" * n)) for i, n in enumerate(sizes)]


@given(st.lists(st.integers(0, 300), max_size=40), st.integers(1, 1000))
@settings(max_examples=200, deadline=None)
def test_parts_cover_the_turn_in_order_and_are_minimal(sizes: list[int], bound: int) -> None:
    turn = _turn(sizes)
    parts = turn_parts(turn, bound)
    assert [m for part in parts for m in part] == turn
    assert all(parts)
    for part in parts[:-1]:
        total = sum(len(d.data) for _r, d in part)
        assert total >= bound
        assert total - len(part[-1][1].data) < bound  # cut right after reaching the bound


def test_a_bench_round_of_five_500_name_ballots_is_five_parts() -> None:
    turn = _turn([86_000] * 5)
    assert [len(p) for p in turn_parts(turn)] == [1, 1, 1, 1, 1]
    assert turn_parts(_turn([100] * 10)) == [_turn([100] * 10)]  # small ballots: one part
    assert PART_BYTES == 64 * 1024
