"""From DNS observations to ballots (pure: no I/O, no clock; time is passed in).

One round of one agent yields one :class:`~cctf.bus_schemas.messages.ResolverVote` per
``(qname, qtype, resolver)``, carried in one :class:`~cctf.bus_schemas.messages.Ballot` or, when they
do not fit in one (more than ``MAX_VOTES_PER_BALLOT`` votes or ``MAX_PAYLOAD_BYTES`` bytes), in several
(:func:`build_ballots`): each vote is in exactly one part, the votes of one ``(qname, qtype)`` stay in
the same part whenever they fit in one, and each part is signed and published on its own, with the
message id :func:`ballot_msg_id` ``(agent, round, part)`` (keyed: see there). Coordinators tally votes per voter
``(agent, resolver)``, so the parts of a round count as one ballot. Everything here is deterministic,
so ballots can be rebuilt and compared in tests.

Robustness rules (a resolver is untrusted input):

* a vote whose fields would not pass the coordinator's strict decoding (an over-long answer entry,
  an out-of-range TTL or rcode, too many EDE codes, a malformed resolver id...) is replaced by an
  ``error`` vote with an empty answer instead of poisoning the whole ballot;
* a second observation for the same ``(qname, qtype, resolver)`` is dropped (the coordinator would
  count it as an equivocation);
* when the votes of a single ``(qname, qtype)`` would alone exceed the payload cap, the votes with the
  largest answers are turned into ``error`` votes until they fit.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Final

import msgspec

from cctf.agents.canonical import Observation
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import (
    Ballot,
    DnssecState,
    ResolverVote,
    Transport,
    VoteStatus,
    answer_digest,
    decode_vote,
    dnssec_states_for,
    encode,
)
from cctf.bus_schemas.subjects import normalize_name
from cctf.crypto.keys import SigningKey
from cctf.errors import CctfError
from cctf.ids import check_id, check_qtype

__all__ = [
    "BALLOT_MSG_ID_PREFIX",
    "MAX_BALLOT_PAYLOAD_BYTES",
    "BallotError",
    "ObservedQuery",
    "VoteMemo",
    "ballot_id_secret",
    "ballot_msg_id",
    "build_ballot",
    "build_ballots",
    "build_votes",
    "split_votes",
]

#: ``Nats-Msg-Id`` of a ballot: ``cctf-ballot.<agent>.<round>.<part>.<tag>``.
BALLOT_MSG_ID_PREFIX: Final = "cctf-ballot"
#: Encoded ballots are kept below this (the envelope adds signatures and headers around it).
MAX_BALLOT_PAYLOAD_BYTES: Final = L.MAX_PAYLOAD_BYTES
_BALLOT_OVERHEAD: Final = 256  # generous bound on the ballot's own fields and array headers
_MAX_UINT: Final = 2**63 - 1

#: One observation together with the question it answers: ``(qname, qtype, observation)``.
ObservedQuery = tuple[str, str, Observation]


class BallotError(CctfError, ValueError):
    """The ballot cannot be built (invalid agent, region, round or question, or too many votes)."""


def ballot_msg_id(agent: str, round_: int, part: int = 0, *, secret: bytes) -> str:
    """The JetStream ``Nats-Msg-Id`` of part ``part`` (from 0) of ``agent``'s ballots for ``round_``.

    ``cctf-ballot.<agent>.<round>.<part>.<tag>``, ``<tag>`` = the first 12 bytes (hex) of
    HMAC-SHA256(``secret``, ``agent|round|part``), ``secret`` = :func:`ballot_id_secret` of the
    agent's signing key. Stable per (agent key, round, part): every publish attempt of a part (and a
    second run of the same round) carries the same id, so the stream's duplicate window keeps each
    part of each round exactly once. Unknown to anyone without the key: agents of one region share
    a NATS user and so a vote stream, and with a guessable id one of them could pre-publish junk
    under another's future ids, making the stream drop that agent's real ballots as duplicates
    (acknowledged, never stored).
    """
    _check_round(round_)
    if (
        isinstance(part, bool)
        or not isinstance(part, int)
        or not 0 <= part < L.MAX_BALLOTS_PER_ROUND
    ):
        raise BallotError(f"invalid ballot part {part!r}")
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise BallotError("a ballot message id needs the agent's id secret (>= 16 bytes)")
    agent = check_id(agent, "agent id")
    tag = hmac.new(secret, f"{agent}|{round_}|{part}".encode(), "sha256").digest()[:12].hex()
    return f"{BALLOT_MSG_ID_PREFIX}.{agent}.{round_}.{part}.{tag}"


def ballot_id_secret(key: SigningKey) -> bytes:
    """The secret of :func:`ballot_msg_id` for an agent's signing key."""
    return key.derive_secret("ballot-msg-id")


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
        decode_vote(encode(vote))
    except Exception:  # ValidationError, DecodeError, OverflowError, UnicodeEncodeError, ...
        return False
    return True


