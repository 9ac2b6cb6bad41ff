"""Schedule stage (D6): decided keys served newest round first; rounds past the horizon shed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.coordinator.pipeline.schedule import RoundQueue, shed_horizon


def test_the_newest_round_is_served_first_in_push_order() -> None:
    q: RoundQueue[str] = RoundQueue()
    assert q.push(5, ["a5", "b5"]) and q.push(7, ["a7"]) and q.push(6, ["a6"])
    assert q.push(7, ["b7", "c7"])
    assert q.pop(2) == (7, ["a7", "b7"])
    assert q.pop(10) == (7, ["c7"])
    assert q.pop(10) == (6, ["a6"])
    q.push(8, ["a8"])  # a newer round overtakes what is left of older ones
    assert q.pop(10) == (8, ["a8"])
    assert q.pop(1) == (5, ["a5"]) and len(q) == 1
    assert q.pop(1) == (5, ["b5"]) and q.pop(1) is None and len(q) == 0


def test_rounds_at_or_below_the_horizon_are_shed_and_refused_later() -> None:
    q: RoundQueue[int] = RoundQueue()
    for r in (3, 4, 5):
        q.push(r, [r * 10, r * 10 + 1])
    assert q.shed(4) == {3: [30, 31], 4: [40, 41]}
    assert len(q) == 2 and q.rounds == [5] and q.shed_through == 4
    assert q.push(4, [42]) is False  # a late decision of a shed round: the caller sheds it
    assert q.shed(4) == {} and q.shed(2) == {}  # the horizon never moves back
    assert q.pop(5) == (5, [50, 51])


def test_shed_horizon_is_the_deadline_plus_the_rounds() -> None:
    # round r's deadline is (r + 1) * round_ms + grace; shed `shed_after` rounds later
    kw = {"round_ms": 1000, "grace_ms": 1500, "shed_after": 2}
    r = 100
    at = (r + 1) * 1000 + 1500 + 2 * 1000
    assert shed_horizon(at, **kw) == r
    assert shed_horizon(at - 1, **kw) == r - 1
    assert shed_horizon(0, **kw) < 0
    with pytest.raises(ValueError):
        shed_horizon(0, round_ms=0, grace_ms=0, shed_after=2)
    with pytest.raises(ValueError):
        RoundQueue[int]().pop(0)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 12), st.integers(0, 4)),
        st.tuples(st.just("pop"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("shed"), st.integers(-1, 12), st.just(0)),
    ),
    max_size=60,
)


@given(_ops)
def test_against_a_reference_model(ops: list[tuple[str, int, int]]) -> None:
    q: RoundQueue[int] = RoundQueue()
    model: list[tuple[int, int]] = []  # (round, item) in push order
    horizon = -1
    next_item = 0
    out: list[int] = []  # every item leaves exactly once: popped, shed or drained
    for op, a, b in ops:
        if op == "push":
            items = list(range(next_item, next_item + b))
            next_item += b
            queued = q.push(a, items)
            assert queued == (a > horizon)
            if queued:
                model += [(a, i) for i in items]
            else:
                out += items
        elif op == "pop":
            got = q.pop(a)
            if not model:
                assert got is None
                continue
            assert got is not None
            newest = max(r for r, _ in model)
            expect = [i for r, i in model if r == newest][:a]
            assert got == (newest, expect)
            model = [(r, i) for r, i in model if i not in expect]
            out += expect
        else:
            shed = q.shed(a)
            if a <= horizon:
                assert shed == {}
                continue
            horizon = a
            expect: dict[int, list[int]] = {}
            for r, i in model:
                if r <= a:
                    expect.setdefault(r, []).append(i)
            assert shed == dict(sorted(expect.items()))
            model = [(r, i) for r, i in model if r > a]
            out += [i for items in shed.values() for i in items]
        assert len(q) == len(model)
        assert q.rounds == sorted({r for r, _ in model}, reverse=True)
    out += q.drain()
    assert sorted(out) == list(range(next_item)) and len(q) == 0
