"""Ingest stage: bounded per-region queues served in turn; only the flooding region is shed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.coordinator.pipeline.ingest import FairQueues, RateBudget


def test_a_flooding_region_gets_one_batch_per_turn_like_the_others() -> None:
    q: FairQueues[str] = FairQueues(["east", "west", "north"], limit=100, batch=4)
    shed = q.offer("east", [f"e{i}" for i in range(150)])  # the flood
    assert len(shed) == 50 and shed[0] == "e100"  # only the offender's overflow
    assert q.offer("west", ["w0", "w1"]) == [] and q.offer("north", ["n0"]) == []
    turn = q.take()
    assert [r for r, _ in turn].count("east") == 4
    assert {item for r, item in turn if r != "east"} == {"w0", "w1", "n0"}
    assert q.room("east") == 4 and q.room("west") == 100


def test_turns_rotate_the_starting_region() -> None:
    q: FairQueues[int] = FairQueues(["a", "b"], limit=10, batch=1)
    q.offer("a", [1, 2])
    q.offer("b", [3, 4])
    assert [r for r, _ in q.take()] == ["a", "b"]
    assert [r for r, _ in q.take()] == ["b", "a"]
    assert q.take() == [] and len(q) == 0


def test_a_region_is_served_newest_first() -> None:
    # D6: under overload the newest ballots are verified and tallied first
    q: FairQueues[int] = FairQueues(["a"], limit=10, batch=2)
    q.offer("a", [1, 2, 3])
    assert [item for _, item in q.take()] == [3, 2]
    q.offer("a", [4])
    assert [item for _, item in q.take()] == [4, 1]


def test_drain_returns_everything_queued() -> None:
    q: FairQueues[int] = FairQueues(["a", "b"], limit=10, batch=1)
    q.offer("a", [1])
    q.offer("b", [2, 3])
    assert sorted(item for _, item in q.drain()) == [1, 2, 3] and len(q) == 0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        FairQueues([], limit=1, batch=1)
    with pytest.raises(ValueError):
        FairQueues(["a"], limit=0, batch=1)


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), max_size=20),
    st.integers(1, 8),
    st.integers(1, 20),
)
def test_nothing_is_lost_or_duplicated_and_batches_are_bounded(
    offers: list[tuple[str, int]], batch: int, limit: int
) -> None:
    q: FairQueues[tuple[str, int]] = FairQueues(list("abc"), limit=limit, batch=batch)
    offered: list[tuple[str, int]] = []
    shed: list[tuple[str, int]] = []
    taken: list[tuple[str, int]] = []
    for region, n in offers:
        items = [(region, len(offered) + i) for i in range(n)]
        offered += items
        before = q.depth(region)
        dropped = q.offer(region, items)
        assert len(dropped) == max(0, before + n - limit)  # shed only beyond the limit ...
        assert all(r == region for r, _ in dropped)  # ... and only the offering region's
        shed += dropped
        assert q.depth(region) <= limit
        turn = q.take()
        for region_ in "abc":
            assert sum(r == region_ for r, _ in turn) <= batch
        taken += [item for _, item in turn]
    taken += [item for _, item in q.drain()]
    assert sorted(taken + shed) == sorted(offered)


def test_rate_budget_caps_one_regions_deliveries_per_second() -> None:
    budget = RateBudget(rate=100, burst=100, now_s=0.0)
    assert budget.available(0.0) == 100 and budget.wait_s(0.0) == 0.0
    budget.spend(100, 0.0)
    assert budget.available(0.0) == 0
    assert budget.wait_s(0.0) == pytest.approx(0.01)
    assert budget.available(0.5) == 50  # refills at the rate ...
    assert budget.available(10.0) == 100  # ... up to the burst
    budget.spend(130, 10.0)  # a partial batch beyond: repaid before the next fetch
    assert budget.wait_s(10.0) == pytest.approx(0.31)
    fetched = 0
    t = 10.0
    while t < 20.0:  # a flooding region, asking all the time: ~rate per second, never more
        n = budget.available(t)
        budget.spend(n, t)
        fetched += n
        t += 0.001
    assert 900 <= fetched <= 1_000
    with pytest.raises(ValueError):
        RateBudget(rate=0, burst=1, now_s=0.0)
