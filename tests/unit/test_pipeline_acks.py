"""Ack ledger: every delivery reaches a final state in bounded time; keys settle independently."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.coordinator.pipeline.acks import AckLedger, Arrival


def ledger(**kw: int) -> AckLedger[int, str]:
    args = {"max_deliver": 5, "refresh_ms": 100, "hold_limit_ms": 1_000}
    args.update(kw)
    return AckLedger(**args)


def test_a_ballot_is_acked_when_every_key_it_fed_is_settled() -> None:
    led = ledger()
    assert led.arrival(1, 1) is Arrival.PROCESS
    assert led.hold(1, ["k1", "k2", "k1"], now_ms=0)  # duplicates count once
    assert led.hold(2, ["k2"], now_ms=0)
    assert led.held == 2 and led.open_keys == 2
    assert led.settle("k2") == [2]  # ballot 2 waited only on k2
    assert led.settle("k2") == []  # idempotent
    assert led.settle("k1") == [1]
    assert led.held == 0 and led.open_keys == 0


def test_an_unpublishable_key_never_holds_ballots_of_other_keys() -> None:
    led = ledger()
    led.hold(1, ["stuck"], now_ms=0)
    led.hold(2, ["fine"], now_ms=0)
    assert led.settle("fine") == [2]  # no matter what happens to "stuck"
    assert led.is_held(1) and not led.is_held(2)


def test_no_key_means_ack_now() -> None:
    led = ledger()
    assert led.hold(1, [], now_ms=0) is False and led.held == 0


def test_refresh_then_terminate_at_the_hold_limit() -> None:
    led = ledger(refresh_ms=100, hold_limit_ms=350)
    led.hold(1, ["k"], now_ms=0)
    assert led.due(50).refresh == []
    assert led.due(100).refresh == [1]
    assert led.due(150).refresh == []  # next refresh at 200
    assert led.due(200).refresh == [1]
    due = led.due(350)
    assert due.expired == [1] and due.refresh == []
    assert led.held == 0 and led.open_keys == 0  # forgotten: nothing is held forever
    assert led.settle("k") == []  # a late settle acks nothing twice


def test_redelivery_of_a_held_ballot_and_poison_messages() -> None:
    led = ledger(max_deliver=3)
    led.hold(7, ["k"], now_ms=0)
    assert led.arrival(7, 2) is Arrival.REDELIVERED
    assert led.arrival(8, 2) is Arrival.PROCESS
    assert led.arrival(8, 3) is Arrival.POISON  # delivered max_deliver times: terminate
    assert led.arrival(7, 3) is Arrival.REDELIVERED  # still ours: not poison


def test_drain_at_stop() -> None:
    led = ledger()
    led.hold(1, ["a"], now_ms=0)
    led.hold(2, ["b"], now_ms=0)
    assert sorted(led.drain()) == [1, 2] and led.held == 0 and led.open_keys == 0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ledger(max_deliver=1)


@given(
    st.lists(st.lists(st.sampled_from("abcde"), max_size=4), max_size=15),
    st.permutations("abcde"),
    st.integers(0, 5),
)
def test_every_held_ballot_ends_acked_or_expired_exactly_once(
    holds: list[list[str]], order: list[str], settle_first: int
) -> None:
    led = ledger(hold_limit_ms=1_000)
    acked: list[int] = []
    for token, keys in enumerate(holds):
        if not led.hold(token, keys, now_ms=0):
            acked.append(token)
    for key in order[:settle_first]:
        acked += led.settle(key)
    expired = led.due(1_000).expired
    assert sorted(acked + expired) == list(range(len(holds)))
    assert led.held == 0 and led.open_keys == 0
    for key in order[settle_first:]:
        assert led.settle(key) == []
