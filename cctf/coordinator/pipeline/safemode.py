"""Safe mode as a coordinator stage: decisions -> policy engine -> decisions (held changes rewritten)
and safe-mode announcements to sign (pure; time through a Clock).

Between the tally and decide (``Coordinator._schedule``): every decided key goes through
:meth:`SafeModeStage.apply`. The policy engine (:mod:`cctf.policy.engine`) scores the decision as the
quorum made it, may enter or leave safe mode, and judges it with the answer hold: a TRUSTED
decision the hold keeps back becomes **UNAVAILABLE** (no answer, every voter with an answer
``disagree``), which the LKG stage never attests (a counted answer other than the basis is a
disagreement). The TTL detector reads each voter's TTL from the decision's counted votes.

Every automatic decision (alarm, safe mode entered or left, answer held or let through after its
hold) is returned as a :class:`Record` for one log line and a metric; every transition as a signed
:class:`~cctf.bus_schemas.control.SafeModeAnnouncement` for ``cctf.v1.control.<region>``.
Operator commands (:meth:`SafeModeStage.command`) must come verified
(:class:`~cctf.coordinator.operator.CommandVerifier`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from cctf.bus_schemas import messages as wire
from cctf.bus_schemas.control import (
    MAX_ACTIVE_SCOPES,
    MAX_REASON_CHARS,
    Action,
    SafeModeAnnouncement,
    SafeModeCause,
    SafeModeCommand,
    SafeModeState,
)
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import MessageType, Outcome, VoterState
from cctf.bus_schemas.subjects import control_subject
from cctf.clock import Clock
from cctf.coordinator.tally import Decision, TallyKey
from cctf.coordinator.verdicts import SequenceClock
from cctf.crypto.keys import SigningKey
from cctf.policy.config import PolicyConfig
from cctf.policy.detectors import Layout
from cctf.policy.engine import PolicyEngine
from cctf.policy.model import Alarm, DecisionObs, IdentityObs, LkgEvent, Scope, VoterObs
from cctf.policy.safemode import Cause, Transition

__all__ = ["ANNOUNCE_LIFETIME_MS", "Record", "SafeModeStage", "StageResult", "seal_announcement"]

#: Lifetime of an announcement; the service re-announces every region's state well before.
ANNOUNCE_LIFETIME_MS: Final = 5 * 60_000

_CAUSE = {
    Cause.ALARM: SafeModeCause.ALARM,
    Cause.OPERATOR: SafeModeCause.OPERATOR,
    Cause.QUIET: SafeModeCause.QUIET,
}


@dataclass(frozen=True, slots=True)
class Record:
    """One automatic decision, for one log line and its metric."""

    event: (
        str  # "alarm" | "safe_mode_entered" | "safe_mode_left" | "answer_held" | "answer_released"
    )
    label: str  # the metric label: the rule, or the cause
    fields: dict[str, object]


@dataclass(slots=True)
class StageResult:
    decided: list[tuple[TallyKey, Decision]]
    records: list[Record] = field(default_factory=list)
    announcements: list[SafeModeAnnouncement] = field(default_factory=list)


def held_decision(d: Decision) -> Decision:
    """``d`` as an UNAVAILABLE decision: no winning answer, every voter with an answer ``disagree``
    (the counted votes and their digests are kept as they were)."""
    digests = d.voter_digests or (b"",) * len(d.voters)
    voters = tuple(
        (v, VoterState.DISAGREE if dg else VoterState.UNAVAILABLE)
        for (v, _s), dg in zip(d.voters, digests, strict=True)
    )
    return msgspec.structs.replace(
        d, outcome=Outcome.UNAVAILABLE, answer_digest=None, voters=voters, winner=None
    )


def seal_announcement(
    key: SigningKey, ann: SafeModeAnnouncement, *, per_coordinator: bool = False
) -> tuple[str, bytes]:
    """``per_coordinator``: on the coordinator's own ``cctf.v1.control.<region>.<coordinator>``."""
    subject = control_subject(ann.region, ann.coordinator if per_coordinator else None)
    data = seal(
        key,
        subject,
        MessageType.SAFEMODE,
        wire.encode(ann),
        now_ms=ann.issued_ms,
        lifetime_ms=ann.expires_ms - ann.issued_ms,
    )
    return subject, data


