"""Stream leaders spread over the cluster's nodes (the engine's preferred-leader stepdown).

JetStream places each replicated stream's leader at random, and after a node restarts the leaders it
held stay on the survivors. The leader does most of a stream's work (client ingress, acks,
de-duplication, consumer deliveries), so one node leading most streams of a kind does most of that
kind's work while the others idle.

:func:`plan_leaders` (pure) chooses a leader for every stream so that each *group* of streams (the
vote streams, the verdict streams, the heads streams, the rest) is spread evenly over the nodes and
the total per node is even too, moving as few leaders as it can (a stream whose leader already fits
keeps it). :func:`balance_leaders` reads the leaders, asks each stream to move with
``$JS.API.STREAM.LEADER.STEPDOWN.<stream>`` and ``{"placement": {"preferred": <node>}}`` (nats-server
2.11 and later) and waits, bounded, until it has. A stepdown hands leadership over in well under a
second; publishes in that moment are retried by every CCTF publisher (``Nats-Msg-Id``), so this is
safe on a live fabric too (``cctf nats balance``). What it is not: the cure of the 3,000-name load
run's occasional backlog (BENCHMARKS.md: of eight interleaved runs the one bad run had its leaders
spread, and runs with four of five verdict leaders on one node were fine).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors

from cctf.bus.connect import Connection
from cctf.bus.rpc import RpcError, request

__all__ = ["LeaderReport", "balance_leaders", "plan_leaders", "stream_group"]

_GROUP: Final = re.compile(r"^(CCTF_VOTES|CCTF_VERDICTS|CCTF_HEADS)_")
_MAX_STREAMS: Final = 1_024
_MAX_COMBINATIONS: Final = 20_000


def stream_group(name: str) -> str:
    """The group a stream is spread within: ``CCTF_VOTES``, ``CCTF_VERDICTS``, ``CCTF_HEADS``
    (one stream per region each) or ``other`` (control, log, KV buckets, anything else)."""
    m = _GROUP.match(name)
    return m.group(1) if m else "other"


def plan_leaders(
    leaders: Mapping[str, str | None],
    peers: Mapping[str, Sequence[str]],
    nodes: Sequence[str],
) -> dict[str, str]:
    """The leader every stream of ``leaders`` (stream -> current leader, ``None`` if it has none)
    should have. ``peers``: the nodes that hold a replica of each stream (a leader can only be one
    of them; a stream without an entry may go to any node).

    Within each :func:`stream_group` the counts per node differ by at most one; of the ways to
    choose which nodes take a group's extra streams, the plan takes one with the most even totals
    and, among those, the fewest moves (every leader that fits its node's share keeps its stream,
    so a cluster already spread is left alone), wherever the peers allow."""
    all_nodes = sorted(set(nodes))
    if not all_nodes:
        raise ValueError("no nodes")
    groups: dict[str, list[str]] = {}
    for name in sorted(leaders):
        groups.setdefault(stream_group(name), []).append(name)
    names = sorted(groups)
    options: list[list[dict[str, int]]] = []
    for group in names:
        base, extra = divmod(len(groups[group]), len(all_nodes))
        options.append(
            [
                {n: base + (n in chosen) for n in all_nodes}
                for chosen in itertools.combinations(all_nodes, extra)
            ]
        )
    quotas = _best_quotas(names, groups, options, leaders, all_nodes)
    out: dict[str, str] = {}
    total: Counter[str] = Counter(dict.fromkeys(all_nodes, 0))
    for group, quota in zip(names, quotas, strict=True):
        taken: Counter[str] = Counter()
        left: list[str] = []
        for name in groups[group]:
            cur = leaders[name]
            allowed = peers.get(name, all_nodes)
            if cur is not None and cur in quota and cur in allowed and taken[cur] < quota[cur]:
                out[name] = cur
                taken[cur] += 1
            else:
                left.append(name)
        for name in left:
            allowed = [n for n in peers.get(name, all_nodes) if n in quota] or all_nodes
            free = [n for n in allowed if taken[n] < quota.get(n, 0)]
            pick = min(free or allowed, key=lambda n: (taken[n], total[n], n))
            out[name] = pick
            taken[pick] += 1
        total.update(taken)
    return out


def _best_quotas(
    names: list[str],
    groups: dict[str, list[str]],
    options: list[list[dict[str, int]]],
    leaders: Mapping[str, str | None],
    nodes: list[str],
) -> list[dict[str, int]]:
    """The per-group shares with the most even totals, then the fewest moves (at most
    :data:`_MAX_COMBINATIONS` tried; beyond, each group's first option)."""
    current = [Counter(leaders[s] for s in groups[g] if leaders[s] is not None) for g in names]
    count = 1
    for opts in options:
        count *= len(opts)
    if count > _MAX_COMBINATIONS:
        return [opts[0] for opts in options]
    best: tuple[int, int] | None = None
    chosen: list[dict[str, int]] = [opts[0] for opts in options]
    for combo in itertools.product(*options):
        totals = [sum(q[n] for q in combo) for n in nodes]
        kept = sum(
            min(cur.get(n, 0), q[n]) for cur, q in zip(current, combo, strict=True) for n in nodes
        )
        key = (max(totals) - min(totals), -kept)
        if best is None or key < best:
            best, chosen = key, list(combo)
    return chosen


@dataclass
class LeaderReport:
    """What :func:`balance_leaders` did: the leaders before and after, the streams asked to move,
    and those that did not move in time (or whose stepdown the server refused: ``errors``)."""

    before: dict[str, str | None] = field(default_factory=dict)
    after: dict[str, str | None] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> list[str]:
        """The streams asked to move that did."""
        return [name for name in self.moved if name not in self.errors]

    def per_node(self) -> dict[str, dict[str, int]]:
        """``{group: {node: streams led}}`` after balancing."""
        out: dict[str, dict[str, int]] = {}
        for name, leader in self.after.items():
            g = out.setdefault(stream_group(name), {})
            key = leader or "none"
            g[key] = g.get(key, 0) + 1
        return out


async def _leaders(
    conn: Connection, timeout_s: float
) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    js: Any = conn.jetstream(timeout=timeout_s)
    leaders: dict[str, str | None] = {}
    peers: dict[str, list[str]] = {}
    for info in (await js.streams_info())[:_MAX_STREAMS]:
        name = info.config.name
        cluster = info.cluster
        if not name or cluster is None or not cluster.replicas:
            continue  # a single-replica stream has nobody to hand over to
        leaders[name] = cluster.leader or None
        peers[name] = sorted(
            {p.name for p in cluster.replicas if p.name}
            | ({cluster.leader} if cluster.leader else set())
        )
    return leaders, peers


async def balance_leaders(
    conn: Connection,
    *,
    nodes: Sequence[str] | None = None,
    timeout_s: float = 20.0,
    request_timeout_s: float = 2.0,
) -> LeaderReport:
    """Spread the replicated streams' leaders (:func:`plan_leaders`) with preferred-leader
    stepdowns, one stream at a time, each waited for (bounded by ``timeout_s`` overall). ``conn``:
    a user allowed the JetStream API (``admin``). ``nodes``: the server names to spread over
    (default: every node that holds a replica). Never raises for one stream's refusal: it is in
    :attr:`LeaderReport.errors`."""
    deadline = time.monotonic() + timeout_s
    leaders, peers = await _leaders(conn, request_timeout_s)
    report = LeaderReport(before=dict(leaders))
    if not leaders:
        return report
    spread = sorted(set(nodes) if nodes else {n for ps in peers.values() for n in ps})
    plan = plan_leaders(leaders, peers, spread)
    js: Any = conn.jetstream(timeout=request_timeout_s)
    for name, want in plan.items():
        if leaders.get(name) == want:
            continue
        if time.monotonic() >= deadline:
            report.errors[name] = f"not moved to {want}: out of time"
            continue
        report.moved.append(name)
        payload = json.dumps({"placement": {"preferred": want}}).encode()
        try:
            reply = await request(
                conn,
                f"$JS.API.STREAM.LEADER.STEPDOWN.{name}",
                payload,
                timeout_s=request_timeout_s,
            )
            answer = json.loads(reply or b"{}")
        except (RpcError, ValueError) as exc:
            report.errors[name] = str(exc)[:200]
            continue
        if not isinstance(answer, dict) or answer.get("success") is not True:
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            report.errors[name] = f"stepdown refused: {error!r}"[:200]
            continue
        while time.monotonic() < deadline:
            try:
                info = await js.stream_info(name)
                if info.cluster is not None and info.cluster.leader == want:
                    break
            except (TimeoutError, nats.errors.Error):
                pass  # no leader for a moment: the election is under way
            await asyncio.sleep(0.05)
        else:
            report.errors[name] = f"still not led by {want} at the deadline"
    report.after, _ = await _leaders(conn, request_timeout_s)
    return report
