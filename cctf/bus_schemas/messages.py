"""Message types carried inside signed envelopes (MessagePack, strict typed decoding).

Every struct is encoded as a MessagePack *array* in field order (``array_like``), so the byte layout is
fixed by this file and documented field by field in ``docs/wire-protocol.md``. Decoding is strict: wrong
types, missing fields, unknown enum values and oversized collections are rejected.

One exception in how (not what) is checked: the four identifier fields of a :class:`ResolverVote`
(``agent``, ``region``, ``resolver_id``, ``qtype``) are declared with their length bound only, and
their patterns (:data:`Id`, :data:`QType`) are checked by :func:`decode_vote` / :func:`decode_ballot`
after msgspec (:func:`bad_vote_ids`): a vote's agent and region equal to its ballot's (always so in a
valid ballot) already match the pattern, and the few distinct resolver ids and qtypes are matched
once each (bounded memo). msgspec ran four regular expressions per vote, half the decoding time of a
500-vote ballot. Decode votes only through these two functions: ``msgspec.msgpack.decode(data,
type=ResolverVote)`` alone does not check those patterns.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from cctf.bus_schemas import limits as L

# ``\Z``, not ``$``: msgspec matches with ``re.search`` and ``$`` also matches before a final "\n".
_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,31}\Z"
_QTYPE_PATTERN: Final = r"^[A-Z][A-Z0-9]{0,9}\Z"
Id = Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
#: :data:`Id` and :data:`QType` of a vote as declared (bound only; the pattern: :func:`bad_vote_ids`)
_VoteId = Annotated[str, msgspec.Meta(max_length=32)]
_VoteQType = Annotated[str, msgspec.Meta(max_length=10)]
VoterId = Annotated[str, msgspec.Meta(max_length=2 * L.MAX_ID_CHARS + 1)]
QName = Annotated[str, msgspec.Meta(min_length=1, max_length=L.MAX_QNAME_CHARS)]
QType = Annotated[str, msgspec.Meta(pattern=_QTYPE_PATTERN)]
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
OptDigest = Annotated[bytes, msgspec.Meta(max_length=32)]  # empty when there is none
AnswerEntry = Annotated[str, msgspec.Meta(max_length=L.MAX_ANSWER_ENTRY_CHARS)]
#: An answer: a MessagePack array of canonical entries, decoded as a tuple. Votes and verdicts hold
#: tuples, never lists: they are frozen all the way down (a verified verdict an SDK caches and hands
#: to every caller cannot be changed by one of them), an empty one is the shared ``()``, and the
#: cyclic GC stops tracking a tuple of strings at its first pass, a list never (a coordinator keeps
#: its counted votes until their round is pruned, a subscriber its verified verdicts).
Answer = Annotated[tuple[AnswerEntry, ...], msgspec.Meta(max_length=L.MAX_ANSWER_ENTRIES)]
Uint = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Rcode = Annotated[int, msgspec.Meta(ge=0, le=4095)]
Ttl = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class MessageType(StrEnum):
    BALLOT = "ballot"
    VERDICT = "verdict"
    EVIDENCE = "evidence"  # cctf.bus_schemas.evidence.EvidenceBallot, signed by an agent
    IDENTITY = "identity"  # cctf.bus_schemas.evidence.IdentityVerdict, signed by a coordinator
    SAFEMODE = "safemode"  # cctf.bus_schemas.control
    SAFEMODE_COMMAND = "safemode-command"  # cctf.bus_schemas.control
    CERT_REQUEST = "cert-request"  # cctf.ca.request.CertRequest, signed by an agent (docs/ca.md)


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    DOT = "dot"
    DOH = "doh"
    DOQ = "doq"


class VoteStatus(StrEnum):
    """What one resolver said. Only ``answer`` carries an answer digest."""

    ANSWER = "answer"  # NOERROR or NXDOMAIN: a definite answer
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    ERROR = "error"  # REFUSED, FORMERR, malformed response, transport failure


class DnssecState(StrEnum):
    """DNSSEC validation state (RFC 4035 section 4.3) of a vote's answer, or of a verdict's.

    On a vote: what the agent established for this resolver's response (its own validation up to a
    configured trust anchor, or the AD bit / EDE codes of a validating resolver reached over an
    authenticated transport; see ``docs/architecture.md``, *DNSSEC path*). On a verdict: the state
    of the TRUSTED answer as vouched for by the quorum (``indeterminate`` for other outcomes).
    """

    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    INDETERMINATE = "indeterminate"


class Outcome(StrEnum):
    TRUSTED = "trusted"
    DISPUTED = "disputed"
    UNAVAILABLE = "unavailable"


class VoterState(StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    UNAVAILABLE = "unavailable"


class ResolverVote(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """One resolver's answer for one (name, type) in one round, as observed by one agent."""

    agent: _VoteId  # Id: checked by bad_vote_ids (decode_vote, decode_ballot)
    region: _VoteId  # Id: idem
    round: Uint
    qname: QName
    qtype: _VoteQType  # QType: idem
    resolver_id: _VoteId  # Id: idem
    transport: Transport
    status: VoteStatus
    rcode: Rcode
    answer: Answer  # canonical, sorted, de-duplicated (see cctf.agents.canonical)
    answer_digest: OptDigest  # answer_digest(rcode, answer) when status == answer, else b""
    ttl: Ttl
    ad: bool
    ede: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=0, le=65535)], ...],
        msgspec.Meta(max_length=L.MAX_EDE_CODES),
    ]
    observed_ms: Uint
    dnssec: DnssecState

    @property
    def voter(self) -> str:
        return voter_id(self.agent, self.resolver_id)