class SafeModeStage:
    def __init__(
        self,
        config: PolicyConfig,
        regions: Sequence[str],
        agent_regions: Mapping[str, str],
        coordinator: str,
        clock: Clock,
        *,
        lifetime_ms: int = ANNOUNCE_LIFETIME_MS,
    ) -> None:
        self.engine = PolicyEngine(config, regions)
        self.regions = tuple(regions)
        self._agent_regions = dict(agent_regions)
        self._voter_regions: dict[str, str] = {}
        self._layouts: dict[tuple[str, ...], Layout] = {}
        self._coordinator = coordinator
        self._clock = clock
        self._lifetime = lifetime_ms
        self._seq = SequenceClock(clock)

    # ---- inputs -------------------------------------------------------------------------------

    def _region_of(self, voter: str) -> str:
        """The region of ``voter``'s agent (``""``: unknown), cached per voter (bounded)."""
        cache = self._voter_regions
        region = cache.get(voter)
        if region is None:
            if len(cache) >= 4096:
                cache.clear()
            region = cache[voter] = self._agent_regions.get(voter.split("/")[0], "")
        return region

    def observation(self, key: TallyKey, d: Decision) -> DecisionObs:
        """``d`` as the engine's :class:`~cctf.policy.model.DecisionObs` (one object per voter: what
        :meth:`apply` hands the engine as columns instead; tools and tests)."""
        digests = d.voter_digests or (b"",) * len(d.voters)
        votes = d.counted_votes or (None,) * len(d.voters)
        region_of = self._region_of
        voters = tuple(
            VoterObs(
                v,
                region_of(v),
                dg or None,
                vote.ttl if vote is not None and dg else None,
            )
            for (v, _s), dg, vote in zip(d.voters, digests, votes, strict=True)
        )
        trusted = d.outcome is Outcome.TRUSTED
        return DecisionObs(
            key.qname, key.qtype, key.round, trusted, d.answer_digest if trusted else None, voters
        )

    def _layout(self, d: Decision) -> Layout:
        """The engine's layout of ``d``'s voters (cached per electorate: the voters of one tally book
        come in one order)."""
        names = tuple([v for v, _s in d.voters])
        layout = self._layouts.get(names)
        if layout is None:
            if len(self._layouts) >= 256:
                self._layouts.clear()
            region_of = self._region_of
            layout = self._layouts[names] = self.engine.layout(
                tuple((v, region_of(v)) for v in names)
            )
        return layout

    def apply(self, decided: list[tuple[TallyKey, Decision]]) -> StageResult:
        """Judge ``decided`` (the policy stage). The result's ``decided`` is ``decided`` itself when
        nothing was held (no copy), else a new list with the held decisions replaced."""
        out = StageResult(decided)
        observe, layout_of = self.engine.observe, self._layout
        for i, (key, decision) in enumerate(decided):
            trusted = decision.outcome is Outcome.TRUSTED
            layout = layout_of(decision)
            digests = decision.voter_digests or (b"",) * len(layout.voters)
            if trusted:
                votes = decision.counted_votes or (None,) * len(digests)
                ttls: tuple[int | None, ...] = tuple(
                    [None if vote is None else vote.ttl for vote in votes]
                )
            else:
                ttls = ()
            step = observe(
                key.qname,
                key.qtype,
                key.round,
                trusted,
                decision.answer_digest if trusted else None,
                layout,
                digests,
                ttls,
            )
            if step.alarms:
                out.records += [_alarm_record(alarm, key) for alarm in step.alarms]
            hold = step.hold
            if hold is not None and hold.held:
                if out.decided is decided:
                    out.decided = list(decided)
                out.decided[i] = (key, held_decision(decision))
                out.records.append(
                    Record(
                        "answer_held",
                        "held",
                        _key_fields(key) | {"streak": hold.streak, "why": hold.reason},
                    )
                )
            elif hold is not None and hold.trusted and hold.streak:
                out.records.append(
                    Record("answer_released", "released", _key_fields(key) | {"why": hold.reason})
                )
            if step.transitions:
                self._announce(step.transitions, out)
        return out

    def lkg(self, qname: str, qtype: str, round_: int, active: bool) -> StageResult:
        """An LKG episode started (``active``) or ended for ``(qname, qtype)``."""
        out = StageResult([])
        step = self.engine.lkg(LkgEvent(qname, qtype, round_, active))
        out.records += [_alarm_record(a, None) for a in step.alarms]
        self._announce(step.transitions, out)
        return out

    def identity(
        self, workload: str, round_: int, key_digest: bytes, not_before_ms: int
    ) -> StageResult:
        """The quorum's leaf key of ``workload`` (a TRUSTED ``mtls`` identity decision)."""
        out = StageResult([])
        step = self.engine.identity(IdentityObs(workload, round_, key_digest, not_before_ms))
        out.records += [_alarm_record(a, None) for a in step.alarms]
        self._announce(step.transitions, out)
        return out

    def tick(self, round_: int) -> StageResult:
        """Rounds pass without decisions: automatic scopes may leave."""
        out = StageResult([])
        self._announce(self.engine.tick(round_), out)
        return out

    def command(self, cmd: SafeModeCommand) -> StageResult:
        """A verified operator command."""
        out = StageResult([])
        reason = f"operator {cmd.operator}: {cmd.reason}"[:MAX_REASON_CHARS]
        t = self.engine.operator(Scope(cmd.region, cmd.scope), cmd.action is Action.ENTER, reason)
        out.records.append(
            Record(
                "operator_command",
                cmd.action.value,
                {
                    "operator": cmd.operator,
                    "region": cmd.region,
                    "scope": cmd.scope or "*",
                    "changed": t is not None,
                    "why": reason,
                },
            )
        )
        if t is not None:
            self._announce([t], out)
        else:  # nothing changed: say so, with the state, so the operator sees the effect
            out.announcements.append(
                self._announcement(
                    cmd.region, cmd.scope, SafeModeState.STATUS, SafeModeCause.OPERATOR, "", reason
                )
            )
        return out

    def status(self, cause: SafeModeCause) -> list[SafeModeAnnouncement]:
        """Every region's state as a ``status`` announcement (at start, and periodically)."""
        return [
            self._announcement(r, "", SafeModeState.STATUS, cause, "", f"{cause.value}")
            for r in self.regions
        ]

    # ---- announcements ------------------------------------------------------------------------

    def _active(self, region: str) -> list[str]:
        return [s.name for s in self.engine.active_in(region)][:MAX_ACTIVE_SCOPES]

    def _announcement(
        self,
        region: str,
        scope: str,
        state: SafeModeState,
        cause: SafeModeCause,
        rule: str,
        reason: str,
    ) -> SafeModeAnnouncement:
        now = self._clock.now_ms()
        seq = self._seq.next()
        issued = max(now, seq // 1000)
        return SafeModeAnnouncement(
            region=region,
            scope=scope,
            state=state,
            cause=cause,
            rule=rule,
            reason=reason[:MAX_REASON_CHARS],
            round=max(self.engine.round, 0),
            active=self._active(region),
            issued_ms=issued,
            expires_ms=issued + self._lifetime,
            coordinator=self._coordinator,
            seq=seq,
        )

    def _announce(self, transitions: list[Transition], out: StageResult) -> None:
        for t in transitions:
            event = "safe_mode_entered" if t.entered else "safe_mode_left"
            out.records.append(
                Record(
                    event,
                    t.cause.value,
                    {"region": t.scope.region, "scope": t.scope.name or "*", "round": t.round}
                    | {"why": t.reason},
                )
            )
            out.announcements.append(
                self._announcement(
                    t.scope.region,
                    t.scope.name,
                    SafeModeState.ENTERED if t.entered else SafeModeState.LEFT,
                    _CAUSE[t.cause],
                    t.rule[:32] if t.cause is Cause.ALARM else "",
                    t.reason,
                )
            )


def _key_fields(key: TallyKey) -> dict[str, object]:
    return {"qname": key.qname[:256], "qtype": key.qtype, "round": key.round}


def _alarm_record(alarm: Alarm, key: TallyKey | None) -> Record:
    fields: dict[str, object] = {
        "rule": alarm.rule.value,
        "series": alarm.series[:300],
        "round": alarm.round,
        "value": alarm.value,
        "baseline": alarm.mean,
        "z": round(alarm.z, 3) if math.isfinite(alarm.z) else None,
        "threshold": alarm.threshold,
        "why": alarm.why[:MAX_REASON_CHARS],
    }
    if key is not None:
        fields |= _key_fields(key)
    return Record("alarm", alarm.rule.value, fields)
