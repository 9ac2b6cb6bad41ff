"""From DNS observations to one ballot (pure: no I/O, no clock; time is passed in).

One round of one agent yields one :class:`~cctf.bus_schemas.messages.Ballot` holding one
:class:`~cctf.bus_schemas.messages.ResolverVote` per ``(qname, qtype, resolver)``. Everything here is
deterministic, so a ballot can be rebuilt and compared in tests.

Robustness rules (a resolver is untrusted input):

* a vote whose fields would not pass the coordinator's strict decoding (an over-long answer entry,
  an out-of-range TTL or rcode, too many EDE codes, a malformed resolver id...) is replaced by an
  ``error`` vote with an empty answer instead of poisoning the whole ballot;
* a second observation for the same ``(qname, qtype, resolver)`` is dropped (the coordinator would
  count it as an equivocation);
* when the encoded ballot would exceed the payload cap, the votes with the largest answers are turned
  into ``error`` votes until it fits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from cctf.agents.canonical import Observation
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import (
    Ballot,
    ResolverVote,
    Transport,
    VoteStatus,
    answer_digest,
    encode,
)
from cctf.bus_schemas.subjects import normalize_name
from cctf.errors import CctfError
from cctf.ids import check_id, check_qtype

__all__ = [
    "BALLOT_MSG_ID_PREFIX",
    "MAX_BALLOT_PAYLOAD_BYTES",
    "BallotError",
    "ObservedQuery",
    "ballot_msg_id",
    "build_ballot",
    "build_votes",
]

#: ``Nats-Msg-Id`` of a ballot: ``cctf-ballot.<agent>.<round>``.
BALLOT_MSG_ID_PREFIX: Final = "cctf-ballot"
#: Encoded ballots are kept below this (the envelope adds signatures and headers around it).
MAX_BALLOT_PAYLOAD_BYTES: Final = L.MAX_PAYLOAD_BYTES
_BALLOT_OVERHEAD: Final = 256  # generous bound on the ballot's own fields and array headers
_VOTE_DECODER: Final = msgspec.msgpack.Decoder(ResolverVote)
_MAX_UINT: Final = 2**63 - 1

#: One observation together with the question it answers: ``(qname, qtype, observation)``.
ObservedQuery = tuple[str, str, Observation]


class BallotError(CctfError, ValueError):
    """The ballot cannot be built (invalid agent, region, round or question, or too many votes)."""


def ballot_msg_id(agent: str, round_: int) -> str:
    """The JetStream ``Nats-Msg-Id`` of ``agent``'s ballot for ``round_``.

    Stable per (agent, round): every publish attempt of a round's ballot carries the same id, so the
    stream's duplicate window keeps exactly one ballot per agent per round.
    """
    _check_round(round_)
    return f"{BALLOT_MSG_ID_PREFIX}.{check_id(agent, 'agent id')}.{round_}"


def _check_round(round_: int) -> None:
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ <= _MAX_UINT:
        raise BallotError(f"invalid round {round_!r}")


def _check_ms(now_ms: int) -> None:
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _MAX_UINT:
        raise BallotError(f"invalid timestamp {now_ms!r}")


def _valid(vote: ResolverVote) -> bool:
    """Whether ``vote`` passes the coordinator's strict decoding (msgspec does not validate on
    construction, so we round-trip)."""
    try:
        _VOTE_DECODER.decode(encode(vote))
    except Exception:  # ValidationError, DecodeError, OverflowError, UnicodeEncodeError, ...
        return False
    return True


def _error_vote(vote: ResolverVote) -> ResolverVote:
    return msgspec.structs.replace(
        vote,
        status=VoteStatus.ERROR,
        rcode=vote.rcode if 0 <= vote.rcode <= 4095 else 0,
        answer=[],
        answer_digest=b"",
        ttl=0,
        ad=False,
        ede=[],
    )


def _enum_value(value: object) -> str:
    """The value of an enum member (any enum with the wire values), or the string itself."""
    return str(getattr(value, "value", value))


def _to_vote(
    agent: str, region: str, round_: int, qname: str, qtype: str, obs: Observation, now_ms: int
) -> ResolverVote | None:
    """The vote for one observation, ``None`` if even a bare ``error`` vote cannot be formed
    (a resolver id or transport that is not valid on the wire)."""
    try:
        transport = Transport(_enum_value(obs.transport))
        status = VoteStatus(_enum_value(obs.status))
    except ValueError:
        return None
    answer = list(obs.answer) if status is VoteStatus.ANSWER else []
    try:
        digest = answer_digest(obs.rcode, answer) if status is VoteStatus.ANSWER else b""
    except (TypeError, OverflowError, ValueError):
        digest = b""
        status = VoteStatus.ERROR
        answer = []
    vote = ResolverVote(
        agent=agent,
        region=region,
        round=round_,
        qname=qname,
        qtype=qtype,
        resolver_id=obs.resolver_id,
        transport=transport,
        status=status,
        rcode=obs.rcode,
        answer=answer,
        answer_digest=digest,
        ttl=obs.ttl if status is VoteStatus.ANSWER else 0,
        ad=bool(obs.ad),
        ede=list(obs.ede[: L.MAX_EDE_CODES]) if isinstance(obs.ede, tuple | list) else [],
        observed_ms=now_ms,
    )
    if _valid(vote):
        return vote
    fallback = _error_vote(vote)
    return fallback if _valid(fallback) else None


def build_votes(
    agent: str,
    region: str,
    round_: int,
    observations: Iterable[ObservedQuery],
    now_ms: int,
) -> list[ResolverVote]:
    """One vote per distinct ``(qname, qtype, resolver_id)`` of ``observations``, in input order.

    ``qname`` is normalized (lower-case, trailing dot). ``answer_digest`` is
    ``answer_digest(rcode, answer)`` for ``answer`` votes and ``b""`` otherwise; non-answers carry no
    answer and TTL 0. An observation whose resolver id is not a valid wire id is dropped. Raises
    :class:`BallotError` for an invalid agent, region, round, time or question, or for more than
    ``MAX_VOTES_PER_BALLOT`` distinct votes.
    """
    try:
        agent = check_id(agent, "agent id")
        region = check_id(region, "region")
    except ValueError as exc:
        raise BallotError(str(exc)) from None
    _check_round(round_)
    _check_ms(now_ms)
    votes: list[ResolverVote] = []
    seen: set[tuple[str, str, str]] = set()
    for qname_raw, qtype_raw, obs in observations:
        try:
            qname = normalize_name(qname_raw)
            qtype = check_qtype(qtype_raw)
        except ValueError as exc:
            raise BallotError(str(exc)) from None
        key = (qname, qtype, str(obs.resolver_id))
        if key in seen:
            continue
        vote = _to_vote(agent, region, round_, qname, qtype, obs, now_ms)
        if vote is None:
            continue
        seen.add(key)
        if len(votes) >= L.MAX_VOTES_PER_BALLOT:
            raise BallotError(f"more than {L.MAX_VOTES_PER_BALLOT} votes in one ballot")
        votes.append(vote)
    return votes


def _fit(votes: list[ResolverVote], limit: int) -> list[ResolverVote]:
    """Turn the votes with the largest encodings into ``error`` votes until the total fits."""
    sizes = [len(encode(v)) for v in votes]
    total = sum(sizes) + _BALLOT_OVERHEAD
    if total <= limit:
        return votes
    out = list(votes)
    for i in sorted(range(len(out)), key=lambda j: (-sizes[j], j)):
        if total <= limit:
            break
        if out[i].status is not VoteStatus.ANSWER or not out[i].answer:
            continue
        replacement = _error_vote(out[i])
        total -= sizes[i] - len(encode(replacement))
        out[i] = replacement
    if total > limit:
        raise BallotError(f"ballot of {len(out)} votes does not fit in {limit} bytes")
    return out


def build_ballot(
    agent: str,
    region: str,
    round_: int,
    observations: Iterable[ObservedQuery],
    now_ms: int,
    *,
    max_payload_bytes: int = MAX_BALLOT_PAYLOAD_BYTES,
) -> Ballot:
    """The ballot of ``agent`` for ``round_``: :func:`build_votes`, issued at ``now_ms``, shrunk (largest
    answers become ``error`` votes) if its encoding would exceed ``max_payload_bytes``."""
    votes = build_votes(agent, region, round_, observations, now_ms)
    return Ballot(
        agent=agent,
        region=region,
        round=round_,
        issued_ms=now_ms,
        votes=_fit(votes, max_payload_bytes),
    )
