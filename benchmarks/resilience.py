"""Kills under load, with real processes (issue #8 acceptance; figures in RESILIENCE.md).

    .venv/bin/python benchmarks/resilience.py [--kills 5] [--victims meta-leader,stream-leader,
        follower,coordinator] [--down-s 6] [--settle-s 6] [--round-ms 1000] [--out FILE]

The fabric (:mod:`resilience_fabric`): a 3-node nats-server cluster, five DNS servers, five agents,
three coordinators (``per_coordinator_subjects``) and a verifying subscriber ``cctf watch
--coordinators 2:c1,c2,c3``, each its own process. After a warm-up, for every victim class in turn,
``--kills`` times: pick the victim from the cluster's state at that moment, SIGKILL it, leave it down
``--down-s``, start it again (a nats-server: same store, until ``/healthz`` is ok), wait
``--settle-s``. Victim classes:

* ``meta-leader``: the JetStream meta leader;
* ``stream-leader``: among the other nodes, the one leading the most vote streams (``CCTF_VOTES_*``;
  the meta leader only if it leads them all); its vote streams are in the report;
* ``follower``: a node that is neither (the one leading the fewest vote streams);
* ``coordinator``: one coordinator process (``c1``, ``c2``, ``c3`` in turn).

Per kill: ``max_gap_s``, the largest time between two consecutive verdicts used by the subscriber for
one name (the largest over the names), from ``--pre-s`` before the kill until the end of the settle
time (an interval still open at the end counts up to it); ``max_gap_any_s``, the same over all names
together; and the ballots the vote streams stored (acknowledged) for the rounds of that window:
``ballots_acked``, ``ballots_accounted`` (a verdict for every name of its round reached the
subscriber, late if need be), and the rest listed as ``unaccounted`` (agent, round, names without a
used verdict). At the end each coordinator's ``cctf_*`` counters (its current incarnation) are added
(ballots counted as expired, with their reasons) and, per coordinator, the rounds of stored ballots it
published no verdict for. One JSON object on stdout (and ``--out``); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resilience_fabric import COORDS, Arrival, Fabric  # noqa: E402

from cctf.bus.streams import votes_stream_name  # noqa: E402

VICTIMS = ("meta-leader", "stream-leader", "follower", "coordinator")
BOUND_S = 2.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def cluster_roles(fab: Fabric) -> dict[str, Any]:
    """The meta leader and the leader of every vote stream, as the cluster sees them now."""
    assert fab.nats is not None and fab.auditor is not None
    meta = await asyncio.to_thread(fab.nats.meta_leader)
    js = fab.auditor.nc.jetstream()
    led: dict[str, list[str]] = {s.name: [] for s in fab.nats.servers}
    for r in fab.regions:
        try:
            info = await js.stream_info(votes_stream_name(r))
        except Exception:  # noqa: S112 - a stream without a leader this instant
            continue
        leader = info.cluster.leader if info.cluster else None
        if leader in led:
            led[leader].append(r)
    return {"meta": meta, "vote_streams_led": led}


def pick_node(victim: str, roles: dict[str, Any]) -> str:
    meta, led = roles["meta"], roles["vote_streams_led"]
    if victim == "meta-leader":
        return str(meta)
    others = sorted((n for n in led if n != meta), key=lambda n: (-len(led[n]), n))
    if victim == "stream-leader":
        if not led[others[0]]:
            return str(meta)  # the meta leader leads every vote stream
        return others[0]
    leader = others[0] if led[others[0]] else meta
    rest = sorted((n for n in led if n not in (meta, leader)), key=lambda n: (len(led[n]), n))
    return rest[0]


async def wait_cluster_current(fab: Fabric, timeout_s: float = 60.0) -> float:
    """Until every vote stream has a leader and all replicas current; returns the seconds waited."""
    assert fab.auditor is not None
    js = fab.auditor.nc.jetstream()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        ok = True
        for r in fab.regions:
            try:
                info = await js.stream_info(votes_stream_name(r))
            except Exception:
                ok = False
                break
            c = info.cluster
            if c is None or not c.leader or any(not p.current for p in c.replicas or []):
                ok = False
                break
            if len(c.replicas or []) != 2:
                ok = False
                break
        if ok:
            return time.monotonic() - t0
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


async def episode(fab: Fabric, victim: str, i: int, args: argparse.Namespace) -> dict[str, Any]:
    assert fab.nats is not None
    roles = await cluster_roles(fab)
    if victim == "coordinator":
        target = COORDS[i % len(COORDS)]
    else:
        target = pick_node(victim, roles)
    start_wall, start_t = time.time(), time.monotonic()
    await asyncio.sleep(args.pre_s)
    t_kill, wall_kill = time.monotonic(), time.time()
    if victim == "coordinator":
        await fab.coords[target].kill()
    else:
        await asyncio.to_thread(fab.nats.server(target).kill)
    log(f"{victim} #{i + 1}: SIGKILL {target} (roles {roles})")
    await asyncio.sleep(args.down_s)
    t_restart = time.monotonic()
    if victim == "coordinator":
        await fab.coords[target].start()
        rejoin_s = 0.0
    else:
        server = fab.nats.server(target)
        await asyncio.to_thread(server.start, wait=True, timeout_s=60)
        rejoin_s = await wait_cluster_current(fab)
    await asyncio.sleep(args.settle_s)
    end_t, end_wall = time.monotonic(), time.time()
    return {
        "victim": target,
        "roles": roles,
        "t_window": (start_t, end_t),
        "wall_window": (start_wall, end_wall),
        "t_kill": t_kill,
        "wall_kill": wall_kill,
        "down_s": round(t_restart - t_kill, 3),
        "rejoin_s": round(rejoin_s, 3),
    }


def gaps(arrivals: list[Arrival], names: tuple[str, ...], t0: float, t1: float) -> dict[str, Any]:
    """Largest gaps between used verdicts (per name, and over all names) within [t0, t1]."""
    per_name: dict[str, float] = {}
    where: dict[str, float] = {}
    for n in names:
        times = sorted(a.t for a in arrivals if a.name == n)
        before = [t for t in times if t < t0]
        inside = [t for t in times if t0 <= t <= t1]
        points = ([before[-1]] if before else [t0]) + inside + [t1]
        diffs = [(b - a, a) for a, b in itertools.pairwise(points)]
        g, at = max(diffs)
        per_name[n], where[n] = g, at
    everything = sorted(a.t for a in arrivals)
    before = [t for t in everything if t < t0]
    points = ([before[-1]] if before else [t0]) + [t for t in everything if t0 <= t <= t1] + [t1]
    any_gap = max(b - a for a, b in itertools.pairwise(points))
    worst = max(per_name, key=lambda n: per_name[n])
    return {
        "max_gap_s": round(per_name[worst], 3),
        "max_gap_name": worst,
        "max_gap_starts_s_after_kill": None,
        "max_gap_any_s": round(any_gap, 3),
        "_worst_at": where[worst],
    }


def account(
    fab: Fabric, r0: int, r1: int
) -> tuple[int, int, list[dict[str, Any]], dict[str, list[int]]]:
    """Ballots stored for rounds r0..r1: (acked, accounted at the subscriber, unaccounted, per
    coordinator the rounds of stored ballots it published no verdict for)."""
    assert fab.auditor is not None
    used = {(a.name, a.round) for a in fab.arrivals}
    acked = accounted = 0
    unaccounted: list[dict[str, Any]] = []
    no_verdict: dict[str, set[int]] = defaultdict(set)
    for agent, rnd, _seq in sorted(fab.auditor.ballots):
        if not r0 <= rnd <= r1:
            continue
        acked += 1
        missing = [n for n in fab.names if (n, rnd) not in used]
        if missing:
            unaccounted.append({"agent": agent, "round": rnd, "names_without_verdict": missing})
        else:
            accounted += 1
        for c in COORDS:
            if any((c, n, rnd) not in fab.auditor.verdicts for n in fab.names):
                no_verdict[c].add(rnd)
    return acked, accounted, unaccounted, {c: sorted(v) for c, v in no_verdict.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cctf-kills-"))
    fab = Fabric(workdir, round_ms=args.round_ms)
    episodes: dict[str, list[dict[str, Any]]] = {v: [] for v in args.victims}
    counters: dict[str, dict[str, float]] = {}
    try:
        log(f"starting the fabric in {workdir}")
        await fab.start()
        await fab.wait_verdicts()
        log(f"verdicts flowing; warm-up {args.warmup_s}s")
        await asyncio.sleep(args.warmup_s)
        for victim in args.victims:
            for i in range(args.kills):
                episodes[victim].append(await episode(fab, victim, i, args))
        log("draining late rounds")
        await asyncio.sleep(max(5.0, 4 * args.round_ms / 1000))
        for c in COORDS:
            counters[c] = await fab.scrape(c)
    finally:
        await fab.stop()
    return report(fab, args, episodes, counters, workdir)


def report(
    fab: Fabric,
    args: argparse.Namespace,
    episodes: dict[str, list[dict[str, Any]]],
    counters: dict[str, dict[str, float]],
    workdir: Path,
) -> dict[str, Any]:
    rs = args.round_ms / 1000
    out: dict[str, Any] = {
        "config": {
            "kills_per_victim": args.kills,
            "down_s": args.down_s,
            "settle_s": args.settle_s,
            "pre_s": args.pre_s,
            "round_ms": args.round_ms,
            "names": len(fab.names),
            "agents": len(fab.agents),
            "coordinators": list(COORDS),
            "policy": "2-of-3",
            "nodes": 3,
            "workdir": str(workdir),
        },
        "victims": {},
    }
    all_ok = True
    for victim, eps in episodes.items():
        kills = []
        for e in eps:
            t0, t1 = e["t_window"]
            g = gaps(fab.arrivals, fab.names, t0, t1)
            g["max_gap_starts_s_after_kill"] = round(g.pop("_worst_at") - e["t_kill"], 3)
            w0, w1 = e["wall_window"]
            r0, r1 = int(w0 // rs) + 1, int(w1 // rs) - 1
            acked, accounted, missing, no_verdict = account(fab, r0, r1)
            kills.append(
                {
                    "victim": e["victim"],
                    "meta_leader": e["roles"]["meta"],
                    "vote_streams_led": e["roles"]["vote_streams_led"].get(e["victim"], []),
                    **g,
                    "rounds": [r0, r1],
                    "ballots_acked": acked,
                    "ballots_accounted": accounted,
                    "unaccounted": missing[:20],
                    "rounds_without_verdict_by_coordinator": no_verdict,
                    "down_s": e["down_s"],
                    "rejoin_s": e["rejoin_s"],
                }
            )
        summary = {
            "kills": len(kills),
            "max_gap_s": max((k["max_gap_s"] for k in kills), default=None),
            "gaps_s": [k["max_gap_s"] for k in kills],
            "kills_with_gap_over_2s": sum(k["max_gap_s"] > BOUND_S for k in kills),
            "ballots_acked": sum(k["ballots_acked"] for k in kills),
            "ballots_accounted": sum(k["ballots_accounted"] for k in kills),
            "per_kill": kills,
        }
        summary["ballots_unaccounted"] = summary["ballots_acked"] - summary["ballots_accounted"]
        ok = summary["kills_with_gap_over_2s"] == 0 and summary["ballots_unaccounted"] == 0
        summary["ok"] = ok
        all_ok = all_ok and ok
        out["victims"][victim] = summary
    out["coordinator_counters"] = {
        c: {k: v for k, v in cs.items() if not k.startswith("cctf_decision_latency")}
        for c, cs in counters.items()
    }
    out["subscriber_lines_unparsed"] = len(fab.sub_errors)
    out["auditor_errors"] = fab.auditor.errors if fab.auditor else None
    out["ok"] = all_ok
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=5, help="kills per victim class (default 5)")
    p.add_argument("--victims", default=",".join(VICTIMS), help="comma-separated victim classes")
    p.add_argument("--down-s", type=float, default=6.0, help="seconds a victim stays down")
    p.add_argument("--settle-s", type=float, default=6.0, help="seconds after its restart")
    p.add_argument("--pre-s", type=float, default=2.0, help="seconds measured before each kill")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--round-ms", type=int, default=1000)
    p.add_argument("--workdir", default=None, help="work directory (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.victims = [v for v in args.victims.split(",") if v]
    bad = [v for v in args.victims if v not in VICTIMS]
    if bad:
        p.error(f"unknown victim class {bad[0]!r} (choose from {', '.join(VICTIMS)})")
    if args.kills < 1:
        p.error("--kills must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    for v, s in result["victims"].items():
        log(
            f"{v}: gaps {s['gaps_s']} max {s['max_gap_s']} s; ballots acked "
            f"{s['ballots_acked']} accounted {s['ballots_accounted']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
