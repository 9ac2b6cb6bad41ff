"""Tests for the wire contract: subjects, message codecs and the signed envelope."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from wirefactories import (
    START_MS,
    ballots,
    flip_byte,
    forge_envelope,
    ids,
    make_ballot,
    make_identity,
    make_key,
    make_trust,
    make_verdict,
    make_vote,
    qtypes,
    raw_envelope,
    seal_message,
    verdicts,
    votes,
)

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import (
    PROTOCOL_VERSION,
    Reason,
    Rejected,
    TimePolicy,
    decode_envelope,
    envelope_tbs,
    seal,
    tbs_bytes,
    verify_envelope,
)
from cctf.bus_schemas.messages import (
    Ballot,
    DnssecState,
    MessageType,
    PayloadError,
    ResolverVote,
    Transport,
    Verdict,
    VoteStatus,
    answer_digest,
    decode_ballot,
    decode_verdict,
    encode,
    vote_digest,
    voter_id,
)
from cctf.bus_schemas.subjects import (
    Kind,
    ParsedSubject,
    SubjectError,
    evidence_subject,
    is_digest_token,
    name_from_token,
    name_token,
    normalize_name,
    parse_subject,
    token_matches,
    verdict_filter,
    verdict_subject,
    vote_filter,
    vote_subject,
)
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role
from cctf.ids import check_id, check_qtype

# ------------------------------------------------------------------------------------------ subjects

TOKEN_RE = re.compile(r"(?:[a-z0-9_-]|~[0-9a-f]{2})+")
#: Characters that would change a subject's meaning if they reached it.
FORBIDDEN = frozenset(".*> \t\r\n\x0b\x0c")

_tricky = st.sampled_from(list(".*>_~- \t\nAaZz09é\u00df\u0130\u2028\U0001f600\x00"))
names = st.text(alphabet=st.one_of(_tricky, st.characters()), min_size=1, max_size=40)
#: Short names over a small alphabet, so distinct-but-similar pairs are common.
near_names = st.text(alphabet=st.sampled_from(list("a.-_~*> A")), min_size=1, max_size=6)


def _normalized_or_reject(name: str) -> str:
    try:
        return normalize_name(name)
    except SubjectError:
        assume(False)
        raise


@settings(max_examples=400)
@given(name=names)
@example(name=".")
@example(name="a.b")
@example(name="a_b")
@example(name="a~2eb")
@example(name="*.example.com")
@example(name="> .x")
@example(name="ÉXAMPLE.com.")
def test_name_token_round_trips_and_is_subject_safe(name: str) -> None:
    normal = _normalized_or_reject(name)
    token = name_token(name)
    assert not FORBIDDEN & set(token)
    assert not any(ch.isspace() for ch in token)
    if is_digest_token(token):  # a long escaped form (multi-byte characters): not reversible
        assert parse_subject(f"cctf.v1.verdict.r1.{token}.A").qname is None
        assert token_matches(token, normal)
        return
    assert TOKEN_RE.fullmatch(token)
    assert name_from_token(token) == normal
    assert name_token(normal) == token
    parsed = parse_subject(f"cctf.v1.verdict.r1.{token}.A")
    assert parsed.qname == normal
    assert parsed.token == token


@settings(max_examples=400)
@given(a=st.one_of(names, near_names), b=st.one_of(names, near_names))
@example(a="a.b", b="a_b")
@example(a="a_b", b="a~5fb")
@example(a="a-b", b="a.b")
@example(a=".", b="~2e")
def test_name_token_is_injective(a: str, b: str) -> None:
    na, nb = _normalized_or_reject(a), _normalized_or_reject(b)
    assert (name_token(a) == name_token(b)) == (na == nb)


@pytest.mark.parametrize(
    ("name", "token"),
    [
        (".", "~2e"),
        ("example.com", "example_com"),
        ("Example.COM.", "example_com"),
        ("a_b.", "a~5fb"),
        ("a~b", "a~7eb"),
        ("*.x", "~2a_x"),
        ("a>b", "a~3eb"),
        ("a b", "a~20b"),
        ("é", "~c3~a9"),
        ("xn--bcher-kva.example", "xn--bcher-kva_example"),
    ],
)
def test_name_token_examples(name: str, token: str) -> None:
    assert name_token(name) == token
    assert name_from_token(token) == normalize_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "a..b",
        ".a",
        "a.b..",
        "a" * 64,  # one label over 63 octets
        "é" * 32,  # 32 characters, 64 octets
        "a" * 255,
        "\ud800.example",
        "x." * 126 + "ab",  # 254 octets without the trailing dot
        "x." * 126 + "a" + "é",  # 253 characters, 254 octets
        "a" * 5000,
    ],
)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(SubjectError):
        normalize_name(name)
    with pytest.raises(SubjectError):
        name_token(name)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "~",
        "~6",
        "~zz",
        "~61",  # "a" spelt as an escape
        "~41",  # "A"
        "~5F",  # upper-case hex
        "~c3~A9",
        "a~2eb",  # "." spelt as an escape
        "~2e~2e",
        "A",
        "a.b",
        "a b",
        "*",
        ">",
        "a*",
        "_",
        "_a",
        "a_",
        "a__b",
        "~c0~ae",  # overlong UTF-8
        "~ff",
        "~ed~a0~80",  # UTF-8 encoded surrogate
        "a\n",
    ],
)
def test_non_canonical_or_invalid_tokens_are_rejected(token: str) -> None:
    with pytest.raises(SubjectError):
        name_from_token(token)


@settings(max_examples=300)
@given(token=st.one_of(st.text(max_size=30), st.text(alphabet="abc_~-0123456789ef.", max_size=12)))
def test_name_from_token_accepts_only_canonical_tokens(token: str) -> None:
    try:
        name = name_from_token(token)
    except SubjectError:
        return
    assert name_token(name) == token


@settings(max_examples=150)
@given(region=ids, agent=ids, name=names, qtype=qtypes)
def test_parse_subject_round_trips_every_builder(
    region: str, agent: str, name: str, qtype: str
) -> None:
    assert parse_subject(vote_subject(region, agent)) == ParsedSubject(Kind.VOTE, region, agent)
    assert parse_subject(evidence_subject(region, agent)) == ParsedSubject(
        Kind.EVIDENCE, region, agent
    )
    normal = _normalized_or_reject(name)
    subject = verdict_subject(region, name, qtype)
    assert len(subject) <= L.MAX_SUBJECT_BYTES
    token = name_token(name)
    qname = None if is_digest_token(token) else normal
    assert parse_subject(subject) == ParsedSubject(
        Kind.VERDICT, region, qname=qname, qtype=qtype, token=token
    )
    assert len(subject.split(".")) == 6


def test_longest_names_fit() -> None:
    longest_ascii = ".".join(["a" * 63] * 3 + ["a" * 61]) + "."
    assert len(longest_ascii) == L.MAX_QNAME_CHARS
    subject = verdict_subject("us-east", longest_ascii, "AAAA")
    assert parse_subject(subject).qname == longest_ascii
    # the longest non-ASCII name takes the digest form, and its subject is short
    longest_utf8 = ".".join(["\u00e9" * 31 + "a"] * 3 + ["\u00e9" * 30 + "a"])
    assert len(longest_utf8.encode()) == L.MAX_NAME_OCTETS
    subject = verdict_subject("a" * 32, longest_utf8, "A" * 10)
    parsed = parse_subject(subject)
    assert parsed.qname is None and parsed.token == name_token(longest_utf8)
    assert is_digest_token(parsed.token) and len(parsed.token) == 53
    assert token_matches(parsed.token, longest_utf8.upper())
    assert not token_matches(parsed.token, longest_utf8[:-1] + "b")


MALICIOUS_IDS = [
    "",
    "US-EAST",
    "us.east",
    "us-east.>",
    "*",
    ">",
    "us east",
    "us-east\n",
    "\nus-east",
    "-us",
    "a" * 33,
    "ü",
    "a\x00",
    "us_east",
    "us-east.*.x",
]


@pytest.mark.parametrize("bad", MALICIOUS_IDS)
def test_malicious_ids_are_rejected(bad: str) -> None:
    builders: list[Callable[[], object]] = [
        lambda: vote_subject(bad, "agent-a"),
        lambda: vote_subject("us-east", bad),
        lambda: evidence_subject(bad, "agent-a"),
        lambda: evidence_subject("us-east", bad),
        lambda: verdict_subject(bad, "example.com", "A"),
        lambda: vote_filter(bad) if bad else vote_filter("*"),
        lambda: verdict_filter(bad),
        lambda: check_id(bad),
    ]
    for build in builders:
        with pytest.raises(SubjectError):
            build()


@pytest.mark.parametrize("bad", ["", "a", "A.B", "A*", ">", "AAAAAAAAAAA", "A\n", "1A", "A B"])
def test_malicious_qtypes_are_rejected(bad: str) -> None:
    with pytest.raises(SubjectError):
        check_qtype(bad)
    with pytest.raises(SubjectError):
        verdict_subject("us-east", "example.com", bad)


def test_non_string_ids_are_rejected() -> None:
    for bad in (None, 1, b"us-east"):
        with pytest.raises(SubjectError):
            check_id(bad)  # type: ignore[arg-type]


def test_filters() -> None:
    assert vote_filter() == "cctf.v1.vote.>"
    assert vote_filter("us-east") == "cctf.v1.vote.us-east.>"
    assert verdict_filter("eu-west") == "cctf.v1.verdict.eu-west.>"


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "cctf",
        "cctf.v1.vote.us-east",
        "cctf.v1.vote.us-east.a.b",
        "cctf.v2.vote.us-east.a",
        "nats.v1.vote.us-east.a",
        "cctf.v1.bogus.us-east.a",
        "cctf.v1.vote.*.a",
        "cctf.v1.vote.us-east.>",
        "cctf.v1.vote.us-east.*",
        "cctf.v1.vote..a",
        "cctf.v1.vote.us-east.a ",
        "cctf.v1.VOTE.us-east.a",
        "cctf.v1.verdict.us-east.example_com",
        "cctf.v1.verdict.us-east.example_com.a",
        "cctf.v1.verdict.us-east.~61.A",
        "cctf.v1.verdict.us-east.example_com.A.X",  # ".x" is a per-coordinator subject (§5.6)
        "cctf.v1.verdict.us-east.example_com.A.x.y",
        "cctf.v1.evidence.us-east",
        "cctf.v1.vote.us-east." + "a" * 1020,
    ],
)
def test_parse_subject_rejects_malformed_subjects(subject: str) -> None:
    with pytest.raises(SubjectError):
        parse_subject(subject)


@settings(max_examples=300)
@given(
    subject=st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                ["cctf", "v1", "vote", "verdict", "evidence", "us-east", "a", "~2e", "A"]
            )
            | st.text(max_size=6),
            max_size=7,
        ).map(".".join),
    )
)
def test_parse_subject_accepts_only_what_the_builders_produce(subject: str) -> None:
    try:
        parsed = parse_subject(subject)
    except SubjectError:
        return
    if parsed.kind is Kind.VERDICT:
        assert parsed.qname is not None and parsed.qtype is not None
        assert verdict_subject(parsed.region, parsed.qname, parsed.qtype) == subject
    elif parsed.kind is Kind.VOTE:
        assert vote_subject(parsed.region, parsed.agent or "") == subject
    else:
        assert evidence_subject(parsed.region, parsed.agent or "") == subject


# ------------------------------------------------------------------------------------------ messages


@settings(max_examples=150)
@given(vote=votes())
def test_vote_round_trips(vote: ResolverVote) -> None:
    data = encode(vote)
    assert msgspec.msgpack.decode(data, type=ResolverVote) == vote
    ballot = Ballot(vote.agent, vote.region, vote.round, 0, [vote])
    assert decode_ballot(encode(ballot)) == ballot


@settings(max_examples=100)
@given(ballot=ballots())
def test_ballot_round_trips(ballot: Ballot) -> None:
    data = encode(ballot)
    decoded = decode_ballot(data)
    assert decoded == ballot
    assert encode(decoded) == data


@settings(max_examples=100)
@given(verdict=verdicts())
def test_verdict_round_trips(verdict: Verdict) -> None:
    data = encode(verdict)
    decoded = decode_verdict(data)
    assert decoded == verdict
    assert encode(decoded) == data


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        _msgpack_values.map(msgspec.msgpack.encode),
        st.lists(_msgpack_values, min_size=5, max_size=16).map(msgspec.msgpack.encode),
    )
)
@example(data=b"\x95\xa1\xff")  # invalid UTF-8 in a str field
@example(data=b"\xdd\xff\xff\xff\xff")  # huge array header
@example(data=b"")
def test_payload_decoders_raise_only_payload_error(data: bytes) -> None:
    for decode in (decode_ballot, decode_verdict):
        try:
            decoded = decode(data)
        except PayloadError:
            continue
        assert encode(decoded) is not None


_VALID_BALLOT = encode(make_ballot())


@settings(max_examples=300)
@given(position=st.integers(0, len(_VALID_BALLOT) - 1), value=st.integers(0, 255))
def test_mutated_ballots_raise_only_payload_error(position: int, value: int) -> None:
    data = bytearray(_VALID_BALLOT)
    data[position] = value
    with contextlib.suppress(PayloadError):
        decode_ballot(bytes(data))


def test_decoders_reject_trailing_bytes_and_oversize_payloads() -> None:
    with pytest.raises(PayloadError):
        decode_ballot(_VALID_BALLOT + b"\x00")
    with pytest.raises(PayloadError, match="too large"):
        decode_ballot(b"\x00" * (L.MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(PayloadError, match="too large"):
        decode_verdict(b"\x00" * (L.MAX_PAYLOAD_BYTES + 1))


_TINY_VOTE = make_vote("a", "b", 1, qname="c", answer=[], status=VoteStatus.TIMEOUT)


def _bad_vote(**changes: Any) -> ResolverVote:
    return msgspec.structs.replace(make_vote(), **changes)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            Ballot("a", "b", 1, 0, [_TINY_VOTE] * (L.MAX_VOTES_PER_BALLOT + 1)), id="votes"
        ),
        pytest.param(make_ballot(votes=[_bad_vote(answer=["x"] * 65)]), id="answer-entries"),
        pytest.param(make_ballot(votes=[_bad_vote(answer=["x" * 513])]), id="answer-entry-chars"),
        pytest.param(make_ballot(votes=[_bad_vote(ede=[0] * 9)]), id="ede-codes"),
        pytest.param(make_ballot(votes=[_bad_vote(ede=[65536])]), id="ede-value"),
        pytest.param(make_ballot(votes=[_bad_vote(answer_digest=b"\x00" * 33)]), id="digest"),
        pytest.param(make_ballot(votes=[_bad_vote(qname="")]), id="empty-qname"),
        pytest.param(make_ballot(votes=[_bad_vote(qname="a" * 255)]), id="long-qname"),
        pytest.param(make_ballot(votes=[_bad_vote(qtype="a")]), id="qtype"),
        pytest.param(make_ballot(votes=[_bad_vote(qtype="A\n")]), id="qtype-newline"),
        pytest.param(make_ballot(votes=[_bad_vote(resolver_id="R1")]), id="resolver-id"),
        pytest.param(make_ballot(votes=[_bad_vote(resolver_id="r1\n")]), id="resolver-newline"),
        pytest.param(make_ballot(votes=[_bad_vote(rcode=4096)]), id="rcode"),
        pytest.param(make_ballot(votes=[_bad_vote(ttl=2**31)]), id="ttl"),
        pytest.param(make_ballot(votes=[_bad_vote(transport="quic")]), id="transport"),
        pytest.param(make_ballot(votes=[_bad_vote(status="maybe")]), id="status"),
        pytest.param(make_ballot(votes=[_bad_vote(round=-1)]), id="negative-round"),
        pytest.param(make_ballot(votes=[_bad_vote(observed_ms=2**63)]), id="observed"),
        pytest.param(make_ballot(agent="agent-a\n"), id="agent-newline"),
        pytest.param(make_ballot(agent="a" * 33), id="agent-long"),
        pytest.param(make_ballot(region="us.east"), id="region-dot"),
        pytest.param(msgspec.structs.replace(make_ballot(), votes=["x"]), id="vote-type"),
    ],
)
def test_invalid_ballots_are_rejected(bad: Ballot) -> None:
    data = encode(bad)
    assert len(data) <= L.MAX_PAYLOAD_BYTES  # rejected by the schema, not the size cap
    with pytest.raises(PayloadError, match="malformed ballot"):
        decode_ballot(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"voters": [make_verdict().voters[0]] * (L.MAX_VOTERS + 1)},
        {"vote_digests": [b"\x00" * 32] * (L.MAX_VOTERS + 1)},
        {"vote_digests": [b"\x00" * 31]},
        {"k": 0},
        {"n": L.MAX_VOTERS + 1},
        {"outcome": "maybe"},
        {"coordinator": "Coord"},
        {"answer": ["x"] * (L.MAX_ANSWER_ENTRIES + 1)},
        {"seq": -1},
    ],
)
def test_invalid_verdicts_are_rejected(changes: dict[str, Any]) -> None:
    bad = msgspec.structs.replace(make_verdict(), **changes)
    with pytest.raises(PayloadError, match="malformed verdict"):
        decode_verdict(encode(bad))


def test_collections_at_their_limits_are_accepted() -> None:
    full = Ballot("a", "b", 1, 0, [_TINY_VOTE] * L.MAX_VOTES_PER_BALLOT)
    assert len(decode_ballot(encode(full)).votes) == L.MAX_VOTES_PER_BALLOT
    vote = _bad_vote(answer=("x" * L.MAX_ANSWER_ENTRY_CHARS,) * L.MAX_ANSWER_ENTRIES, ede=(1,) * 8)
    assert decode_ballot(encode(make_ballot(votes=[vote]))).votes == [vote]


def test_unknown_or_missing_fields_are_rejected() -> None:
    fields = list(msgspec.msgpack.decode(_VALID_BALLOT))
    with pytest.raises(PayloadError):
        decode_ballot(msgspec.msgpack.encode([*fields, 1]))
    with pytest.raises(PayloadError):
        decode_ballot(msgspec.msgpack.encode(fields[:-1]))
    as_map = {f: getattr(make_ballot(), f) for f in Ballot.__struct_fields__}
    with pytest.raises(PayloadError):
        decode_ballot(msgspec.msgpack.encode(as_map))


def test_answer_digest_is_the_documented_hash_and_order_sensitive() -> None:
    answer = ["10.0.0.1", "10.0.0.2"]
    assert answer_digest(0, answer) == hashlib.sha256(msgspec.msgpack.encode([0, answer])).digest()
    assert answer_digest(0, answer) == answer_digest(0, tuple(answer))
    assert answer_digest(0, answer) != answer_digest(0, answer[::-1])
    assert answer_digest(0, answer) != answer_digest(3, answer)
    assert answer_digest(0, []) != answer_digest(3, [])
    assert answer_digest(0, ["ab"]) != answer_digest(0, ["a", "b"])  # no ambiguous concatenation
    assert answer_digest(0, ["a"]) != answer_digest(0, ["a", "a"])  # producer de-duplicates
    assert len(answer_digest(0, answer)) == 32


@settings(max_examples=100)
@given(entries=st.lists(st.text(max_size=20), max_size=8), seed=st.randoms())
def test_answer_digest_of_sorted_answers_is_order_independent(
    entries: list[str], seed: Any
) -> None:
    shuffled = list(entries)
    seed.shuffle(shuffled)
    # the producer sorts (and de-duplicates) before digesting, so equal sets of records agree
    assert answer_digest(0, sorted(set(entries))) == answer_digest(0, sorted(set(shuffled)))
    if shuffled != entries:
        assert answer_digest(0, shuffled) != answer_digest(0, entries)


_OTHER_VALUES: dict[str, Any] = {
    "agent": "agent-b",
    "region": "eu-west",
    "round": 7,
    "qname": "example.org.",
    "qtype": "AAAA",
    "resolver_id": "r9",
    "transport": Transport.DOH,
    "status": VoteStatus.SERVFAIL,
    "rcode": 2,
    "answer": ["10.0.0.1"],
    "answer_digest": b"\x01" * 32,
    "ttl": 1,
    "ad": True,
    "ede": [18],
    "observed_ms": 5,
    "dnssec": DnssecState.SECURE,
}


def test_vote_digest_changes_with_every_field() -> None:
    base = make_vote()
    assert set(_OTHER_VALUES) == set(ResolverVote.__struct_fields__)
    assert vote_digest(base) == hashlib.sha256(b"CCTF-vote-v1\x00" + encode(base)).digest()
    seen = {vote_digest(base)}
    for field, value in _OTHER_VALUES.items():
        changed = msgspec.structs.replace(base, **{field: value})
        assert getattr(changed, field) != getattr(base, field)
        seen.add(vote_digest(changed))
    assert len(seen) == len(_OTHER_VALUES) + 1


@settings(max_examples=100)
@given(a=votes(), b=votes())
def test_vote_digest_is_equal_exactly_for_equal_votes(a: ResolverVote, b: ResolverVote) -> None:
    assert (vote_digest(a) == vote_digest(b)) == (a == b)
    assert vote_digest(a) == vote_digest(msgspec.msgpack.decode(encode(a), type=ResolverVote))


def test_voter_id() -> None:
    assert voter_id("agent-a", "r1") == "agent-a/r1"
    assert make_vote("agent-x", resolver_id="r7").voter == "agent-x/r7"


# ------------------------------------------------------------------------------------------ envelope

NOW = START_MS
SUBJECT = "cctf.v1.vote.us-east.agent-a"
SIGNERS = {s: make_identity("agent-a", "us-east", suite=s) for s in SuiteId}
COORD = make_identity("coord-a", "us-east", role=Role.COORDINATOR, suite=SuiteId.ED25519)
TRUST = make_trust(*SIGNERS.values(), COORD)
ANY_SUITE = SuitePolicy(SuiteId.ED25519)
DEFAULT_TIMES = TimePolicy()
PAYLOAD = encode(make_ballot())
ENVELOPES = {
    s: seal(
        SIGNERS[s].key,
        SUBJECT,
        MessageType.BALLOT,
        PAYLOAD,
        now_ms=NOW,
        lifetime_ms=30_000,
        nonce=bytes(range(16)),
    )
    for s in SuiteId
}


def check(
    data: bytes,
    subject: str = SUBJECT,
    *,
    now_ms: int = NOW,
    policy: SuitePolicy = ANY_SUITE,
    role: Role = Role.AGENT,
    expected_type: MessageType = MessageType.BALLOT,
    time_policy: TimePolicy = DEFAULT_TIMES,
) -> Any:
    return verify_envelope(
        data,
        subject,
        expected_type=expected_type,
        role=role,
        trust=TRUST,
        policy=policy,
        now_ms=now_ms,
        time_policy=time_policy,
    )


def reason_of(data: bytes, subject: str = SUBJECT, **kwargs: Any) -> Reason:
    with pytest.raises(Rejected) as info:
        check(data, subject, **kwargs)
    return info.value.reason


@pytest.mark.parametrize("suite", list(SuiteId))
def test_seal_verify_round_trip(suite: SuiteId) -> None:
    checked = check(ENVELOPES[suite], policy=SuitePolicy(suite))
    env = checked.envelope
    assert (env.v, env.type, env.suite, env.kid) == (1, "ballot", suite.value, SIGNERS[suite].kid)
    assert (env.iat, env.exp, env.nonce, env.payload) == (
        NOW,
        NOW + 30_000,
        bytes(range(16)),
        PAYLOAD,
    )
    assert checked.signer == SIGNERS[suite].entry
    assert decode_ballot(env.payload) == make_ballot()
    # the signatures cover exactly the documented to-be-signed bytes
    tbs = tbs_bytes(
        v=1,
        type="ballot",
        subject=SUBJECT,
        suite=suite.value,
        kid=SIGNERS[suite].kid,
        iat=NOW,
        exp=NOW + 30_000,
        nonce=bytes(range(16)),
        payload=PAYLOAD,
    )
    assert envelope_tbs(env, SUBJECT) == tbs
    assert tbs == msgspec.msgpack.encode(
        [
            "CCTF-ENVELOPE-v1",
            1,
            "ballot",
            SUBJECT,
            suite.value,
            env.kid,
            NOW,
            NOW + 30_000,
            env.nonce,
            PAYLOAD,
        ]
    )
    SIGNERS[suite].key.public.verify(tbs, env.auth.sigs)


def test_seal_draws_a_fresh_nonce_each_time() -> None:
    key = SIGNERS[SuiteId.ED25519].key
    nonces = {
        decode_envelope(
            seal(key, SUBJECT, MessageType.BALLOT, b"", now_ms=NOW, lifetime_ms=1)
        ).nonce
        for _ in range(8)
    }
    assert len(nonces) == 8


def _mutations(data: bytes, opaque: list[bytes]) -> list[tuple[int, int]]:
    """(position, new value) pairs: every other value at every structural/header byte, and
    bit flips plus an inversion inside the opaque regions (payload and signatures)."""
    inside: set[int] = set()
    for blob in opaque:
        start = data.index(blob)
        inside.update(range(start, start + len(blob)))
    out: list[tuple[int, int]] = []
    for pos, byte in enumerate(data):
        if pos in inside:
            out.extend((pos, byte ^ mask) for mask in (0x01, 0x10, 0x80, 0xFF))
        else:
            out.extend((pos, value) for value in range(256) if value != byte)
    return out


def test_every_single_byte_change_of_an_ed25519_envelope_is_rejected() -> None:
    data = ENVELOPES[SuiteId.ED25519]
    env = decode_envelope(data)
    mutations = _mutations(data, [env.payload, *env.auth.sigs])
    assert len({pos for pos, _ in mutations}) == len(data)  # every position is covered
    accepted = []
    reasons: set[Reason] = set()
    for pos, value in mutations:
        mutated = bytearray(data)
        mutated[pos] = value
        try:
            check(bytes(mutated))
        except Rejected as exc:
            reasons.add(exc.reason)
        else:
            accepted.append((pos, data[pos], value))
    assert accepted == []
    assert {Reason.SIGNATURE, Reason.MALFORMED, Reason.AUTH_KIND, Reason.VERSION} <= reasons


def test_sampled_byte_flips_of_a_hybrid_envelope_are_rejected() -> None:
    data = ENVELOPES[SuiteId.HYBRID]
    env = decode_envelope(data)
    header_end = data.index(env.payload)
    positions = sorted({*range(header_end), *range(header_end, len(data), 11), len(data) - 1})
    for pos in positions:
        for mask in (0x01, 0xFF):
            with pytest.raises(Rejected):
                check(flip_byte(data, pos, mask))


@pytest.mark.parametrize("suite", list(SuiteId))
def test_envelope_on_another_subject_fails_signature(suite: SuiteId) -> None:
    for other in (
        "cctf.v1.vote.us-east.agent-b",
        "cctf.v1.vote.eu-west.agent-a",
        "cctf.v1.evidence.us-east.agent-a",
        SUBJECT + " ",
        "",
    ):
        assert reason_of(ENVELOPES[suite], other) is Reason.SIGNATURE


def test_time_window() -> None:
    data = ENVELOPES[SuiteId.ED25519]
    check(data, now_ms=NOW + 29_999)  # last valid instant
    assert reason_of(data, now_ms=NOW + 30_000) is Reason.EXPIRED
    assert reason_of(data, now_ms=NOW + 10**9) is Reason.EXPIRED
    skew = TimePolicy().max_skew_ms
    check(data, now_ms=NOW - skew)  # issued exactly max_skew in the future
    assert reason_of(data, now_ms=NOW - skew - 1) is Reason.NOT_YET_VALID
    assert reason_of(data, now_ms=0) is Reason.NOT_YET_VALID


def test_lifetime_bounds() -> None:
    key = SIGNERS[SuiteId.ED25519].key
    limit = TimePolicy().max_lifetime_ms
    ok = seal(key, SUBJECT, MessageType.BALLOT, PAYLOAD, now_ms=NOW, lifetime_ms=limit)
    check(ok)
    too_long = seal(key, SUBJECT, MessageType.BALLOT, PAYLOAD, now_ms=NOW, lifetime_ms=limit + 1)
    assert reason_of(too_long) is Reason.LIFETIME
    forever = forge_envelope(key, SUBJECT, PAYLOAD, now_ms=NOW, exp=2**63 - 1)
    assert reason_of(forever) is Reason.LIFETIME
    # exp before iat (but still in the future): signed, yet never acceptable
    backwards = forge_envelope(key, SUBJECT, PAYLOAD, now_ms=NOW, iat=NOW + 4_000, exp=NOW + 2_000)
    assert reason_of(backwards) is Reason.LIFETIME
    assert reason_of(ok, time_policy=TimePolicy(max_lifetime_ms=limit - 1)) is Reason.LIFETIME


def test_wrong_message_type() -> None:
    key = SIGNERS[SuiteId.ED25519].key
    verdict = seal_message(key, SUBJECT, make_verdict(), now_ms=NOW)
    assert reason_of(verdict) is Reason.TYPE
    assert check(verdict, expected_type=MessageType.VERDICT).envelope.type == "verdict"
    assert reason_of(ENVELOPES[SuiteId.ED25519], expected_type=MessageType.VERDICT) is Reason.TYPE
    for bogus in ("evidence", "BALLOT", ""):
        forged = forge_envelope(key, SUBJECT, PAYLOAD, now_ms=NOW, msg_type=bogus)
        assert reason_of(forged) is Reason.TYPE


def test_protocol_version() -> None:
    key = SIGNERS[SuiteId.ED25519].key
    assert PROTOCOL_VERSION == 1
    for v in (0, 2, 255):
        assert reason_of(forge_envelope(key, SUBJECT, PAYLOAD, now_ms=NOW, v=v)) is Reason.VERSION
    assert reason_of(raw_envelope(ENVELOPES[SuiteId.ED25519], v=256)) is Reason.MALFORMED
    assert reason_of(raw_envelope(ENVELOPES[SuiteId.ED25519], v=-1)) is Reason.MALFORMED


def test_unknown_authenticator_kinds() -> None:
    data = ENVELOPES[SuiteId.ED25519]
    sigs = decode_envelope(data).auth.sigs
    for kind in ("merkle", "SIG", "", "sig2"):
        assert reason_of(raw_envelope(data, auth=[kind, sigs])) is Reason.AUTH_KIND
    assert reason_of(raw_envelope(data, auth=["merkle", b"root", [b"proof"]])) is Reason.AUTH_KIND
    assert reason_of(raw_envelope(data, auth=[7, sigs])) is Reason.AUTH_KIND
    for shape in (["sig"], ["sig", []], ["sig", sigs * 5], ["sig", sigs, 1], "sig", None, []):
        assert reason_of(raw_envelope(data, auth=shape)) is Reason.MALFORMED
    assert reason_of(raw_envelope(data, auth=["sig", [b"\x00" * 8193]])) is Reason.MALFORMED


def test_suite_and_key_checks() -> None:
    ed = SIGNERS[SuiteId.ED25519].key
    hybrid = SIGNERS[SuiteId.HYBRID]
    # policy below minimum (anti-downgrade), whatever the signature
    assert reason_of(ENVELOPES[SuiteId.ED25519], policy=SuitePolicy()) is Reason.SUITE
    assert reason_of(ENVELOPES[SuiteId.ML_DSA_65], policy=SuitePolicy()) is Reason.SUITE
    check(ENVELOPES[SuiteId.HYBRID], policy=SuitePolicy())
    # unknown suite
    assert reason_of(forge_envelope(ed, SUBJECT, PAYLOAD, now_ms=NOW, suite="rsa")) is Reason.SUITE
    # claimed suite differs from the key's suite (an ed25519 key claiming hybrid)
    claimed = forge_envelope(ed, SUBJECT, PAYLOAD, now_ms=NOW, suite=SuiteId.HYBRID.value)
    assert reason_of(claimed) is Reason.SUITE
    # the hybrid key's id relabelled as ed25519 with just its ed25519 half
    relabelled = forge_envelope(
        hybrid.key, SUBJECT, PAYLOAD, now_ms=NOW, suite=SuiteId.ED25519.value
    )
    assert reason_of(relabelled) is Reason.SUITE
    # unknown key id, and a key of the wrong role
    assert reason_of(forge_envelope(ed, SUBJECT, PAYLOAD, now_ms=NOW, kid="k" + "0" * 32)) is (
        Reason.UNKNOWN_KEY
    )
    stranger = make_key(SuiteId.ED25519, "stranger")
    assert reason_of(forge_envelope(stranger, SUBJECT, PAYLOAD, now_ms=NOW)) is Reason.UNKNOWN_KEY
    coord = forge_envelope(COORD.key, SUBJECT, PAYLOAD, now_ms=NOW)
    assert reason_of(coord) is Reason.UNKNOWN_KEY
    assert check(coord, role=Role.COORDINATOR).signer == COORD.entry


def test_signature_checks() -> None:
    ed = SIGNERS[SuiteId.ED25519]
    other = make_identity("agent-z", "us-east", suite=SuiteId.ED25519)
    # an ed25519 signature by another key under this key's id
    assert reason_of(forge_envelope(other.key, SUBJECT, PAYLOAD, now_ms=NOW, kid=ed.kid)) is (
        Reason.SIGNATURE
    )
    (sig,) = decode_envelope(ENVELOPES[SuiteId.ED25519]).auth.sigs
    for sigs in ([sig, sig], [sig[:-1]], [b"\x00" * 64]):
        forged = forge_envelope(
            ed.key, SUBJECT, PAYLOAD, now_ms=NOW, nonce=bytes(range(16)), sigs=sigs
        )
        assert reason_of(forged) is Reason.SIGNATURE
    # hybrid with a half stripped or swapped
    hy = decode_envelope(ENVELOPES[SuiteId.HYBRID])
    for sigs in (hy.auth.sigs[:1], hy.auth.sigs[1:], hy.auth.sigs[::-1]):
        forged = forge_envelope(
            SIGNERS[SuiteId.HYBRID].key, SUBJECT, PAYLOAD, now_ms=NOW, nonce=hy.nonce, sigs=sigs
        )
        assert reason_of(forged) is Reason.SIGNATURE
    # the hybrid signature relabelled as ed25519 / ml-dsa-65 under single-suite keys sharing its halves
    same_ed = make_identity("agent-a", "us-east", suite=SuiteId.ED25519)
    same_ml = make_identity("agent-a", "us-east", suite=SuiteId.ML_DSA_65)
    for single, half in ((same_ed, hy.auth.sigs[0]), (same_ml, hy.auth.sigs[1])):
        forged = forge_envelope(
            single.key,
            SUBJECT,
            PAYLOAD,
            now_ms=NOW,
            iat=hy.iat,
            exp=hy.exp,
            nonce=hy.nonce,
            sigs=[half],
        )
        assert reason_of(forged) is Reason.SIGNATURE


def test_non_canonical_encodings_are_rejected() -> None:
    data = ENVELOPES[SuiteId.ED25519]
    env = decode_envelope(data)
    iat_at = data.index(b"\xcf" + env.iat.to_bytes(8, "big"))
    as_int64 = flip_byte(data, iat_at, 0xCF ^ 0xD3)  # same value, tagged int64 instead of uint64
    assert msgspec.msgpack.decode(as_int64)[4] == env.iat
    assert reason_of(as_int64) is Reason.MALFORMED
    assert reason_of(data + b"\x00") is Reason.MALFORMED  # trailing bytes
    fields = msgspec.msgpack.decode(data)
    assert reason_of(msgspec.msgpack.encode([*fields, 0])) is Reason.MALFORMED  # extra field
    names = ["v", "type", "suite", "kid", "iat", "exp", "nonce", "payload", "auth"]
    as_map = msgspec.msgpack.encode(dict(zip(names, fields, strict=True)))
    assert reason_of(as_map) is Reason.MALFORMED


def test_field_shape_violations_are_malformed() -> None:
    data = ENVELOPES[SuiteId.ED25519]
    for field, value in (
        ("nonce", b"\x00" * 15),
        ("nonce", b"\x00" * 17),
        ("nonce", "0123456789abcdef"),
        ("kid", "k" * 65),
        ("suite", "s" * 65),
        ("type", "t" * 33),
        ("iat", -1),
        ("exp", 2**64 - 1),
        ("payload", "text"),
        ("v", "1"),
        ("v", True),
    ):
        assert reason_of(raw_envelope(data, **{field: value})) is Reason.MALFORMED, field


def test_oversized_input() -> None:
    with pytest.raises(Rejected) as info:
        decode_envelope(b"\x00" * (L.MAX_ENVELOPE_BYTES + 1))
    assert info.value.reason is Reason.OVERSIZE
    big = raw_envelope(ENVELOPES[SuiteId.ED25519], payload=b"\x00" * L.MAX_ENVELOPE_BYTES)
    assert reason_of(big) is Reason.OVERSIZE
    too_big_payload = raw_envelope(
        ENVELOPES[SuiteId.ED25519], payload=b"\x00" * (L.MAX_PAYLOAD_BYTES + 1)
    )
    assert len(too_big_payload) <= L.MAX_ENVELOPE_BYTES
    assert reason_of(too_big_payload) is Reason.MALFORMED
    with pytest.raises(ValueError, match="exceeds"):
        seal(
            SIGNERS[SuiteId.ED25519].key,
            SUBJECT,
            MessageType.BALLOT,
            b"\x00" * (L.MAX_PAYLOAD_BYTES + 1),
            now_ms=NOW,
            lifetime_ms=1,
        )


@pytest.mark.parametrize("suite", [SuiteId.ED25519, SuiteId.HYBRID])
def test_every_truncated_prefix_is_rejected(suite: SuiteId) -> None:
    data = ENVELOPES[suite]
    for length in range(len(data)):
        with pytest.raises(Rejected) as info:
            check(data[:length])
        assert info.value.reason is Reason.MALFORMED, length


_ENVELOPE_FIELDS = list(msgspec.msgpack.decode(ENVELOPES[SuiteId.ED25519]))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=400),
        _msgpack_values.map(msgspec.msgpack.encode),
        st.lists(_msgpack_values, min_size=9, max_size=9).map(msgspec.msgpack.encode),
        # valid shape with one field replaced by an arbitrary value
        st.tuples(st.integers(0, 8), _msgpack_values).map(
            lambda iv: msgspec.msgpack.encode(
                [iv[1] if i == iv[0] else f for i, f in enumerate(_ENVELOPE_FIELDS)]
            )
        ),
    )
)
@example(data=b"\x99\x01\xa1\xff")
@example(data=b"\x99\x01\xa6ballot\xa7ed25519\xa1\xff")
def test_decode_envelope_of_arbitrary_bytes_raises_only_rejected(data: bytes) -> None:
    try:
        env = decode_envelope(data)
    except Rejected as exc:
        assert isinstance(exc.reason, Reason)
        return
    assert msgspec.msgpack.encode(env) == data
    if data == ENVELOPES[SuiteId.ED25519]:  # the one field was "replaced" by its own value
        return
    with pytest.raises(Rejected):  # nothing else is correctly signed
        check(data)


@settings(max_examples=200)
@given(
    position=st.integers(0, len(ENVELOPES[SuiteId.ED25519]) - 1),
    value=st.integers(0, 255),
    cut=st.integers(0, 8),
)
def test_random_edits_of_an_envelope_raise_only_rejected(
    position: int, value: int, cut: int
) -> None:
    data = bytearray(ENVELOPES[SuiteId.ED25519])
    data[position] = value
    del data[position + 1 : position + 1 + cut]
    if bytes(data) == ENVELOPES[SuiteId.ED25519]:
        check(bytes(data))
        return
    with pytest.raises(Rejected):
        check(bytes(data))
