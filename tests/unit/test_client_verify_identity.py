"""The subscriber's identity verdict checks (cctf.client.verify_identity): each numbered step refuses
with its reason, state changes only on acceptance, and no input raises anything but Rejected."""

from __future__ import annotations

import msgspec
import pytest
from evidencefactories import (
    DIGEST_A,
    DIGEST_B,
    identity_verdicts,
    make_identity_verdict,
    make_observation,
    seal_identity_verdict,
)
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from wirefactories import ROUND_MS, START_MS, World, make_identity, make_world

from cctf.bus_schemas.envelope import Reason, Rejected, seal
from cctf.bus_schemas.evidence import (
    EvidenceStatus,
    IdentityKind,
    IdentityVerdict,
    Observation,
    encode,
)
from cctf.bus_schemas.messages import MessageType, Outcome
from cctf.bus_schemas.subjects import identity_verdict_subject, verdict_subject
from cctf.client.verify_identity import IdentityVerifier
from cctf.crypto.trust import Role

REGIONS = ("us-east", "eu-west", "us-west")
DOMAIN = "example.org"


def world() -> World:
    w = make_world(REGIONS)
    w.clock.set(START_MS + 100)
    return w


def observations(
    w: World,
    *,
    kind: IdentityKind = IdentityKind.BUNDLE,
    subject: str | None = None,
    statuses: tuple[EvidenceStatus, ...] = (EvidenceStatus.OK,) * 3,
    **facts: int | bytes,
) -> list[Observation]:
    return [
        make_observation(f"agent-{r}", r, w.round, kind, subject, s, **facts)
        for r, s in zip(REGIONS, statuses, strict=True)
    ]


def verdict(w: World, *, seq_offset: int = 0, **kw: object) -> IdentityVerdict:
    facts = {k: kw.pop(k) for k in ("sequence", "digest") if k in kw}
    obs_kw = {k: kw.pop(k) for k in ("kind", "subject", "statuses") if k in kw}
    now = w.clock.now_ms()
    v = make_identity_verdict(
        w.coordinator.principal,
        observations(w, **obs_kw, **facts),  # type: ignore[arg-type]
        issued_ms=now,
        expires_ms=now + 30_000,
        seq=now * 1000 + seq_offset,
        **kw,  # type: ignore[arg-type]
    )
    return v


def sealed(w: World, v: IdentityVerdict, region: str = "us-east") -> tuple[bytes, str]:
    subject = identity_verdict_subject(region, v.kind, v.subject)
    return seal_identity_verdict(w.coordinator, v, subject=subject), subject


def verifier(w: World, region: str | None = "us-east") -> IdentityVerifier:
    return IdentityVerifier(w.trust, w.clock, region=region)


def reason(f: object, *args: object, **kw: object) -> Reason:
    with pytest.raises(Rejected) as err:
        f(*args, **kw)  # type: ignore[operator]
    return err.value.reason


def test_accepts_a_trusted_verdict_and_its_duplicate() -> None:
    w = world()
    v = verdict(w, sequence=3)
    data, subject = sealed(w, v)
    ver = verifier(w)
    checked = ver.check(data, subject)
    assert checked.verdict == v and not checked.duplicate
    assert checked.key == (w.coordinator.principal, "bundle", DOMAIN)
    assert ver.check(data, subject).duplicate  # the same message fetched again
    assert ver.last_seq(w.coordinator.principal, "bundle", DOMAIN) == v.seq
    assert ver.bundle_sequence(DOMAIN) == 3


def test_step_9_subject_kind_and_region_pinning() -> None:
    w = world()
    v = verdict(w)
    data, subject = sealed(w, v)
    assert reason(verifier(w, "eu-west").check, data, subject) is Reason.REGION
    dns_subject = verdict_subject("us-east", "example.org.", "A")
    data2 = seal_identity_verdict(w.coordinator, v, subject=dns_subject)
    assert reason(verifier(w).check, data2, dns_subject) is Reason.SUBJECT


def test_step_10_and_11_payload_and_subject_binding() -> None:
    w = world()
    v = verdict(w)
    subject = identity_verdict_subject("us-east", "bundle", DOMAIN)
    junk = seal(
        w.coordinator.key,
        subject,
        MessageType.IDENTITY,
        b"\x91\x01",
        now_ms=v.issued_ms,
        lifetime_ms=30_000,
    )
    assert reason(verifier(w).check, junk, subject) is Reason.MALFORMED
    # a verdict for another subject, or another kind, sealed on this subject
    other = msgspec.structs.replace(v, subject="other.org")
    data = seal_identity_verdict(w.coordinator, other, subject=subject)
    assert reason(verifier(w).check, data, subject) is Reason.SUBJECT
    jwks_subject = identity_verdict_subject("us-east", "jwks", DOMAIN)
    data = seal_identity_verdict(w.coordinator, v, subject=jwks_subject)
    assert reason(verifier(w).check, data, jwks_subject) is Reason.SUBJECT


