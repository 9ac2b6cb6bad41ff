"""The coordinator's identity path without NATS: evidence through the verify stage (same numbered
steps as ballots, allow-list), the identity tally stage (status mapping, split views, bundle floor),
identity verdicts sealed by the Signer and accepted by the client's IdentityVerifier."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from evidencefactories import (
    DIGEST_A,
    DIGEST_B,
    make_evidence_ballot,
    make_observation,
    observations,
    seal_evidence,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import ROUND_MS, START_MS, World, make_world

from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceStatus,
    IdentityKind,
    Observation,
    check_identity_verdict,
    encode,
    facts_digest,
)
from cctf.bus_schemas.messages import Outcome, VoterState
from cctf.bus_schemas.subjects import evidence_subject, identity_token, identity_verdict_subject
from cctf.client.verify import VerdictTimes
from cctf.client.verify_identity import IdentityVerifier
from cctf.coordinator.config import NameSet
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.identity import (
    BUNDLE_ROLLBACK,
    IdentityKey,
    IdentitySet,
    IdentityStage,
    IssueRefused,
    identity_msg_id,
    identity_vote,
)
from cctf.coordinator.pipeline.sign import Signer
from cctf.coordinator.pipeline.tallies import Deciders, Tallies
from cctf.coordinator.pipeline.verify import UNCONFIGURED, CheckedEvidence, Refused, VerifyStage
from cctf.coordinator.tally import REFUSED, Decision, QuorumRule
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import SequenceClock
from cctf.identity.targets import IdentityTargets, identity_targets_from

REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
AGENTS = tuple(f"agent-{r}" for r in REGIONS)
DOMAIN = "example.org"
ISSUER = "https://issuer.example.org"
WORKLOAD = "spiffe://example.org/web"
RULE = QuorumRule(3, 5)
ROUND = START_MS // ROUND_MS


def targets() -> IdentityTargets:
    return identity_targets_from(
        {
            "trust_domains": [{"name": DOMAIN, "bundle_endpoint": "https://127.0.0.1:8443/b"}],
            "issuers": [{"issuer": ISSUER, "audiences": ["cctf"]}],
            "workloads": [
                {"spiffe_id": WORKLOAD, "endpoint": "127.0.0.1:9443"},
                {"spiffe_id": "spiffe://example.org/no-endpoint"},
            ],
        }
    )


def world() -> World:
    w = make_world(REGIONS)
    w.clock.set(START_MS + 100)
    return w


def stage_for(w: World, *, ttl_ms: int = 30_000) -> IdentityStage:
    return IdentityStage(
        RULE,
        AGENTS,
        coordinator=w.coordinator.principal,
        ttl_ms=ttl_ms,
        clock=w.clock,
        seq=SequenceClock(w.clock),
    )


def obs(
    w: World,
    region: str,
    status: EvidenceStatus = EvidenceStatus.OK,
    *,
    kind: IdentityKind = IdentityKind.BUNDLE,
    subject: str | None = None,
    **facts: int | bytes,
) -> Observation:
    agent = w.agent(region)
    return make_observation(
        agent.principal, region, w.round, kind, subject, status, detail=None, **facts
    )


def run(stage: IdentityStage, observations: list[Observation]) -> Decision:
    decision = None
    for o in observations:
        key = IdentityKey(o.kind.value, o.subject, o.round)
        _, d = stage.add(key, identity_vote(o), o.facts)
        decision = decision or d
    if decision is None:
        [(_, decision)] = stage.expire(observations[0].round)
    return decision


# ------------------------------------------------------------------------------ allow-list, votes


def test_identity_set_admits_configured_subjects_per_kind() -> None:
    s = IdentitySet(targets())
    assert s.admits("bundle", DOMAIN) and s.admits("jwks", ISSUER) and s.admits("mtls", WORKLOAD)
    assert not s.admits("mtls", "spiffe://example.org/no-endpoint")  # no endpoint: no mtls path
    assert not s.admits("jwks", DOMAIN) and not s.admits("bundle", ISSUER)
    assert not s.admits("bundle", "Example.org") and not s.admits("bundle", "other.org")
    assert len(s) == 3


def test_status_mapping() -> None:
    w = world()
    ok = identity_vote(obs(w, "us-east"))
    assert ok.voter == "agent-us-east" and ok.digest == facts_digest(
        IdentityKind.BUNDLE, DOMAIN, obs(w, "us-east").facts
    )
    assert identity_vote(obs(w, "us-east", EvidenceStatus.TIMEOUT)).digest is None
    assert identity_vote(obs(w, "us-east", EvidenceStatus.ERROR)).digest is None
    assert identity_vote(obs(w, "us-east", EvidenceStatus.INVALID)).digest is REFUSED


# ----------------------------------------------------------------------------------- verify stage


def verify_stage(w: World) -> VerifyStage:
    return VerifyStage(w.verifier(), NameSet([("example.com.", "A")]), IdentitySet(targets()))


def sealed(w: World, region: str, observations: list[Observation], **kw: object) -> bytes:
    agent = w.agent(region)
    ballot = make_evidence_ballot(agent, w.round, observations)
    return seal_evidence(agent, ballot, now_ms=w.clock.now_ms(), **kw)  # type: ignore[arg-type]


def test_verify_stage_checks_evidence_and_keeps_configured_subjects() -> None:
    w = world()
    stage = verify_stage(w)
    observations = [
        obs(w, "us-east"),
        obs(w, "us-east", kind=IdentityKind.JWKS, subject=ISSUER),
        obs(w, "us-east", kind=IdentityKind.BUNDLE, subject="unconfigured.org"),
    ]
    got = stage.check(
        sealed(w, "us-east", observations), evidence_subject("us-east", "agent-us-east")
    )
    assert isinstance(got, CheckedEvidence)
    assert [k for k, _, _ in got.votes] == [
        IdentityKey("bundle", DOMAIN, w.round),
        IdentityKey("jwks", ISSUER, w.round),
    ]
    assert got.ignored == {UNCONFIGURED: 1}
    only = stage.check(
        sealed(w, "us-east", [observations[2]]), evidence_subject("us-east", "agent-us-east")
    )
    assert isinstance(only, Refused) and only.reason == UNCONFIGURED


def test_verify_stage_refuses_evidence_without_an_allow_list() -> None:
    w = world()
    stage = VerifyStage(w.verifier(), NameSet([("example.com.", "A")]))
    got = stage.check(
        sealed(w, "us-east", [obs(w, "us-east")]), evidence_subject("us-east", "agent-us-east")
    )
    assert isinstance(got, Refused) and got.reason == UNCONFIGURED


def test_pinning_an_agent_cannot_speak_for_another_region_or_agent() -> None:
    w = world()
    stage = verify_stage(w)
    east = w.agent("us-east")
    # on another region's subject: the signature binds the subject, the key's region is us-east
    data = sealed(
        w, "us-east", [obs(w, "us-east")], subject=evidence_subject("eu-west", east.principal)
    )
    got = stage.check(data, evidence_subject("eu-west", east.principal))
    assert isinstance(got, Refused) and got.reason == Reason.REGION.value
    # on another agent's subject of its own region
    data = sealed(w, "us-east", [obs(w, "us-east")], subject=evidence_subject("us-east", "agent-x"))
    got = stage.check(data, evidence_subject("us-east", "agent-x"))
    assert isinstance(got, Refused) and got.reason == Reason.PRINCIPAL.value
    # an observation claiming another region / agent inside its own ballot
    foreign = make_observation("agent-eu-west", "eu-west", w.round)
    east_subject = evidence_subject("us-east", east.principal)
    got = stage.check(sealed(w, "us-east", [foreign]), east_subject)
    assert isinstance(got, Refused) and got.reason == Reason.REGION.value
    spoofed = make_observation("agent-eu-west", "us-east", w.round)
    got = stage.check(sealed(w, "us-east", [spoofed]), east_subject)
    assert isinstance(got, Refused) and got.reason == Reason.PRINCIPAL.value


def test_evidence_steps_replay_type_round_and_consistency() -> None:
    w = world()
    stage = verify_stage(w)
    subject = evidence_subject("us-east", "agent-us-east")
    data = sealed(w, "us-east", [obs(w, "us-east")])
    assert isinstance(stage.check(data, subject), CheckedEvidence)
    replayed = stage.check(data, subject)
    assert isinstance(replayed, Refused) and replayed.reason == Reason.DUPLICATE.value
    # a ballot envelope on an evidence subject fails the type step
    ballot = w.sealed("us-east", subject=subject)
    got = stage.check(ballot, subject)
    assert isinstance(got, Refused) and got.reason == Reason.TYPE.value
    # an observation of another round, a wrong facts digest, a subject observed twice
    other = make_observation("agent-us-east", "us-east", w.round - 1)
    got = stage.check(sealed(w, "us-east", [other]), subject)
    assert isinstance(got, Refused) and got.reason == Reason.ROUND.value
    o = obs(w, "us-east")
    forged = msgspec.structs.replace(o, facts_digest=DIGEST_B)
    got = stage.check(sealed(w, "us-east", [forged]), subject)
    assert isinstance(got, Refused) and got.reason == Reason.MALFORMED.value
    got = stage.check(sealed(w, "us-east", [o, o]), subject)
    assert isinstance(got, Refused) and got.reason == Reason.MALFORMED.value
    # a round outside the window
    agent = w.agent("us-east")
    old = make_observation(agent.principal, "us-east", w.round - 5)
    stale = seal_evidence(
        agent, make_evidence_ballot(agent, w.round - 5, [old]), now_ms=w.clock.now_ms()
    )
    got = stage.check(stale, subject)
    assert isinstance(got, Refused) and got.reason == Reason.ROUND.value


# ------------------------------------------------------------------------------------ tally stage


def test_agreement_is_trusted_with_the_agreed_facts_and_decided_early() -> None:
    w = world()
    stage = stage_for(w)
    d = run(stage, [obs(w, r, sequence=7) for r in REGIONS[:3]])
    assert d.outcome is Outcome.TRUSTED and d.decided_early
    v = stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert v.facts == obs(w, "us-east", sequence=7).facts and v.facts.sequence == 7
    assert v.facts_digest == facts_digest(IdentityKind.BUNDLE, DOMAIN, v.facts)
    assert (v.k, v.n, v.coordinator) == (3, 5, w.coordinator.principal)
    assert [r.voter for r in v.voters] == sorted(AGENTS)
    states = Counter(r.state for r in v.voters)
    assert states == {VoterState.AGREE: 3, VoterState.UNAVAILABLE: 2}
    assert v.seq // 1000 == v.issued_ms and v.expires_ms == v.issued_ms + 30_000
    check_identity_verdict(v)


def test_split_view_is_outvoted_and_three_views_are_disputed() -> None:
    w = world()
    stage = stage_for(w)
    views = [DIGEST_B, DIGEST_A, DIGEST_A, DIGEST_A, DIGEST_A]  # us-east sees another bundle
    d = run(stage, [obs(w, r, digest=dg) for r, dg in zip(REGIONS, views, strict=True)])
    v = stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert v.outcome is Outcome.TRUSTED and v.facts.key_digest == DIGEST_A
    assert {r.voter: r.state for r in v.voters}["agent-us-east"] is VoterState.DISAGREE

    w.clock.advance(ROUND_MS)
    third = bytes(32)
    views = [DIGEST_A, DIGEST_A, DIGEST_B, DIGEST_B, third]
    d = run(stage, [obs(w, r, digest=dg) for r, dg in zip(REGIONS, views, strict=True)])
    v = stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert v.outcome is Outcome.DISPUTED and d.decided_early
    assert (v.facts, v.facts_digest) == (EMPTY_FACTS, b"")
    assert {r.state for r in v.voters} == {VoterState.DISAGREE}
    check_identity_verdict(v)


def test_invalid_observations_never_count_and_are_not_unavailable() -> None:
    w = world()
    stage = stage_for(w)
    statuses = [EvidenceStatus.INVALID] * 3 + [EvidenceStatus.TIMEOUT] * 2
    d = run(stage, [obs(w, r, s) for r, s in zip(REGIONS, statuses, strict=True)])
    v = stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert v.outcome is Outcome.DISPUTED  # had invalid counted as unavailable: UNAVAILABLE
    states = {r.voter: (r.state, r.answer_digest) for r in v.voters}
    assert states["agent-us-east"] == (VoterState.DISAGREE, b"")
    assert states["agent-ap-south"] == (VoterState.UNAVAILABLE, b"")

    w.clock.advance(ROUND_MS)  # two agree, three refuse the (rolled back / empty) bundle
    statuses = [EvidenceStatus.OK] * 2 + [EvidenceStatus.INVALID] * 3
    d = run(stage, [obs(w, r, s) for r, s in zip(REGIONS, statuses, strict=True)])
    assert d.outcome is Outcome.DISPUTED


def test_bundle_floor_refuses_a_trusted_bundle_with_a_lower_sequence() -> None:
    w = world()
    stage = stage_for(w)
    d = run(stage, [obs(w, r, sequence=5) for r in REGIONS[:3]])
    stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    w.clock.advance(ROUND_MS)
    d = run(stage, [obs(w, r, sequence=4, digest=DIGEST_B) for r in REGIONS[:3]])
    with pytest.raises(IssueRefused) as err:
        stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert err.value.reason == BUNDLE_ROLLBACK
    assert stage.floor.get(DOMAIN) == 5
    w.clock.advance(ROUND_MS)  # the same sequence again (refetched) is issued
    d = run(stage, [obs(w, r, sequence=5) for r in REGIONS[:3]])
    assert stage.verdict(IdentityKey("bundle", DOMAIN, w.round), d).outcome is Outcome.TRUSTED


def test_one_sequence_for_dns_and_identity_verdicts_and_derived_message_ids() -> None:
    w = world()
    seq = SequenceClock(w.clock)
    identity = IdentityStage(
        RULE, AGENTS, coordinator="coord-us-east", ttl_ms=30_000, clock=w.clock, seq=seq
    )
    deciders = Deciders(Decider(RULE, "coord-us-east", 30_000, w.clock, seq), identity)
    tallies = Tallies(TallyBook(RULE, [f"{a}/r1" for a in AGENTS]), identity)
    d = run(identity, [obs(w, r) for r in REGIONS[:3]])
    v1 = deciders.verdict(IdentityKey("bundle", DOMAIN, w.round), d)
    assert seq.last == v1.seq
    assert tallies.live == 1 and tallies.expire(w.round) == []
    mid = identity_msg_id("bundle", DOMAIN, 7, "us-east", "coord-a")
    assert mid == f"v1.id.{identity_token('bundle', DOMAIN)}.bundle.7.us-east.coord-a"
    assert mid != identity_msg_id("bundle", DOMAIN, 7, "us-east", "coord-b")  # k-of-m


# ----------------------------------------------------------------------- sign, then client verify


def test_signed_identity_verdict_verifies_at_the_client() -> None:
    w = world()
    stage = stage_for(w)
    d = run(stage, [obs(w, r, kind=IdentityKind.MTLS, subject=WORKLOAD) for r in REGIONS])
    v = stage.verdict(IdentityKey("mtls", WORKLOAD, w.round), d)
    sealed_all = Signer(w.coordinator.key, ["us-east", "eu-west"]).seal(v, encode(v))
    assert [s.subject for s in sealed_all] == [
        identity_verdict_subject(r, "mtls", WORKLOAD) for r in ("us-east", "eu-west")
    ]
    assert sealed_all[1].msg_id == identity_msg_id(
        "mtls", WORKLOAD, w.round, "eu-west", v.coordinator
    )
    for s in sealed_all:
        verifier = IdentityVerifier(w.trust, w.clock, region=s.region, times=VerdictTimes())
        assert verifier.verify(s.data, s.subject) == v


# ------------------------------------------------------------------------------ property: outcome


STATUSES = st.sampled_from(
    [EvidenceStatus.OK, EvidenceStatus.TIMEOUT, EvidenceStatus.ERROR, EvidenceStatus.INVALID]
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.tuples(STATUSES, st.sampled_from([DIGEST_A, DIGEST_B]))),
        min_size=5,
        max_size=5,
    )
)
def test_verdict_follows_the_plain_rule_and_is_always_consistent(
    vector: list[tuple[EvidenceStatus, bytes] | None],
) -> None:
    """Every completion: the verdict (early or at the deadline) is the plain outcome over the final
    vector with invalid in no group and not unavailable, and passes the subscriber's step 13."""
    w = world()
    stage = stage_for(w)
    cast = [
        obs(w, r, s, digest=dg)
        for r, item in zip(REGIONS, vector, strict=True)
        if item
        for s, dg in [item]
    ]
    key = IdentityKey("bundle", DOMAIN, w.round)
    decision = None
    for o in cast:
        _, d = stage.add(key, identity_vote(o), o.facts)
        decision = decision or d
    if decision is None:
        if not cast:
            return
        [(_, decision)] = stage.expire(w.round)
    v = stage.verdict(key, decision)
    check_identity_verdict(v)
    groups = Counter(o.facts_digest for o in cast if o.status is EvidenceStatus.OK)
    unavail = (
        5
        - len(cast)
        + sum(o.status in (EvidenceStatus.TIMEOUT, EvidenceStatus.ERROR) for o in cast)
    )
    best = max(groups.values(), default=0)
    want = (
        Outcome.TRUSTED
        if best >= 3
        else Outcome.UNAVAILABLE
        if best + unavail >= 3
        else Outcome.DISPUTED
    )
    assert v.outcome is want
    if want is Outcome.TRUSTED:
        assert groups[v.facts_digest] >= 3


