"""The stored safe-mode state (cctf.coordinator.policystate) and the engine's snapshot/restore."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.coordinator.policystate import PolicyStateError, open_state, seal_state, state_key
from cctf.policy.config import PolicyConfig
from cctf.policy.engine import PolicyEngine
from cctf.policy.model import Scope

SECRET = bytes(range(32))
SCOPES = [
    (Scope("us-east"), True, 5, 7, "operator ops-alice: planned"),
    (Scope("us-east", "www.example."), False, 9, 11, "answer_change on www.example."),
]


def test_round_trip_and_refusals() -> None:
    data = seal_state(SECRET, "c1", 12, 1_000, SCOPES)
    assert open_state(SECRET, "c1", data) == (12, 1_000, SCOPES)
    assert state_key("c1") == "_policy.c1"
    for secret, coord, blob, why in (
        (b"\x01" * 32, "c1", data, "integrity"),  # another key's secret
        (SECRET, "c2", data, "integrity"),  # read back under another coordinator's key
        (SECRET, "c1", data[:-1] + bytes([data[-1] ^ 1]), "integrity"),
        (SECRET, "c1", b"\x93\x01", "malformed"),
        (SECRET, "c1", b"\x00" * (5 * 1024 * 1024), "too large"),
    ):
        with pytest.raises(PolicyStateError, match=why):
            open_state(secret, coord, blob)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_refused_with_one_error(blob: bytes) -> None:
    with pytest.raises(PolicyStateError):
        open_state(SECRET, "c1", blob)


def test_engine_snapshot_restores_into_a_fresh_engine() -> None:
    config = PolicyConfig(quiet_rounds=3, hold_rounds=2)
    engine = PolicyEngine(config, ["us-east", "eu-west"])
    engine.operator(Scope("us-east", "www.example."), True, "operator ops-alice: planned")
    engine.operator(Scope("eu-west"), True, "operator ops-bob: drill")
    round_, scopes = engine.snapshot()
    fresh = PolicyEngine(config, ["us-east", "eu-west"])
    assert fresh.restore(round_, scopes) == 2
    assert fresh.active() == engine.active()
    assert fresh.is_manual(Scope("eu-west")) and fresh.effects("www.example.").safe_mode
    assert fresh.tick(100) == []  # manual scopes never leave by themselves
    assert fresh.restore(round_, scopes) == 0  # already active: nothing restored twice
    # an automatic scope restored leaves once quiet, as it would have
    auto = PolicyEngine(config, ["us-east"])
    assert auto.restore(10, [(Scope("us-east", "a.example."), False, 9, 10, "alarm")]) == 1
    assert auto.tick(12) == [] and [t.entered for t in auto.tick(13)] == [False]
