"""Verdict building and sequence numbering (pure: no I/O, time only through a ``Clock``).

:func:`build_verdict` turns a tally :class:`~cctf.coordinator.tally.Decision` plus the votes it
counted into the wire :class:`~cctf.bus_schemas.messages.Verdict`; :func:`seal_verdict` signs it for
one region's verdict subject. The tally's enums and the wire enums are distinct types with the same
values; they are mapped explicitly here.
"""

from __future__ import annotations

from collections.abc import Mapping

from cctf.bus_schemas import messages as wire
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import MessageType, ResolverVote, Verdict, VoterRecord, VoteStatus
from cctf.bus_schemas.subjects import verdict_subject
from cctf.clock import Clock
from cctf.coordinator import tally
from cctf.crypto.keys import SigningKey

__all__ = [
    "SequenceClock",
    "VerdictError",
    "build_verdict",
    "seal_verdict",
]


class VerdictError(ValueError):
    """The decision and the votes given for it are inconsistent (a programming error)."""


def build_verdict(
    decision: tally.Decision,
    key: tuple[str, str, int],
    votes_by_voter: Mapping[str, ResolverVote],
    rule: tally.QuorumRule,
    coordinator: str,
    now_ms: int,
    ttl_ms: int,
    seq: int,
) -> Verdict:
    """The wire verdict for ``decision`` on ``key = (qname, qtype, round)``.

    ``votes_by_voter`` holds the vote the tally counted for each voter (voters that never voted, or
    whose vote came after the decision, are absent). For TRUSTED the verdict carries the rcode and
    canonical answer of the winning group; otherwise rcode 0, no answer, no digest. Every electorate
    voter gets a record with its state and the answer digest of its counted vote (empty when it had
    none). ``vote_digests`` are the digests of the counted votes, as the tally lists them.
    """
    qname, qtype, round_ = key
    rcode = 0
    answer: list[str] = []
    digest = b""
    if decision.outcome is tally.Outcome.TRUSTED:
        if decision.answer_digest is None:
            raise VerdictError("a TRUSTED decision without an answer digest")
        digest = decision.answer_digest
        winner = next(
            (
                v
                for v in votes_by_voter.values()
                if v.status is VoteStatus.ANSWER and v.answer_digest == digest
            ),
            None,
        )
        if winner is None:
            raise VerdictError(f"no counted vote carries the winning answer of {qname} {qtype}")
        rcode = winner.rcode
        answer = list(winner.answer)
    records: list[VoterRecord] = []
    for voter, state in decision.voters:
        vote = votes_by_voter.get(voter)
        records.append(
            VoterRecord(
                voter=voter,
                state=state,
                answer_digest=vote.answer_digest if vote is not None else b"",
            )
        )
    return Verdict(
        qname=qname,
        qtype=qtype,
        round=round_,
        outcome=decision.outcome,
        rcode=rcode,
        answer=answer,
        answer_digest=digest,
        voters=records,
        k=rule.k,
        n=rule.n,
        vote_digests=list(decision.vote_digests),
        decided_early=decision.decided_early,
        issued_ms=now_ms,
        expires_ms=now_ms + ttl_ms,
        coordinator=coordinator,
        seq=seq,
    )


def seal_verdict(
    key: SigningKey, verdict: Verdict, region: str, payload: bytes | None = None
) -> tuple[str, bytes]:
    """Sign ``verdict`` for ``region``: returns ``(subject, envelope bytes)``.

    The envelope's lifetime is the verdict's (``issued_ms`` .. ``expires_ms``). ``payload`` may
    pass the already encoded verdict, so a verdict published to several regions is encoded once.
    """
    subject = verdict_subject(region, verdict.qname, verdict.qtype)
    data = seal(
        key,
        subject,
        MessageType.VERDICT,
        wire.encode(verdict) if payload is None else payload,
        now_ms=verdict.issued_ms,
        lifetime_ms=verdict.expires_ms - verdict.issued_ms,
    )
    return subject, data


class SequenceClock:
    """Strictly increasing verdict sequence numbers: ``seq = max(last + 1, now_ms * 1000)``.

    Seeding from the wall clock (in µs-sized steps) keeps numbers increasing across restarts as
    long as the clock does not go back, and leaves room for 1000 verdicts per millisecond before
    the sequence runs ahead of the clock (it then just counts up).
    """

    def __init__(self, clock: Clock, last: int = 0) -> None:
        self._clock = clock
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        seq = max(self._last + 1, self._clock.now_ms() * 1000)
        self._last = seq
        return seq
