"""The vote identifier fields' patterns checked after msgspec (``messages.bad_vote_ids``) accept and
refuse exactly what the declared patterns did: the reference here is the previous declaration of
``ResolverVote`` / ``Ballot`` (every id field an ``Id``, ``qtype`` a ``QType``), decoded by msgspec
alone."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_ballot, make_vote

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import Answer as AnswerList
from cctf.bus_schemas.messages import (
    DnssecState,
    Id,
    OptDigest,
    PayloadError,
    QName,
    QType,
    Rcode,
    Transport,
    Ttl,
    Uint,
    VoteStatus,
    decode_ballot,
    decode_vote,
    encode,
)


class _StrictVote(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    agent: Id
    region: Id
    round: Uint
    qname: QName
    qtype: QType
    resolver_id: Id
    transport: Transport
    status: VoteStatus
    rcode: Rcode
    answer: AnswerList
    answer_digest: OptDigest
    ttl: Ttl
    ad: bool
    ede: Annotated[
        list[Annotated[int, msgspec.Meta(ge=0, le=65535)]], msgspec.Meta(max_length=L.MAX_EDE_CODES)
    ]
    observed_ms: Uint
    dnssec: DnssecState


class _StrictBallot(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    agent: Id
    region: Id
    round: Uint
    issued_ms: Uint
    votes: Annotated[list[_StrictVote], msgspec.Meta(max_length=L.MAX_VOTES_PER_BALLOT)]


_STRICT_BALLOT = msgspec.msgpack.Decoder(_StrictBallot)
_STRICT_VOTE = msgspec.msgpack.Decoder(_StrictVote)

#: valid ids, near misses (upper case, newline, dot, too long, empty, leading dash) and unicode
_ids = st.sampled_from(
    [
        "agent-a",
        "us-east",
        "r1",
        "r2",
        "a",
        "x" * 32,
        "x" * 33,
        "R1",
        "r1\n",
        "us.east",
        "",
        "-a",
        "é",
    ]
) | st.text(alphabet="ab-1Z\n.", max_size=34)
_qtypes = st.sampled_from(["A", "AAAA", "TXT", "a", "A\n", "", "A" * 10, "A" * 11, "1A"]) | st.text(
    alphabet="AZ09a\n", max_size=12
)


def _accepts(decode: object, data: bytes) -> bool:
    try:
        decode(data)  # type: ignore[operator]
    except (PayloadError, msgspec.ValidationError, msgspec.DecodeError):
        return False
    return True


@given(
    st.lists(st.tuples(_ids, _ids, _qtypes, _ids), min_size=1, max_size=4),
    _ids,
    _ids,
)
@settings(max_examples=400, deadline=None)
def test_ballot_ids_refused_exactly_as_the_declared_patterns(
    fields: list[tuple[str, str, str, str]], agent: str, region: str
) -> None:
    votes = [
        make_vote(a, r, qtype=q, resolver_id=res, qname=f"n{i}.test.")
        for i, (a, r, q, res) in enumerate(fields)
    ]
    for ballot_agent, ballot_region in ((agent, region), (fields[0][0], fields[0][1])):
        data = encode(make_ballot(ballot_agent, ballot_region, votes=votes))
        strict = _accepts(_STRICT_BALLOT.decode, data)
        assert _accepts(decode_ballot, data) == strict
        if strict:
            assert encode(decode_ballot(data)) == data
    for vote in votes:
        data = encode(vote)
        assert _accepts(decode_vote, data) == _accepts(_STRICT_VOTE.decode, data)


@pytest.mark.parametrize("field", ["agent", "region", "qtype", "resolver_id"])
def test_a_bad_id_in_a_later_vote_is_malformed(field: str) -> None:
    bad = {"agent": "Agent-a", "region": "us.east", "qtype": "a", "resolver_id": "r1\n"}[field]
    good = make_vote()
    votes = [good] * 3 + [msgspec.structs.replace(good, **{field: bad})]
    with pytest.raises(PayloadError, match="malformed ballot: vote 3: "):
        decode_ballot(encode(make_ballot(votes=votes)))
    with pytest.raises(PayloadError, match="malformed vote"):
        decode_vote(encode(votes[-1]))
