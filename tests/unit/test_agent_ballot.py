"""Ballots from observations (pure): votes, digests, shrinking, splitting into parts, message ids;
and the publish-failure reasons."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.agents.ballot import (
    BallotError,
    VoteMemo,
    ballot_id_secret,
    ballot_msg_id,
    build_ballot,
    build_ballots,
    build_votes,
    split_votes,
)
from cctf.agents.canonical import DnssecState, Observation, Transport, VoteStatus
from cctf.agents.publishing import PublishFailure, classify_publish_error
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import answer_digest, decode_ballot, encode
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId

AGENT = "agent-1"
REGION = "us-east"


def obs(
    resolver: str = "r1",
    status: VoteStatus = VoteStatus.ANSWER,
    answer: tuple[str, ...] = ("www.demo.test. A 192.0.2.10",),
    **kw: Any,
) -> Observation:
    fields: dict[str, Any] = {
        "resolver_id": resolver,
        "transport": Transport.UDP,
        "status": status,
        "rcode": 0,
        "answer": answer if status is VoteStatus.ANSWER else (),
        "ttl": 300,
        "ad": False,
        "ede": (),
        "latency_ms": 1.0,
        "detail": "",
    }
    fields.update(kw)
    return Observation(**fields)


def test_build_votes_digests_and_normalization() -> None:
    observed = [
        ("WWW.Demo.Test", "A", obs("r1")),
        ("www.demo.test.", "A", obs("r2", VoteStatus.TIMEOUT)),
        ("www.demo.test.", "A", obs("r3", VoteStatus.SERVFAIL, rcode=2)),
        ("www.demo.test.", "A", obs("r1", answer=("other",))),  # second for (name, r1): dropped
    ]
    votes = build_votes(AGENT, REGION, 7, observed, 1234)
    assert [v.resolver_id for v in votes] == ["r1", "r2", "r3"]
    assert all(
        v.qname == "www.demo.test." and v.round == 7 and v.observed_ms == 1234 for v in votes
    )
    assert votes[0].answer_digest == answer_digest(0, ["www.demo.test. A 192.0.2.10"])
    assert votes[1].answer_digest == b"" and votes[1].answer == ()
    assert votes[2].answer_digest == b"" and votes[2].rcode == 2
    ballot = build_ballot(AGENT, REGION, 7, observed, 1234)
    assert decode_ballot(encode(ballot)) == ballot  # passes strict decoding


def test_build_votes_never_crashes_on_garbage() -> None:
    observed = [
        ("a.test.", "A", obs("r1", answer=("x" * (L.MAX_ANSWER_ENTRY_CHARS + 1),))),
        ("a.test.", "A", obs("r2", ttl=2**40, ede=tuple(range(50)))),
        ("a.test.", "A", obs("r3", rcode=70000)),
        ("a.test.", "A", obs("BAD ID")),  # not a wire id: dropped
        ("a.test.", "A", obs("r4", answer=tuple(f"e{i}" for i in range(100)))),
        ("a.test.", "A", obs("r5", answer=("a.test. TXT \ud800",))),  # lone surrogate
    ]
    ballot = build_ballot(AGENT, REGION, 1, observed, 1)
    assert decode_ballot(encode(ballot)) == ballot
    by = {v.resolver_id: v for v in ballot.votes}
    assert set(by) == {"r1", "r2", "r3", "r4", "r5"}
    assert by["r1"].status is VoteStatus.ERROR and by["r1"].answer == ()
    assert by["r2"].status is VoteStatus.ERROR  # TTL out of range on the wire
    assert by["r3"].status is VoteStatus.ERROR and by["r3"].rcode == 0
    assert by["r4"].status is VoteStatus.ERROR
    assert by["r5"].status is VoteStatus.ERROR and by["r5"].answer_digest == b""
    with pytest.raises(BallotError):
        build_votes("Not An Id", REGION, 1, [], 1)
    with pytest.raises(BallotError):
        build_votes(AGENT, REGION, -1, [], 1)
    with pytest.raises(BallotError):
        build_votes(AGENT, REGION, 1, [("bad..name", "A", obs())], 1)


def test_ballot_shrinks_to_fit_payload_cap() -> None:
    big = tuple(f'big.test. TXT "{i:03d}{"y" * 400}"' for i in range(60))
    observed = [("big.test.", "TXT", obs(f"r{i}", answer=big)) for i in range(6)]
    observed.append(("small.test.", "A", obs("r0")))
    ballot = build_ballot(AGENT, REGION, 1, observed, 1, max_payload_bytes=80_000)
    assert len(encode(ballot)) <= 80_000
    statuses = [v.status for v in ballot.votes]
    assert VoteStatus.ERROR in statuses and statuses.count(VoteStatus.ANSWER) >= 2
    assert ballot.votes[-1].status is VoteStatus.ANSWER  # the small one survives
    for v in ballot.votes:
        if v.status is VoteStatus.ANSWER:
            assert v.answer_digest == answer_digest(v.rcode, v.answer)


def test_ballot_msg_id_is_stable_per_agent_and_round() -> None:
    key = SigningKey.generate(SuiteId.ED25519)
    secret = ballot_id_secret(key)
    assert secret == ballot_id_secret(SigningKey.from_private_json(key.private_json()))
    assert ballot_msg_id(AGENT, 5, secret=secret) == ballot_msg_id(AGENT, 5, secret=secret)
    assert ballot_msg_id(AGENT, 5, secret=secret) != ballot_msg_id(AGENT, 6, secret=secret)
    assert ballot_msg_id(AGENT, 5, secret=secret) != ballot_msg_id("agent-2", 5, secret=secret)
    assert ballot_msg_id(AGENT, 5, 1, secret=secret) != ballot_msg_id(AGENT, 5, secret=secret)
    assert ballot_msg_id(AGENT, 5, secret=secret).startswith(f"cctf-ballot.{AGENT}.5.0.")
    with pytest.raises(ValueError):
        ballot_msg_id("a.b", 5, secret=secret)
    with pytest.raises(ValueError):
        ballot_msg_id(AGENT, 5, secret=b"short")


def test_ballot_msg_id_cannot_be_known_without_the_agent_key() -> None:
    # Agents of one region share a NATS user and vote stream: another agent of the region knows
    # (agent, round, part) but not the key, so it cannot pre-publish junk under the agent's future
    # ids (the stream would drop the real ballots as duplicates, acknowledging them).
    mine, other = (ballot_id_secret(SigningKey.generate(SuiteId.ED25519)) for _ in range(2))
    assert ballot_msg_id(AGENT, 5, secret=mine) != ballot_msg_id(AGENT, 5, secret=other)
    guessable = f"cctf-ballot.{AGENT}.5.0"
    assert ballot_msg_id(AGENT, 5, secret=mine) != guessable
    assert len(ballot_msg_id(AGENT, 5, secret=mine)) == len(guessable) + 1 + 24


def _names(n: int, resolvers: int, **kw: Any) -> list[tuple[str, str, Observation]]:
    return [
        (f"n{i}.demo.test.", "A", obs(f"r{j}", answer=(f"n{i}.demo.test. A 192.0.2.1",), **kw))
        for i in range(n)
        for j in range(resolvers)
    ]


def test_5000_votes_make_two_ballots_that_hold_every_vote_once() -> None:
    # short names: 4096 votes must fit the payload cap, so the vote cap is what splits them
    observed = [(f"n{i}.t.", "A", obs("r0", answer=(f"n{i}.t. A 192.0.2.1",))) for i in range(5000)]
    ballots = build_ballots(AGENT, REGION, 9, observed, 1234)
    assert [len(b.votes) for b in ballots] == [
        L.MAX_VOTES_PER_BALLOT,
        5000 - L.MAX_VOTES_PER_BALLOT,
    ]
    assert all(b.round == 9 and b.agent == AGENT and b.issued_ms == 1234 for b in ballots)
    for b in ballots:
        assert len(encode(b)) <= L.MAX_PAYLOAD_BYTES
        assert decode_ballot(encode(b)) == b
    keys = [(v.qname, v.qtype, v.resolver_id) for b in ballots for v in b.votes]
    assert len(keys) == len(set(keys)) == 5000
    assert keys == [(q, t, o.resolver_id) for q, t, o in observed]  # order kept
    with pytest.raises(BallotError, match="4096"):
        build_ballot(AGENT, REGION, 9, observed, 1234)


def test_one_ballot_when_everything_fits() -> None:
    ballots = build_ballots(AGENT, REGION, 1, _names(10, 3), 1)
    assert len(ballots) == 1 and len(ballots[0].votes) == 30
    assert build_ballots(AGENT, REGION, 1, [], 1)[0].votes == []


def test_a_name_keeps_its_resolvers_in_one_part() -> None:
    ballots = build_ballots(AGENT, REGION, 1, _names(100, 7), 1, max_votes=50)
    assert [len(b.votes) for b in ballots] == [49] * 14 + [14]
    for b in ballots:
        names = {v.qname for v in b.votes}
        assert len(b.votes) == 7 * len(names)


def test_parts_split_by_bytes_too() -> None:
    big = tuple(f'big.test. TXT "{i:03d}{"y" * 400}"' for i in range(60))  # ~25 KB per vote
    observed = [(f"b{i}.test.", "TXT", obs("r1", answer=big)) for i in range(30)]
    ballots = build_ballots(AGENT, REGION, 1, observed, 1, max_payload_bytes=100_000)
    assert len(ballots) > 1
    assert all(len(encode(b)) <= 100_000 for b in ballots)
    assert all(v.status is VoteStatus.ANSWER for b in ballots for v in b.votes)  # none shrunk
    assert sum(len(b.votes) for b in ballots) == 30


def test_too_many_parts_are_refused() -> None:
    with pytest.raises(BallotError, match="ballots"):
        split_votes(
            build_votes(AGENT, REGION, 1, _names(L.MAX_BALLOTS_PER_ROUND + 1, 1), 1), max_votes=1
        )


@settings(max_examples=60, deadline=None)
@given(
    names=st.integers(0, 60),
    resolvers=st.integers(1, 9),
    max_votes=st.integers(1, 40),
)
def test_split_keeps_every_vote_once_within_bounds(
    names: int, resolvers: int, max_votes: int
) -> None:
    votes = build_votes(AGENT, REGION, 1, _names(names, resolvers), 1)
    try:
        parts = split_votes(votes, max_votes=max_votes)
    except BallotError:
        assert len(votes) > L.MAX_BALLOTS_PER_ROUND  # every part holds at least one vote
        return
    assert [v for p in parts for v in p] == votes
    assert all(len(p) <= max_votes for p in parts)
    assert all(p for p in parts) or parts == [[]]
    if max_votes >= resolvers:  # whole names per part
        for p in parts:
            assert len(p) % resolvers == 0


def test_parts_have_distinct_message_ids() -> None:
    secret = b"s" * 32
    ids = {ballot_msg_id(AGENT, 5, part, secret=secret) for part in range(L.MAX_BALLOTS_PER_ROUND)}
    assert len(ids) == L.MAX_BALLOTS_PER_ROUND
    first = ballot_msg_id(AGENT, 5, secret=secret)
    assert first == ballot_msg_id(AGENT, 5, 0, secret=secret)
    assert first.startswith("cctf-ballot.agent-1.5.0.")
    for bad in (-1, L.MAX_BALLOTS_PER_ROUND, True):
        with pytest.raises(BallotError):
            ballot_msg_id(AGENT, 5, bad, secret=secret)  # type: ignore[arg-type]


class _ApiError(Exception):
    """Shaped like nats-py's ``APIError`` (err_code, description), which this room may not import."""

    def __init__(self, err_code: int | None, description: str) -> None:
        super().__init__(description)
        self.err_code = err_code
        self.description = description


