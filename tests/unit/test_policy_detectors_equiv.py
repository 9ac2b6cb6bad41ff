"""The detectors' hot path (restructured for speed: one state per name, voters as columns with a
cached layout, quiet samples counted in one step, alarms built only when they fire, flapping windows
as bit fields) gives exactly the alarms of the per-series implementation, kept here verbatim as the
reference (``ReferenceDetectors``, from main fe7c6bd), for any sequence of decisions and any
settings, as long as nothing is forgotten (the reference's stores never evict: ``max_series``
100,000). Past ``max_series`` the unit forgotten is a whole name (the reference forgot series and
windows one by one, region and voter series among them): the bounds and what is kept are tested
below."""

from __future__ import annotations

import functools
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.policy.baseline import Ewma
from cctf.policy.config import DetectorSettings, PolicyConfig
from cctf.policy.detectors import Detectors, name_key
from cctf.policy.model import Alarm, DecisionObs, Rule, Scope, VoterObs

V = TypeVar("V")

# ------------------------------------------------------------------------ the reference (old) code


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


class ReferenceDetectors:
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


# ------------------------------------------------------------------------------------- the property

REGIONS = ("us-east", "eu-west", "ap-south")
VOTERS = [(f"agent-{r}/r{i}", r) for r in REGIONS for i in (1, 2)]
DIGESTS = [bytes([i]) * 32 for i in range(1, 4)]

voter_obs = st.builds(
    VoterObs,
    st.sampled_from([v for v, _r in VOTERS]),
    st.sampled_from(REGIONS),
    st.one_of(st.none(), st.sampled_from(DIGESTS)),
    st.one_of(st.none(), st.integers(0, 86_400)),
)
decision_obs = st.builds(
    DecisionObs,
    st.sampled_from(["a.example.", "b.example.", "c.example.", "d.example."]),
    st.sampled_from(["A", "AAAA"]),
    st.integers(0, 30),
    st.booleans(),
    st.one_of(st.none(), st.sampled_from(DIGESTS)),
    st.lists(voter_obs, max_size=6).map(tuple),
)
detector_settings = st.builds(
    DetectorSettings,
    alpha=st.sampled_from([0.1, 0.5, 1.0]),
    warmup=st.integers(0, 3),
    min_std=st.sampled_from([0.01, 0.1, 1.0]),
    threshold=st.sampled_from([0.1, 0.5, 1.0, 3.5]),
)
policies = st.builds(
    PolicyConfig,
    flap_window=st.integers(2, 5),
    max_series=st.just(100_000),
    disagreement=detector_settings,
    region_disagreement=detector_settings,
    flapping=detector_settings,
    ttl_mismatch=detector_settings,
    answer_change=detector_settings,
)


@given(policies, st.lists(decision_obs, max_size=80))
@settings(max_examples=150, deadline=None)
def test_detectors_give_the_alarms_of_the_reference(
    config: PolicyConfig, decisions: list[DecisionObs]
) -> None:
    new, ref = Detectors(config, REGIONS), ReferenceDetectors(config, REGIONS)
    for obs in decisions:
        assert new.decision(obs) == ref.decision(obs)
        assert new.series == ref.series
    assert len(ref._windows) < config.max_series  # the reference never forgot anything


@given(
    st.sampled_from([16, 17, 40]),
    st.lists(st.tuples(st.integers(0, 60), decision_obs), max_size=120),
)
@settings(max_examples=60, deadline=None)
def test_the_stores_stay_bounded_and_forget_whole_names_oldest_first(
    limit: int, decisions: list[tuple[int, DecisionObs]]
) -> None:
    """Many names: at most ``max_series`` names, name series and flapping windows are kept (a name
    alone may hold more windows than that: as many as its voters), the newest name always."""
    det = Detectors(PolicyConfig(max_series=limit), REGIONS)
    for i, obs in decisions:
        qname = f"n{i}.example."
        det.decision(obs._replace(qname=qname))
        names = det._names
        assert qname + " " + obs.qtype in names
        assert len(names) <= limit
        assert det._name_series <= limit
        assert det._name_windows <= limit or len(names) == 1
        assert det._name_series == sum(s.sizes()[0] for s in names.values())
        assert det._name_windows == sum(s.sizes()[1] for s in names.values())
        assert len(det._region_series) <= limit and len(det._voter_series) <= limit


