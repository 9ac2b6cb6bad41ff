"""Identity evidence on the wire: codecs, digests, consistency rules, subjects (docs/wire-protocol.md
§2, §5.5–§5.8)."""

from __future__ import annotations

import base64
import hashlib
import os

import msgspec
import pytest
from evidencefactories import (
    DIGEST_A,
    DIGEST_B,
    SUBJECTS,
    evidence_ballots,
    facts_for,
    identity_subjects,
    identity_verdicts,
    make_evidence_ballot,
    make_identity_verdict,
    make_observation,
    observations,
    seal_evidence,
    seal_identity_verdict,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wirefactories import START_MS, flip_byte, ids, make_world

from cctf.bus.streams import evidence_subjects, votes_stream_config, votes_stream_subjects
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceBallot,
    EvidenceStatus,
    Facts,
    IdentityKind,
    IdentityVerdict,
    Observation,
    check_facts,
    check_identity_verdict,
    check_observation,
    decode_evidence,
    decode_identity_verdict,
    encode,
    facts_digest,
    first_bad_observation,
    observation_digest,
)
from cctf.bus_schemas.messages import MessageType, Outcome, PayloadError, VoterRecord, VoterState
from cctf.bus_schemas.opening import open_signed
from cctf.bus_schemas.subjects import (
    Kind,
    SubjectError,
    check_identity_kind,
    evidence_filter,
    evidence_subject,
    identity_token,
    identity_verdict_filter,
    identity_verdict_subject,
    is_digest_token,
    name_token,
    parse_subject,
    verdict_subject,
)
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role

NOW = START_MS + 400
ROUND = START_MS // 1000


# ------------------------------------------------------------------------------------------- codecs


@settings(max_examples=200)
@given(evidence_ballots())
def test_evidence_round_trips(ballot: EvidenceBallot) -> None:
    data = encode(ballot)
    assert decode_evidence(data) == ballot
    assert encode(decode_evidence(data)) == data


@settings(max_examples=200)
@given(identity_verdicts())
def test_identity_verdict_round_trips(verdict: IdentityVerdict) -> None:
    data = encode(verdict)
    assert decode_identity_verdict(data) == verdict
    assert encode(decode_identity_verdict(data)) == data


@settings(max_examples=300)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x95")
@example(b"\xc1")
def test_decoders_reject_garbage_with_payload_error_only(data: bytes) -> None:
    for decode in (decode_evidence, decode_identity_verdict):
        try:
            decode(data)
        except PayloadError as exc:  # any other exception type fails the test
            assert str(exc).startswith(("malformed", "evidence", "identity"))


@settings(max_examples=300)
@given(evidence_ballots(max_observations=2), st.data())
def test_mutated_evidence_decodes_or_is_payload_error(
    ballot: EvidenceBallot, data: st.DataObject
) -> None:
    raw = encode(ballot)
    pos = data.draw(st.integers(0, len(raw) - 1))
    mutated = flip_byte(raw, pos, data.draw(st.integers(1, 255)))
    try:
        again = decode_evidence(mutated)
    except PayloadError:
        return
    # whatever decodes is a valid ballot by every field rule: it re-encodes and decodes to itself
    assert decode_evidence(encode(again)) == again


def test_decoders_cap_the_payload_before_decoding() -> None:
    big = b"\x00" * (L.MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(PayloadError, match="too large"):
        decode_evidence(big)
    with pytest.raises(PayloadError, match="too large"):
        decode_identity_verdict(big)


def _obs_fields(**replace: object) -> list[object]:
    obs = make_observation("agent-a", "us-east", ROUND, IdentityKind.MTLS, status=EvidenceStatus.OK)
    fields = msgspec.msgpack.decode(encode(obs))
    names = list(Observation.__struct_fields__)
    for key, value in replace.items():
        fields[names.index(key)] = value
    return fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "BUNDLE"),
        ("kind", "x509"),
        ("status", "OK"),
        ("status", "servfail"),
        ("subject", ""),
        ("subject", "spiffe://example.org/a b"),  # a space
        ("subject", "spiffe://example.org/\u00e9"),  # not ASCII
        ("subject", "x" * (L.MAX_IDENTITY_SUBJECT_CHARS + 1)),
        ("subject", "spiffe://example.org/web\n"),
        ("detail", "Timeout"),
        ("detail", "a" * (L.MAX_DETAIL_CHARS + 1)),
        ("detail", "eyJhbGciOiJSUzI1NiJ9"),  # a token cannot hide in a reason code
        ("detail", "reason with spaces"),
        ("facts_digest", b"\x00" * 33),
        ("agent", "Agent-A"),
        ("round", -1),
        ("facts", ["", b"", b"", 0, 0, 0]),
        ("facts", ["", b"", b"", 0, 0, 0, L.MAX_IDENTITY_KEYS + 1]),
        ("facts", ["", b"\x00" * 33, b"", 0, 0, 0, 0]),
        ("facts", ["-----BEGIN CERTIFICATE-----", b"", b"", 0, 0, 0, 0]),
    ],
)
def test_decoder_rejects_each_bad_field(field: str, value: object) -> None:
    ballot = ["agent-a", "us-east", ROUND, 0, [_obs_fields(**{field: value})]]
    with pytest.raises(PayloadError, match="malformed evidence"):
        decode_evidence(msgspec.msgpack.encode(ballot))


