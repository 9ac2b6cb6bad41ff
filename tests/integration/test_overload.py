"""Graceful overload (D6) in the coordinator service, against a real nats-server: a round still
undecided ``shed_after_rounds`` after its deadline is shed (its ballots acknowledged and counted as
expired ``shed``, the round counted), while the next round's verdicts are published."""

from __future__ import annotations

from test_coordinator import (  # the service harness of the coordinator tests
    DEADLINE0,
    EAST,
    HONEST,
    ROUND0,
    WEST,
    Harness,
    _until,
    harness,
)

from cctf.bus_schemas.messages import Outcome

__all__ = ["harness"]


async def test_a_round_undecided_two_rounds_after_its_deadline_is_shed_and_counted(
    harness: Harness,
) -> None:
    h = harness
    coordinator = await h.start_coordinator()
    assert coordinator.config.shed_after_rounds == 2
    # ROUND0: two names that cannot be decided before the deadline (3 of 5 still pending)
    await h.ballot(EAST, {"r1": None, "r2": None}, qname="down.example.")
    await h.ballot(WEST, {"r1": HONEST}, qname="partial.example.")
    # ROUND0 + 1: one name, also left to its deadline
    await h.ballot(EAST, {"r1": None}, round_=ROUND0 + 1, qname="after.example.")
    await _until(lambda: coordinator.stats().votes_accepted == 4, what="votes counted")
    assert coordinator.stats().rounds_shed == 0
    # Jump past ROUND0's deadline plus two rounds at once: ROUND0 is finalized and shed in the
    # same tick, before any of its verdicts is signed; ROUND0 + 1 is past its deadline only.
    h.clock.set(DEADLINE0 + 2 * 1000)
    after = await h.wait_verdict("after.example.")
    assert after.round == ROUND0 + 1 and after.outcome is Outcome.UNAVAILABLE
    await _until(lambda: coordinator.stats().rounds_shed == 1, what="round shed")
    st = coordinator.stats()
    assert st.verdicts_dropped == {"shed": 2}  # down.example. and partial.example.
    assert st.ballots_expired == {"shed": 2}  # both ROUND0 ballots: acknowledged, counted
    assert h.verdicts_for("down.example.") == [] and h.verdicts_for("partial.example.") == []
    await h.consumer_drained(h.coord.principal)  # every ballot reached its final state
    assert st.held_ballots == 0 and st.scheduled == 0 and st.pending_verdicts == 0
