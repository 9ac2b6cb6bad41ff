"""Identity: tally identity evidence per ``(kind, subject, round)`` and decide ``IdentityVerdict``s
(pure; time through a ``Clock``).

* **Allow-list** (:class:`IdentitySet`): the coordinator's ``identity:`` block, an
  :class:`~cctf.identity.targets.IdentityTargets`. ``bundle`` subjects are its trust domain names,
  ``jwks`` subjects its issuer URLs, ``mtls`` subjects the SPIFFE IDs of its workloads that have an
  ``endpoint``. Observations of anything else are refused by the verify stage
  (``unconfigured_name``) and never tallied.
* **Tally** (:class:`IdentityStage`): the generic :class:`~cctf.coordinator.tallybook.TallyBook` with
  the identity electorate (agent ids; one vote per agent per key) and its own k-of-n, built
  ``refusable``. Status mapping (:func:`identity_vote`): ``ok`` → a vote in the group of its
  ``facts_digest``; ``timeout`` and ``error`` → unavailable; ``invalid`` →
  :data:`~cctf.coordinator.tally.REFUSED` (counted, joins no group, is not unavailable: fail
  closed). Decided early or at the round deadline (:meth:`IdentityStage.expire`), like ballots.
  The facts of the first counted observation of each group are kept until the key's verdict is
  built, so a TRUSTED verdict carries the facts its digest stands for (no re-scan).
* **Decide** (:meth:`IdentityStage.verdict`): like :class:`~cctf.coordinator.pipeline.decide.Decider`
  (the same :class:`~cctf.coordinator.verdicts.SequenceClock` instance, so ``seq`` is strictly
  increasing per coordinator across DNS and identity verdicts, and ``seq // 1000 == issued_ms``);
  ``expires_ms = issued_ms + verdict_ttl_ms``. Message id ``v1.id.<subject-token>.<kind>.<round>.
  <region>.<coordinator>`` (derived from what it decides; the coordinator keeps several coordinators'
  verdicts apart in the duplicate window).
* **Bundle sequence** (:class:`BundleFloor`): the coordinator never issues a TRUSTED ``bundle``
  verdict whose ``spiffe_sequence`` is lower than that of the last TRUSTED one it issued for the trust
  domain; such a decision is dropped as :data:`BUNDLE_ROLLBACK` (counted, its evidence settled, no
  verdict: relying parties keep failing closed once the previous verdict expires). The floor lives in
  memory: a restarted coordinator starts without it (clients keep their own floor, step 17 of their
  checks, so a rollback across a coordinator restart is still refused by every client that saw the
  newer bundle).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, NamedTuple

from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceStatus,
    Facts,
    IdentityKind,
    IdentityVerdict,
    Observation,
    observation_digest,
)
from cctf.bus_schemas.messages import VoterRecord
from cctf.bus_schemas.subjects import identity_token
from cctf.clock import Clock
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.tally import (
    REFUSED,
    AddResult,
    Decision,
    Outcome,
    QuorumRule,
    VoteInput,
)
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import SequenceClock, VerdictError
from cctf.identity.targets import IdentityTargets

__all__ = [
    "BUNDLE_ROLLBACK",
    "BundleFloor",
    "IdentityKey",
    "IdentitySet",
    "IdentityStage",
    "IssueRefused",
    "identity_msg_id",
    "identity_stage",
    "identity_vote",
]

#: The counted reason of a TRUSTED bundle decision refused for a lower ``spiffe_sequence``.
BUNDLE_ROLLBACK: Final = "bundle_rollback"
_MAX_DOMAINS: Final = 65_536


class IdentityKey(NamedTuple):
    kind: str
    subject: str
    round: int


class IssueRefused(VerdictError):
    """The decision is consistent but must not be issued (``reason`` is the counted reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def identity_msg_id(kind: str, subject: str, round_: int, region: str, coordinator: str) -> str:
    return f"v1.id.{identity_token(kind, subject)}.{kind}.{round_}.{region}.{coordinator}"


class IdentitySet:
    """The configured identity subjects per kind (see the module docstring)."""

    __slots__ = ("_subjects",)

    def __init__(self, targets: IdentityTargets) -> None:
        self._subjects: dict[str, frozenset[str]] = {
            IdentityKind.BUNDLE.value: frozenset(t.name for t in targets.trust_domains),
            IdentityKind.JWKS.value: frozenset(i.issuer for i in targets.issuers),
            IdentityKind.MTLS.value: frozenset(
                w.spiffe_id for w in targets.workloads if w.endpoint is not None
            ),
        }

    def __len__(self) -> int:
        return sum(len(s) for s in self._subjects.values())

    def admits(self, kind: str, subject: str) -> bool:
        subjects = self._subjects.get(kind)
        return subjects is not None and subject in subjects


def identity_vote(obs: Observation) -> VoteInput:
    """The tally's view of one (verified) observation; the voter is the agent."""
    if obs.status is EvidenceStatus.OK:
        digest: bytes | None = obs.facts_digest
    elif obs.status is EvidenceStatus.INVALID:
        digest = REFUSED
    else:  # timeout, error
        digest = None
    return VoteInput(obs.agent, digest, observation_digest(obs))


class BundleFloor:
    """The ``spiffe_sequence`` of the last TRUSTED bundle verdict issued per trust domain (bounded)."""

    def __init__(self, capacity: int = _MAX_DOMAINS) -> None:
        self._last: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def get(self, domain: str) -> int | None:
        return self._last.get(domain)

    def admit(self, domain: str, sequence: int) -> None:
        """Record ``sequence`` for ``domain``; raises :class:`IssueRefused` when it is lower."""
        last = self._last.get(domain)
        if last is not None and sequence < last:
            raise IssueRefused(
                BUNDLE_ROLLBACK,
                f"bundle of {domain[:200]} at sequence {sequence}, below the issued {last}",
            )
        self._last[domain] = sequence
        self._last.move_to_end(domain)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)