def _error_vote(vote: ResolverVote) -> ResolverVote:
    return msgspec.structs.replace(
        vote,
        status=VoteStatus.ERROR,
        rcode=vote.rcode if 0 <= vote.rcode <= 4095 else 0,
        answer=(),
        answer_digest=b"",
        ttl=0,
        ad=False,
        ede=(),
        dnssec=DnssecState.INDETERMINATE,
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
    answer = tuple(obs.answer) if status is VoteStatus.ANSWER else ()
    try:
        digest = answer_digest(obs.rcode, answer) if status is VoteStatus.ANSWER else b""
    except (TypeError, OverflowError, ValueError):
        digest = b""
        status = VoteStatus.ERROR
        answer = ()
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
        ede=tuple(obs.ede[: L.MAX_EDE_CODES]) if isinstance(obs.ede, tuple | list) else (),
        observed_ms=now_ms,
        dnssec=_dnssec(obs, status),
    )
    if _valid(vote):
        return vote
    fallback = _error_vote(vote)
    return fallback if _valid(fallback) else None


def _dnssec(obs: Observation, status: VoteStatus) -> DnssecState:
    """The observation's DNSSEC state if the wire allows it with ``status``, else indeterminate."""
    try:
        state = DnssecState(_enum_value(getattr(obs, "dnssec", DnssecState.INDETERMINATE)))
    except ValueError:
        return DnssecState.INDETERMINATE
    return state if state in dnssec_states_for(status) else DnssecState.INDETERMINATE


#: Entries a :class:`VoteMemo` keeps (an agent asks at most ``MAX_VOTES_PER_ROUND`` questions).
_MAX_MEMO_VOTES: Final = 2 * L.MAX_VOTES_PER_ROUND
_MemoKey = tuple[object, ...]


