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
from dataclasses import dataclass
from typing import NamedTuple

from cctf.policy.config import PolicyConfig
from cctf.policy.detectors import Detectors, Layout, name_key
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


class Step(NamedTuple):
    """What one input did: its alarms, the safe-mode transitions, and for a decision the hold's
    judgement (a named tuple: one per decision on the hot path)."""

    alarms: list[Alarm]
    transitions: list[Transition]
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
        voters = obs.voters
        return self.observe(
            obs.qname,
            obs.qtype,
            obs.round,
            obs.trusted,
            obs.digest,
            self._detectors.layout(tuple((v.voter, v.region) for v in voters)),
            tuple(v.digest or b"" for v in voters),
            tuple(v.ttl for v in voters),
        )

    def layout(self, pairs: tuple[tuple[str, str], ...]) -> Layout:
        """The detectors' (cached) :class:`~cctf.policy.detectors.Layout` of ``(voter, region)``."""
        return self._detectors.layout(pairs)

    def observe(
        self,
        qname: str,
        qtype: str,
        round_: int,
        trusted: bool,
        digest: bytes | None,
        layout: Layout,
        digests: tuple[bytes, ...],
        ttls: Sequence[int | None],
    ) -> Step:
        """:meth:`decision` with the voters as columns (the coordinator's hot path: no object per
        voter): the voters of ``layout``, each one's answer digest (``b""``: none) and, for a
        TRUSTED decision, its TTL (see :meth:`Detectors.observe`)."""
        key = name_key(qname, qtype)
        alarms = self._detectors.observe(key, qname, round_, trusted, digest, layout, digests, ttls)
        transitions = self._alarmed(alarms) if alarms else []
        hold = self._holds.apply(key, round_, trusted, digest, self._safe.covers(qname))
        if round_ > self._round:
            transitions += self._advance(round_)
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
