"""The policy engine: detectors, safe mode and the answer hold, as one pure object.

For each decision (:meth:`PolicyEngine.decision`), in this order:

1. the detectors score the decision as the quorum made it (alarms);
2. with ``auto_safe_mode``, every alarm enters (or keeps in) safe mode its scopes;
3. the answer hold judges the decision, guarded when a scope covers its name (so the decision that
   raised an ``answer_change`` alarm is itself held);
4. every automatic scope quiet for ``quiet_rounds`` rounds (by the highest round seen) leaves.

The result says what the coordinator applies to this verdict (:class:`Effects`, :class:`Step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cctf.policy.config import PolicyConfig
from cctf.policy.detectors import Detectors, name_key
from cctf.policy.model import Alarm, DecisionObs, IdentityObs, LkgEvent, Scope
from cctf.policy.safemode import AnswerHolds, HoldResult, SafeMode, Transition

__all__ = ["Effects", "PolicyEngine", "Step"]


@dataclass(frozen=True, slots=True)
class Effects:
    """What safe mode means for one name right now (data the coordinator and the SDK apply)."""

    safe_mode: bool
    hold_rounds: int  # a changed answer must hold this many rounds before it is TRUSTED
    strict_paths: bool  # the identity negotiator should require every configured path
    freeze_lkg: bool  # the LKG stage should serve the previous answer while a change is held


@dataclass(frozen=True, slots=True)
class Step:
    alarms: list[Alarm] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    hold: HoldResult | None = None


class PolicyEngine:
    def __init__(self, config: PolicyConfig, regions: Sequence[str]) -> None:
        if not regions:
            raise ValueError("the policy engine needs at least one region")
        self.config = config
        self.regions = tuple(regions)
        self._detectors = Detectors(config, self.regions)
        self._safe = SafeMode(config.quiet_rounds)  # at most 255 name scopes per region
        self._holds = AnswerHolds(config.hold_rounds, limit=config.max_series)
        self._round = -1

    # ---- queries ------------------------------------------------------------------------------

    @property
    def round(self) -> int:
        """The highest round seen (-1: none)."""
        return self._round

    def active(self) -> tuple[Scope, ...]:
        return self._safe.active()

    def active_in(self, region: str) -> tuple[Scope, ...]:
        return tuple(Scope(region, n) for n in self._safe.names_in(region))

    def is_manual(self, scope: Scope) -> bool:
        return self._safe.is_manual(scope)

    def effects(self, name: str) -> Effects:
        on = self._safe.covers(name)
        c = self.config
        return Effects(on, c.hold_rounds, on and c.strict_paths, on and c.freeze_lkg)

    def held(self, qname: str, qtype: str) -> bool:
        """Whether a changed answer of ``(qname, qtype)`` is being held."""
        return self._holds.pending(name_key(qname, qtype))

    # ---- inputs -------------------------------------------------------------------------------

    def _alarmed(self, alarms: list[Alarm]) -> list[Transition]:
        out: list[Transition] = []
        if self.config.auto_safe_mode:
            for alarm in alarms:
                for scope in alarm.scopes:
                    t = self._safe.alarm(scope, alarm.round, alarm.why, alarm.rule.value)
                    if t is not None:
                        out.append(t)
        return out

    def _advance(self, round_: int) -> list[Transition]:
        """Scopes can only become quiet when the highest round moves: tick once per new round."""
        if round_ <= self._round:
            return []
        self._round = round_
        return self._safe.tick(round_)

    def decision(self, obs: DecisionObs) -> Step:
        alarms = self._detectors.decision(obs)
        transitions = self._alarmed(alarms)
        key = name_key(obs.qname, obs.qtype)
        guarded = self._safe.covers(obs.qname) or self._holds.pending(key)
        hold = self._holds.apply(key, obs.round, obs.trusted, obs.digest, guarded)
        transitions += self._advance(obs.round)
        return Step(alarms, transitions, hold)

    def lkg(self, ev: LkgEvent) -> Step:
        alarms = self._detectors.lkg(ev)
        return Step(alarms, self._alarmed(alarms) + self._advance(ev.round))

    def identity(self, ev: IdentityObs) -> Step:
        alarms = self._detectors.identity(ev)
        return Step(alarms, self._alarmed(alarms) + self._advance(ev.round))

    def operator(self, scope: Scope, enter: bool, reason: str) -> Transition | None:
        """The operator's command, effective at the current round."""
        return self._safe.operator(scope, enter, max(self._round, 0), reason)

    def snapshot(self) -> tuple[int, list[tuple[Scope, bool, int, int, str]]]:
        """The safe-mode state to store: the highest round seen and every active scope."""
        return self._round, self._safe.export()

    def restore(self, round_: int, scopes: Sequence[tuple[Scope, bool, int, int, str]]) -> int:
        """Restore a stored :meth:`snapshot` (into a fresh engine); returns the scopes restored.
        Automatic scopes then leave as usual once quiet (``tick``), manual ones only by the
        operator."""
        self._round = max(self._round, round_)
        return sum(self._safe.restore(*s) for s in scopes)

    def tick(self, round_: int) -> list[Transition]:
        """Time passes (rounds without decisions still count towards leaving)."""
        return self._advance(round_)