def test_step_12_coordinator_is_the_key_principal() -> None:
    w = world()
    other = make_identity("coord-b", "us-east", role=Role.COORDINATOR)
    w.extra.append(other)
    v = verdict(w)
    data, subject = sealed(w, v)
    forged = seal_identity_verdict(other, v, subject=subject)  # names coord-us-east, signed by b
    assert reason(verifier(w).check, forged, subject) is Reason.PRINCIPAL
    assert verifier(w).check(data, subject).verdict == v
    # an agent key is not a coordinator key
    agent = w.agent("us-east")
    by_agent = seal_identity_verdict(agent, v, subject=subject)
    assert reason(verifier(w).check, by_agent, subject) is Reason.UNKNOWN_KEY


def test_step_12_per_coordinator_subject_is_the_signers() -> None:
    w = world()
    other = make_identity("coord-b", "us-east", role=Role.COORDINATOR)
    w.extra.append(other)
    v = verdict(w)
    own = identity_verdict_subject("us-east", "bundle", DOMAIN, w.coordinator.principal)
    assert own.endswith(".bundle." + w.coordinator.principal)
    data = seal_identity_verdict(w.coordinator, v, subject=own)
    assert verifier(w).check(data, own).verdict == v
    # coord-us-east's genuine verdict sealed on coord-b's subject: refused
    on_b = identity_verdict_subject("us-east", "bundle", DOMAIN, "coord-b")
    moved = seal_identity_verdict(w.coordinator, v, subject=on_b)
    assert reason(verifier(w).check, moved, on_b) is Reason.PRINCIPAL


def test_step_13_consistency() -> None:
    w = world()
    v = verdict(w)
    for bad in (
        msgspec.structs.replace(v, facts_digest=DIGEST_B),  # digest not of the facts
        msgspec.structs.replace(v, k=1),  # 2k > n broken
        msgspec.structs.replace(v, outcome=Outcome.DISPUTED),  # facts in a non-trusted verdict
        msgspec.structs.replace(v, voters=v.voters[:2]),
    ):
        data, subject = sealed(w, bad)
        assert reason(verifier(w).check, data, subject) is Reason.MALFORMED


def test_step_14_and_15_time_sequence_round_and_age() -> None:
    w = world()
    v = verdict(w)
    data, subject = sealed(w, v)
    w.clock.advance(31_000)
    assert reason(verifier(w).check, data, subject) is Reason.EXPIRED
    w.clock.set(START_MS + 100)
    ahead = msgspec.structs.replace(v, seq=(v.issued_ms + 10_000) * 1000)
    d2, s2 = sealed(w, ahead)
    assert reason(verifier(w).check, d2, s2) is Reason.SEQUENCE
    late = msgspec.structs.replace(v, round=v.round - 100)
    d3, s3 = sealed(w, late)
    assert reason(verifier(w).check, d3, s3) is Reason.ROUND
    w.clock.advance(3 * ROUND_MS)
    assert reason(verifier(w).check, data, subject, max_age_ms=2 * ROUND_MS) is Reason.STALE
    assert verifier(w).check(data, subject).verdict == v  # streaming: no maximum age


def test_step_16_rollback_per_coordinator_kind_subject() -> None:
    w = world()
    ver = verifier(w)
    newer = verdict(w, seq_offset=5)
    older = verdict(w, seq_offset=1)
    d_new, s = sealed(w, newer)
    d_old, _ = sealed(w, older)
    ver.check(d_new, s)
    assert reason(ver.check, d_old, s) is Reason.ROLLBACK
    # another kind or subject has its own floor
    jwks = verdict(w, seq_offset=1, kind=IdentityKind.JWKS, subject="https://issuer.example.org")
    dj, sj = sealed(w, jwks)
    assert ver.check(dj, sj).verdict == jwks