class VoteMemo:
    """The votes of unchanged observations, kept by an agent across rounds (bounded).

    An agent asks the same questions every round and most answers do not change, while building a
    vote (enum checks, ``answer_digest``, the strict round trip of :func:`_valid`) was about 10 µs
    per vote: a third of a warm 3,000-name round. A vote is a function of the agent, region,
    question and observation, and of the round and time, which are checked first
    (:func:`_check_round`, :func:`_check_ms`) and have no other effect on it (both are ``Uint`` on
    the wire, the range those checks enforce). So the vote of an observation equal to an earlier
    one (every field the vote is made of, of exactly the same types) is that vote with this
    round's ``round`` and ``observed_ms`` (:func:`msgspec.structs.replace`): the same vote
    :func:`build_votes` would build (property test ``test_agent_ballot.py``). Observations with
    fields of other types take the full path, uncached.
    """

    __slots__ = ("_names", "_votes", "hits", "misses")

    def __init__(self) -> None:
        self._votes: dict[_MemoKey, ResolverVote | None] = {}
        self._names: dict[tuple[object, object], tuple[str, str]] = {}
        self.hits = 0
        self.misses = 0

    def question(self, qname_raw: object, qtype_raw: object) -> tuple[str, str]:
        """``(normalize_name(qname), check_qtype(qtype))``, once per distinct pair (``ValueError``
        as they raise, nothing cached then)."""
        key = (qname_raw, qtype_raw)
        if type(qname_raw) is not str or type(qtype_raw) is not str:
            return normalize_name(qname_raw), check_qtype(qtype_raw)  # type: ignore[arg-type]
        got = self._names.get(key)
        if got is None:
            got = (normalize_name(qname_raw), check_qtype(qtype_raw))
            if len(self._names) >= _MAX_MEMO_VOTES:
                self._names.clear()
            self._names[key] = got
        return got

    @staticmethod
    def key(agent: str, region: str, qname: str, qtype: str, obs: Observation) -> _MemoKey | None:
        """What the vote of ``obs`` is made of, or ``None`` when a field is not of exactly the
        type an agent's observation has (then equal values of other types could make another
        vote: ``0`` and ``0.0``, ``True`` and ``1``)."""
        answer, ede = obs.answer, obs.ede
        if (
            type(obs.resolver_id) is not str
            or type(obs.rcode) is not int
            or type(obs.ttl) is not int
            or type(obs.ad) is not bool
            or type(answer) is not tuple
            or type(ede) is not tuple
            or not isinstance(obs.transport, Transport)
            or not isinstance(obs.status, VoteStatus)
            or not isinstance(obs.dnssec, DnssecState)
        ):
            return None
        for entry in answer:
            if type(entry) is not str:
                return None
        for code in ede:
            if type(code) is not int:
                return None
        return (
            agent,
            region,
            qname,
            qtype,
            obs.resolver_id,
            obs.transport,
            obs.status,
            obs.rcode,
            answer,
            obs.ttl,
            obs.ad,
            ede,
            obs.dnssec,
        )

    def vote(
        self,
        agent: str,
        region: str,
        round_: int,
        qname: str,
        qtype: str,
        obs: Observation,
        now_ms: int,
    ) -> ResolverVote | None:
        """:func:`_to_vote` of these arguments, from an earlier equal observation's vote when
        there is one (``round_`` and ``now_ms`` already checked by the caller)."""
        key = self.key(agent, region, qname, qtype, obs)
        if key is None:
            return _to_vote(agent, region, round_, qname, qtype, obs, now_ms)
        if key in self._votes:
            self.hits += 1
            vote = self._votes[key]
            if vote is None:
                return None
            return msgspec.structs.replace(vote, round=round_, observed_ms=now_ms)
        self.misses += 1
        vote = _to_vote(agent, region, round_, qname, qtype, obs, now_ms)
        if len(self._votes) >= _MAX_MEMO_VOTES:
            self._votes.clear()
        self._votes[key] = vote
        return vote


