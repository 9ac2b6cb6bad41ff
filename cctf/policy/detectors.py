"""The detectors: per-series baselines and rules over decisions, LKG events and identity evidence.

Series (one :class:`~cctf.policy.baseline.Ewma` each; ``<name>`` is ``"<qname> <qtype>"``):

============================  ==============================================================  =====
series                        sample (one per decision unless said otherwise)                  scope
============================  ==============================================================  =====
``disagreement:<name>``       share of the electorate whose answer is not the plurality        name
                              answer (the winning one when TRUSTED)
``region_disagreement:<r>``   the same share among region ``r``'s voters                       region
``flapping:<voter>``          status changes (answer / no answer) of that voter for that       region
                              name over its last ``flap_window`` observations
``ttl_mismatch:<name>``       ``log2(max+1) - log2(min+1)`` of the TTLs of the voters that     name
                              gave the winning answer (TRUSTED, at least two TTLs)
``answer_change:<name>``      1 when a TRUSTED answer differs from the previous TRUSTED one,   name
                              else 0 (TRUSTED decisions of a later round only)
============================  ==============================================================  =====

Rules without a baseline: ``lkg_use`` alarms when a name starts being served from LKG;
``identity_drift`` when a workload's quorum leaf key changes and the new leaf is not newer
(``not_before``) than the previous one (a rotation issues a newer leaf).

A name scope is raised in every configured region (the coordinator decides one verdict per name for
all of them). Every store is bounded by ``max_series`` (oldest entry forgotten first), and everything
is a function of the inputs in order: the same inputs give the same alarms.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from cctf.policy.baseline import Ewma
from cctf.policy.config import DetectorSettings, PolicyConfig
from cctf.policy.model import Alarm, DecisionObs, IdentityObs, LkgEvent, Rule, Scope

__all__ = ["Bounded", "Detectors", "name_key"]

V = TypeVar("V")


class Bounded(Generic[V]):
    """A dict bounded to ``limit`` entries: the oldest inserted is forgotten first."""

    __slots__ = ("_d", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._d: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str) -> V | None:
        return self._d.get(key)

    def put(self, key: str, value: V) -> None:
        if key not in self._d and len(self._d) >= self._limit:
            del self._d[next(iter(self._d))]
        self._d[key] = value

    def setdefault(self, key: str, make: Callable[[], V]) -> V:
        value = self._d.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value


def name_key(qname: str, qtype: str) -> str:
    return f"{qname} {qtype}"


def _region_scope(region: str) -> tuple[Scope, ...]:
    return (Scope(region),)


class _Window:
    """The last ``size`` statuses of one (voter, name) and the number of changes between them,
    kept incrementally."""

    __slots__ = ("_items", "_size", "changes")

    def __init__(self, size: int) -> None:
        self._items: deque[bool] = deque()
        self._size = size
        self.changes = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, status: bool) -> int:
        items = self._items
        if items and items[-1] != status:
            self.changes += 1
        items.append(status)
        if len(items) > self._size:
            first = items.popleft()
            if first != items[0]:
                self.changes -= 1
        return self.changes


def _plurality(digests: Sequence[bytes]) -> bytes | None:
    if not digests:
        return None
    counts = Counter(digests)
    best = max(counts.values())
    return min(d for d, c in counts.items() if c == best)  # ties: the smallest digest


class Detectors:
    def __init__(self, config: PolicyConfig, regions: Sequence[str]) -> None:
        self._cfg = config
        self._regions = tuple(regions)
        limit = config.max_series
        self._series: Bounded[Ewma] = Bounded(limit)
        self._windows: Bounded[_Window] = Bounded(limit)
        self._last_trusted: Bounded[tuple[int, bytes]] = Bounded(limit)
        self._lkg: Bounded[bool] = Bounded(limit)
        self._leaf: Bounded[tuple[bytes, int]] = Bounded(limit)

    @property
    def series(self) -> int:
        return len(self._series)

    def _name_scopes(self, name: str) -> tuple[Scope, ...]:
        return tuple(Scope(r, name) for r in self._regions)

    def _sample(
        self,
        rule: Rule,
        series: str,
        round_: int,
        value: float,
        settings: DetectorSettings,
        scopes: Callable[[], tuple[Scope, ...]],
        out: list[Alarm],
        detail: Callable[[], str] = str,
    ) -> None:
        """Fold ``value`` into ``series``; on an alarm, build it (scopes and detail only then)."""
        ewma = self._series.get(series)
        if ewma is None:
            ewma = Ewma()
            self._series.put(series, ewma)
        score = ewma.alarm(value, settings)
        if score is not None:
            out.append(
                Alarm(
                    rule,
                    series,
                    round_,
                    score.value,
                    score.mean,
                    score.std,
                    score.z,
                    settings.threshold,
                    scopes(),
                    detail(),
                )
            )

    def decision(self, obs: DecisionObs) -> list[Alarm]:
        cfg = self._cfg
        out: list[Alarm] = []
        name = name_key(obs.qname, obs.qtype)
        voters = obs.voters
        answering = [v for v in voters if v.digest is not None]
        plural = (
            obs.digest if obs.trusted else _plurality([v.digest for v in answering if v.digest])
        )
        off = {v.voter for v in answering if v.digest != plural}
        scopes = functools.partial(self._name_scopes, obs.qname)
        if voters:
            n_off, n = len(off), len(voters)
            self._sample(
                Rule.DISAGREEMENT,
                f"disagreement:{name}",
                obs.round,
                n_off / n,
                cfg.disagreement,
                scopes,
                out,
                lambda: f"{n_off} of {n} voters off the plurality answer",
            )
        regions: dict[str, list[int]] = {}
        for v in voters:
            counts = regions.get(v.region)
            if counts is None:
                counts = regions[v.region] = [0, 0]
            counts[0] += 1
            counts[1] += v.voter in off
        for region in sorted(regions):
            members, r_off = regions[region]
            self._sample(
                Rule.REGION_DISAGREEMENT,
                f"region_disagreement:{region}",
                obs.round,
                r_off / members,
                cfg.region_disagreement,
                functools.partial(_region_scope, region),
                out,
                functools.partial(
                    "{} of {} voters of {} off the plurality on {}".format,
                    r_off,
                    members,
                    region,
                    name,
                ),
            )
        for v in voters:
            window = self._windows.get(f"{v.voter} {name}")
            if window is None:
                window = _Window(cfg.flap_window)
                self._windows.put(f"{v.voter} {name}", window)
            changes = window.push(v.digest is not None)
            self._sample(
                Rule.FLAPPING,
                f"flapping:{v.voter}",
                obs.round,
                float(changes),
                cfg.flapping,
                functools.partial(_region_scope, v.region),
                out,
                functools.partial(
                    "{} status changes on {} in the last {} observations".format,
                    changes,
                    name,
                    len(window),
                ),
            )
        if obs.trusted and obs.digest is not None:
            digest = obs.digest
            ttls = [v.ttl for v in answering if v.digest == digest and v.ttl is not None]
            if len(ttls) >= 2:
                lo, hi = min(ttls), max(ttls)
                self._sample(
                    Rule.TTL_MISMATCH,
                    f"ttl_mismatch:{name}",
                    obs.round,
                    math.log2(hi + 1) - math.log2(lo + 1),
                    cfg.ttl_mismatch,
                    scopes,
                    out,
                    lambda: f"TTLs {lo}..{hi} among the agreeing voters",
                )
            last = self._last_trusted.get(name)
            if last is None or obs.round > last[0]:
                self._last_trusted.put(name, (obs.round, digest))
                if last is not None:
                    previous = last[1]
                    self._sample(
                        Rule.ANSWER_CHANGE,
                        f"answer_change:{name}",
                        obs.round,
                        1.0 if digest != previous else 0.0,
                        cfg.answer_change,
                        scopes,
                        out,
                        lambda: f"answer {digest.hex()[:12]} after {previous.hex()[:12]}",
                    )
        return out

    def lkg(self, ev: LkgEvent) -> list[Alarm]:
        name = name_key(ev.qname, ev.qtype)
        was = self._lkg.get(name) or False
        self._lkg.put(name, ev.active)
        if not ev.active or was:
            return []
        return [
            Alarm(
                Rule.LKG_USE,
                f"lkg_use:{name}",
                ev.round,
                1.0,
                0.0,
                0.0,
                math.inf,
                1.0,
                self._name_scopes(ev.qname),
                "served from LKG instead of a fresh quorum",
            )
        ]

    def identity(self, ev: IdentityObs) -> list[Alarm]:
        prev = self._leaf.get(ev.workload)
        self._leaf.put(ev.workload, (ev.key_digest, ev.not_before_ms))
        if prev is None or prev[0] == ev.key_digest:
            return []
        key, not_before = prev
        if ev.not_before_ms > 0 and not_before > 0 and ev.not_before_ms > not_before:
            return []  # a rotation: a newer leaf with a new key
        return [
            Alarm(
                Rule.IDENTITY_DRIFT,
                f"identity_drift:{ev.workload}",
                ev.round,
                1.0,
                0.0,
                0.0,
                math.inf,
                1.0,
                self._name_scopes(ev.workload),
                f"leaf key {ev.key_digest.hex()[:12]} replaced {key.hex()[:12]} without a newer "
                f"leaf (not_before {ev.not_before_ms} <= {not_before})",
            )
        ]