class IdentityStage:
    """Identity tallies and their verdicts (see the module docstring)."""

    def __init__(
        self,
        rule: QuorumRule,
        electorate: Iterable[str],
        *,
        coordinator: str,
        ttl_ms: int,
        clock: Clock,
        seq: SequenceClock,
        max_open: int = 100_000,
    ) -> None:
        self._rule = rule
        self._book = TallyBook(rule, electorate, max_open, refusable=True)
        self._coordinator = coordinator
        self._ttl = ttl_ms
        self._clock = clock
        self._seq = seq
        self._facts: dict[IdentityKey, dict[bytes, Facts]] = {}
        self.floor = BundleFloor()

    @property
    def rule(self) -> QuorumRule:
        return self._rule

    @property
    def live(self) -> int:
        return self._book.live

    def add(
        self, key: IdentityKey, vote: VoteInput, facts: Facts
    ) -> tuple[AddResult, Decision | None]:
        """Count one observation's vote; the decision is returned exactly once (as by TallyBook)."""
        result, decision = self._book.add(key.subject, key.kind, key.round, vote)
        if result is AddResult.COUNTED and vote.digest:
            self._facts.setdefault(key, {}).setdefault(vote.digest, facts)
        return result, decision

    def facts(self, key: IdentityKey, digest: bytes) -> Facts | None:
        """The facts counted under ``digest`` for ``key`` (until its verdict is built)."""
        return self._facts.get(key, {}).get(digest)

    def expire(self, up_to_round: int) -> list[tuple[IdentityKey, Decision]]:
        """Finalize every identity tally of a round up to ``up_to_round``."""
        return [
            (IdentityKey(k.qtype, k.qname, k.round), d) for k, d in self._book.expire(up_to_round)
        ]

    def rewind(self, to_round: int) -> int:
        """The clock stepped back (:meth:`TallyBook.rewind`)."""
        return self._book.rewind(to_round)

    def verdict(self, key: IdentityKey, decision: Decision) -> IdentityVerdict:
        """Raises :class:`VerdictError` (inconsistent) or :class:`IssueRefused` (bundle rollback)."""
        groups = self._facts.pop(key, {})
        kind = IdentityKind(key.kind)
        facts, digest = EMPTY_FACTS, b""
        if decision.outcome is Outcome.TRUSTED:
            if decision.answer_digest is None or decision.answer_digest not in groups:
                raise VerdictError(f"a TRUSTED {kind} decision on {key.subject!r} without facts")
            digest = decision.answer_digest
            facts = groups[digest]
            if kind is IdentityKind.BUNDLE:
                self.floor.admit(key.subject, facts.sequence)
        digests = decision.voter_digests or (b"",) * len(decision.voters)
        records = [
            VoterRecord(voter=voter, state=state, answer_digest=d)
            for (voter, state), d in zip(decision.voters, digests, strict=True)
        ]
        now = self._clock.now_ms()
        seq = self._seq.next()
        issued = max(now, seq // 1000)
        return IdentityVerdict(
            kind=kind,
            subject=key.subject,
            round=key.round,
            outcome=decision.outcome,
            facts=facts,
            facts_digest=digest,
            voters=records,
            k=self._rule.k,
            n=self._rule.n,
            observation_digests=list(decision.vote_digests),
            decided_early=decision.decided_early,
            issued_ms=issued,
            expires_ms=issued + self._ttl,
            coordinator=self._coordinator,
            seq=seq,
        )


def identity_stage(
    config: CoordinatorConfig, clock: Clock, seq: SequenceClock
) -> IdentityStage | None:
    """The identity stage a coordinator config asks for (``None`` without an ``identity:`` block)."""
    if config.identity is None:
        return None
    return IdentityStage(
        config.identity_quorum,
        config.identity_agents,
        coordinator=config.coordinator,
        ttl_ms=config.verdict_ttl_ms,
        clock=clock,
        seq=seq,
        max_open=config.max_open_tallies,
    )