def test_decoder_caps_observations_per_ballot() -> None:
    one = _obs_fields()
    ok = ["agent-a", "us-east", ROUND, 0, [one] * L.MAX_OBSERVATIONS_PER_BALLOT]
    assert len(decode_evidence(msgspec.msgpack.encode(ok)).observations) == 64
    over = ["agent-a", "us-east", ROUND, 0, [one] * (L.MAX_OBSERVATIONS_PER_BALLOT + 1)]
    with pytest.raises(PayloadError):
        decode_evidence(msgspec.msgpack.encode(over))


def test_a_full_ballot_of_the_largest_observations_fits_one_payload() -> None:
    big = "s" * L.MAX_IDENTITY_SUBJECT_CHARS
    facts = Facts(big, DIGEST_A, DIGEST_B, 2**63 - 1, 2**63 - 1, 2**63 - 1, L.MAX_IDENTITY_KEYS)
    obs = Observation(
        "a" * 32, "r" * 32, 2**63 - 1, IdentityKind.MTLS, big, EvidenceStatus.INVALID, facts,
        DIGEST_A, "x" * L.MAX_DETAIL_CHARS, 2**63 - 1,
    )  # fmt: skip
    ballot = EvidenceBallot("a" * 32, "r" * 32, 2**63 - 1, 2**63 - 1, [obs] * 64)
    assert len(encode(ballot)) < L.MAX_PAYLOAD_BYTES
    assert decode_evidence(encode(ballot)) == ballot


# ------------------------------------------------------------------------------------------ digests


def test_facts_digest_is_the_documented_hash() -> None:
    facts = facts_for(IdentityKind.BUNDLE, "example.org", sequence=7, keys=2)
    raw = msgspec.msgpack.encode(["bundle", "example.org", ["", DIGEST_A, b"", 7, 0, 0, 2]])
    assert (
        facts_digest(IdentityKind.BUNDLE, "example.org", facts)
        == hashlib.sha256(b"CCTF-facts-v1\x00" + raw).digest()
    )
    # kind and subject are bound: the same facts for another subject or kind differ
    assert facts_digest("bundle", "example.org", facts) == facts_digest(
        IdentityKind.BUNDLE, "example.org", facts
    )
    assert facts_digest(IdentityKind.BUNDLE, "example.com", facts) != facts_digest(
        IdentityKind.BUNDLE, "example.org", facts
    )
    assert facts_digest(IdentityKind.JWKS, "example.org", facts) != facts_digest(
        IdentityKind.BUNDLE, "example.org", facts
    )


@given(observations())
def test_observation_digest_is_the_documented_hash(obs: Observation) -> None:
    assert (
        observation_digest(obs) == hashlib.sha256(b"CCTF-observation-v1\x00" + encode(obs)).digest()
    )


@settings(max_examples=200)
@given(observations(), observations())
def test_facts_digest_separates_different_facts(a: Observation, b: Observation) -> None:
    same = (a.kind, a.subject, a.facts) == (b.kind, b.subject, b.facts)
    assert (
        facts_digest(a.kind, a.subject, a.facts) == facts_digest(b.kind, b.subject, b.facts)
    ) == same


# ------------------------------------------------------------------------------ consistency (§5.5)


@settings(max_examples=200)
@given(observations(consistent=True))
def test_honest_observations_are_consistent(obs: Observation) -> None:
    check_observation(obs)