_CONFIGURED = {IdentityKind.BUNDLE: DOMAIN, IdentityKind.JWKS: ISSUER, IdentityKind.MTLS: WORKLOAD}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            observations(),  # anything strict decoding accepts (mostly refused by step 14)
            st.tuples(st.sampled_from(IdentityKind), st.sampled_from(EvidenceStatus)),
        ),
        max_size=4,
    ),
    st.sampled_from(["us-east", "eu-west"]),
)
def test_verify_stage_never_raises_and_keeps_only_what_it_may(
    items: list[Observation | tuple[IdentityKind, EvidenceStatus]], subject_region: str
) -> None:
    w = world()
    stage = verify_stage(w)
    agent = w.agent("us-east")
    cast = [
        make_observation(agent.principal, "us-east", w.round, i[0], _CONFIGURED[i[0]], i[1])
        if isinstance(i, tuple)
        else i
        for i in items
    ]
    subject = evidence_subject(subject_region, agent.principal)
    data = seal_evidence(
        agent, make_evidence_ballot(agent, w.round, cast), now_ms=w.clock.now_ms(), subject=subject
    )
    got = stage.check(data, subject)
    if isinstance(got, Refused):
        assert got.reason in {r.value for r in Reason} | {UNCONFIGURED}
        return
    assert isinstance(got, CheckedEvidence) and subject_region == "us-east"
    for key, vote, _facts in got.votes:
        assert key.round == w.round and IdentitySet(targets()).admits(key.kind, key.subject)
        assert vote.voter == agent.principal
    assert len(got.votes) + got.ignored.get(UNCONFIGURED, 0) == len(cast)
