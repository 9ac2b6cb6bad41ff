"""Tests for cctf.coordinator.pipeline.lkg: an independent reference over random histories, plus
examples of each rule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.messages import Outcome
from cctf.coordinator.pipeline.lkg import (
    Action,
    Basis,
    EndReason,
    EventKind,
    LkgPolicy,
    LkgStage,
    Round,
    Store,
)

KEY = ("www.example.com.", "A")
OTHER = ("api.example.com.", "A")
A, B = b"a" * 32, b"b" * 32
T0 = 1_700_000_000_000


def trusted(r: int, now: int, digest: bytes = A, tag: str = "secure") -> Round:
    return Round(r, Outcome.TRUSTED, now, (digest,) * 3, False, digest, tag)


def unavailable(r: int, now: int, digests: tuple[bytes, ...] = (), bogus: bool = False) -> Round:
    return Round(r, Outcome.UNAVAILABLE, now, digests, bogus)


def disputed(r: int, now: int) -> Round:
    return Round(r, Outcome.DISPUTED, now, (A, B))


def stage(**kw: int) -> LkgStage[str]:
    return LkgStage(LkgPolicy(**kw))  # type: ignore[arg-type]


# --- examples, one per rule ------------------------------------------------------------------------


def test_never_trusted_gets_no_lkg() -> None:
    s = stage()
    step = s.step(KEY, unavailable(1, T0), "p")
    assert step.action is Action.FRESH and step.store is Store.NONE and step.event is None


def test_outage_after_trusted_is_attested_with_the_basis() -> None:
    s = stage(lifetime_ms=30_000, max_staleness_ms=900_000)
    first = s.step(KEY, trusted(1, T0), "v1")
    assert first.action is Action.FRESH and first.store is Store.PUT
    assert first.basis is not None and first.basis.payload == "v1"
    step = s.step(KEY, unavailable(2, T0 + 1000, (A, b"")), "v2")
    assert step.action is Action.LKG and step.basis is not None
    assert step.basis.payload == "v1" and step.basis.round == 1 and step.basis.basis_ms == T0
    assert step.expires_ms == T0 + 1000 + 30_000
    assert step.event is not None and step.event.kind is EventKind.STARTED
    again = s.step(KEY, unavailable(3, T0 + 2000), "v3")
    assert again.action is Action.LKG and again.event is None  # one start event per episode
    assert s.in_lkg == 1
    back = s.step(KEY, trusted(4, T0 + 3000), "v4")
    assert back.action is Action.FRESH and back.event is not None
    assert back.event.kind is EventKind.ENDED and back.event.reason is EndReason.TRUSTED
    assert back.event.rounds == 2 and s.in_lkg == 0


def test_disputed_ends_and_forgets() -> None:
    s = stage()
    s.step(KEY, trusted(1, T0), "v1")
    s.step(KEY, unavailable(2, T0 + 1000), "v2")
    step = s.step(KEY, disputed(3, T0 + 2000), "v3")
    assert step.action is Action.FRESH and step.store is Store.DELETE
    assert step.event is not None and step.event.reason is EndReason.DISPUTED
    assert s.step(KEY, unavailable(4, T0 + 3000), "v4").action is Action.FRESH


@pytest.mark.parametrize(
    ("rnd", "reason"),
    [
        (unavailable(2, T0 + 1000, (A, B)), EndReason.DISAGREEMENT),
        (unavailable(2, T0 + 1000, (A,), bogus=True), EndReason.BOGUS),
    ],
)
def test_disagreement_or_bogus_in_an_outage_fails_closed(rnd: Round, reason: EndReason) -> None:
    s = stage()
    s.step(KEY, trusted(1, T0), "v1")
    s.step(KEY, unavailable(2, T0 + 500), "lkg")  # in an episode
    step = s.step(KEY, rnd, "v2")
    assert step.action is Action.FRESH and step.store is Store.DELETE
    assert step.event is not None and step.event.reason is reason
    assert s.basis(KEY) is None


def test_cap_fails_closed_and_expiry_never_passes_it() -> None:
    s = stage(lifetime_ms=30_000, max_staleness_ms=60_000)
    s.step(KEY, trusted(1, T0), "v1")
    near = s.step(KEY, unavailable(50, T0 + 50_000), "x")
    assert near.action is Action.LKG and near.expires_ms == T0 + 60_000
    at = s.step(KEY, unavailable(60, T0 + 60_000), "x")
    assert at.action is Action.FRESH and at.store is Store.DELETE
    assert at.event is not None and at.event.reason is EndReason.CAP


def test_per_name_caps() -> None:
    s = LkgStage[str](
        LkgPolicy(max_staleness_ms=900_000, caps={KEY: 5_000, ("api.example.com.", ""): 7_000})
    )
    assert s.policy.cap_ms(KEY) == 5_000
    assert s.policy.cap_ms(OTHER) == 7_000
    assert s.policy.cap_ms(("www.example.com.", "AAAA")) == 900_000
    assert s.policy.longest_cap_ms == 900_000


def test_late_rounds_neither_replace_nor_get_attested() -> None:
    s = stage()
    s.step(KEY, trusted(5, T0), "v5")
    late = s.step(KEY, trusted(4, T0 + 10, B), "v4")
    assert late.action is Action.FRESH and late.store is Store.NONE
    basis = s.basis(KEY)
    assert basis is not None and basis.payload == "v5"
    assert s.step(KEY, unavailable(3, T0 + 20), "v3").action is Action.FRESH
    assert s.basis(KEY) is not None


def test_store_is_written_on_change_or_when_old() -> None:
    s = stage(store_every_ms=10_000)
    assert s.step(KEY, trusted(1, T0), "v1").store is Store.PUT
    assert s.step(KEY, trusted(2, T0 + 1000), "v2").store is Store.NONE
    assert s.step(KEY, trusted(3, T0 + 2000, tag="insecure"), "v3").store is Store.PUT
    assert s.step(KEY, trusted(4, T0 + 3000, B, tag="insecure"), "v4").store is Store.PUT
    assert s.step(KEY, trusted(5, T0 + 12_999), "v5").store is Store.PUT  # digest changed back
    assert s.step(KEY, trusted(6, T0 + 20_000), "v6").store is Store.NONE
    assert s.step(KEY, trusted(7, T0 + 22_999), "v7").store is Store.PUT  # 10 s after v5


def test_load_and_bound() -> None:
    s = stage(max_keys=2)
    n = s.load([(KEY, Basis(3, T0, A, "secure", "v3")), (OTHER, Basis(2, T0, A, "", "o2"))])
    assert n == 2 and len(s) == 2
    assert s.step(KEY, unavailable(4, T0 + 1000), "x").action is Action.LKG
    assert s.load([(KEY, Basis(1, T0 - 5, A, "", "old"))]) == 0  # memory is newer
    s.step(("c.example.", "A"), trusted(9, T0), "c")
    assert len(s) == 2 and s.basis(OTHER) is None  # least recently decided forgotten


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        LkgPolicy(lifetime_ms=0)
    with pytest.raises(ValueError):
        LkgPolicy(caps={KEY: 0})
    with pytest.raises(ValueError):
        LkgPolicy(store_every_ms=-1)


# --- property: the stage against an independent reference over random histories ------------------


@dataclass
class RefState:
    digest: bytes | None = None
    round: int = -1
    at: int = 0
    payload: str = ""
    episode: bool = False


def reference(
    history: list[tuple[str, Round]], lifetime: int, cap: int
) -> list[tuple[Action, str, int, str | None]]:
    """(action, attested payload, expiry, event) for each round, written from the rules alone."""
    st_: dict[str, RefState] = {}
    out: list[tuple[Action, str, int, str | None]] = []
    for name, r in history:
        s = st_.setdefault(name, RefState())
        if r.outcome is Outcome.TRUSTED:
            if s.digest is not None and s.round > r.round:
                out.append((Action.FRESH, "", 0, None))
                continue
            ev = "ended:trusted" if s.episode else None
            st_[name] = RefState(r.answer_digest, r.round, r.now_ms, f"{name}@{r.round}")
            out.append((Action.FRESH, "", 0, ev))
            continue
        if s.digest is None:
            out.append((Action.FRESH, "", 0, None))
            continue
        reason = None
        if r.outcome is Outcome.DISPUTED:
            reason = "disputed"
        elif r.bogus:
            reason = "bogus"
        elif any(d not in (b"", s.digest) for d in r.answer_digests):
            reason = "disagreement"
        elif s.round > r.round:
            out.append((Action.FRESH, "", 0, None))
            continue
        elif r.now_ms - s.at >= cap:
            reason = "cap"
        if reason is not None:
            out.append((Action.FRESH, "", 0, f"ended:{reason}" if s.episode else None))
            st_[name] = RefState()
            continue
        ev = None if s.episode else "started"
        s.episode = True
        out.append((Action.LKG, s.payload, min(r.now_ms + lifetime, s.at + cap), ev))
    return out


def rounds_strategy() -> st.SearchStrategy[list[tuple[str, Round]]]:
    digest = st.sampled_from([A, A, A, b"", b"", B])  # mostly outages consistent with A
    one = st.tuples(
        st.sampled_from(["n1", "n2"]),
        st.sampled_from([Outcome.TRUSTED, *[Outcome.UNAVAILABLE] * 4, Outcome.DISPUTED]),
        st.integers(0, 3),  # round step (0: same round again, e.g. a late decision)
        st.integers(0, 10).map(lambda s: s * 1000),  # time step (coarse: hits the cap exactly)
        st.lists(digest, max_size=3),
        st.integers(0, 15).map(lambda n: n == 0),  # bogus, rarely
        st.sampled_from([A, A, B]),
    )

    def build(raw: list[tuple[str, Outcome, int, int, list[bytes], bool, bytes]]):  # type: ignore[no-untyped-def]
        r, now, out = 10, T0, []
        for name, outcome, dr, dt, digests, bogus, win in raw:
            r = max(0, r + dr - 1)
            now += dt
            if outcome is Outcome.TRUSTED:
                out.append((name, Round(r, outcome, now, (win, win, win), False, win, "")))
            else:
                out.append((name, Round(r, outcome, now, tuple(digests), bogus)))
        return out

    return st.lists(one, max_size=40).map(build)


@settings(max_examples=400, deadline=None)
@given(
    rounds_strategy(),
    st.integers(1, 60).map(lambda s: s * 1000),
    st.integers(1, 30).map(lambda s: s * 1000),
)
def test_stage_matches_reference(history: list[tuple[str, Round]], lifetime: int, cap: int) -> None:
    s = LkgStage[str](LkgPolicy(lifetime_ms=lifetime, max_staleness_ms=cap))
    expected = reference(history, lifetime, cap)
    for (name, r), (action, payload, expires, event) in zip(history, expected, strict=True):
        step = s.step((name, "A"), r, f"{name}@{r.round}")
        assert step.action is action
        if action is Action.LKG:
            assert step.basis is not None and step.basis.payload == payload
            assert step.expires_ms == expires
            # never usable beyond the cap, never past its lifetime, never already expired
            assert r.now_ms < step.expires_ms <= step.basis.basis_ms + cap
            assert step.expires_ms <= r.now_ms + lifetime
            assert step.basis.round <= r.round
            assert r.outcome is Outcome.UNAVAILABLE and not r.bogus
            assert all(d in (b"", step.basis.answer_digest) for d in r.answer_digests)
        got = None
        if step.event is not None:
            got = step.event.kind.value
            if step.event.reason is not None:
                got += f":{step.event.reason.value}"
        assert got == event
        if step.store is Store.PUT:
            assert step.basis is not None and r.outcome is Outcome.TRUSTED
    assert s.in_lkg == sum(s.in_episode((n, "A")) for n in ("n1", "n2"))


@settings(max_examples=200, deadline=None)
@given(rounds_strategy())
def test_no_lkg_without_a_trusted_since_the_last_disagreement(
    history: list[tuple[str, Round]],
) -> None:
    s = LkgStage[str](LkgPolicy())
    clean: dict[str, bool] = {}
    for name, r in history:
        step = s.step((name, "A"), r, "p")
        if step.action is Action.LKG:
            assert clean.get(name, False)
        if r.outcome is Outcome.TRUSTED:
            clean[name] = True
        elif step.store is Store.DELETE:
            clean[name] = False