@pytest.mark.parametrize("kind", list(IdentityKind))
def test_check_facts_per_kind(kind: IdentityKind) -> None:
    subject = SUBJECTS[kind]
    good = facts_for(kind, subject)
    check_facts(kind, subject, good)
    bad = [
        msgspec.structs.replace(good, key_digest=b""),
        msgspec.structs.replace(good, key_digest=DIGEST_A[:31]),
    ]
    if kind is IdentityKind.MTLS:
        bad += [
            msgspec.structs.replace(good, spiffe_id="spiffe://example.org/other"),
            msgspec.structs.replace(good, bundle_digest=b""),
            msgspec.structs.replace(good, sequence=1),
            msgspec.structs.replace(good, keys=1),
            msgspec.structs.replace(good, not_before_ms=good.not_after_ms + 1),
        ]
    else:
        bad += [
            msgspec.structs.replace(good, spiffe_id="spiffe://example.org/x"),
            msgspec.structs.replace(good, bundle_digest=DIGEST_B),
            msgspec.structs.replace(good, not_after_ms=1),
            msgspec.structs.replace(good, keys=0),
        ]
    if kind is IdentityKind.JWKS:
        bad.append(msgspec.structs.replace(good, sequence=3))
    for facts in bad:
        with pytest.raises(PayloadError):
            check_facts(kind, subject, facts)


def test_check_observation_rules() -> None:
    ok = make_observation("agent-a", "us-east", ROUND, IdentityKind.JWKS)
    check_observation(ok)
    rep = msgspec.structs.replace
    for bad in (
        rep(ok, detail="stale"),  # ok with a reason
        rep(ok, facts_digest=b""),  # ok without its digest
        rep(ok, facts_digest=DIGEST_B),  # ok with a digest of other facts
        rep(ok, subject="https://other.example.org"),  # digest binds the subject
        rep(ok, kind=IdentityKind.BUNDLE),  # and the kind
    ):
        with pytest.raises(PayloadError):
            check_observation(bad)
    for status in (EvidenceStatus.TIMEOUT, EvidenceStatus.ERROR, EvidenceStatus.INVALID):
        obs = make_observation("agent-a", "us-east", ROUND, IdentityKind.JWKS, status=status)
        check_observation(obs)
        for bad in (rep(obs, detail=""), rep(obs, facts_digest=ok.facts_digest)):
            with pytest.raises(PayloadError):
                check_observation(bad)
        with_facts = rep(obs, facts=ok.facts)
        if status is EvidenceStatus.INVALID:
            check_observation(with_facts)  # what was refused may be described
        else:
            with pytest.raises(PayloadError):
                check_observation(with_facts)


def _verdict(outcome_ok: bool = True) -> IdentityVerdict:
    obs = [
        make_observation(f"agent-{i}", "us-east", ROUND, IdentityKind.MTLS, observed_ms=NOW)
        for i in range(3)
    ]
    if not outcome_ok:
        obs = [msgspec.structs.replace(o, status=EvidenceStatus.TIMEOUT, facts=EMPTY_FACTS,
                                       facts_digest=b"", detail="timeout") for o in obs]  # fmt: skip
    return make_identity_verdict("coord-a", obs, issued_ms=NOW, expires_ms=NOW + 2000)


def test_check_identity_verdict_rules() -> None:
    good = _verdict()
    assert good.outcome is Outcome.TRUSTED and good.k == 2 and good.n == 3
    check_identity_verdict(good)
    unavailable = _verdict(False)
    assert unavailable.outcome is Outcome.UNAVAILABLE
    check_identity_verdict(unavailable)
    rep = msgspec.structs.replace
    agree = VoterRecord("agent-0", VoterState.AGREE, good.facts_digest)
    for bad in (
        rep(good, k=1),  # n < 2k fails
        rep(good, k=4),  # k > n
        rep(good, n=2, k=2),  # voters != n
        rep(good, voters=[agree, agree, good.voters[2]]),  # not distinct
        rep(good, voters=[rep(agree, voter="agent-0/r1"), *good.voters[1:]]),  # not an agent id
        rep(good, expires_ms=good.issued_ms),
        rep(good, facts_digest=DIGEST_A),
        rep(good, facts=rep(good.facts, spiffe_id="spiffe://example.org/other")),
        rep(good, voters=[rep(v, state=VoterState.UNAVAILABLE) for v in good.voters]),
        rep(good, voters=[rep(v, answer_digest=DIGEST_B) for v in good.voters]),
        rep(good, outcome=Outcome.DISPUTED),  # facts in a non-trusted verdict
        rep(unavailable, facts_digest=good.facts_digest),
        rep(unavailable, facts=good.facts),
    ):
        with pytest.raises(PayloadError):
            check_identity_verdict(bad)


