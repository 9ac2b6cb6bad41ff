"""Chaos scenarios as data: parameters, the fault schedule, phases and ground-truth changes (pure).

A :class:`Scenario` is built by :func:`build` from its name and options. Its schedule is a tuple of
:class:`Step` (``at_round`` rounds after the first round, an ``action`` and its ``args``) that the
runner (:mod:`cctf.chaos.runner`) applies through the chaos control channel and the fabric. Times
of the run are in rounds; the runner converts them with the scenario's ``round_ms``.

Actions (and their ``args``):

* ``dns``: ``faults``: resolver index (0..4) -> :class:`~cctf.chaos.faults.Faults` fields (set
  through the control channel; an empty mapping clears that resolver);
* ``zone``: ``label``, ``address``: a legitimate change of the honest zone, served by every
  resolver (re-signed with the zone's keys when signed) — also a ground-truth change;
* ``coordinator``: ``op`` ``crash`` (its connection dropped, then its tasks cancelled) | ``stop``
  (graceful) | ``start`` (a new coordinator, same config and key: LKG state from the KV bucket);
* ``nats``: ``op`` ``kill`` | ``start``, ``node`` index;
* ``replay``: re-publish the genuine verdicts captured so far (old rounds) on their subjects;
* ``downgrade``: publish verdicts for a forged answer signed with a weaker suite (Ed25519 only);
* ``flood``: ``op`` ``start`` | ``stop``, ``region`` index: garbage at full speed on that agent's
  vote subject with its own credentials;
* ``skew``: ``target`` ``agent`` | ``coordinator``, ``index`` (agent), ``offset_ms``;
* ``partition``: ``op`` ``cut`` | ``heal`` (the scenario's ``partition`` region).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cctf.chaos.scenarios.score import Phase
from cctf.errors import CctfError

N_RESOLVERS = 5
FORGED = ("203.0.113.66", "203.0.113.67", "203.0.113.68", "203.0.113.69")
CHANGED_ADDRESS = "192.0.2.99"
CHANGED_LABEL = "www"
K = 3  # the quorum rule of the chaos fabric: 3 of 5
SAFE_MODE_WARMUP_ROUNDS = 8
#: rounds after the last collusion whose false trust is still the collusion's (forged verdicts
#: stay fresh at subscribers for two rounds, plus the round in flight)
AFTERMATH_ROUNDS = 3


class ScenarioError(CctfError, ValueError):
    """Unknown scenario or bad option (one line)."""


@dataclass(frozen=True)
class Step:
    at_round: int
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """What the command line may set."""

    round_ms: int = 1_000
    phase_rounds: int = 6
    safe_mode: bool = False
    hold_rounds: int = 3
    lkg_cap_rounds: int | None = None
    colluders: tuple[int, ...] = (1, 2, 3, 4)  # poison: colluding resolvers per phase


@dataclass(frozen=True)
class Scenario:
    name: str
    params: Mapping[str, Any]
    rounds: int
    steps: tuple[Step, ...]
    phases: tuple[tuple[str, int], ...]  # (phase name, start round), in order
    recover_round: int | None = None
    round_ms: int = 1_000
    k: int = K
    nodes: int = 1
    dnssec: bool = True
    safe_mode: bool = False
    hold_rounds: int = 3
    lkg_cap_ms: int = 15 * 60_000
    #: named sets of phases reported together (e.g. ``lkg_within_cap``)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: region index whose agent runs in a network namespace (the partition scenario)
    partition: int | None = None
    #: phases whose false trust is the documented limit of the k-of-5 rule (colluders >= k)
    beyond_model: tuple[str, ...] = ()

    def phase_list(self) -> tuple[Phase, ...]:
        return tuple(Phase(n, r * self.round_ms) for n, r in self.phases)

    def to_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round_ms": self.round_ms,
            "rounds": self.rounds,
            "rule": f"{self.k}-of-{N_RESOLVERS}",
            "nats_nodes": self.nodes,
            "dnssec": self.dnssec,
            "safe_mode": self.safe_mode,
            "lkg_cap_ms": self.lkg_cap_ms,
        }
        if self.safe_mode:
            out["hold_rounds"] = self.hold_rounds
        out.update(self.params)
        return out


def _bh(indices: range | list[int]) -> dict[int, dict[str, Any]]:
    return {i: {"blackhole": True} for i in indices}


def _dns(at: int, faults: Mapping[int, Mapping[str, Any]]) -> Step:
    return Step(at, "dns", {"faults": dict(faults)})


def _clear(at: int) -> Step:
    return _dns(at, {i: {} for i in range(N_RESOLVERS)})


def dns_blackhole(o: Options) -> Scenario:
    p = o.phase_rounds
    cap_rounds = o.lkg_cap_rounds if o.lkg_cap_rounds is not None else 2 * p
    bh3 = 3 * p
    bh5 = 4 * p
    cap_edge = bh3 - 1 + cap_rounds  # the last TRUSTED evidence is about one round before bh3
    after = cap_edge + 3
    clear = max(after + p, bh5 + p)
    if cap_edge <= bh5:
        raise ScenarioError("--lkg-cap-rounds must exceed the phase length (LKG must span bh-5)")
    last = list(range(N_RESOLVERS))
    steps = (
        _dns(p, _bh([4])),
        _dns(2 * p, _bh([3, 4])),
        _dns(bh3, _bh([2, 3, 4])),
        _dns(bh5, _bh(last)),
        _clear(clear),
    )
    phases = (
        ("healthy", 0),
        ("blackhole-1", p),
        ("blackhole-2", 2 * p),
        ("blackhole-3 (lkg)", bh3),
        ("blackhole-5 (lkg within cap)", bh5),
        ("cap edge", cap_edge),
        ("blackhole-5 (after cap: fail closed)", after),
        ("cleared", clear),
    )
    return Scenario(
        "dns-blackhole",
        {"blackholed": [1, 2, 3, 5], "lkg_cap_rounds": cap_rounds},
        clear + p,
        steps,
        phases,
        recover_round=clear,
        round_ms=o.round_ms,
        lkg_cap_ms=cap_rounds * o.round_ms,
        groups={
            "lkg_within_cap": ("blackhole-3 (lkg)", "blackhole-5 (lkg within cap)"),
            "after_cap": ("blackhole-5 (after cap: fail closed)",),
        },
    )


def dns_flap(o: Options) -> Scenario:
    p = o.phase_rounds
    steps: list[Step] = []
    flapping = [2, 3, 4]
    for r in range(p, 3 * p):  # three resolvers flap every round: the quorum comes and goes
        steps.append(_dns(r, {i: {"blackhole": (r - p) % 2 == 0} for i in flapping}))
    steps.append(_clear(3 * p))
    return Scenario(
        "dns-flap",
        {"flapping": len(flapping), "period_rounds": 2},
        4 * p,
        tuple(steps),
        (("healthy", 0), ("flapping", p), ("cleared", 3 * p)),
        recover_round=3 * p,
        round_ms=o.round_ms,
    )


def ttl_mismatch(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "ttl-mismatch",
        {"mismatched": 2, "ttls": [5, 86_400]},
        3 * p,
        (_dns(p, {3: {"ttl": 5}, 4: {"ttl": 86_400}}), _clear(2 * p)),
        (("healthy", 0), ("ttl mismatch", p), ("cleared", 2 * p)),
        recover_round=2 * p,
        round_ms=o.round_ms,
    )


def _warmup(o: Options) -> int:
    """The healthy rounds before the first change: in safe mode the detectors need a baseline
    (``answer_change`` warm-up, 5 observations) before they can raise an alarm."""
    return max(o.phase_rounds, SAFE_MODE_WARMUP_ROUNDS) if o.safe_mode else o.phase_rounds


def poison(o: Options, *, dnssec: bool) -> Scenario:
    """Colluders with the same forged answer, then with different ones; the colluder counts the
    k-of-5 rule cannot resist (``k`` or more with the same forged answer, no DNSSEC) run last,
    followed by an aftermath phase (their forged verdicts still fresh at subscribers), so their
    false trust is never mistaken for the other phases'."""
    p = o.phase_rounds
    steps: list[Step] = []
    phases: list[tuple[str, int]] = [("healthy", 0)]
    beyond: list[str] = []
    plan = [(c, False) for c in o.colluders if c >= 2] + [(c, True) for c in o.colluders]
    # within the model first (DNSSEC defends all of them), the limit of the rule last
    plan.sort(key=lambda cs: (cs[1] and cs[0] >= K and not dnssec, not cs[1], cs[0]))
    r = _warmup(o)
    for c, same in plan:
        faults = {
            i: {"poison": FORGED[0] if same else FORGED[i - 1]} for i in range(N_RESOLVERS - c, 5)
        }
        steps.append(_clear(r))
        steps.append(_dns(r, faults))
        name = f"poison-{c} {'same' if same else 'different'}"
        phases.append((name, r))
        if same and c >= K and not dnssec:
            beyond.append(name)
        r += p
    steps.append(_clear(r))
    if beyond:
        phases.append(("aftermath", r))
        beyond.append("aftermath")
        phases.append(("cleared", r + AFTERMATH_ROUNDS))
    else:
        phases.append(("cleared", r))
    return Scenario(
        "poison" if not dnssec else "poison-dnssec",
        {"colluders": list(o.colluders), "forged": ["same", "different"]},
        r + p + (AFTERMATH_ROUNDS if beyond else 0),
        tuple(steps),
        tuple(phases),
        recover_round=r,
        round_ms=o.round_ms,
        dnssec=dnssec,
        safe_mode=o.safe_mode,
        hold_rounds=o.hold_rounds,
        beyond_model=tuple(beyond),
    )


