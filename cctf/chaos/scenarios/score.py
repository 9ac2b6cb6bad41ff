"""Scoring trust checks against ground truth, and the report of a chaos run. Pure: no I/O, no clock.

A **check** is one trust decision a subscriber makes at one moment: the outcome its verified view
gives for a name (:class:`Seen`) and, when TRUSTED, the answer. It is scored against the **ground
truth** at that moment, the set of answers the honest zone gives (:class:`GroundTruth`):

* ``correct``: TRUSTED (fresh or LKG) with an answer ground truth gives;
* ``false_trust``: TRUSTED (fresh or LKG) with an answer ground truth does *not* give;
* ``false_deny``: DISPUTED (a definite "do not trust") for a name ground truth answers;
* ``unavailable``: no usable verdict (UNAVAILABLE, none, expired, stale or refused by policy).

``false_deny`` and ``unavailable`` fail closed. ``lkg_served`` counts the checks answered by an LKG
attestation (also counted in ``correct`` or ``false_trust``). ``integrity_pct`` = (correct +
false_deny + unavailable) / checks, ``availability_pct`` = correct / checks. The **time to recover**
is measured from the moment the last fault is lifted to the first check after which every check of
the run is correct (``None``: no fault is lifted, or it never recovered).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Answer = tuple[str, ...]


class Seen(StrEnum):
    """What a subscriber's verified view gives for a name at the moment of a check."""

    TRUSTED = "trusted"
    LKG = "lkg"
    DISPUTED = "disputed"
    UNAVAILABLE = "unavailable"


class Score(StrEnum):
    CORRECT = "correct"
    FALSE_TRUST = "false_trust"
    FALSE_DENY = "false_deny"
    UNAVAILABLE = "unavailable"


def answer_of(entries: Iterable[str]) -> Answer:
    """The canonical form of an answer (an RRset: order does not matter)."""
    return tuple(sorted(str(e).strip().lower() for e in entries))


@dataclass(frozen=True)
class TruthChange:
    """From ``at_ms`` (run time) the honest zone answers ``name`` with ``answer``. The previous
    answer stays acceptable for ``grace_ms`` more (resolvers and verdicts legitimately carry it
    until the next decided round)."""

    name: str
    at_ms: int
    answer: Answer
    grace_ms: int = 0


@dataclass(frozen=True)
class GroundTruth:
    """The honest zone at each moment: the initial answer of every name, then legitimate changes."""

    initial: Mapping[str, Answer]
    changes: Sequence[TruthChange] = ()

    def __post_init__(self) -> None:
        for c in self.changes:
            if c.name not in self.initial:
                raise ValueError(f"ground truth change for unknown name {c.name!r}")
            if c.at_ms < 0 or c.grace_ms < 0:
                raise ValueError("ground truth changes take non-negative times")
        per_name: dict[str, list[TruthChange]] = {}
        for c in sorted(self.changes, key=lambda c: c.at_ms):
            per_name.setdefault(c.name, []).append(c)
        object.__setattr__(self, "_per_name", per_name)

    def acceptable(self, name: str, t_ms: int) -> frozenset[Answer]:
        """The answers the honest zone gives for ``name`` at run time ``t_ms`` (empty: unknown)."""
        if name not in self.initial:
            return frozenset()
        changes: list[TruthChange] = self._per_name.get(name, [])  # type: ignore[attr-defined]
        i = bisect.bisect_right([c.at_ms for c in changes], t_ms)
        current = changes[i - 1].answer if i else self.initial[name]
        answers = {current}
        if i:
            last = changes[i - 1]
            previous = changes[i - 2].answer if i > 1 else self.initial[name]
            if t_ms < last.at_ms + last.grace_ms:
                answers.add(previous)
        return frozenset(answers)


def score(seen: Seen, answer: Answer, acceptable: frozenset[Answer]) -> Score:
    """Score one check (see the module docstring)."""
    if seen in (Seen.TRUSTED, Seen.LKG):
        return Score.CORRECT if answer in acceptable else Score.FALSE_TRUST
    if seen is Seen.DISPUTED:
        return Score.FALSE_DENY if acceptable else Score.CORRECT
    return Score.UNAVAILABLE