class Ballot(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """All of one agent's votes for one round: one signature covers them all."""

    agent: Id
    region: Id
    round: Uint
    issued_ms: Uint
    votes: Annotated[list[ResolverVote], msgspec.Meta(max_length=L.MAX_VOTES_PER_BALLOT)]


# ``gc=False``: a verdict and its voter records are frozen and hold only strings, bytes, integers,
# enums and lists of those, so they can never be in a reference cycle; a subscriber keeps every
# verdict it verified (the cache, 100,000 by default), which the cyclic GC would otherwise scan again
# and again (benchmarks/subscriber.py: ≈ 10 % of its CPU at 20,000 verdicts).
class VoterRecord(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    voter: VoterId
    state: VoterState
    answer_digest: OptDigest


class Verdict(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """A coordinator's signed decision for one (name, type, round)."""

    qname: QName
    qtype: QType
    round: Uint
    outcome: Outcome
    rcode: Rcode  # rcode of the winning answer (TRUSTED), else 0
    answer: Answer  # winning canonical answer (TRUSTED), else ()
    answer_digest: OptDigest
    voters: Annotated[tuple[VoterRecord, ...], msgspec.Meta(max_length=L.MAX_VOTERS)]
    k: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]
    n: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]
    vote_digests: Annotated[tuple[Digest, ...], msgspec.Meta(max_length=L.MAX_VOTERS)]
    decided_early: bool
    issued_ms: Uint
    expires_ms: Uint
    coordinator: Id
    seq: Uint
    dnssec: (
        DnssecState  # of the TRUSTED answer (see docs/wire-protocol.md §5.4), else indeterminate
    )
    basis_round: Uint  # LKG: the TRUSTED round attested; = round for a fresh verdict
    basis_ms: Uint  # LKG: when that TRUSTED decision was made; = issued_ms for a fresh verdict

    @property
    def is_lkg(self) -> bool:
        """A Last-Known-Good attestation: it repeats the TRUSTED decision of ``basis_round``."""
        return self.basis_round != self.round or self.basis_ms != self.issued_ms

    @property
    def staleness_ms(self) -> int:
        """How old its evidence was when it was issued (0 for a fresh verdict)."""
        return self.issued_ms - self.basis_ms


PAYLOAD_TYPES: Final[dict[MessageType, type[msgspec.Struct]]] = {
    MessageType.BALLOT: Ballot,
    MessageType.VERDICT: Verdict,
}

_ENCODER: Final = msgspec.msgpack.Encoder()
_BALLOT_DECODER: Final = msgspec.msgpack.Decoder(Ballot)
_VOTE_DECODER: Final = msgspec.msgpack.Decoder(ResolverVote)
_VERDICT_DECODER: Final = msgspec.msgpack.Decoder(Verdict)
_VOTE_DOMAIN: Final = b"CCTF-vote-v1\x00"
_sha256: Final = hashlib.sha256


class PayloadError(ValueError):
    """A payload failed strict decoding."""


def encode(msg: msgspec.Struct) -> bytes:
    return _ENCODER.encode(msg)


_ID_RE: Final = re.compile(_ID_PATTERN)
_QTYPE_RE: Final = re.compile(_QTYPE_PATTERN)
_MEMO_LIMIT: Final = 4096
#: resolver ids and qtypes already seen to match their pattern (bounded: cleared when full)
_GOOD_IDS: set[str] = set()
_GOOD_QTYPES: set[str] = set()


def _good(value: str, memo: set[str], pattern: re.Pattern[str]) -> bool:
    if value in memo:
        return True
    if pattern.search(value) is None:
        return False
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(value)
    return True


def bad_vote_ids(
    votes: list[ResolverVote], agent: str | None = None, region: str | None = None
) -> str | None:
    """The first pattern violation among the votes' ``agent``, ``region`` (:data:`Id`; a value
    equal to ``agent`` / ``region``, valid ids already checked, is not matched again),
    ``resolver_id`` (:data:`Id`) and ``qtype`` (:data:`QType`), or ``None``."""
    ids, qtypes = _GOOD_IDS, _GOOD_QTYPES
    for i, vote in enumerate(votes):
        if vote.agent != agent and not _good(vote.agent, ids, _ID_RE):
            return f"vote {i}: agent {vote.agent!r} does not match {_ID_PATTERN!r}"
        if vote.region != region and not _good(vote.region, ids, _ID_RE):
            return f"vote {i}: region {vote.region!r} does not match {_ID_PATTERN!r}"
        if vote.qtype not in qtypes and not _good(vote.qtype, qtypes, _QTYPE_RE):
            return f"vote {i}: qtype {vote.qtype!r} does not match {_QTYPE_PATTERN!r}"
        if vote.resolver_id not in ids and not _good(vote.resolver_id, ids, _ID_RE):
            return f"vote {i}: resolver id {vote.resolver_id!r} does not match {_ID_PATTERN!r}"
    return None


class _RoundHead(msgspec.Struct, array_like=True, frozen=True):
    """The first three fields of a ballot or an evidence ballot (``agent``, ``region``, ``round``);
    what follows is skipped, not decoded."""

    agent: str
    region: str
    round: int


_ROUND_HEAD_DECODER: Final = msgspec.msgpack.Decoder(_RoundHead)


def peek_round(data: bytes) -> int | None:
    """The ``round`` of a ballot or evidence payload without decoding its votes (``None`` when the
    head does not decode: the full, strict decoding then names the fault). For an early refusal of a
    ballot outside the round window only: nothing read here is trusted beyond that."""
    try:
        return _ROUND_HEAD_DECODER.decode(data).round
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: msgspec skips what follows the head recursively


def decode_ballot(data: bytes) -> Ballot:
    if len(data) > L.MAX_PAYLOAD_BYTES:
        raise PayloadError("ballot payload too large")
    try:
        ballot = _BALLOT_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed ballot: {exc}") from None
    bad = bad_vote_ids(ballot.votes, ballot.agent, ballot.region)  # Ballot.agent/region: Id
    if bad is not None:
        raise PayloadError(f"malformed ballot: {bad}")
    return ballot


def decode_vote(data: bytes) -> ResolverVote:
    """One vote alone (as the coordinator would decode it within a ballot)."""
    try:
        vote = _VOTE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed vote: {exc}") from None
    bad = bad_vote_ids([vote])
    if bad is not None:
        raise PayloadError(f"malformed vote: {bad}")
    return vote


def decode_verdict(data: bytes) -> Verdict:
    if len(data) > L.MAX_PAYLOAD_BYTES:
        raise PayloadError("verdict payload too large")
    try:
        return _VERDICT_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed verdict: {exc}") from None


_DNSSEC_BY_STATUS: Final[dict[VoteStatus, tuple[DnssecState, ...]]] = {
    VoteStatus.ANSWER: tuple(DnssecState),
    VoteStatus.SERVFAIL: (DnssecState.BOGUS, DnssecState.INDETERMINATE),
    VoteStatus.TIMEOUT: (DnssecState.INDETERMINATE,),
    VoteStatus.ERROR: (DnssecState.INDETERMINATE,),
}


def dnssec_states_for(status: VoteStatus) -> tuple[DnssecState, ...]:
    """The DNSSEC states a vote of ``status`` may carry (wire-protocol.md §5.3 step 14): any for an
    answer; ``bogus`` (a validating resolver's SERVFAIL with a DNSSEC EDE code) or
    ``indeterminate`` for SERVFAIL; only ``indeterminate`` for timeout and error."""
    return _DNSSEC_BY_STATUS[status]


def voter_id(agent: str, resolver_id: str) -> str:
    """A voter is one (agent, resolver) path: ``<agent>/<resolver_id>``."""
    return f"{agent}/{resolver_id}"


def answer_digest(rcode: int, answer: list[str] | tuple[str, ...]) -> bytes:
    """SHA-256 of the MessagePack array ``[rcode, [entry, ...]]`` (entries already canonical)."""
    # a tuple encodes as the same msgpack array as a list: no copy
    return _sha256(_ENCODER.encode([rcode, answer])).digest()


def vote_digest(vote: ResolverVote) -> bytes:
    """SHA-256 of ``"CCTF-vote-v1\\0"`` followed by the vote's MessagePack encoding."""
    return _sha256(_VOTE_DOMAIN + _ENCODER.encode(vote)).digest()
