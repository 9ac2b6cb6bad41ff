"""Decide and sign stages: the verdict from a decision, its derived message id, seq agreeing with the
issued time, one sealed envelope per verdict region (real keys)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from wirefactories import START_MS, make_identity, make_trust, make_vote

from cctf.bus_schemas.envelope import verify_envelope
from cctf.bus_schemas.messages import MessageType, Outcome, VoterState, decode_verdict, encode
from cctf.bus_schemas.subjects import name_token, normalize_name, verdict_subject
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.decide import Decider, verdict_msg_id
from cctf.coordinator.pipeline.sign import Signer, SignError
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import Decision, QuorumRule, TallyBook, TallyKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role
from cctf.ids import IdError

RULE = QuorumRule(2, 3)
VOTERS = ("agent-a/r1", "agent-b/r1", "agent-c/r1")
ROUND = START_MS // 1000
KEY = TallyKey("example.com.", "A", ROUND)


def _decided() -> tuple[TallyKey, Decision]:
    book = TallyBook(RULE, VOTERS)
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
    assert verdict.outcome is Outcome.TRUSTED and verdict.answer == ["192.0.2.1"]
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
    a = verdict_msg_id("example.com.", "A", 7, "us-east")
    assert a == "v1.example_com.A.7.us-east"
    assert a == verdict_msg_id("example.com.", "A", 7, "us-east")  # any coordinator, any time
    assert a != verdict_msg_id("example.com.", "A", 8, "us-east")
    assert a != verdict_msg_id("example.com.", "AAAA", 7, "us-east")
    assert a != verdict_msg_id("example.com.", "A", 7, "eu-west")
    name = ("\u00e9" * 30 + ".") * 4  # escaped token > 253 characters: the digest form
    long = verdict_msg_id(name, "A", 7, "us-east")
    assert long == f"v1.{name_token(name)}.A.7.us-east" and len(long) < 300


@given(st.text(alphabet="abc-.\u00e9", min_size=1, max_size=60))
def test_message_ids_are_injective_over_names(suffix: str) -> None:
    n1, n2 = "x" + suffix + ".", "y" + suffix + "."
    try:
        normalize_name(n1)
    except IdError:
        assume(False)
    assert verdict_msg_id(n1, "A", 1, "r") != verdict_msg_id(n2, "A", 1, "r")


def test_sign_seals_once_per_region_with_real_keys() -> None:
    coord = make_identity("coord-1", "us-east", role=Role.COORDINATOR)
    key, decision = _decided()
    clock = FakeClock(START_MS + 10)
    verdict = Decider(RULE, "coord-1", 30_000, clock).verdict(key, decision)
    sealed = Signer(coord.key, ["us-east", "eu-west"]).seal(verdict, encode(verdict))
    assert [s.region for s in sealed] == ["us-east", "eu-west"]
    for s in sealed:
        assert s.subject == verdict_subject(s.region, "example.com.", "A")
        assert s.msg_id == verdict_msg_id("example.com.", "A", ROUND, s.region)
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
