"""The subscriber's LKG rules (client step 13 basis, 14e bounds, 15b policy) and their display,
checked against the clean-room verifier on random attestations."""

from __future__ import annotations

import independent_verifier as iv
import msgspec
import pytest
from clientcases import NAME, REGION, reason_of, sealed, verdict, verifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirefactories import make_world

from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.messages import Outcome, Verdict
from cctf.client.present import verdict_line, verdict_to_json
from cctf.client.verify import VerdictTimes
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId

ROUND = 1_000


def lkg_of(v: Verdict, *, rounds_later: int, ms_later: int, lifetime: int = 30_000) -> Verdict:
    issued = v.issued_ms + ms_later
    return msgspec.structs.replace(
        v,
        round=v.round + rounds_later,
        issued_ms=issued,
        expires_ms=issued + lifetime,
        seq=issued * 1000 + 1,
        basis_round=v.round,
        basis_ms=v.issued_ms,
    )


def test_fresh_and_lkg_are_accepted_and_shown_apart() -> None:
    world = make_world()
    basis = verdict(world)
    world.clock.advance(5_000)
    lkg = lkg_of(basis, rounds_later=5, ms_later=5_000)
    vf = verifier(world)
    subject, data = sealed(world, lkg)
    got = vf.verify(data, subject)
    assert got.is_lkg and got.staleness_ms == 5_000
    assert verdict_to_json(got)["lkg"] == {
        "age_ms": 5_000,
        "basis_round": basis.round,
        "basis_ms": basis.issued_ms,
    }
    assert verdict_line(got).endswith(f"LKG age=5.0s basis={basis.round}")
    assert verdict_to_json(basis)["lkg"] is None and "LKG" not in verdict_line(basis)
    refusing = verifier(world, accept_lkg=False)
    assert reason_of(lambda: refusing.verify(data, subject)) is Reason.LKG
    fresh = verdict(world, seq=9)
    fresh_subject, fresh_data = sealed(world, fresh)
    assert refusing.verify(fresh_data, fresh_subject) == fresh  # fresh verdicts still pass


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"basis_round": "+1"}, Reason.MALFORMED),  # basis newer than the round
        ({"basis_ms": "same-time"}, Reason.MALFORMED),  # older round, same time
        ({"outcome": Outcome.UNAVAILABLE}, Reason.MALFORMED),  # an attestation is TRUSTED
        ({"lifetime": 30_001}, Reason.LIFETIME),
        ({"staleness": 15 * 60_000 - 29_999}, Reason.STALE),  # usable 1 ms beyond the cap
        ({"basis_ms": "long-after-its-round"}, Reason.ROUND),
    ],
)
def test_bad_attestations_are_refused(change: dict[str, object], reason: Reason) -> None:
    world = make_world()
    basis = verdict(world)
    later = int(change.get("staleness", 5_000))  # type: ignore[call-overload]
    world.clock.advance(later)
    lkg = lkg_of(
        basis,
        rounds_later=later // ROUND,
        ms_later=later,
        lifetime=int(change.get("lifetime", 30_000)),  # type: ignore[call-overload]
    )
    if change.get("basis_round") == "+1":
        lkg = msgspec.structs.replace(lkg, basis_round=lkg.round + 1)
    if change.get("basis_ms") == "same-time":
        lkg = msgspec.structs.replace(lkg, basis_ms=lkg.issued_ms)
    if change.get("basis_ms") == "long-after-its-round":
        lkg = msgspec.structs.replace(lkg, basis_round=lkg.basis_round - 70)
    if "outcome" in change:
        lkg = msgspec.structs.replace(
            lkg,
            outcome=Outcome.UNAVAILABLE,
            rcode=0,
            answer=[],
            answer_digest=b"",
            voters=[
                msgspec.structs.replace(r, state="unavailable", answer_digest=b"")  # type: ignore[arg-type]
                for r in lkg.voters
            ],
        )
    subject, data = sealed(world, lkg)
    assert reason_of(lambda: verifier(world).verify(data, subject)) is reason


def test_a_longer_client_cap_accepts_a_longer_staleness() -> None:
    world = make_world()
    basis = verdict(world)
    world.clock.advance(20 * 60_000)
    lkg = lkg_of(basis, rounds_later=20 * 60, ms_later=20 * 60_000)
    subject, data = sealed(world, lkg)
    assert reason_of(lambda: verifier(world).verify(data, subject)) is Reason.STALE
    times = VerdictTimes(max_lkg_staleness_ms=3_600_000)
    assert verifier(world, times=times).verify(data, subject).is_lkg


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    jitter=st.integers(-2, 2),
    ms=st.integers(-2_000, 1_000_000),
    lifetime=st.integers(1, 40_000),
    accept=st.booleans(),
)
def test_client_and_clean_room_agree_on_attestations(
    jitter: int, ms: int, lifetime: int, accept: bool
) -> None:
    rounds = ms // ROUND + jitter
    world = make_world(suite=SuiteId.ED25519)
    basis = verdict(world)
    now = basis.issued_ms + max(ms, 0)
    world.clock.set(now)
    lkg = lkg_of(basis, rounds_later=rounds, ms_later=ms, lifetime=lifetime)
    if lkg.round < 0 or lkg.issued_ms < 0:
        return
    subject, data = sealed(world, lkg)
    mine: str | None = None
    try:
        verifier(world, policy=SuitePolicy(SuiteId.ED25519), accept_lkg=accept).verify(
            data, subject
        )
    except Exception as exc:  # Rejected
        mine = exc.reason.value  # type: ignore[attr-defined]
    theirs: str | None = None
    keys = iv.trust_of(
        *(
            iv.Key(
                suite=e.keys.suite.value,
                public_keys=e.keys.raw,
                role=e.role.value,
                principal=e.principal,
                region=e.region,
            )
            for e in world.trust
        )
    )
    try:
        iv.VerdictSubscriber(
            trust=keys, region=REGION, min_suite=SuiteId.ED25519.value, accept_lkg=accept
        ).verify(data, subject, now)
    except iv.Reject as exc:
        theirs = exc.reason
    assert mine == theirs
    assert lkg.qname == NAME