def test_the_name_decided_is_never_the_one_forgotten() -> None:
    """The least recently decided name goes first: a name decided again moves to the back, so
    with the stores full it is kept and the next oldest is forgotten (found by the property above:
    the oldest name decided again was itself forgotten in its own decision)."""
    a = DIGESTS[0]
    agree = tuple(VoterObs(v, region, a, 300) for v, region in VOTERS)
    det = Detectors(PolicyConfig(max_series=16), REGIONS)
    det.decision(DecisionObs("old.example.", "A", 0, True, a, agree))
    det.decision(DecisionObs("new.example.", "A", 0, True, a, agree))
    more = agree + tuple(VoterObs(f"extra{i}/r1", REGIONS[0], a, 300) for i in range(6))
    det.decision(DecisionObs("old.example.", "A", 1, True, a, more))  # its new windows: over
    assert list(det._names) == ["old.example. A"]
    assert det._name_windows <= 16 or len(det._names) == 1


def test_region_and_voter_baselines_survive_names_coming_and_going() -> None:
    """3,000 one-shot names through ``max_series`` 16 (the names are forgotten), then one
    disagreeing region: its baseline (3,000 quiet samples) is intact and it alarms at once. The
    per-series stores forgot the region series among the names' and missed it (warm-up again)."""
    config = PolicyConfig(max_series=16)
    new, ref = Detectors(config, REGIONS), ReferenceDetectors(config, REGIONS)
    a, b = DIGESTS[0], DIGESTS[1]
    agree = tuple(VoterObs(v, region, a, 300) for v, region in VOTERS)
    for i in range(3000):
        obs = DecisionObs(f"n{i}.example.", "A", 0, True, a, agree)
        assert new.decision(obs) == [] and ref.decision(obs) == []
    off = tuple(VoterObs(v, region, b if region == REGIONS[2] else a, 300) for v, region in VOTERS)
    spike = DecisionObs("spike.example.", "A", 1, True, a, off)
    got = [(x.rule, x.series) for x in new.decision(spike)]
    assert (Rule.REGION_DISAGREEMENT, f"region_disagreement:{REGIONS[2]}") in got
    assert not [x for x in ref.decision(spike) if x.rule is Rule.REGION_DISAGREEMENT]
    assert len(new._names) <= 16


def test_a_forgotten_name_starts_a_new_baseline() -> None:
    """A name forgotten (with all its state, oldest first) warms up again: the spike that alarms on
    a name kept with its baseline does not alarm right after the name came back."""
    a, b = DIGESTS[0], DIGESTS[1]
    agree = tuple(VoterObs(v, region, a, 300) for v, region in VOTERS)
    off = tuple(VoterObs(v, region, b if i < 3 else a, 300) for i, (v, region) in enumerate(VOTERS))
    alarms = {}
    for limit in (16, 100_000):
        det = Detectors(PolicyConfig(max_series=limit), REGIONS)
        for r in range(12):
            det.decision(DecisionObs("x.example.", "A", r, True, a, agree))
        for i in range(16):  # 16 newer names: with max_series 16, "x" is the oldest, forgotten
            det.decision(DecisionObs(f"n{i}.example.", "A", 12, True, a, agree))
        assert ("x.example. A" in det._names) is (limit > 16)
        spike = det.decision(DecisionObs("x.example.", "A", 13, False, None, off))
        alarms[limit] = [x for x in spike if x.rule is Rule.DISAGREEMENT]
    assert alarms[100_000] and not alarms[16]


def test_the_property_reaches_alarms_of_every_rule() -> None:
    """The strategies above are not vacuous: with a low threshold every rule of the hot path fires
    (the same inputs as the property, one fixed sequence)."""
    low = DetectorSettings(alpha=0.5, warmup=0, min_std=0.01, threshold=0.1)
    config = PolicyConfig(
        flap_window=3,
        max_series=16,
        disagreement=low,
        region_disagreement=low,
        flapping=low,
        ttl_mismatch=low,
        answer_change=low,
    )
    new, ref = Detectors(config, REGIONS), ReferenceDetectors(config, REGIONS)
    a, b = DIGESTS[0], DIGESTS[1]
    rules: set[Rule] = set()
    for r in range(12):
        winner = a if r % 3 else b
        voters = tuple(
            VoterObs(v, region, None if (r + i) % 4 == 0 else winner if i % 2 else a, 60 + 600 * i)
            for i, (v, region) in enumerate(VOTERS)
        )
        obs = DecisionObs("a.example.", "A", r, True, winner, voters)
        got = new.decision(obs)
        assert got == ref.decision(obs)
        rules |= {alarm.rule for alarm in got}
    assert rules >= {
        Rule.DISAGREEMENT,
        Rule.REGION_DISAGREEMENT,
        Rule.FLAPPING,
        Rule.TTL_MISMATCH,
        Rule.ANSWER_CHANGE,
    }