@dataclass
class Counts:
    checks: int = 0
    correct: int = 0
    false_trust: int = 0
    false_deny: int = 0
    unavailable: int = 0
    lkg_served: int = 0

    def add(self, s: Score, *, lkg: bool, n: int = 1) -> None:
        self.checks += n
        setattr(self, s.value, getattr(self, s.value) + n)
        if lkg:
            self.lkg_served += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "correct": self.correct,
            "false_trust": self.false_trust,
            "false_deny": self.false_deny,
            "unavailable": self.unavailable,
            "lkg_served": self.lkg_served,
            "integrity_pct": pct(self.checks - self.false_trust, self.checks),
            "availability_pct": pct(self.correct, self.checks),
        }


def pct(part: int, whole: int) -> float:
    """A percentage with 4 decimals that never rounds up to 100 unless ``part == whole``."""
    if whole == 0:
        return 100.0
    value = 100.0 * part / whole
    rounded = round(value, 4)
    if rounded >= 100.0 and part < whole:
        rounded = 99.9999
    return rounded


@dataclass(frozen=True)
class Phase:
    """A named window of a run, from ``start_ms`` to the next phase (or the end)."""

    name: str
    start_ms: int


@dataclass
class Report:
    """The aggregate of every check of a run, per run and per phase."""

    phases: Sequence[Phase] = ()
    recover_from_ms: int | None = None
    total: Counts = field(default_factory=Counts)
    per_phase: dict[str, Counts] = field(default_factory=dict)
    _last_bad_ms: int | None = None
    _first_ok_after_bad_ms: int | None = None
    _starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        starts = [p.start_ms for p in self.phases]
        if starts != sorted(starts) or len({p.name for p in self.phases}) != len(self.phases):
            raise ValueError("phases must be in time order with distinct names")
        self._starts = starts
        for p in self.phases:
            self.per_phase.setdefault(p.name, Counts())

    def phase_at(self, t_ms: int) -> str | None:
        i = bisect.bisect_right(self._starts, t_ms)
        return self.phases[i - 1].name if i else None

    def add(self, t_ms: int, s: Score, *, lkg: bool, n: int = 1) -> None:
        """Record ``n`` checks made at run time ``t_ms`` with score ``s``."""
        self.total.add(s, lkg=lkg, n=n)
        name = self.phase_at(t_ms)
        if name is not None:
            self.per_phase[name].add(s, lkg=lkg, n=n)
        if self.recover_from_ms is not None and t_ms >= self.recover_from_ms:
            if s is Score.CORRECT:
                if self._first_ok_after_bad_ms is None:
                    self._first_ok_after_bad_ms = t_ms
            else:
                self._last_bad_ms = t_ms
                self._first_ok_after_bad_ms = None

    @property
    def time_to_recover_ms(self) -> int | None:
        """From the lifting of the last fault to the first check after which all were correct."""
        if self.recover_from_ms is None or self._first_ok_after_bad_ms is None:
            return None
        return self._first_ok_after_bad_ms - self.recover_from_ms

    def group(self, phases: Iterable[str]) -> Counts:
        """The counts of several phases together."""
        out = Counts()
        for name in phases:
            c = self.per_phase[name]
            for key in ("checks", "correct", "false_trust", "false_deny", "unavailable"):
                setattr(out, key, getattr(out, key) + getattr(c, key))
            out.lkg_served += c.lkg_served
        return out

    def to_dict(self, groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """The report; ``groups``: named sets of phases also reported together."""
        out = self.total.to_dict()
        out["time_to_recover_ms"] = self.time_to_recover_ms
        for name, phases in (groups or {}).items():
            out[name] = {"phases": list(phases), **self.group(phases).to_dict()}
        out["phases"] = [
            {"phase": p.name, "start_ms": p.start_ms, **self.per_phase[p.name].to_dict()}
            for p in self.phases
        ]
        return out