def test_step_17_bundle_sequence_never_goes_backwards_per_trust_domain() -> None:
    w = world()
    ver = verifier(w)
    first = verdict(w, sequence=9, seq_offset=1)
    ver.check(*sealed(w, first))
    w.clock.advance(ROUND_MS)
    rolled = verdict(w, sequence=8, digest=DIGEST_B)  # higher seq, lower spiffe_sequence
    data, subject = sealed(w, rolled)
    assert reason(ver.check, data, subject) is Reason.BUNDLE_ROLLBACK
    assert ver.last_seq(w.coordinator.principal, "bundle", DOMAIN) == first.seq  # unchanged
    # also across coordinators: the floor is the trust domain's
    other = make_identity("coord-b", "us-east", role=Role.COORDINATOR)
    w.extra.append(other)
    ver2 = IdentityVerifier(w.trust, w.clock, region="us-east")
    ver2.check(*sealed(w, first))
    by_b = msgspec.structs.replace(rolled, coordinator="coord-b")
    data_b = seal_identity_verdict(other, by_b, subject=subject)
    assert reason(ver2.check, data_b, subject) is Reason.BUNDLE_ROLLBACK
    # a non-trusted verdict carries no sequence and is accepted; an equal sequence is accepted
    w.clock.advance(ROUND_MS)
    statuses = (EvidenceStatus.TIMEOUT,) * 3
    unavailable = verdict(w, statuses=statuses)
    assert unavailable.outcome is Outcome.UNAVAILABLE
    ver.check(*sealed(w, unavailable))
    w.clock.advance(ROUND_MS)
    same = verdict(w, sequence=9, digest=DIGEST_A)
    assert ver.check(*sealed(w, same)).verdict == same
    assert ver.bundle_sequence(DOMAIN) == 9


@settings(max_examples=200, deadline=None)
@given(identity_verdicts(), st.sampled_from(["us-east", "eu-west"]))
def test_any_verdict_is_accepted_or_rejected_never_a_crash(v: IdentityVerdict, region: str) -> None:
    w = world()
    v = msgspec.structs.replace(v, coordinator=w.coordinator.principal)
    try:
        subject = identity_verdict_subject(region, v.kind, v.subject)
        data = seal(
            w.coordinator.key,
            subject,
            MessageType.IDENTITY,
            encode(v),
            now_ms=w.clock.now_ms(),
            lifetime_ms=30_000,
        )
    except ValueError:
        return
    try:
        got = verifier(w, None).verify(data, subject)
    except Rejected:
        return
    assert got == v


# ------------------------------------------------- against the clean-room subscriber (wire §5.8)

_STEP = st.tuples(
    st.sampled_from(["coord-us-east", "coord-b"]),  # coordinator
    st.sampled_from([IdentityKind.BUNDLE, IdentityKind.JWKS]),
    st.integers(0, 3),  # spiffe_sequence
    st.sampled_from([-1, 0, 1, 2, 3, 4]),  # seq offset from issued_ms * 1000 (-1: step 14.3)
    st.booleans(),  # trusted (else every agent timed out: unavailable)
    st.one_of(st.just(0), st.integers(1, 1500)),  # clock advance before this verdict, ms
    st.sampled_from(["us-east"] * 5 + ["eu-west"]),  # subject region (verifiers pinned to us-east)
    st.booleans(),  # send the previous message again instead
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=8))
@example(  # a TRUSTED bundle, then a newer one of coord-b with a lower spiffe_sequence
    [
        ("coord-us-east", IdentityKind.BUNDLE, 3, 0, True, 0, "us-east", False),
        ("coord-b", IdentityKind.BUNDLE, 2, 0, True, 1000, "us-east", False),
    ]
)
def test_agrees_with_the_independent_subscriber(steps: list[tuple[object, ...]]) -> None:
    import independent_evidence as ie
    import independent_verifier as iv

    w = world()
    other = make_identity("coord-b", "us-east", role=Role.COORDINATOR)
    w.extra.append(other)
    signers = {w.coordinator.principal: w.coordinator, other.principal: other}
    ours = verifier(w)
    keys = [w.coordinator.entry, other.entry]
    theirs = ie.IdentitySubscriber(
        iv.trust_of(
            *(
                iv.Key(e.keys.suite.value, e.keys.raw, e.role.value, e.principal, e.region)
                for e in keys
            )
        ),
        region="us-east",
    )
    last: tuple[bytes, str] | None = None
    for coord, kind, spiffe_seq, offset, trusted, advance, region, again in steps:
        w.clock.advance(advance)  # type: ignore[arg-type]
        if again and last is not None:
            data, subject = last
        else:
            statuses = (EvidenceStatus.OK,) * 3 if trusted else (EvidenceStatus.TIMEOUT,) * 3
            v = verdict(w, kind=kind, statuses=statuses, sequence=spiffe_seq, seq_offset=offset)
            v = msgspec.structs.replace(v, coordinator=coord)
            subject = identity_verdict_subject(region, v.kind, v.subject)  # type: ignore[arg-type]
            data = seal_identity_verdict(signers[coord], v, subject=subject)  # type: ignore[index]
            last = (data, subject)
        now = w.clock.now_ms()
        try:
            ours.check(data, subject)
            mine: str | None = None
        except Rejected as exc:
            mine = exc.reason.value
        try:
            theirs.verify(data, subject, now)
            clean: str | None = None
        except iv.Reject as exc:
            clean = exc.reason
        event(f"reason={mine}")
        assert mine == clean, (mine, clean)
