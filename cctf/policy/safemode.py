"""Safe mode: a state machine per scope with hysteresis, and the hold on changed answers (pure).

**Scopes** (:class:`~cctf.policy.model.Scope`): a region, or one name in a region. A scope is entered
by an alarm (when automatic safe mode is on) or by the operator, and left

* automatically once ``quiet_rounds`` (M) rounds passed since it was entered *and* since its last
  alarm: ``round - max(entered, last_alarm) >= M`` (an alarm while in safe mode restarts the count,
  so an automatic scope never leaves sooner than M rounds after entering or after its last alarm);
* or by the operator. A scope the operator entered (or took over) never leaves automatically.

At most ``max_scopes`` name scopes are kept per region (255: every announcement lists a region's
active scopes, at most 256); an alarm (or operator command) beyond that enters its *region* scope
instead (fail closed: the region scope covers every name).

**Answer hold** (:class:`AnswerHolds`): per ``(qname, qtype)`` the last answer let through as TRUSTED,
and a *candidate*: a different answer the quorum gave while the name was guarded (in safe mode). The
candidate becomes TRUSTED once it was the quorum's TRUSTED answer in ``hold_rounds`` (N) rounds (of
increasing round numbers; rounds without a TRUSTED decision neither count nor reset it); a TRUSTED
decision for any other answer resets it, and one for the previous answer clears it (that answer
stays TRUSTED). Until then the decision is *held*: the coordinator publishes it as UNAVAILABLE (see
``docs/policy.md``). A name under hold stays guarded after its scope left safe mode, until the
candidate completes or is cleared; a guarded name with no TRUSTED answer yet holds its first answer
too. So, in safe mode, a TRUSTED verdict either repeats the answer trusted before or carries an
answer the quorum gave in N rounds: a flip shorter than N rounds is never TRUSTED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from cctf.policy.detectors import Bounded
from cctf.policy.model import Scope

__all__ = ["AnswerHolds", "Cause", "HoldResult", "SafeMode", "Transition"]


class Cause(enum.StrEnum):
    ALARM = "alarm"
    OPERATOR = "operator"
    QUIET = "quiet"


@dataclass(frozen=True, slots=True)
class Transition:
    scope: Scope
    entered: bool
    cause: Cause
    round: int
    reason: str
    rule: str = ""  # the detector's rule when the cause is an alarm


@dataclass(slots=True)
class _State:
    manual: bool
    entered: int
    last_alarm: int
    reason: str


class SafeMode:
    def __init__(self, quiet_rounds: int, max_scopes: int = 255) -> None:
        if quiet_rounds < 1 or max_scopes < 1:
            raise ValueError("quiet_rounds and max_scopes must be positive")
        self._quiet = quiet_rounds
        self._max = max_scopes
        self._scopes: dict[Scope, _State] = {}
        self._names: dict[str, int] = {}
        self._regions = 0
        self._by_region: dict[str, set[str]] = {}

    @property
    def quiet_rounds(self) -> int:
        return self._quiet

    def active(self) -> tuple[Scope, ...]:
        return tuple(sorted(self._scopes))

    def is_active(self, scope: Scope) -> bool:
        return scope in self._scopes

    def is_manual(self, scope: Scope) -> bool:
        state = self._scopes.get(scope)
        return state is not None and state.manual

    def reason(self, scope: Scope) -> str:
        state = self._scopes.get(scope)
        return "" if state is None else state.reason

    def names_in(self, region: str) -> list[str]:
        """The active scopes of ``region`` as names (``""``: the region), sorted."""
        return sorted(self._by_region.get(region, ()))

    def covers(self, name: str) -> bool:
        """Whether some active scope covers ``name`` (a region scope covers every name)."""
        return self._regions > 0 or name in self._names

    def _full(self, scope: Scope) -> bool:
        """A new name scope would exceed ``max_scopes`` name scopes in its region."""
        return not scope.is_region and len(self._by_region.get(scope.region, ())) >= self._max

    def _enter(self, scope: Scope, state: _State) -> None:
        self._scopes[scope] = state
        self._by_region.setdefault(scope.region, set()).add(scope.name)
        if scope.is_region:
            self._regions += 1
        else:
            self._names[scope.name] = self._names.get(scope.name, 0) + 1

    def _leave(self, scope: Scope) -> None:
        del self._scopes[scope]
        names = self._by_region[scope.region]
        names.discard(scope.name)
        if not names:
            del self._by_region[scope.region]
        if scope.is_region:
            self._regions -= 1
        else:
            left = self._names[scope.name] - 1
            if left:
                self._names[scope.name] = left
            else:
                del self._names[scope.name]

    def alarm(self, scope: Scope, round_: int, why: str, rule: str = "") -> Transition | None:
        """An alarm asks for safe mode in ``scope``: enter it, or restart its quiet count."""
        state = self._scopes.get(scope)
        if state is not None:
            state.last_alarm = max(state.last_alarm, round_)
            return None
        if self._full(scope):
            scope = Scope(scope.region)
            why = f"{why} [scope table full: whole region]"
            state = self._scopes.get(scope)
            if state is not None:
                state.last_alarm = max(state.last_alarm, round_)
                return None
        self._enter(scope, _State(False, round_, round_, why))
        return Transition(scope, True, Cause.ALARM, round_, why, rule)

    def operator(self, scope: Scope, enter: bool, round_: int, reason: str) -> Transition | None:
        """The operator enters (the scope becomes manual) or leaves ``scope``."""
        state = self._scopes.get(scope)
        if enter:
            if state is not None:
                changed = not state.manual
                state.manual = True
                state.reason = reason
                return Transition(scope, True, Cause.OPERATOR, round_, reason) if changed else None
            if self._full(scope):
                scope, reason = Scope(scope.region), f"{reason} [scope table full: whole region]"
                state = self._scopes.get(scope)
                if state is not None:
                    changed = not state.manual
                    state.manual, state.reason = True, reason
                    return (
                        Transition(scope, True, Cause.OPERATOR, round_, reason) if changed else None
                    )
            self._enter(scope, _State(True, round_, round_, reason))
            return Transition(scope, True, Cause.OPERATOR, round_, reason)
        if state is None:
            return None
        self._leave(scope)
        return Transition(scope, False, Cause.OPERATOR, round_, reason)

    def export(self) -> list[tuple[Scope, bool, int, int, str]]:
        """Every active scope as ``(scope, manual, entered, last_alarm, reason)``, sorted (what the
        coordinator stores so the state survives a restart)."""
        return [
            (s, st.manual, st.entered, st.last_alarm, st.reason)
            for s, st in sorted(self._scopes.items())
        ]

    def restore(
        self, scope: Scope, manual: bool, entered: int, last_alarm: int, reason: str
    ) -> bool:
        """Re-enter a stored scope (no transition: it was announced before); ``False`` when it is
        active already or its region's name table is full."""
        if scope in self._scopes or self._full(scope):
            return False
        self._enter(scope, _State(manual, entered, max(entered, last_alarm), reason))
        return True

    def tick(self, round_: int) -> list[Transition]:
        """Leave every automatic scope quiet for ``quiet_rounds`` rounds at ``round_``."""
        out: list[Transition] = []
        for scope, state in sorted(self._scopes.items()):
            if state.manual:
                continue
            since = max(state.entered, state.last_alarm)
            if round_ - since >= self._quiet:
                self._leave(scope)
                out.append(
                    Transition(
                        scope,
                        False,
                        Cause.QUIET,
                        round_,
                        f"no alarm for {round_ - since} rounds (quiet_rounds {self._quiet})",
                    )
                )
        return out