# ------------------------------------------------------------------------------------- subjects (§2)


def test_identity_token_is_the_documented_digest() -> None:
    subject = "spiffe://example.org/web"
    raw = hashlib.sha256(b"CCTF-identity-subject-v1\x00mtls\x00" + subject.encode()).digest()
    want = "=" + base64.b32encode(raw).decode().rstrip("=").lower()
    assert identity_token(IdentityKind.MTLS, subject) == want
    assert identity_token("mtls", subject) == want
    assert is_digest_token(want)
    assert (
        identity_verdict_subject("us-east", "mtls", subject)
        == f"cctf.v1.verdict.us-east.{want}.mtls"
    )
    # another kind, the same subject: another token
    assert identity_token(IdentityKind.BUNDLE, subject) != want
    # never the digest name token of the same string
    assert identity_token(IdentityKind.BUNDLE, "example.org") != name_token("example.org")


@settings(max_examples=200)
@given(ids, st.sampled_from(IdentityKind), identity_subjects)
def test_identity_subjects_parse_back(region: str, kind: IdentityKind, subject: str) -> None:
    s = identity_verdict_subject(region, kind, subject)
    assert len(s) <= 109
    p = parse_subject(s)
    assert p.kind is Kind.VERDICT and p.region == region and p.identity_kind is kind
    assert p.token == identity_token(kind, subject)
    assert p.qtype is None and p.qname is None and p.agent is None


@pytest.mark.parametrize(
    "subject",
    [
        "cctf.v1.verdict.us-east.www_demo_test.mtls",  # identity kinds never take escaped tokens
        "cctf.v1.verdict.us-east.~2e.bundle",
        "cctf.v1.verdict.us-east.=aaaa.jwks",
        "cctf.v1.verdict.us-east.=" + "a" * 51 + "b.mtls",  # non-canonical base32 tail
        "cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.x.y",  # a coordinator token, then more
        "cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.X",  # not a coordinator id
    ],
)
def test_identity_verdict_subject_rejects(subject: str) -> None:
    with pytest.raises(SubjectError):
        parse_subject(subject)


def test_upper_case_kind_is_a_dns_verdict_subject() -> None:
    token = identity_token("mtls", "spiffe://example.org/web")
    p = parse_subject(f"cctf.v1.verdict.us-east.{token}.MTLS")
    assert p.qtype == "MTLS" and p.identity_kind is None  # a DNS verdict: the two never meet


@pytest.mark.parametrize("bad", ["", "MTLS", "x509", " mtls", "mtls\n", None, 3])
def test_identity_kind_and_subject_checks(bad: object) -> None:
    with pytest.raises(SubjectError):
        check_identity_kind(bad)
    with pytest.raises(SubjectError):
        identity_verdict_subject("us-east", bad, "example.org")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a b", "x" * 2049, "caf\u00e9", "a\tb", None])
def test_identity_subject_checks(bad: object) -> None:
    with pytest.raises(SubjectError):
        identity_token("bundle", bad)  # type: ignore[arg-type]


def test_filters_and_stream_subjects() -> None:
    assert evidence_filter() == "cctf.v1.evidence.>"
    assert evidence_filter("us-east") == "cctf.v1.evidence.us-east.>"
    assert identity_verdict_filter("us-east", "jwks") == "cctf.v1.verdict.us-east.*.jwks"
    assert evidence_subjects("eu-west") == "cctf.v1.evidence.eu-west.>"
    assert votes_stream_subjects("eu-west") == [
        "cctf.v1.vote.eu-west.>",
        "cctf.v1.evidence.eu-west.>",
    ]
    assert votes_stream_config("eu-west").subjects == votes_stream_subjects("eu-west")
    # a DNS verdict subject of a name spelled like a kind still ends in an upper-case qtype
    assert verdict_subject("us-east", "mtls.", "A").endswith(".mtls.A")


# ------------------------------------------------------------------------------ envelope step 9


