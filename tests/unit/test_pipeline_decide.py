"""Decide and sign stages: the verdict from a decision, its derived message id, seq agreeing with the
issued time, one sealed envelope per verdict region (real keys)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from wirefactories import START_MS, make_identity, make_trust, make_vote

from cctf.bus_schemas.envelope import verify_envelope
from cctf.bus_schemas.messages import (
    DnssecState,
    MessageType,
    Outcome,
    VoterState,
    VoteStatus,
    decode_verdict,
    dnssec_states_for,
    encode,
)
from cctf.bus_schemas.subjects import name_token, normalize_name, verdict_subject
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.decide import Decider, verdict_msg_id
from cctf.coordinator.pipeline.sign import Signer, SignError
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import Decision, QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role
from cctf.ids import IdError

RULE = QuorumRule(2, 3)
VOTERS = ("agent-a/r1", "agent-b/r1", "agent-c/r1")
ROUND = START_MS // 1000
KEY = TallyKey("example.com.", "A", ROUND)


def _decided() -> tuple[TallyKey, Decision]:
    book = TallyBook(RULE, VOTERS, refusable=True)
    decision = None
    for agent in ("agent-a", "agent-b"):
        vote = make_vote(agent, "us-east", ROUND, answer=("192.0.2.1",), rcode=0)
        _, d = book.add(KEY.qname, KEY.qtype, KEY.round, vote_input(vote))
        decision = decision or d
    assert decision is not None
    return KEY, decision


def test_verdict_from_decision_keeps_the_winner_without_the_votes() -> None:
    key, decision = _decided()
    clock = FakeClock(START_MS + 10)
    verdict = Decider(RULE, "coord-1", 30_000, clock).verdict(key, decision)
    assert verdict.outcome is Outcome.TRUSTED and verdict.answer == ("192.0.2.1",)
    assert [r.state for r in verdict.voters] == [
        VoterState.AGREE,
        VoterState.AGREE,
        VoterState.UNAVAILABLE,
    ]
    assert verdict.issued_ms == START_MS + 10 and verdict.expires_ms == START_MS + 30_010
    assert verdict.seq // 1000 == verdict.issued_ms


def test_seq_and_issued_time_always_agree() -> None:
    key, decision = _decided()
    clock = FakeClock(START_MS)
    decider = Decider(RULE, "coord-1", 30_000, clock)
    seqs = []
    for i in range(2_500):  # more than 1000 in one millisecond: issued follows seq
        v = decider.verdict(key, decision)
        assert v.seq // 1000 == v.issued_ms >= clock.now_ms()
        assert v.round * 1000 <= v.issued_ms + 1000
        seqs.append(v.seq)
        if i == 2_000:
            clock.advance(5)
    assert seqs == sorted(set(seqs))


def test_message_id_is_derived_from_what_is_decided() -> None:
    a = verdict_msg_id("example.com.", "A", 7, "us-east", "c1")
    assert a == "v1.example_com.A.7.us-east.c1"
    assert a == verdict_msg_id("example.com.", "A", 7, "us-east", "c1")  # any time
    assert a != verdict_msg_id("example.com.", "A", 8, "us-east", "c1")
    assert a != verdict_msg_id("example.com.", "AAAA", 7, "us-east", "c1")
    assert a != verdict_msg_id("example.com.", "A", 7, "eu-west", "c1")
    # several coordinators at once (k-of-m): each one's verdict is stored, none de-duplicated
    assert a != verdict_msg_id("example.com.", "A", 7, "us-east", "c2")
    name = ("\u00e9" * 30 + ".") * 4  # escaped token > 253 characters: the digest form
    long = verdict_msg_id(name, "A", 7, "us-east", "c1")
    assert long == f"v1.{name_token(name)}.A.7.us-east.c1" and len(long) < 300


@given(st.text(alphabet="abc-.\u00e9", min_size=1, max_size=60))
def test_message_ids_are_injective_over_names(suffix: str) -> None:
    n1, n2 = "x" + suffix + ".", "y" + suffix + "."
    try:
        normalize_name(n1)
    except IdError:
        assume(False)
    assert verdict_msg_id(n1, "A", 1, "r", "c") != verdict_msg_id(n2, "A", 1, "r", "c")


def test_sign_seals_once_per_region_with_real_keys() -> None:
    coord = make_identity("coord-1", "us-east", role=Role.COORDINATOR)
    key, decision = _decided()
    clock = FakeClock(START_MS + 10)
    verdict = Decider(RULE, "coord-1", 30_000, clock).verdict(key, decision)
    sealed = Signer(coord.key, ["us-east", "eu-west"]).seal(verdict, encode(verdict))
    assert [s.region for s in sealed] == ["us-east", "eu-west"]
    for s in sealed:
        assert s.subject == verdict_subject(s.region, "example.com.", "A")
        assert s.msg_id == verdict_msg_id("example.com.", "A", ROUND, s.region, "coord-1")
        checked = verify_envelope(
            s.data,
            s.subject,
            expected_type=MessageType.VERDICT,
            role=Role.COORDINATOR,
            trust=make_trust(coord),
            policy=SuitePolicy(),
            now_ms=START_MS + 20,
        )
        assert decode_verdict(checked.envelope.payload) == verdict


def test_an_unsealable_verdict_is_a_sign_error_not_a_crash() -> None:
    coord = make_identity("coord-1", "us-east", role=Role.COORDINATOR)
    key, decision = _decided()
    decider = Decider(RULE, "coord-1", 30_000, FakeClock(START_MS))
    verdict = decider.verdict(key, decision)
    with pytest.raises(SignError, match=r"verdict for 'example\.com\.'"):
        Signer(coord.key, ["us-east", "Not A Region"]).seal(verdict, encode(verdict))


_ANSWER = ("192.0.2.1",)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(VoteStatus),
            st.sampled_from(DnssecState),
        ),
        min_size=3,
        max_size=3,
    )
)
def test_verdict_dnssec_state_follows_the_agreeing_votes(
    spec: list[tuple[VoteStatus, DnssecState]],
) -> None:
    """The verdict's DNSSEC state (wire-protocol.md §5.4): over the votes that agree, secure when k
    are secure, insecure when k are secure or insecure, else indeterminate; bogus votes never agree,
    and a verdict that is not TRUSTED is indeterminate."""
    book = TallyBook(RULE, VOTERS, refusable=True)
    decision = None
    fed: list[tuple[VoteStatus, DnssecState]] = []
    for voter, (status, state) in zip(VOTERS, spec, strict=True):
        if state not in dnssec_states_for(status):
            state = DnssecState.INDETERMINATE
        agent = voter.split("/")[0]
        answer = _ANSWER if status is VoteStatus.ANSWER else ()
        vote = make_vote(agent, "us-east", ROUND, status=status, answer=answer, dnssec=state)
        _, decision = book.add(KEY.qname, KEY.qtype, KEY.round, vote_input(vote))
        fed.append((status, state))
        if decision is not None:
            break
    if decision is None:
        ((_, decision),) = book.expire(ROUND)
    verdict = Decider(RULE, "coord-1", 30_000, FakeClock(START_MS + 10)).verdict(KEY, decision)
    agreeing = [d for s, d in fed if s is VoteStatus.ANSWER and d is not DnssecState.BOGUS]
    if len(agreeing) < RULE.k:
        assert verdict.outcome is not Outcome.TRUSTED
        assert verdict.dnssec is DnssecState.INDETERMINATE
        if all(s is VoteStatus.ANSWER and d is DnssecState.BOGUS for s, d in fed):
            assert verdict.outcome is Outcome.DISPUTED  # bogus alone: never UNAVAILABLE
        return
    assert verdict.outcome is Outcome.TRUSTED
    secure = agreeing.count(DnssecState.SECURE)
    evaluated = secure + agreeing.count(DnssecState.INSECURE)
    if secure >= RULE.k:
        assert verdict.dnssec is DnssecState.SECURE
    elif evaluated >= RULE.k:
        assert verdict.dnssec is DnssecState.INSECURE
    else:
        assert verdict.dnssec is DnssecState.INDETERMINATE
    # and the verdict passes the client's structure check
    assert decode_verdict(encode(verdict)) == verdict


def test_servfail_bogus_votes_make_a_round_disputed_not_unavailable() -> None:
    book = TallyBook(RULE, VOTERS, refusable=True)
    decision = None
    for voter in VOTERS:
        vote = make_vote(
            voter.split("/")[0],
            "us-east",
            ROUND,
            status=VoteStatus.SERVFAIL,
            dnssec=DnssecState.BOGUS,
        )
        _, decision = book.add(KEY.qname, KEY.qtype, KEY.round, vote_input(vote))
        if decision is not None:
            break
    assert decision is not None and decision.outcome is Outcome.DISPUTED
    timeouts = TallyBook(RULE, VOTERS, refusable=True)
    for voter in VOTERS:
        vote = make_vote(voter.split("/")[0], "us-east", ROUND, status=VoteStatus.SERVFAIL)
        _, decision = timeouts.add(KEY.qname, KEY.qtype, KEY.round, vote_input(vote))
        if decision is not None:
            break
    assert decision is not None and decision.outcome is Outcome.UNAVAILABLE


def test_per_coordinator_subjects_verify_and_bind_the_coordinator() -> None:
    """k-of-m deployments: ``...<qtype>.<coordinator>``; a verdict moved to another coordinator's
    subject is refused (step 12), even though the envelope signature covers that subject."""
    from cctf.bus_schemas.envelope import Reason, Rejected, seal
    from cctf.bus_schemas.subjects import SubjectError, parse_subject
    from cctf.client.verify import VerdictVerifier

    coord = make_identity("coord-1", "us-east", role=Role.COORDINATOR)
    key, decision = _decided()
    verdict = Decider(RULE, "coord-1", 30_000, FakeClock(START_MS + 10)).verdict(key, decision)
    (s,) = Signer(coord.key, ["us-east"], per_coordinator=True).seal(verdict, encode(verdict))
    assert s.subject == "cctf.v1.verdict.us-east.example_com.A.coord-1"
    assert s.subject == verdict_subject("us-east", "example.com.", "A", "coord-1")
    parsed = parse_subject(s.subject)
    assert (parsed.coordinator, parsed.qtype, parsed.qname) == ("coord-1", "A", "example.com.")
    verifier = VerdictVerifier(make_trust(coord), FakeClock(START_MS + 20), region="us-east")
    assert verifier.verify(s.data, s.subject) == verdict
    other = "cctf.v1.verdict.us-east.example_com.A.coord-2"
    life = verdict.expires_ms - verdict.issued_ms
    payload = encode(verdict)
    moved = seal(
        coord.key, other, MessageType.VERDICT, payload, now_ms=verdict.issued_ms, lifetime_ms=life
    )
    with pytest.raises(Rejected) as exc:
        VerdictVerifier(make_trust(coord), FakeClock(START_MS + 20)).verify(moved, other)
    assert exc.value.reason is Reason.PRINCIPAL
    for bad in (
        "cctf.v1.verdict.us-east.example_com.A.Coord",
        "cctf.v1.verdict.us-east.example_com.A.c1.x",
        "cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.C1",
        "cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.c1.x",
    ):
        with pytest.raises(SubjectError):
            parse_subject(bad)


_TARGET_REGIONS = st.lists(
    st.sampled_from(["us-east", "eu-west", "ap-south", "Not A Region", "-x"]),
    min_size=1,
    max_size=3,
    unique=True,
)


@given(
    regions=_TARGET_REGIONS,
    qname=st.one_of(
        st.sampled_from(
            ["example.com.", "www.Example.COM", ".", "a..b.", "x" * 70 + ".", "é.test."]
        ),
        st.text(max_size=30),
        st.builds(lambda n: ("a" * 63 + ".") * n, st.integers(1, 5)),
    ),
    qtype=st.sampled_from(["A", "AAAA", "TXT", "a", "A A", ""]),
    coordinator=st.sampled_from(["coord-1", "Bad Coord", "c"]),
    round_=st.integers(0, 2**40),
    per_coordinator=st.booleans(),
)
def test_targets_fast_path_equals_the_per_region_functions(
    regions: list[str],
    qname: str,
    qtype: str,
    coordinator: str,
    round_: int,
    per_coordinator: bool,
) -> None:
    """``Signer.targets`` (region prefixes checked once, one name token per verdict) gives the
    subjects and message ids of ``verdict_subject`` / ``verdict_msg_id`` region by region, or the
    same ``SignError``; asked twice (the cached qtype and coordinator path)."""
    coord = make_identity("coord-1", "us-east", role=Role.COORDINATOR)
    key, decision = _decided()
    verdict = msgspec.structs.replace(
        Decider(RULE, "coord-1", 30_000, FakeClock(START_MS)).verdict(key, decision),
        qname=qname,
        qtype=qtype,
        coordinator=coordinator,
        round=round_,
    )
    signer = Signer(coord.key, regions, per_coordinator=per_coordinator)
    for _ in range(2):
        try:
            want: object = signer._targets(verdict)
        except SignError as exc:
            want = str(exc)
        try:
            got: object = signer.targets(verdict)
        except SignError as exc:
            got = str(exc)
        assert got == want
