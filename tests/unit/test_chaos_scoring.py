"""Scoring of trust checks against ground truth, report aggregation and the scenario catalog."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cctf
from cctf.chaos.runcli import fails, table
from cctf.chaos.scenarios.catalog import (
    SCENARIOS,
    Options,
    ScenarioError,
    all_scenarios,
    build,
)
from cctf.chaos.scenarios.score import (
    Counts,
    GroundTruth,
    Phase,
    Report,
    Score,
    Seen,
    TruthChange,
    answer_of,
    pct,
    score,
)

OLD = answer_of(["www.demo.test. A 192.0.2.10"])
NEW = answer_of(["www.demo.test. A 192.0.2.99"])
FORGED = answer_of(["www.demo.test. A 203.0.113.66"])
NAME = "www.demo.test."


def truth() -> GroundTruth:
    return GroundTruth({NAME: OLD}, [TruthChange(NAME, 10_000, NEW, grace_ms=3_000)])


def test_answer_is_an_rrset_order_and_case_do_not_matter() -> None:
    assert answer_of(["b A 1", "A a 2"]) == answer_of(["a a 2", "B A 1"])


def test_ground_truth_before_during_grace_and_after_a_change() -> None:
    t = truth()
    assert t.acceptable(NAME, 0) == {OLD}
    assert t.acceptable(NAME, 9_999) == {OLD}
    assert t.acceptable(NAME, 10_000) == {OLD, NEW}
    assert t.acceptable(NAME, 12_999) == {OLD, NEW}
    assert t.acceptable(NAME, 13_000) == {NEW}
    assert t.acceptable("other.demo.test.", 0) == frozenset()


def test_ground_truth_refuses_changes_of_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown name"):
        GroundTruth({NAME: OLD}, [TruthChange("x.", 0, NEW)])


@pytest.mark.parametrize(
    ("seen", "answer", "expected"),
    [
        (Seen.TRUSTED, OLD, Score.CORRECT),
        (Seen.LKG, OLD, Score.CORRECT),
        (Seen.TRUSTED, FORGED, Score.FALSE_TRUST),
        (Seen.LKG, FORGED, Score.FALSE_TRUST),
        (Seen.TRUSTED, NEW, Score.FALSE_TRUST),  # the change has not happened yet
        (Seen.DISPUTED, (), Score.FALSE_DENY),
        (Seen.UNAVAILABLE, (), Score.UNAVAILABLE),
    ],
)
def test_score(seen: Seen, answer: tuple[str, ...], expected: Score) -> None:
    assert score(seen, answer, truth().acceptable(NAME, 0)) is expected


def test_disputed_for_a_name_ground_truth_does_not_answer_is_correct() -> None:
    assert score(Seen.DISPUTED, (), frozenset()) is Score.CORRECT
    assert score(Seen.TRUSTED, OLD, frozenset()) is Score.FALSE_TRUST


def test_pct_never_rounds_up_to_100() -> None:
    assert pct(999_999_999, 1_000_000_000) == 99.9999
    assert pct(5, 5) == 100.0
    assert pct(0, 0) == 100.0
    assert pct(99_999, 100_000) == 99.999


seen_st = st.sampled_from(list(Seen))
answer_st = st.sampled_from([OLD, NEW, FORGED, ()])


@given(st.lists(st.tuples(st.integers(0, 20_000), seen_st, answer_st), max_size=200))
def test_report_aggregation(checks: list[tuple[int, Seen, tuple[str, ...]]]) -> None:
    """The totals partition the checks; phases sum to the totals; integrity counts everything but
    false trust; availability counts correct; brute force on the same list."""
    checks.sort(key=lambda c: c[0])
    t = truth()
    report = Report((Phase("a", 0), Phase("b", 10_000)), recover_from_ms=5_000)
    for at, seen, answer in checks:
        report.add(at, score(seen, answer, t.acceptable(NAME, at)), lkg=seen is Seen.LKG)
    d = report.to_dict()
    scores = [score(s, a, t.acceptable(NAME, at)) for at, s, a in checks]
    assert d["checks"] == len(checks)
    assert d["checks"] == d["correct"] + d["false_trust"] + d["false_deny"] + d["unavailable"]
    assert d["false_trust"] == scores.count(Score.FALSE_TRUST)
    assert d["lkg_served"] == sum(1 for _, s, _ in checks if s is Seen.LKG)
    assert d["integrity_pct"] == pct(len(checks) - scores.count(Score.FALSE_TRUST), len(checks))
    assert d["availability_pct"] == pct(scores.count(Score.CORRECT), len(checks))
    assert sum(p["checks"] for p in d["phases"]) == len(checks)
    both = report.to_dict({"ab": ("a", "b")})["ab"]
    assert {k: v for k, v in both.items() if k != "phases"} == report.total.to_dict()
    assert d["phases"][1]["checks"] == sum(1 for at, _, _ in checks if at >= 10_000)
    # time to recover: first correct check after the last bad one at or after 5 s
    late = [(at, s) for (at, _, _), s in zip(checks, scores, strict=True) if at >= 5_000]
    bad = [i for i, (_, s) in enumerate(late) if s is not Score.CORRECT]
    rest = late[bad[-1] + 1 :] if bad else late
    expected = rest[0][0] - 5_000 if rest else None
    assert d["time_to_recover_ms"] == expected


def test_counts_false_trust_drops_integrity() -> None:
    c = Counts()
    c.add(Score.CORRECT, lkg=False, n=99_999)
    c.add(Score.FALSE_TRUST, lkg=True, n=1)
    d = c.to_dict()
    assert d["integrity_pct"] == 99.999
    assert d["lkg_served"] == 1


def test_phases_must_be_ordered_and_distinct() -> None:
    with pytest.raises(ValueError, match="time order"):
        Report((Phase("a", 10), Phase("b", 0)))
    with pytest.raises(ValueError, match="distinct"):
        Report((Phase("a", 0), Phase("a", 10)))


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_is_well_formed(name: str) -> None:
    sc = build(name, Options(round_ms=500, phase_rounds=3))
    assert sc.name == name
    assert sc.rounds > max(s.at_round for s in sc.steps)
    starts = [r for _, r in sc.phases]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(p in dict(sc.phases) for p in sc.beyond_model)
    assert all(p in dict(sc.phases) for g in sc.groups.values() for p in g)
    params = sc.to_params()
    assert params["round_ms"] == 500 and params["rule"] == "3-of-5"


def test_blackhole_cap_fits_between_phases() -> None:
    sc = build("dns-blackhole", Options(phase_rounds=6))
    phases = dict(sc.phases)
    assert sc.lkg_cap_ms == 12 * sc.round_ms
    assert phases["blackhole-5 (lkg within cap)"] < phases["cap edge"]
    assert phases["cap edge"] < phases["blackhole-5 (after cap: fail closed)"] < phases["cleared"]
    with pytest.raises(ScenarioError, match="lkg-cap-rounds"):
        build("dns-blackhole", Options(phase_rounds=6, lkg_cap_rounds=2))


def test_poison_beyond_model_only_for_k_or_more_same_forged_without_dnssec() -> None:
    assert build("poison").beyond_model == ("poison-3 same", "poison-4 same", "aftermath")
    names = [n for n, _ in build("poison").phases]
    assert names.index("poison-4 different") < names.index("poison-3 same")
    assert build("poison-dnssec").beyond_model == ()


def test_all_adds_safe_mode_variants_and_unknown_is_refused() -> None:
    names = [(s.name, s.safe_mode) for s in all_scenarios()]
    assert ("answer-change", True) in names and ("poison", True) in names
    assert len(names) == len(SCENARIOS) + 2
    with pytest.raises(ScenarioError, match="unknown scenario"):
        build("nope")


def test_fails_only_on_false_trust_within_the_model() -> None:
    base = {"scenario": "x", "parameters": {}, "false_trust": 0}
    assert not fails(base)
    assert fails({**base, "false_trust": 1})
    assert not fails({**base, "false_trust": 5, "false_trust_beyond_model": 5})
    assert fails({**base, "error": "boom"})
    assert "x" in table([{**base, "error": "boom"}])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_the_scenario_core_is_pure_and_only_the_chaos_cli_imports_the_suite() -> None:
    root = Path(cctf.__file__).parent
    impure = ("asyncio", "nats", "dns", "socket", "cctf.bus", "cctf.devfabric", "time")
    for path in (root / "chaos" / "scenarios").glob("*.py"):
        bad = [m for m in _imports(path) if m.split(".")[0] in impure or m.startswith(impure)]
        assert not bad, f"{path.name} imports {bad}"
    suite = (
        "cctf.chaos.scenarios",
        "cctf.chaos.runner",
        "cctf.chaos.runfabric",
        "cctf.chaos.runcli",
    )
    allowed = {"cli.py", "runner.py", "runfabric.py", "runcli.py"}
    for path in root.rglob("*.py"):
        if path.parent.name in ("chaos", "scenarios") and (
            path.name in allowed or path.parent.name == "scenarios"
        ):
            continue
        bad = [m for m in _imports(path) if m.startswith(suite)]
        assert not bad, f"{path.relative_to(root)} imports {bad}"