def test_open_signed_accepts_evidence_and_identity_on_their_subjects_only() -> None:
    world = make_world()
    agent = world.agent("us-east")
    now = world.clock.now_ms()
    obs = make_observation(agent.principal, agent.region, world.round)
    data = seal_evidence(agent, make_evidence_ballot(agent, world.round, [obs]), now_ms=now)
    subject = evidence_subject(agent.region, agent.principal)
    kw = {"trust": world.trust, "policy": SuitePolicy(), "now_ms": now}
    opened = open_signed(data, subject, expected_type=MessageType.EVIDENCE, role=Role.AGENT, **kw)
    assert opened.subject.kind is Kind.EVIDENCE and opened.subject.agent == agent.principal
    assert decode_evidence(opened.envelope.payload).observations == [obs]
    for wrong_type in (MessageType.BALLOT, MessageType.VERDICT, MessageType.IDENTITY):
        with pytest.raises(Rejected) as exc:
            open_signed(data, subject, expected_type=wrong_type, role=Role.AGENT, **kw)
        assert exc.value.reason is Reason.TYPE
    # sealed for a vote subject: the type is right, the subject kind is not
    vote = seal_evidence(agent, make_evidence_ballot(agent, world.round, [obs]), now_ms=now,
                         subject=agent.subject)  # fmt: skip
    with pytest.raises(Rejected) as exc:
        open_signed(vote, agent.subject, expected_type=MessageType.EVIDENCE, role=Role.AGENT, **kw)
    assert exc.value.reason is Reason.SUBJECT

    coord = world.coordinator
    verdict = _verdict()
    sealed = seal_identity_verdict(coord, verdict)
    vsubject = identity_verdict_subject(coord.region, verdict.kind, verdict.subject)
    kw["now_ms"] = NOW + 10
    opened = open_signed(
        sealed, vsubject, expected_type=MessageType.IDENTITY, role=Role.COORDINATOR, **kw
    )
    assert opened.subject.identity_kind is IdentityKind.MTLS
    # an identity verdict sealed on a DNS verdict subject is refused at step 9
    dns = verdict_subject(coord.region, "example.org.", "A")
    wrong = seal_identity_verdict(coord, verdict, subject=dns)
    with pytest.raises(Rejected) as exc:
        open_signed(wrong, dns, expected_type=MessageType.IDENTITY, role=Role.COORDINATOR, **kw)
    assert exc.value.reason is Reason.SUBJECT
    # and a DNS verdict subscriber refuses an identity verdict subject
    with pytest.raises(Rejected):
        open_signed(
            sealed, vsubject, expected_type=MessageType.VERDICT, role=Role.COORDINATOR, **kw
        )


def test_no_field_can_hold_secret_sized_material() -> None:
    """Every bytes field is at most 32 bytes and every str field is printable ASCII without spaces
    (or a reason code): no DER key or certificate fits a digest field, no PEM block (it has spaces
    and newlines) fits a string field. (A JWT is printable ASCII: that no agent ever puts one in a
    SPIFFE ID field is what the capture tests check.)"""
    pem = "-----BEGIN PRIVATE KEY-----"
    der_like = os.urandom(48)
    for bad in (
        ["", der_like, b"", 0, 0, 0, 0],
        ["", b"", der_like, 0, 0, 0, 0],
        [pem, b"", b"", 0, 0, 0, 0],
    ):
        fields = _obs_fields(facts=bad)
        with pytest.raises(PayloadError):
            decode_evidence(msgspec.msgpack.encode(["a", "us-east", 1, 0, [fields]]))


def test_first_bad_observation_follows_step_14() -> None:
    rep = msgspec.structs.replace
    good = [
        make_observation("agent-a", "us-east", ROUND, kind)
        for kind in (IdentityKind.BUNDLE, IdentityKind.JWKS, IdentityKind.MTLS)
    ]
    ballot = EvidenceBallot("agent-a", "us-east", ROUND, 0, good)
    assert first_bad_observation(ballot) is None
    cases = {
        "region_mismatch": rep(good[1], region="eu-west"),
        "principal_mismatch": rep(good[1], agent="agent-b"),
        "round": rep(good[1], round=ROUND + 1),
        "malformed": rep(good[1], facts_digest=b""),
    }
    for reason, bad in cases.items():
        got = first_bad_observation(rep(ballot, observations=[good[0], bad, good[2]]))
        assert got is not None and got[0] == reason and "observation 1" in got[1]
    # the first failing observation decides; a repeated (kind, subject) is malformed
    both = rep(ballot, observations=[cases["round"], cases["region_mismatch"]])
    assert first_bad_observation(both) == ("round", f"observation 0 is of round {ROUND + 1}")
    again = rep(ballot, observations=[good[0], good[1], good[0]])
    assert first_bad_observation(again) is not None
    assert first_bad_observation(again)[0] == "malformed"  # type: ignore[index]