class NoStreamResponseError(Exception):
    pass


class ConnectionClosedError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_ApiError(10077, "maximum messages per subject exceeded"), PublishFailure.STREAM_FULL),
        (_ApiError(10077, "maximum messages exceeded"), PublishFailure.STREAM_FULL),
        (_ApiError(10077, "maximum bytes exceeded"), PublishFailure.STREAM_FULL),
        (_ApiError(10060, "expected stream does not match"), PublishFailure.WRONG_STREAM),
        (_ApiError(10054, "message size exceeds maximum allowed"), PublishFailure.TOO_LARGE),
        (_ApiError(10999, "something else"), PublishFailure.API_ERROR),
        (NoStreamResponseError(), PublishFailure.NO_STREAM),
        (TimeoutError(), PublishFailure.TIMEOUT),
        (ConnectionClosedError(), PublishFailure.DISCONNECTED),
        (RuntimeError("?"), PublishFailure.ERROR),
    ],
)
def test_publish_failures_are_classified(exc: BaseException, reason: PublishFailure) -> None:
    assert classify_publish_error(exc) is reason


_ANSWERS = st.lists(
    st.sampled_from(
        [
            "www.demo.test. A 192.0.2.10",
            "www.demo.test. A 192.0.2.11",
            "x" * (L.MAX_ANSWER_ENTRY_CHARS + 1),  # too long: an error vote
            "a.test. TXT \ud800",  # lone surrogate: an error vote
        ]
    ),
    max_size=3,
).map(tuple)
_OBSERVATIONS = st.builds(
    obs,
    resolver=st.sampled_from(["r1", "r2", "BAD ID"]),  # not a wire id: no vote at all
    status=st.sampled_from(list(VoteStatus)),
    answer=_ANSWERS,
    rcode=st.sampled_from([0, 2, 70000, 0.0, True]),  # out of range / other types: other votes
    ttl=st.sampled_from([0, 300, 2**40]),
    ad=st.sampled_from([False, True, 1]),
    ede=st.sampled_from([(), (3,), tuple(range(50)), (3.0,)]),
    dnssec=st.sampled_from(list(DnssecState)),
)
_QUESTIONS = st.tuples(
    st.sampled_from(["www.demo.test.", "WWW.Demo.Test", "b.test."]), st.just("A")
)


