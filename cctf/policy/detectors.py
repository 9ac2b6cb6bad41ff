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
all of them). Everything is a function of the inputs in order: the same inputs give the same alarms.

Bounds (``max_series``): a name's state (its three series, its voters' flapping windows and its last
TRUSTED answer) is kept together, and the name decided least recently is forgotten first, with all
of it (the name being decided never), while the
names, their series or their windows exceed ``max_series``; the region and voter series (as many as
the electorate has regions and voters) are kept in their own stores of at most ``max_series`` each
(oldest first), so names coming and going never reset a region's or a resolver's baseline. Below
these bounds (nothing forgotten) the alarms are exactly those of the per-series stores this
replaced (tests/unit/test_policy_detectors_equiv.py keeps that implementation as the reference).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, TypeVar, cast

import msgspec

from cctf.policy.baseline import Ewma, Score
from cctf.policy.config import DetectorSettings, PolicyConfig
from cctf.policy.model import Alarm, DecisionObs, IdentityObs, LkgEvent, Rule, Scope

__all__ = ["Bounded", "Detectors", "Layout", "name_key"]

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)

#: Bound on the cached series names of voters and regions (the electorate is bounded by config).
_NAME_CACHE: Final = 4096


class Bounded(Generic[K, V]):
    """A dict bounded to ``limit`` entries: the oldest inserted is forgotten first (O(1): an
    ``OrderedDict``; a plain dict's ``next(iter(d))`` walks every slot deleted before it, measured
    37 us per eviction at 100,000 entries)."""

    __slots__ = ("_d", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._d: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: K) -> V | None:
        return self._d.get(key)

    def put(self, key: K, value: V) -> None:
        d = self._d
        if key not in d and len(d) >= self._limit:
            d.popitem(last=False)
        d[key] = value

    def setdefault(self, key: K, make: Callable[[], V]) -> V:
        value = self._d.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value


def name_key(qname: str, qtype: str) -> str:
    return f"{qname} {qtype}"


#: One (voter, name)'s flapping window: ``(bits, length, changes)``, the last ``length`` (at most
#: ``flap_window``) statuses newest in bit 0 (1: an answer) and the changes between neighbours
#: (an immutable tuple per entry: no object per window beyond it).
_WindowState = tuple[int, int, int]
_EMPTY_WINDOW: Final[_WindowState] = (0, 0, 0)


def _push(state: _WindowState, status: bool, size: int) -> _WindowState:
    """``state`` with ``status`` appended (the oldest status dropped beyond ``size``)."""
    bits, length, changes = state
    if length and (bits & 1) != status:
        changes += 1
    bits = (bits << 1) | status
    length += 1
    if length > size:  # drop the oldest (bit ``size``); the new oldest is bit ``size - 1``
        if ((bits >> size) ^ (bits >> (size - 1))) & 1:
            changes -= 1
        bits &= (1 << size) - 1
        length = size
    return bits, length, changes


class Layout:
    """The voters of a decision as the hot path reads them, computed once per distinct electorate
    (:meth:`Detectors.layout`, cached): each voter's id and region, and the regions sorted with the
    indices of their voters."""

    __slots__ = ("groups", "regions", "voters")

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.voters: tuple[str, ...] = tuple(v for v, _r in pairs)
        self.regions: tuple[str, ...] = tuple(r for _v, r in pairs)
        members: dict[str, list[int]] = {}
        for i, (_v, r) in enumerate(pairs):
            members.setdefault(r, []).append(i)
        self.groups: tuple[tuple[str, tuple[int, ...]], ...] = tuple(
            (r, tuple(members[r])) for r in sorted(members)
        )


class _Name(msgspec.Struct, gc=False):
    """Everything kept for one name: its three series (``None`` until their first sample), its last
    TRUSTED ``(round, digest)`` and each voter's flapping window (one lookup per decision). Untracked
    by the cyclic GC (``gc=False``: its series hold numbers and its windows dict strings and tuples
    of integers, so it can be in no cycle); a detector holds up to ``max_series`` of them."""

    disagreement: Ewma | None = None
    ttl: Ewma | None = None
    change: Ewma | None = None
    last: tuple[int, bytes] | None = None
    windows: dict[str, _WindowState] = {}

    def sizes(self) -> tuple[int, int]:
        """``(series, windows)`` held."""
        n = (self.disagreement is not None) + (self.ttl is not None) + (self.change is not None)
        return n, len(self.windows)


def _first(x: float) -> Ewma:
    """A series after its first sample: what ``Ewma().alarm(x, s)`` leaves (no score is possible
    before a first sample, whatever the warm-up)."""
    e = Ewma()
    e.mean = x
    e.samples = 1
    return e


#: Bound on the cached layouts (one per distinct electorate: a handful in a deployment).
_LAYOUTS: Final = 256


