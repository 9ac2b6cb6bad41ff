"""Verify: one delivery's bytes -> the votes the tally may count, or a refusal (pure).

Wraps :class:`cctf.coordinator.verify.BallotVerifier` (envelope, subject, replay, ballot, pinning,
round window, answer digests) and then, per vote, normalises the name ONCE (cached) and keeps only the
configured ``(name, qtype)`` pairs. Refusals of a vote are counted by reason:

* ``bad_qname``: the name does not normalise (too long, empty label, ...);
* ``unconfigured_name``: the pair is not in the coordinator's ``names``.

A verified ballot with no countable vote is refused as a whole with reason ``unconfigured_name``
(it is terminated, never held, and never leads to a verdict).

Evidence (subject ``cctf.v1.evidence.<region>.<agent>``, which the region's vote stream also holds) is
dispatched on the subject's kind token to :meth:`BallotVerifier.verify_evidence` (the same steps; a
message whose envelope type does not match its subject kind fails step 4, ``type``); each
observation's ``(kind, subject)`` must be in the coordinator's ``identity:`` allow-list
(:class:`~cctf.coordinator.pipeline.identity.IdentitySet`), others are refused as
``unconfigured_name`` the same way. The result is a :class:`CheckedEvidence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cctf.bus_schemas.envelope import Rejected
from cctf.bus_schemas.evidence import EvidenceBallot, Facts
from cctf.bus_schemas.messages import Ballot, DnssecState, ResolverVote, VoteStatus
from cctf.bus_schemas.subjects import SubjectError, normalize_name
from cctf.coordinator.config import NameSet
from cctf.coordinator.pipeline.identity import IdentityKey, IdentitySet, identity_vote
from cctf.coordinator.tally import REFUSED, TallyKey, VoteInput
from cctf.coordinator.verify import BallotVerifier

__all__ = ["BAD_QNAME", "UNCONFIGURED", "Checked", "CheckedEvidence", "Refused", "VerifyStage"]

BAD_QNAME: Final = "bad_qname"
UNCONFIGURED: Final = "unconfigured_name"
_CACHE_LIMIT: Final = 65_536
_EVIDENCE_PREFIX: Final = "cctf.v1.evidence."
_UNSEEN: Final = object()
#: Rounds whose tally keys are shared (:meth:`VerifyStage.keys_of`): the open rounds and a late one.
_KEY_ROUNDS: Final = 4
_BOGUS: Final = DnssecState.BOGUS
_ANSWER: Final = VoteStatus.ANSWER


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    detail: str
    ignored: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Checked:
    ballot: Ballot
    votes: list[tuple[TallyKey, VoteInput]]
    ignored: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class CheckedEvidence:
    evidence: EvidenceBallot
    votes: list[tuple[IdentityKey, VoteInput, Facts]]
    ignored: dict[str, int] = field(default_factory=dict)


class VerifyStage:
    def __init__(
        self, verifier: BallotVerifier, names: NameSet, identity: IdentitySet | None = None
    ) -> None:
        self._verifier = verifier
        self._names = names
        self._identity = identity
        self._qnames: dict[str, str | None] = {}
        self._admitted: dict[tuple[str, str], str | None] = {}
        self._keys: dict[int, dict[tuple[str, str], TallyKey]] = {}

    def qname(self, raw: str) -> str | None:
        """The normalised name (``None``: not a valid name), computed once per distinct input."""
        cache = self._qnames
        if raw in cache:
            return cache[raw]
        try:
            name: str | None = normalize_name(raw)
        except SubjectError:
            name = None
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[raw] = name
        return name

    def admitted(self, raw: str, qtype: str) -> str | None:
        """The normalised name if ``(raw, qtype)`` is configured, ``""`` if ``raw`` is not a valid
        name (``bad_qname``), ``None`` if the pair is not configured (``unconfigured_name``);
        computed once per distinct pair (a normalised name is never empty: the root is ``.``)."""
        key = (raw, qtype)
        cache = self._admitted
        got = cache.get(key, _UNSEEN)
        if got is not _UNSEEN:
            return got  # type: ignore[return-value]
        qname = self.qname(raw)
        out = "" if qname is None else qname if self._names.admits(qname, qtype) else None
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = out
        return out

    def keys_of(self, round_: int) -> dict[tuple[str, str], TallyKey]:
        """``(raw qname, qtype) -> TallyKey`` of ``round_``'s admitted votes: the five agents' votes
        for one name share one key object (the duplicate index and the tally book keep the keys of
        every ballot for a while; one tracked object per name instead of five for the cyclic GC).
        Bounded: the :data:`_KEY_ROUNDS` highest rounds seen, each up to ``_CACHE_LIMIT`` keys."""
        keys = self._keys.get(round_)
        if keys is None:
            by_round = self._keys
            keys = by_round[round_] = {}
            if len(by_round) > _KEY_ROUNDS:
                del by_round[min(by_round)]
        elif len(keys) >= _CACHE_LIMIT:
            keys.clear()
        return keys

    def check(
        self, data: bytes, subject: str, digest: bytes | None = None
    ) -> Checked | CheckedEvidence | Refused:
        """``digest``: SHA-256 of ``data`` if the caller has it (step 10's envelope digest)."""
        if subject.startswith(_EVIDENCE_PREFIX):
            return self.check_evidence(data, subject, digest)
        try:
            ballot = self._verifier.verify(data, subject, digest)
        except Rejected as rej:
            return Refused(rej.reason.value, rej.detail)
        out = Checked(ballot, [])
        ignored, votes, round_ = out.ignored, out.votes, ballot.round
        admitted, cache = self.admitted, self._admitted
        append, new = votes.append, tuple.__new__
        # One voter id string per resolver of this ballot (vote.voter builds a new one each time;
        # one object also hashes once in the tally's dicts). Every vote's agent is the ballot's.
        voters: dict[str, str] = {}
        keys = self.keys_of(round_)
        for vote in ballot.votes:
            qtype = vote.qtype
            raw = (vote.qname, qtype)
            tkey = keys.get(raw)
            if tkey is None:  # the first admitted vote of this round for the name
                qname = cache.get(raw, _UNSEEN)
                if qname is _UNSEEN:
                    qname = admitted(vote.qname, qtype)
                if not qname:
                    reason = UNCONFIGURED if qname is None else BAD_QNAME
                    ignored[reason] = ignored.get(reason, 0) + 1
                    continue
                # TallyKey(...) without its Python-level __new__ (a named tuple)
                tkey = keys[raw] = new(TallyKey, (qname, qtype, round_))
            # vote_input, inlined (the hot path: once per vote); the vote digest is computed by
            # the tally if the vote is counted (VoteInput.vote_digest None)
            if vote.dnssec is _BOGUS:
                answer: bytes | None = REFUSED
            else:
                answer = vote.answer_digest if vote.status is _ANSWER else None
            voter = voters.get(vote.resolver_id)
            if voter is None:
                voter = voters[vote.resolver_id] = vote.voter
            # VoteInput(...) without its Python-level __new__ (a named tuple)
            append((tkey, new(VoteInput, (voter, answer, None, vote))))
        if not votes:
            reason = BAD_QNAME if ignored.keys() == {BAD_QNAME} else UNCONFIGURED
            return Refused(reason, f"no configured name among {len(ballot.votes)} votes", ignored)
        return out

    def check_evidence(
        self, data: bytes, subject: str, digest: bytes | None = None
    ) -> CheckedEvidence | Refused:
        try:
            ev = self._verifier.verify_evidence(data, subject, digest)
        except Rejected as rej:
            return Refused(rej.reason.value, rej.detail)
        out = CheckedEvidence(ev, [])
        identity = self._identity
        for obs in ev.observations:
            if identity is None or not identity.admits(obs.kind.value, obs.subject):
                out.ignored[UNCONFIGURED] = out.ignored.get(UNCONFIGURED, 0) + 1
                continue
            key = IdentityKey(obs.kind.value, obs.subject, ev.round)
            out.votes.append((key, identity_vote(obs), obs.facts))
        if not out.votes:
            n = len(ev.observations)
            return Refused(
                UNCONFIGURED, f"no configured identity among {n} observations", out.ignored
            )
        return out


def vote_input(vote: ResolverVote) -> VoteInput:
    """The tally's view of a vote (it keeps ``vote`` so a decision carries its winning answer, and
    computes its :func:`~cctf.bus_schemas.messages.vote_digest` if it counts it).

    A DNSSEC-``bogus`` vote (an answer the agent's validation refused, or a validating resolver's
    SERVFAIL for a DNSSEC failure) is a refused vote (:data:`~cctf.coordinator.tally.REFUSED`): it
    joins no answer group and is not unavailable, so it never counts towards TRUSTED and never
    makes a round UNAVAILABLE (the coordinator's book is ``refusable``)."""
    if vote.dnssec is DnssecState.BOGUS:
        digest: bytes | None = REFUSED
    else:
        digest = vote.answer_digest if vote.status is VoteStatus.ANSWER else None
    return VoteInput(vote.voter, digest, None, vote)