@settings(max_examples=150, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.tuples(_QUESTIONS, _OBSERVATIONS), max_size=8), min_size=1, max_size=4
    )
)
def test_the_vote_memo_builds_the_same_votes(
    rounds: list[list[tuple[tuple[str, str], Observation]]],
) -> None:
    """Rounds of (partly repeated) observations: with a memo kept across them, every round's
    votes equal those built without one (round, time and every field)."""
    memo = VoteMemo()
    for i, observed in enumerate(rounds):
        items = [(q, t, o) for (q, t), o in observed]
        plain = build_votes(AGENT, REGION, 7 + i, items, 1234 + 1000 * i)
        cached = build_votes(AGENT, REGION, 7 + i, items, 1234 + 1000 * i, memo=memo)
        assert cached == plain
        assert [encode(v) for v in cached] == [encode(v) for v in plain]


def test_the_vote_memo_reuses_an_unchanged_observation() -> None:
    memo = VoteMemo()
    same = [("www.demo.test.", "A", obs("r1"))]
    first = build_votes(AGENT, REGION, 7, same, 1000, memo=memo)
    second = build_votes(AGENT, REGION, 8, same, 2000, memo=memo)
    assert (memo.misses, memo.hits) == (1, 1)
    assert (second[0].round, second[0].observed_ms) == (8, 2000)
    assert second == build_votes(AGENT, REGION, 8, same, 2000) != first
    changed = [("www.demo.test.", "A", obs("r1", answer=("www.demo.test. A 192.0.2.11",)))]
    third = build_votes(AGENT, REGION, 9, changed, 3000, memo=memo)
    assert memo.misses == 2 and third == build_votes(AGENT, REGION, 9, changed, 3000)