def _plurality(digests: Sequence[bytes]) -> bytes | None:
    if not digests:
        return None
    if len(digests) == 1:
        return digests[0]
    counts = Counter(digests)
    best = max(counts.values())
    return min(d for d, c in counts.items() if c == best)  # ties: the smallest digest


class Detectors:
    """The detectors of the module doc. Hot path (:meth:`observe`, once per decided key): one lookup
    of the name's state, a quiet sample (zero variance, equal to the mean: the steady state) counted
    in one step, every other sample through :meth:`Ewma.alarm`; series names, scopes and details
    are built only for a sample that alarms."""

    def __init__(self, config: PolicyConfig, regions: Sequence[str]) -> None:
        self._cfg = config
        self._regions = tuple(regions)
        self._limit = limit = config.max_series
        self._names: OrderedDict[str, _Name] = OrderedDict()
        self._name_series = 0  # the series held by the names' states
        self._name_windows = 0  # the flapping windows held by the names' states
        self._region_series: Bounded[str, Ewma] = Bounded(limit)  # by region
        self._voter_series: Bounded[str, Ewma] = Bounded(limit)  # by voter (flapping)
        self._layouts: dict[tuple[tuple[str, str], ...], Layout] = {}
        self._lkg: Bounded[str, bool] = Bounded(limit)
        self._leaf: Bounded[str, tuple[bytes, int]] = Bounded(limit)

    @property
    def series(self) -> int:
        return self._name_series + len(self._region_series) + len(self._voter_series)

    def layout(self, pairs: tuple[tuple[str, str], ...]) -> Layout:
        """The :class:`Layout` of voters ``(voter, region)`` in this order (cached, bounded)."""
        layout = self._layouts.get(pairs)
        if layout is None:
            if len(self._layouts) >= _LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[pairs] = Layout(pairs)
        return layout

    def _name_scopes(self, name: str) -> tuple[Scope, ...]:
        return tuple(Scope(r, name) for r in self._regions)

    @staticmethod
    def _alarm(
        rule: Rule,
        series: str,
        round_: int,
        score: Score,
        settings: DetectorSettings,
        scopes: tuple[Scope, ...],
        detail: str,
    ) -> Alarm:
        return Alarm(
            rule,
            series,
            round_,
            score.value,
            score.mean,
            score.std,
            score.z,
            settings.threshold,
            scopes,
            detail,
        )

    def _fold_keyed(
        self, store: Bounded[str, Ewma], key: str, value: float, settings: DetectorSettings
    ) -> Score | None:
        """Fold ``value`` into the region or voter series ``key``; the score when it alarms."""
        ewma = store._d.get(key)
        if ewma is None:
            store.put(key, _first(value))
            return None
        if ewma.var == 0.0 and ewma.mean == value:  # quiet: z = 0 < threshold, d = 0
            ewma.samples += 1
            return None
        return ewma.alarm(value, settings)

    def decision(self, obs: DecisionObs) -> list[Alarm]:
        """:meth:`observe` for one :class:`DecisionObs` (a voter's digest ``None`` or empty: no
        answer)."""
        voters = obs.voters
        layout = self.layout(tuple((v.voter, v.region) for v in voters))
        return self.observe(
            name_key(obs.qname, obs.qtype),
            obs.qname,
            obs.round,
            obs.trusted,
            obs.digest,
            layout,
            tuple(v.digest or b"" for v in voters),
            tuple(v.ttl for v in voters),
        )

    def observe(
        self,
        name: str,
        qname: str,
        round_: int,
        trusted: bool,
        digest: bytes | None,
        layout: Layout,
        digests: tuple[bytes, ...],
        ttls: Sequence[int | None],
    ) -> list[Alarm]:
        """A decision on ``name`` (:func:`name_key` of ``qname``): ``trusted`` with the winning
        ``digest``, or not; the answer digest of each voter of ``layout`` (``b""``: no answer) and,
        for a TRUSTED decision, the TTL of its answer (``None``: unknown; ignored otherwise)."""
        cfg = self._cfg
        out: list[Alarm] = []
        voters = layout.voters
        n = len(voters)
        names = self._names
        state = names.get(name)
        if state is None:
            state = names[name] = _Name()
        else:  # least recently decided first out: the name being decided is never forgotten
            names.move_to_end(name)
        plural = digest if trusted else _plurality([d for d in digests if d])
        unanswered = digests.count(b"")
        if plural and digests.count(plural) + unanswered == n:
            off: set[str] | tuple[()] = ()  # nobody off the plurality (the common case)
        else:
            off = {v for v, d in zip(voters, digests, strict=True) if d and d != plural}
        # ---- disagreement (name)
        if n:
            n_off = len(off)
            x = n_off / n
            e = state.disagreement
            if e is None:
                state.disagreement = _first(x)
                self._name_series += 1
            elif e.var == 0.0 and e.mean == x:
                e.samples += 1
            else:
                score = e.alarm(x, cfg.disagreement)
                if score is not None:
                    out.append(
                        self._alarm(
                            Rule.DISAGREEMENT,
                            "disagreement:" + name,
                            round_,
                            score,
                            cfg.disagreement,
                            self._name_scopes(qname),
                            f"{n_off} of {n} voters off the plurality answer",
                        )
                    )
        # ---- region disagreement (region)
        settings = cfg.region_disagreement
        store = self._region_series
        series_of = store._d.get
        for region, members in layout.groups:
            r_off = sum(voters[i] in off for i in members) if off else 0
            x = r_off / len(members)
            e = series_of(region)
            if e is not None and e.var == 0.0 and e.mean == x:  # quiet (as _fold_keyed)
                e.samples += 1
                continue
            score = self._fold_keyed(store, region, x, settings)
            if score is not None:
                out.append(
                    self._alarm(
                        Rule.REGION_DISAGREEMENT,
                        "region_disagreement:" + region,
                        round_,
                        score,
                        settings,
                        (Scope(region),),
                        f"{r_off} of {len(members)} voters of {region} off the plurality on {name}",
                    )
                )
        # ---- flapping (voter), over its window on this name
        windows, settings, size = state.windows, cfg.flapping, cfg.flap_window
        store = self._voter_series
        series_of = store._d.get
        for i in range(n):
            voter = voters[i]
            status = bool(digests[i])
            window = windows.get(voter)
            if window is None:
                window = windows[voter] = (int(status), 1, 0)
                self._name_windows += 1
            elif not (window[2] == 0 and window[1] == size and (window[0] & 1) == status):
                window = windows[voter] = _push(window, status, size)  # else: steady, unchanged
            changes = window[2]
            e = series_of(voter)
            if e is not None and e.var == 0.0 and e.mean == changes:  # quiet (as _fold_keyed)
                e.samples += 1
                continue
            score = self._fold_keyed(store, voter, float(changes), settings)
            if score is not None:
                out.append(
                    self._alarm(
                        Rule.FLAPPING,
                        "flapping:" + voter,
                        round_,
                        score,
                        settings,
                        (Scope(layout.regions[i]),),
                        f"{changes} status changes on {name} in the last {window[1]} observations",
                    )
                )
        if trusted and digest is not None:
            # ---- TTL mismatch (name): the TTLs of the voters that gave the winning answer
            if not digest:  # nobody answered "": no TTL
                agreeing: Sequence[int] = ()
            elif digests.count(digest) == n and None not in ttls:  # unanimous, every TTL known
                agreeing = cast("Sequence[int]", ttls)
            else:
                agreeing = [
                    t for d, t in zip(digests, ttls, strict=True) if d == digest and t is not None
                ]
            if len(agreeing) >= 2:
                lo, hi = min(agreeing), max(agreeing)
                x = 0.0 if lo == hi else math.log2(hi + 1) - math.log2(lo + 1)
                e = state.ttl
                if e is None:
                    state.ttl = _first(x)
                    self._name_series += 1
                elif e.var == 0.0 and e.mean == x:
                    e.samples += 1
                else:
                    score = e.alarm(x, cfg.ttl_mismatch)
                    if score is not None:
                        out.append(
                            self._alarm(
                                Rule.TTL_MISMATCH,
                                "ttl_mismatch:" + name,
                                round_,
                                score,
                                cfg.ttl_mismatch,
                                self._name_scopes(qname),
                                f"TTLs {lo}..{hi} among the agreeing voters",
                            )
                        )
            # ---- answer change (name)
            last = state.last
            if last is None or round_ > last[0]:
                state.last = (round_, digest)
                if last is not None:
                    previous = last[1]
                    x = 1.0 if digest != previous else 0.0
                    e = state.change
                    if e is None:
                        state.change = _first(x)
                        self._name_series += 1
                    elif e.var == 0.0 and e.mean == x:
                        e.samples += 1
                    else:
                        score = e.alarm(x, cfg.answer_change)
                        if score is not None:
                            out.append(
                                self._alarm(
                                    Rule.ANSWER_CHANGE,
                                    "answer_change:" + name,
                                    round_,
                                    score,
                                    cfg.answer_change,
                                    self._name_scopes(qname),
                                    f"answer {digest.hex()[:12]} after {previous.hex()[:12]}",
                                )
                            )
        limit = self._limit
        if self._name_series > limit or self._name_windows > limit or len(self._names) > limit:
            self._forget()
        return out

    def _forget(self) -> None:
        """Forget the names decided least recently (with all their state) until the bounds hold again (the newest
        name is kept even alone: its windows are bounded by its electorate)."""
        names, limit = self._names, self._limit
        while len(names) > 1 and (
            self._name_series > limit or self._name_windows > limit or len(names) > limit
        ):
            _name, state = names.popitem(last=False)
            series, windows = state.sizes()
            self._name_series -= series
            self._name_windows -= windows

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
