"""Verdict building and sequence numbering (pure: no I/O, time only through a ``Clock``).

:func:`build_verdict` turns a tally :class:`~cctf.coordinator.tally.Decision`
(which carries its winning vote) into the wire :class:`~cctf.bus_schemas.messages.Verdict`;
:func:`seal_verdict` signs it for one region's verdict subject.
"""

from __future__ import annotations

from cctf.bus_schemas import messages as wire
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import DnssecState, MessageType, Verdict, VoterRecord, VoterState
from cctf.bus_schemas.subjects import verdict_subject
from cctf.clock import Clock
from cctf.coordinator import tally
from cctf.crypto.keys import SigningKey

__all__ = [
    "SequenceClock",
    "VerdictError",
    "build_verdict",
    "seal_verdict",
    "verdict_dnssec",
]


class VerdictError(ValueError):
    """The decision and the votes given for it are inconsistent (a programming error)."""


def verdict_dnssec(decision: tally.Decision, k: int) -> DnssecState:
    """The DNSSEC state a verdict states for ``decision`` (wire-protocol.md §5.4, ``dnssec``).

    Only a TRUSTED answer has one; every other outcome is ``indeterminate``. For TRUSTED, over the
    counted votes of the ``agree`` voters (the ones that made the quorum):

    * ``secure`` when at least ``k`` of them are ``secure``;
    * else ``insecure`` when at least ``k`` of them are ``secure`` or ``insecure`` (a quorum evaluated
      DNSSEC, but no quorum vouches for a signature chain);
    * else ``indeterminate`` (no quorum evaluated DNSSEC: agents without a trust anchor for the name,
      resolvers whose AD bit is not trusted).

    ``bogus`` never appears: bogus votes are invalid in the tally and never ``agree``. The decision
    must carry ``counted_votes`` (the tally fills them); votes it lacks count as indeterminate.
    """
    if decision.outcome is not tally.Outcome.TRUSTED:
        return DnssecState.INDETERMINATE
    votes = decision.counted_votes or (None,) * len(decision.voters)
    secure = evaluated = 0
    agree, sec, insec = VoterState.AGREE, DnssecState.SECURE, DnssecState.INSECURE
    for (_, state), vote in zip(decision.voters, votes, strict=True):
        if state is not agree or vote is None:
            continue
        dnssec = vote.dnssec
        if dnssec is sec:
            secure += 1
            evaluated += 1
        elif dnssec is insec:
            evaluated += 1
    if secure >= k:
        return DnssecState.SECURE
    if evaluated >= k:
        return DnssecState.INSECURE
    return DnssecState.INDETERMINATE


def build_verdict(
    decision: tally.Decision,
    key: tuple[str, str, int],
    rule: tally.QuorumRule,
    coordinator: str,
    issued_ms: int,
    ttl_ms: int,
    seq: int,
) -> Verdict:
    """The wire verdict for ``decision`` on ``key = (qname, qtype, round)``.

    For TRUSTED the verdict carries the rcode and canonical answer of the decision's winning vote
    (kept by the tally, no re-scan); otherwise rcode 0, no answer, no digest. Every electorate voter
    gets a record with its state and the answer digest of its counted vote (empty when it had none).
    ``vote_digests`` are the digests of the counted votes, as the tally lists them.
    """
    qname, qtype, round_ = key
    rcode = 0
    answer: tuple[str, ...] = ()
    digest = b""
    if decision.outcome is tally.Outcome.TRUSTED:
        winner = decision.winner
        if decision.answer_digest is None or winner is None:
            raise VerdictError(f"a TRUSTED decision on {qname} {qtype} without its winning vote")
        if winner.answer_digest != decision.answer_digest:
            raise VerdictError(f"the winning vote of {qname} {qtype} carries another digest")
        digest = decision.answer_digest
        rcode = winner.rcode
        answer = winner.answer
    digests = decision.voter_digests or (b"",) * len(decision.voters)
    if len(digests) != len(decision.voters):
        raise VerdictError("voter digests and voters differ in length")
    records = tuple(  # positional (voter, state, answer_digest): a third cheaper than by keyword
        VoterRecord(voter, state, d)
        for (voter, state), d in zip(decision.voters, digests, strict=True)
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
        vote_digests=decision.vote_digests,
        decided_early=decision.decided_early,
        issued_ms=issued_ms,
        expires_ms=issued_ms + ttl_ms,
        coordinator=coordinator,
        seq=seq,
        dnssec=verdict_dnssec(decision, rule.k),
        basis_round=round_,
        basis_ms=issued_ms,
    )


def seal_verdict(
    key: SigningKey,
    verdict: Verdict,
    region: str,
    payload: bytes | None = None,
    *,
    per_coordinator: bool = False,
) -> tuple[str, bytes]:
    """Sign ``verdict`` for ``region``: returns ``(subject, envelope bytes)``.

    The envelope's lifetime is the verdict's (``issued_ms`` .. ``expires_ms``). ``payload`` may
    pass the already encoded verdict, so a verdict published to several regions is encoded once.
    ``per_coordinator``: the coordinator's own subject (``...<qtype>.<coordinator>``, k-of-m).
    """
    coordinator = verdict.coordinator if per_coordinator else None
    subject = verdict_subject(region, verdict.qname, verdict.qtype, coordinator)
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
    """Verdict sequence numbers: ``seq = max(last + 1, now_ms * 1000)``, strictly increasing while
    the clock does not step back.

    Seeding from the wall clock (in µs-sized steps) keeps numbers increasing across restarts as
    long as the clock does not go back, and leaves room for 1000 verdicts per millisecond before
    the sequence runs ahead of the clock (it then just counts up). When ``last + 1`` is more than
    ``max_lead_ms`` ahead of the clock, the clock stepped back (it ran ahead and was set right):
    the sequence starts again from the clock (``rewinds`` counts it), so verdicts are issued at the
    clock's time at once instead of minutes ahead of it (which subscribers refuse). A subscriber
    that accepted a higher ``seq`` for a key refuses that key's next verdicts as a rollback until
    the clock passes it again: at most its allowed skew (docs/wire-protocol.md §5.4, step 14c).
    """

    def __init__(self, clock: Clock, last: int = 0, max_lead_ms: int = 1_000) -> None:
        self._clock = clock
        self._last = last
        self._max_lead = max_lead_ms * 1000
        self.rewinds = 0

    @property
    def last(self) -> int:
        return self._last

    def next(self, now_ms: int | None = None) -> int:
        """The next number; ``now_ms``: the clock's reading the caller just took (one read)."""
        floor = (self._clock.now_ms() if now_ms is None else now_ms) * 1000
        seq = self._last + 1
        if seq - floor > self._max_lead:  # the clock stepped back
            self.rewinds += 1
            seq = floor
        seq = max(seq, floor)
        self._last = seq
        return seq
