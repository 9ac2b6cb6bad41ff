"""RecentKeys (the bound of the silent-round LKG rule) against a brute-force reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.pipeline.recent import RecentKeys

KEYS = [(f"n{i}.example.", "A") for i in range(6)]
notes = st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 40)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    notes,
    st.integers(0, 12),
    st.integers(1, 8),
    st.integers(0, 50),
    st.integers(0, 8),
)
def test_since_matches_brute_force(
    noted: list[tuple[tuple[str, str], int]], window: int, cap: int, oldest: int, limit: int
) -> None:
    recent = RecentKeys(window, max_keys=cap)
    order: list[tuple[str, str]] = []  # last-noted order, oldest first
    marks: dict[tuple[str, str], int] = {}
    newest = -1
    for key, round_ in noted:
        recent.note(*key, round_)
        newest = max(newest, round_)
        marks[key] = newest
        if key in order:
            order.remove(key)
        order.append(key)
    # what is kept: the most recently noted keys whose mark is within the window, at most cap
    kept = [k for k in order if marks[k] >= newest - window][-cap:] if noted else []
    assert len(recent) == len(kept)
    want = [k for k in reversed(kept) if marks[k] >= oldest][:limit]
    assert recent.since(oldest, limit) == want


def test_a_one_shot_key_leaves_the_window() -> None:
    recent = RecentKeys.for_config(LkgConfig(silent_window_ms=3_000), round_ms=1_000)
    assert recent.window == 3
    recent.note("once.example.", "A", 10)
    for r in range(10, 20):
        recent.note("every.example.", "A", r)
        got = recent.since(r - recent.window, 10)
        assert ("once.example.", "A") in got if r <= 13 else got == [("every.example.", "A")]
    assert len(recent) == 1  # dropped, not only skipped
    assert recent.since(0, 0) == []  # silent_max_keys 0: nothing


def test_rounds_with_a_counted_vote_are_not_silent() -> None:
    recent = RecentKeys(5)
    assert recent.round_silent(7)
    recent.note("a.example.", "A", 7)
    recent.note("b.example.", "A", 9)
    assert [recent.round_silent(r) for r in (6, 7, 8, 9)] == [True, False, True, False]
