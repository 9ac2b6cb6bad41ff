"""The demo's identity helpers without servers: ``--fail-path`` checks, the workload text line
(one line whatever a decision holds) and the fault knobs each path sets on the fabric."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.devfabric.demo_identity import (
    PATHS,
    apply_faults,
    check_fail_paths,
    workload_line,
)
from cctf.devfabric.identity import IdentityFabric, Mode, Presentation

STATES = ("holds", "fails", "unavailable")


def decision(states: dict[str, tuple[str, str]], outcome: str = "trusted") -> dict[str, object]:
    return {
        "workload": "spiffe://demo.test/api",
        "round": 7,
        "outcome": outcome,
        "paths": {p: {"state": s, "reason": r} for p, (s, r) in states.items()},
    }


def test_workload_line_shows_reasons_of_paths_that_do_not_hold() -> None:
    line = workload_line(
        decision(
            {
                "dns": ("holds", "dnssec_secure"),
                "mtls": ("fails", "wrong_spiffe_id"),
                "oidc": ("unavailable", "no_token"),
            }
        )
    )
    assert line == (
        "workload spiffe://demo.test/api round=7 TRUSTED "
        "dns=holds mtls=fails(wrong_spiffe_id) oidc=unavailable(no_token)"
    )


@given(
    st.lists(st.sampled_from(STATES), min_size=3, max_size=3),
    st.lists(st.text(max_size=40), min_size=3, max_size=3),
    st.text(max_size=60),
    st.sampled_from(("trusted", "refused", "unavailable")),
)
def test_workload_line_is_always_one_printable_line(
    states: list[str], reasons: list[str], workload: str, outcome: str
) -> None:
    obj = decision(dict(zip(PATHS, zip(states, reasons, strict=True), strict=True)), outcome)
    obj["workload"] = workload
    line = workload_line(obj)
    assert line.isprintable() and "\n" not in line
    assert line.startswith("workload ") and f" {outcome.upper()} " in line
    for path, state in zip(PATHS, states, strict=True):
        assert f"{path}={state}" in line


@pytest.mark.parametrize(
    ("paths", "fault", "message"),
    [
        (("smtp",), "down", "--fail-path takes"),
        (("dns", "dns"), "down", "at most once"),
        ((), "melted", "--mtls-fault takes"),
    ],
)
def test_bad_fail_paths_are_refused(paths: tuple[str, ...], fault: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_fail_paths(paths, fault)


def test_every_combination_of_paths_is_accepted() -> None:
    for mask in range(8):
        check_fail_paths([p for i, p in enumerate(PATHS) if mask >> i & 1], "down")


def test_faults_each_path_sets(tmp_path: Path) -> None:
    fabric = IdentityFabric(tmp_path)  # not started: knobs are plain state
    assert apply_faults(fabric, ["dns"], "down") == []  # the DNS servers' business
    assert all(s.mode(v) is Mode.UP for s in fabric.servers() for v in s.views)
    done = apply_faults(fabric, ["mtls", "oidc"], "down")
    assert len(done) == 2
    for w in fabric.workloads.values():
        assert all(w.mode(v) is Mode.DOWN for v in w.views)
    assert all(fabric.issuer.mode(v) is Mode.DOWN for v in fabric.issuer.views)
    assert all(fabric.bundle.mode(v) is Mode.UP for v in fabric.bundle.views)
    fabric.reset_faults()
    apply_faults(fabric, ["mtls"], "wrong-identity")
    for w in fabric.workloads.values():
        assert all(w.mode(v) is Mode.UP for v in w.views)
        assert w._context is w.context(Presentation.WRONG_IDENTITY)