@dataclass(frozen=True, slots=True)
class HoldResult:
    trusted: bool  # the decision may stand as TRUSTED (False for non-TRUSTED input, or held)
    held: bool  # a TRUSTED decision the hold turns into a non-TRUSTED verdict
    streak: int  # rounds the candidate answer has held so far (0: none)
    reason: str


_PASS = HoldResult(True, False, 0, "")
_NOT_TRUSTED = HoldResult(False, False, 0, "")


class _Hold(msgspec.Struct, gc=False):
    """One key's hold (untracked by the cyclic GC: bytes and integers only, so in no cycle; a
    holder keeps up to ``limit`` of them)."""

    trusted: bytes | None = None
    candidate: bytes | None = None
    streak: int = 0
    last_round: int = -1


class AnswerHolds:
    def __init__(self, hold_rounds: int, limit: int = 100_000) -> None:
        if hold_rounds < 1:
            raise ValueError("hold_rounds must be positive")
        self._n = hold_rounds
        self._holds: Bounded[str, _Hold] = Bounded(limit)

    @property
    def hold_rounds(self) -> int:
        return self._n

    def pending(self, key: str) -> bool:
        h = self._holds.get(key)
        return h is not None and h.candidate is not None

    def trusted_digest(self, key: str) -> bytes | None:
        h = self._holds.get(key)
        return None if h is None else h.trusted

    def apply(
        self, key: str, round_: int, trusted: bool, digest: bytes | None, guarded: bool
    ) -> HoldResult:
        """The hold's verdict on a decision for ``key`` in ``round_`` (see the module docstring).

        ``guarded``: a safe-mode scope covers the name; a name with a pending candidate is guarded
        whatever it says (until the candidate completes or is cleared)."""
        if not trusted or digest is None:
            return _NOT_TRUSTED
        holds = self._holds
        h = holds._d.get(key)
        if h is None:
            h = _Hold()
            holds.put(key, h)
        if digest == h.trusted:
            if round_ > h.last_round:
                h.candidate, h.streak, h.last_round = None, 0, round_
            return _PASS
        if h.candidate is None and not guarded:
            h.trusted, h.last_round = digest, max(h.last_round, round_)
            return _PASS
        if round_ <= h.last_round:  # a late decision of an older round: held, counts nothing
            return HoldResult(False, True, h.streak, f"late round {round_} of a held change")
        h.last_round = round_
        if h.candidate == digest:
            h.streak += 1
        else:
            h.candidate, h.streak = digest, 1
        if h.streak >= self._n:
            h.trusted, h.candidate, streak = digest, None, h.streak
            h.streak = 0
            return HoldResult(True, False, streak, f"changed answer held {streak} rounds")
        return HoldResult(
            False,
            True,
            h.streak,
            f"safe mode: changed answer held {h.streak} of {self._n} rounds",
        )
