"""The trust negotiator: the default 2-of-3 truth table over all 27 combinations, require-mtls and
3-of-3, and properties (hypothesis) of every composed policy: monotonicity, soundness of refused /
unavailable against brute force over the unavailable paths' possible futures."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.identity.negotiator import (
    DEFAULT_POLICY,
    AllOf,
    AnyOf,
    AtLeast,
    Outcome,
    Path,
    PathResult,
    PathState,
    Policy,
    Requires,
    negotiate,
    policy_from_spec,
)
from cctf.identity.targets import PolicySpec

H, F, U = PathState.HOLDS, PathState.FAILS, PathState.UNAVAILABLE
PATHS = (Path.DNS, Path.MTLS, Path.OIDC)
ALL_STATES = list(itertools.product((H, F, U), repeat=3))


def results(states: tuple[PathState, ...]) -> dict[Path, PathResult]:
    return {p: PathResult(s, f"r-{p.value}") for p, s in zip(PATHS, states, strict=True)}


def test_default_truth_table_all_27() -> None:
    assert len(ALL_STATES) == 27
    seen = set()
    for states in ALL_STATES:
        holds, unav = states.count(H), states.count(U)
        expected = (
            Outcome.TRUSTED
            if holds >= 2
            else Outcome.REFUSED
            if holds + unav < 2
            else Outcome.UNAVAILABLE
        )
        got = negotiate(DEFAULT_POLICY, results(states))
        assert got.outcome is expected, states
        assert [p for p, _ in got.paths] == list(PATHS)
        assert [r.state for _, r in got.paths] == list(states)
        assert "\n" not in got.reason and got.reason
        seen.add(got.outcome)
    assert seen == set(Outcome)


def test_require_mtls_refuses_without_mtls() -> None:
    pol = policy_from_spec(PolicySpec(at_least=2, require=["mtls"]))
    got = negotiate(pol, results((H, F, H)))
    assert got.outcome is Outcome.REFUSED
    assert "mtls is required" in got.reason and "mtls fails (r-mtls)" in got.reason
    assert negotiate(pol, results((H, U, H))).outcome is Outcome.UNAVAILABLE
    assert negotiate(pol, results((H, H, F))).outcome is Outcome.TRUSTED
    assert negotiate(pol, results((F, H, F))).outcome is Outcome.REFUSED


def test_three_of_three() -> None:
    pol = policy_from_spec(PolicySpec(at_least=3))
    for states in ALL_STATES:
        got = negotiate(pol, results(states)).outcome
        if states == (H, H, H):
            assert got is Outcome.TRUSTED
        elif F in states:
            assert got is Outcome.REFUSED
        else:
            assert got is Outcome.UNAVAILABLE


def test_json_form() -> None:
    got = negotiate(
        DEFAULT_POLICY,
        {Path.DNS: PathResult.holds(), Path.MTLS: PathResult.fails("wrong_spiffe_id")},
    )
    assert got.as_dict() == {
        "outcome": "unavailable",
        "reason": got.reason,
        "paths": {
            "dns": {"state": "holds", "reason": ""},
            "mtls": {"state": "fails", "reason": "wrong_spiffe_id"},
            "oidc": {"state": "unavailable", "reason": "no_evidence"},
        },
    }
    assert PathResult.unavailable("no_token") == PathResult(U, "no_token")


def test_missing_path_is_unavailable() -> None:
    got = negotiate(DEFAULT_POLICY, {Path.DNS: PathResult(H)})
    assert got.path(Path.OIDC) == PathResult(U, "no_evidence")
    assert got.outcome is Outcome.UNAVAILABLE


def test_policy_construction_errors() -> None:
    for k in (0, 4):
        with pytest.raises(ValueError):
            AtLeast(k)
    with pytest.raises(ValueError):
        AllOf()
    with pytest.raises(ValueError):
        AnyOf()


def policies() -> st.SearchStrategy[Policy]:
    leaf: st.SearchStrategy[Policy] = st.one_of(
        st.integers(1, 3).map(AtLeast), st.sampled_from(PATHS).map(Requires)
    )
    return st.recursive(
        leaf,
        lambda kids: st.one_of(
            st.lists(kids, min_size=1, max_size=3).map(lambda ps: AllOf(*ps)),
            st.lists(kids, min_size=1, max_size=3).map(lambda ps: AnyOf(*ps)),
        ),
        max_leaves=6,
    )


STATES = st.tuples(*(st.sampled_from((H, F, U)) for _ in range(3)))
RANK = {Outcome.REFUSED: 0, Outcome.UNAVAILABLE: 1, Outcome.TRUSTED: 2}


@given(policies(), STATES, st.sampled_from(range(3)))
def test_monotone_holds_to_fails_never_improves(
    pol: Policy, states: tuple[PathState, ...], i: int
) -> None:
    if states[i] is not H:
        return
    worse = tuple(F if j == i else s for j, s in enumerate(states))
    before = negotiate(pol, results(states)).outcome
    after = negotiate(pol, results(worse)).outcome
    assert RANK[after] <= RANK[before]
    if before is Outcome.REFUSED:
        assert after is Outcome.REFUSED


@given(policies(), STATES)
def test_outcome_matches_brute_force_over_futures(
    pol: Policy, states: tuple[PathState, ...]
) -> None:
    """trusted: holds now; refused: no future of the unavailable paths (each holds or fails) makes
    it hold; unavailable: some future does, but not the present."""
    unav = [i for i, s in enumerate(states) if s is U]
    futures = []
    for choice in itertools.product((H, F), repeat=len(unav)):
        fut = list(states)
        for i, c in zip(unav, choice, strict=True):
            fut[i] = c
        futures.append(frozenset(PATHS[i] for i, s in enumerate(fut) if s is H))
    now = frozenset(PATHS[i] for i, s in enumerate(states) if s is H)
    got = negotiate(pol, results(states)).outcome
    if pol.unmet(now) is None:
        assert got is Outcome.TRUSTED
    elif all(pol.unmet(f) is not None for f in futures):
        assert got is Outcome.REFUSED
    else:
        assert got is Outcome.UNAVAILABLE


@given(policies(), STATES, st.sets(st.sampled_from(PATHS)))
def test_safe_mode_stricter_rules_never_trust_more(
    pol: Policy, states: tuple[PathState, ...], configured: set[Path]
) -> None:
    """``stricter``: never TRUSTED where the policy is not; TRUSTED exactly when the policy is and
    every configured path holds; nothing configured: the same policy."""
    from cctf.identity.negotiator import stricter

    strict = stricter(pol, configured)
    plain = negotiate(pol, results(states)).outcome
    got = negotiate(strict, results(states)).outcome
    assert RANK[got] <= RANK[plain]
    holding = {p for p, s in zip(PATHS, states, strict=True) if s is H}
    assert (got is Outcome.TRUSTED) == (plain is Outcome.TRUSTED and configured <= holding)
    if not configured:
        assert strict is pol


def test_configured_paths_of_a_workload() -> None:
    from cctf.identity.negotiator import configured_paths
    from cctf.identity.targets import WorkloadTarget

    full = WorkloadTarget(
        spiffe_id="spiffe://example.org/api",
        dns_name="api.example.org.",
        endpoint="127.0.0.1:8443",
        issuer="https://issuer.example.org",
    )
    assert configured_paths(full) == (Path.DNS, Path.MTLS, Path.OIDC)
    assert configured_paths(WorkloadTarget(spiffe_id="spiffe://example.org/db")) == ()