def answer_change(o: Options) -> Scenario:
    p = o.phase_rounds
    w = _warmup(o)
    return Scenario(
        "answer-change",
        {"name": f"{CHANGED_LABEL}.demo.test.", "new_address": CHANGED_ADDRESS},
        w + 2 * p,
        (Step(w, "zone", {"label": CHANGED_LABEL, "address": CHANGED_ADDRESS}),),
        (("before", 0), ("after change", w)),
        recover_round=w,
        round_ms=o.round_ms,
        safe_mode=o.safe_mode,
        hold_rounds=o.hold_rounds,
    )


def replay(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "replay",
        {"replayed": "every verdict captured in the first phase"},
        2 * p + 2,
        (Step(p, "replay"), Step(p + p // 2, "replay")),
        (("healthy", 0), ("replaying", p)),
        round_ms=o.round_ms,
    )


def downgrade(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "downgrade",
        {"suite": "ed25519", "forged": FORGED[0]},
        2 * p + 2,
        tuple(Step(r, "downgrade") for r in range(p, 2 * p)),
        (("healthy", 0), ("downgrade", p)),
        round_ms=o.round_ms,
    )


def coordinator_crash(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "coordinator-crash",
        {"down_rounds": 3, "how": "connection dropped, tasks cancelled, restarted in-process"},
        3 * p,
        (Step(p, "coordinator", {"op": "crash"}), Step(p + 3, "coordinator", {"op": "start"})),
        (("healthy", 0), ("coordinator down", p), ("restarted", p + 3)),
        recover_round=p + 3,
        round_ms=o.round_ms,
    )


def nats_node_loss(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "nats-node-loss",
        {"killed": "the JetStream meta leader of three nats-servers (SIGKILL), restarted"},
        3 * p,
        (
            Step(p, "nats", {"op": "kill", "node": 1}),
            Step(2 * p, "nats", {"op": "start", "node": 1}),
        ),
        (("healthy", 0), ("node down", p), ("node back", 2 * p)),
        recover_round=p,
        round_ms=o.round_ms,
        nodes=3,
    )


def agent_flood(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "agent-flood",
        {"region": 4},
        3 * p,
        (Step(p, "flood", {"op": "start", "region": 4}), Step(2 * p, "flood", {"op": "stop"})),
        (("healthy", 0), ("flood", p), ("after", 2 * p)),
        recover_round=2 * p,
        round_ms=o.round_ms,
    )


def clock_skew(o: Options) -> Scenario:
    p = o.phase_rounds
    skew = 5 * 60_000
    return Scenario(
        "clock-skew",
        {"agent_offset_ms": skew, "coordinator_offset_ms": skew},
        4 * p,
        (
            Step(p, "skew", {"target": "agent", "index": 4, "offset_ms": skew}),
            Step(2 * p, "skew", {"target": "coordinator", "offset_ms": skew}),
            Step(3 * p, "skew", {"target": "coordinator", "offset_ms": 0}),
            Step(3 * p, "skew", {"target": "agent", "index": 4, "offset_ms": 0}),
        ),
        (("healthy", 0), ("agent skewed", p), ("coordinator skewed", 2 * p), ("fixed", 3 * p)),
        recover_round=3 * p,
        round_ms=o.round_ms,
    )


def partition(o: Options) -> Scenario:
    p = o.phase_rounds
    return Scenario(
        "partition",
        {"region": 4, "how": "agent in a network namespace, all its packets dropped (nftables)"},
        3 * p,
        (Step(p, "partition", {"op": "cut"}), Step(2 * p, "partition", {"op": "heal"})),
        (("healthy", 0), ("region cut off", p), ("healed", 2 * p)),
        recover_round=2 * p,
        round_ms=o.round_ms,
        partition=4,
    )


_BUILDERS = {
    "dns-blackhole": dns_blackhole,
    "dns-flap": dns_flap,
    "ttl-mismatch": ttl_mismatch,
    "poison": lambda o: poison(o, dnssec=False),
    "poison-dnssec": lambda o: poison(o, dnssec=True),
    "answer-change": answer_change,
    "replay": replay,
    "downgrade": downgrade,
    "coordinator-crash": coordinator_crash,
    "nats-node-loss": nats_node_loss,
    "agent-flood": agent_flood,
    "clock-skew": clock_skew,
    "partition": partition,
}

#: Every scenario, in the order ``all`` runs them.
SCENARIOS: tuple[str, ...] = tuple(_BUILDERS)


def build(name: str, options: Options = Options()) -> Scenario:
    if options.round_ms < 200:
        raise ScenarioError("--round-ms must be at least 200")
    if options.phase_rounds < 3:
        raise ScenarioError("--phase-rounds must be at least 3")
    if not options.colluders or not all(1 <= c <= 4 for c in options.colluders):
        raise ScenarioError("colluders take 1..4")
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ScenarioError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)}, all)")
    return builder(options)


def all_scenarios(options: Options = Options()) -> list[Scenario]:
    """What ``all`` runs: every scenario, plus ``answer-change`` and ``poison`` in safe mode."""
    out = [build(n, options) for n in SCENARIOS]
    if not options.safe_mode:
        safe = dataclasses.replace(options, safe_mode=True)
        out += [build("answer-change", safe), build("poison", safe)]
    return out