def build_votes(
    agent: str,
    region: str,
    round_: int,
    observations: Iterable[ObservedQuery],
    now_ms: int,
    *,
    memo: VoteMemo | None = None,
) -> list[ResolverVote]:
    """One vote per distinct ``(qname, qtype, resolver_id)`` of ``observations``, in input order.

    ``qname`` is normalized (lower-case, trailing dot). ``answer_digest`` is
    ``answer_digest(rcode, answer)`` for ``answer`` votes and ``b""`` otherwise; non-answers carry no
    answer and TTL 0. An observation whose resolver id is not a valid wire id is dropped. Raises
    :class:`BallotError` for an invalid agent, region, round, time or question, or for more than
    ``MAX_VOTES_PER_ROUND`` distinct votes.

    ``memo`` (kept by the caller across rounds): the votes of unchanged observations are reused
    (:class:`VoteMemo`); the result is the same.
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
            if memo is None:
                qname = normalize_name(qname_raw)
                qtype = check_qtype(qtype_raw)
            else:
                qname, qtype = memo.question(qname_raw, qtype_raw)
        except ValueError as exc:
            raise BallotError(str(exc)) from None
        key = (qname, qtype, str(obs.resolver_id))
        if key in seen:
            continue
        vote = (
            _to_vote(agent, region, round_, qname, qtype, obs, now_ms)
            if memo is None
            else memo.vote(agent, region, round_, qname, qtype, obs, now_ms)
        )
        if vote is None:
            continue
        seen.add(key)
        if len(votes) >= L.MAX_VOTES_PER_ROUND:
            raise BallotError(f"more than {L.MAX_VOTES_PER_ROUND} votes in one round")
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


def split_votes(
    votes: list[ResolverVote],
    *,
    max_votes: int = L.MAX_VOTES_PER_BALLOT,
    max_payload_bytes: int = MAX_BALLOT_PAYLOAD_BYTES,
) -> list[list[ResolverVote]]:
    """``votes`` cut into parts of at most ``max_votes`` votes and ``max_payload_bytes`` bytes each.

    Greedy and order-preserving: the votes of one ``(qname, qtype)`` (consecutive or not) go into the
    same part, a new part starts when the next group would not fit; a group larger than a part is cut
    (by count) or shrunk (largest answers become ``error`` votes, :func:`_fit`). Always returns at least
    one part (an empty one for no votes). Raises :class:`BallotError` for more than
    ``MAX_BALLOTS_PER_ROUND`` parts or a vote that cannot fit at all.
    """
    if max_votes < 1:
        raise BallotError("max_votes must be positive")
    groups: dict[tuple[str, str], list[ResolverVote]] = {}
    for vote in votes:
        groups.setdefault((vote.qname, vote.qtype), []).append(vote)
    budget = max_payload_bytes - _BALLOT_OVERHEAD
    parts: list[list[ResolverVote]] = []
    current: list[ResolverVote] = []
    used = 0
    for group in groups.values():
        chunks = [group[i : i + max_votes] for i in range(0, len(group), max_votes)]
        for chunk in chunks:
            size = sum(len(encode(v)) for v in chunk)
            if current and (len(current) + len(chunk) > max_votes or used + size > budget):
                parts.append(current)
                current, used = [], 0
            if size > budget:  # one (qname, qtype) alone is too large: shrink it, on its own
                if current:
                    parts.append(current)
                parts.append(_fit(chunk, max_payload_bytes))
                current, used = [], 0
                continue
            current.extend(chunk)
            used += size
    if current or not parts:
        parts.append(current)
    if len(parts) > L.MAX_BALLOTS_PER_ROUND:
        raise BallotError(
            f"{len(votes)} votes need {len(parts)} ballots; at most {L.MAX_BALLOTS_PER_ROUND} per round"
        )
    return parts


def build_ballots(
    agent: str,
    region: str,
    round_: int,
    observations: Iterable[ObservedQuery],
    now_ms: int,
    *,
    max_votes: int = L.MAX_VOTES_PER_BALLOT,
    max_payload_bytes: int = MAX_BALLOT_PAYLOAD_BYTES,
    memo: VoteMemo | None = None,
) -> list[Ballot]:
    """The ballots of ``agent`` for ``round_`` (part 0, 1, ...): :func:`build_votes`, issued at
    ``now_ms``, cut by :func:`split_votes`. One ballot when everything fits in one."""
    votes = build_votes(agent, region, round_, observations, now_ms, memo=memo)
    return [
        Ballot(agent=agent, region=region, round=round_, issued_ms=now_ms, votes=part)
        for part in split_votes(votes, max_votes=max_votes, max_payload_bytes=max_payload_bytes)
    ]


def build_ballot(
    agent: str,
    region: str,
    round_: int,
    observations: Iterable[ObservedQuery],
    now_ms: int,
    *,
    max_payload_bytes: int = MAX_BALLOT_PAYLOAD_BYTES,
) -> Ballot:
    """One ballot holding every vote (:func:`build_votes`), shrunk (largest answers become ``error``
    votes) if its encoding would exceed ``max_payload_bytes``. Raises :class:`BallotError` for more
    than ``MAX_VOTES_PER_BALLOT`` votes (use :func:`build_ballots`)."""
    votes = build_votes(agent, region, round_, observations, now_ms)
    if len(votes) > L.MAX_VOTES_PER_BALLOT:
        raise BallotError(f"more than {L.MAX_VOTES_PER_BALLOT} votes in one ballot")
    return Ballot(
        agent=agent,
        region=region,
        round=round_,
        issued_ms=now_ms,
        votes=_fit(votes, max_payload_bytes),
    )
