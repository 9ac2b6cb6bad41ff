"""k-of-m coordinator combining at the subscriber (cctf.client.coordquorum): rules and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import START_MS, make_verdict

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import DnssecState, Outcome, Verdict
from cctf.client.coordquorum import (
    CoordinatorPolicy,
    QuorumCombiner,
    combine,
    parse_policy,
    statement,
)

ROUND = START_MS // 1000
C3 = ("c1", "c2", "c3")
P23 = CoordinatorPolicy(2, C3)

# Statements a coordinator may sign for one key (honest or not).
STATEMENTS = [
    {"outcome": Outcome.TRUSTED, "answer": ["192.0.2.1"]},
    {"outcome": Outcome.TRUSTED, "answer": ["203.0.113.66"]},  # a forged answer
    {"outcome": Outcome.TRUSTED, "answer": ["192.0.2.1"], "dnssec": DnssecState.SECURE},
    {"outcome": Outcome.DISPUTED},
    {"outcome": Outcome.UNAVAILABLE},
    {  # an LKG attestation of the same answer
        "outcome": Outcome.TRUSTED,
        "answer": ["192.0.2.1"],
        "basis_round": ROUND - 3,
        "basis_ms": (ROUND - 3) * 1000,
    },
]


def verdict(
    coord: str, which: int, round_: int = ROUND, seq: int = 1, ttl: int = 30_000
) -> Verdict:
    kw = dict(STATEMENTS[which])
    issued = round_ * 1000 + 10
    return make_verdict(
        round=round_,
        coordinator=coord,
        seq=seq,
        issued_ms=issued,
        expires_ms=issued + ttl,
        **kw,  # type: ignore[arg-type]
    )


def test_policy_rules() -> None:
    assert parse_policy("2:c1,c2,c3") == P23
    assert CoordinatorPolicy(1, ("c1",)).m == 1
    for bad in ("2", "x:c1", "1:c1,c2", "2:c1,c1,c2", "4:c1,c2,c3", "2:C1,c2,c3", "0:c1"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_two_of_three_agree_is_used_and_expires_first() -> None:
    a = verdict("c1", 0, ttl=30_000)
    b = verdict("c2", 0, ttl=20_000)
    used = combine(P23, [a, b, verdict("c3", 1)])
    assert used.signers == ("c1", "c2")
    assert used.verdict == b  # the earlier expiry
    assert statement(used.verdict) == statement(a)


def test_one_alone_fails_closed_with_reason() -> None:
    with pytest.raises(Rejected) as exc:
        combine(P23, [verdict("c1", 0)])
    assert exc.value.reason is Reason.COORDINATOR_QUORUM


def test_unconfigured_and_equivocating_coordinators_count_for_nothing() -> None:
    with pytest.raises(Rejected):
        combine(P23, [verdict("c1", 0), verdict("rogue", 0), verdict("c9", 0)])
    # c2 signs two statements for the key: it counts for neither
    with pytest.raises(Rejected):
        combine(P23, [verdict("c1", 0), verdict("c2", 0), verdict("c2", 1, seq=2)])


def test_lkg_and_fresh_do_not_combine_rounds_do_not_combine() -> None:
    with pytest.raises(Rejected):
        combine(P23, [verdict("c1", 0), verdict("c2", 5)])
    with pytest.raises(Rejected):
        combine(P23, [verdict("c1", 0), verdict("c2", 0, round_=ROUND + 1)])
    # at a round boundary the latest round reaching k wins
    late = [verdict("c1", 0, ROUND + 1), verdict("c2", 0, ROUND + 1), verdict("c3", 0)]
    assert combine(P23, late).verdict.round == ROUND + 1


coord_names = st.sampled_from(["c1", "c2", "c3", "c4", "c5", "rogue"])
policies = st.sampled_from(
    [P23, CoordinatorPolicy(3, C3), CoordinatorPolicy(3, ("c1", "c2", "c3", "c4", "c5"))]
)
signed = st.lists(
    st.tuples(coord_names, st.integers(0, len(STATEMENTS) - 1), st.integers(0, 1)), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(policies, signed)
def test_property_used_means_k_distinct_configured_agree(
    policy: CoordinatorPolicy, items: list[tuple[str, int, int]]
) -> None:
    vs = [verdict(c, w, ROUND + r, seq=i + 1) for i, (c, w, r) in enumerate(items)]
    try:
        used = combine(policy, vs)
    except Rejected as exc:
        assert exc.reason is Reason.COORDINATOR_QUORUM
        return
    assert len(set(used.signers)) >= policy.k
    assert set(used.signers) <= set(policy.of)
    for c in used.signers:  # each signer signed exactly that statement, and no other, for the key
        mine = [v for v in vs if v.coordinator == c and v.round == used.verdict.round]
        assert {statement(v) for v in mine} == {statement(used.verdict)}


@settings(max_examples=300, deadline=None)
@given(policies, st.sampled_from(["c1", "c2", "c3", "rogue"]), signed)
def test_property_one_rogue_key_alone_is_never_used(
    policy: CoordinatorPolicy, rogue: str, items: list[tuple[str, int, int]]
) -> None:
    """Everything signed by one key (any statements, any rounds): never used (k >= 2)."""
    vs = [verdict(rogue, w, ROUND + r, seq=i + 1) for i, (_, w, r) in enumerate(items)]
    with pytest.raises(Rejected):
        combine(policy, vs)
    comb = QuorumCombiner(policy)
    assert all(comb.add(v) is None for v in vs)


@settings(max_examples=300, deadline=None)
@given(st.permutations(range(len(STATEMENTS))), st.integers(2, 3))
def test_property_conflicting_coordinators_are_never_used(perm: list[int], m: int) -> None:
    """Each configured coordinator signs a different statement for the key: nothing is used."""
    coords = C3[:m]
    policy = CoordinatorPolicy(2, coords)

    vs = [verdict(c, perm[i]) for i, c in enumerate(coords)]
    with pytest.raises(Rejected):
        combine(policy, vs)
    comb = QuorumCombiner(policy)
    assert all(comb.add(v) is None for v in vs)


@settings(max_examples=300, deadline=None)
@given(policies, signed)
def test_property_streaming_emits_each_key_once_never_conflicting(
    policy: CoordinatorPolicy, items: list[tuple[str, int, int]]
) -> None:
    comb = QuorumCombiner(policy, capacity=4)
    used: dict[tuple[str, str, int], tuple[object, ...]] = {}
    for i, (c, w, r) in enumerate(items):
        out = comb.add(verdict(c, w, ROUND + r, seq=i + 1))
        if out is not None:
            assert out.key not in used  # at most once per key: never two (conflicting) verdicts
            used[out.key] = statement(out.verdict)
            assert len(out.signers) >= policy.k
    assert len(comb) <= 4
