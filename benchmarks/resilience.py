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
* ``stream-leader``: the node leading every vote stream (``CCTF_VOTES_*``) and the verdict stream
  (``CCTF_VERDICTS_US_EAST``): before each node kill the leadership of these streams is moved to one
  node other than the meta leader (step-down with a preferred placement), so the three classes are
  three distinct roles (in the report);
* ``follower``: the third node, neither meta leader nor leader of a vote stream;
* ``coordinator``: one coordinator process (``c1``, ``c2``, ``c3`` in turn);
* ``rolling-sigterm`` / ``rolling-ldm`` (``--rolls`` times, not in the default list): a planned
  rolling restart, every node in turn (the meta leader last) stopped with SIGTERM or lame duck mode
  (SIGUSR2, ``nats-server --signal ldm``), started again, and the next one only once every vote
  stream has its leader and both followers current again (the procedure of deploy/nats/README.md).

Per kill: ``max_gap_s``, the largest time between two consecutive verdicts used by the subscriber for
one name (the largest over the names), from ``--pre-s`` before the kill until the end of the settle
time (an interval still open at the end counts up to it); ``max_gap_any_s``, the same over all names
together; and the ballots the vote streams stored (acknowledged) for the rounds of that window:
``ballots_acked``; ``ballots_in_used_verdict`` (a verdict for every name of its round reached the
subscriber, late if need be) and ``ballots_without_used_verdict`` (listed: agent, round, names);
and per coordinator (``c`` read from the verdict stream, its ``cctf_*`` counters scraped before and
after the episode and just before it is killed) the stored ballots of rounds it published no verdict
for, the ballots it settled in the episode without a verdict, by reason (terminated,
``cctf_messages_terminated_total``, e.g. ``round``; or counted as expired,
``cctf_ballots_expired_total``: ``shed``, ``superseded``, ``late``), and
``unaccounted_by_coordinator`` = the first minus the second (at least 0; counters are aggregates,
so this is a lower bound). ``ballots_unaccounted``: the stored ballots whose round has no used
verdict at the subscriber and that some coordinator neither published a verdict for nor counted as
expired (the same difference, over those ballots, the largest over the coordinators). ``ok`` per class: no gap over 2 s, nothing
unaccounted, every stored ballot's round with a used verdict. One JSON object on stdout (and
``--out``); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resilience_fabric import COORDS, VERDICT_REGION, Arrival, Fabric

from cctf.bus.accounts import SYSTEM_USER
from cctf.bus.streams import verdict_stream_name, votes_stream_name

VICTIMS = ("meta-leader", "stream-leader", "follower", "coordinator")
ROLLING = ("rolling-sigterm", "rolling-ldm")
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
        except Exception:
            continue
        leader = info.cluster.leader if info.cluster else None
        if leader in led:
            led[leader].append(r)
    verdicts = None
    try:
        info = await js.stream_info(verdict_stream_name(VERDICT_REGION))
        verdicts = info.cluster.leader if info.cluster else None
    except Exception:  # no leader this instant
        pass
    return {"meta": meta, "vote_streams_led": led, "verdict_stream_leader": verdicts}


async def place_streams(fab: Fabric, home: str) -> None:
    """Move the leadership of every vote stream and of the verdict stream to ``home`` (stream
    leader step-down with a preferred placement), so each victim class is one role only."""
    assert fab.auditor is not None
    nc = fab.auditor.nc
    js = nc.jetstream()
    streams = [votes_stream_name(r) for r in fab.regions] + [verdict_stream_name(VERDICT_REGION)]
    for stream in streams:
        for _ in range(6):
            try:
                info = await js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader == home:
                    break
                body = json.dumps({"placement": {"preferred": home}}).encode()
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
            except Exception as exc:
                log(f"step-down of {stream}: {exc!r}")
            await asyncio.sleep(0.5)


def pick_node(victim: str, roles: dict[str, Any]) -> str:
    """The meta leader; the node leading the vote streams; or the third one."""
    meta, led = roles["meta"], roles["vote_streams_led"]
    if victim == "meta-leader":
        return str(meta)
    others = sorted((n for n in led if n != meta), key=lambda n: (-len(led[n]), n))
    return others[0] if victim == "stream-leader" else others[1]


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


async def wait_flowing(fab: Fabric, round_ms: int, timeout_s: float = 90.0) -> float:
    """Until every name had a used verdict in the last 1.5 rounds (so no gap runs on into the next
    episode); returns the seconds waited beyond the settle time."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        recent = time.monotonic() - 1.5 * round_ms / 1000
        last: dict[str, float] = {}
        for a in reversed(fab.arrivals):
            if a.t < recent:
                break
            last.setdefault(a.name, a.t)
        if set(last) >= set(fab.names):
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def step_down_meta(fab: Fabric, name: str, timeout_s: float = 20.0) -> None:
    """Ask the meta leader to step down and wait until another node leads the meta group."""
    assert fab.nats is not None
    sys_nc = await fab.nats.connect(SYSTEM_USER, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:  # a system-account request
                await sys_nc.request("$JS.API.META.LEADER.STEPDOWN", b"{}", timeout=5)
            except Exception as exc:
                log(f"meta step-down: {exc!r}")
            await asyncio.sleep(0.5)
            leader = await asyncio.to_thread(fab.nats.meta_leader)
            if leader and leader != name:
                return
    finally:
        await sys_nc.close()


async def roll(fab: Fabric, mode: str, roles: dict[str, Any]) -> list[dict[str, Any]]:
    """A rolling restart: every node in turn (the meta leader last, asked to step down first),
    stopped with SIGTERM or lame duck mode (SIGUSR2), started again, and the next one only once
    every vote stream is current."""
    assert fab.nats is not None
    order = sorted((s.name for s in fab.nats.servers), key=lambda n: (n == roles["meta"], n))
    steps = []
    for name in order:
        server = fab.nats.server(name)
        t0 = time.monotonic()
        if await asyncio.to_thread(fab.nats.meta_leader) == name:
            await step_down_meta(fab, name)
        if mode == "rolling-ldm":
            await asyncio.to_thread(server.lame_duck)
        else:
            await asyncio.to_thread(server.stop)
        t1 = time.monotonic()
        await asyncio.to_thread(server.start, wait=True, timeout_s=60)
        rejoin = await wait_cluster_current(fab)
        steps.append({"node": name, "stop_s": round(t1 - t0, 3), "rejoin_s": round(rejoin, 3)})
        log(f"{mode}: {name} stopped in {t1 - t0:.1f}s, back and current in {rejoin:.1f}s")
    return steps


async def episode(fab: Fabric, victim: str, i: int, args: argparse.Namespace) -> dict[str, Any]:
    assert fab.nats is not None
    roles = await cluster_roles(fab)
    if victim == "coordinator":
        target = COORDS[i % len(COORDS)]
    elif victim in ROLLING:
        target = "all"
    else:
        home = sorted(n for n in roles["vote_streams_led"] if n != roles["meta"])[0]
        await place_streams(fab, home)
        await wait_cluster_current(fab)
        await asyncio.sleep(2.0)  # the step-downs stay out of the measured window
        roles = await cluster_roles(fab)
        target = pick_node(victim, roles)
    before = {c: await fab.scrape(c) for c in COORDS}
    start_wall, start_t = time.time(), time.monotonic()
    await asyncio.sleep(args.pre_s)
    t_kill, wall_kill = time.monotonic(), time.time()
    steps: list[dict[str, Any]] = []
    at_kill: dict[str, float] = {}
    rejoin_s = 0.0
    if victim in ROLLING:
        steps = await roll(fab, victim, roles)
    else:
        if victim == "coordinator":
            at_kill = await fab.scrape(target)  # this incarnation's counters die with it
            await fab.coords[target].kill()
        else:
            await asyncio.to_thread(fab.nats.server(target).kill)
        log(f"{victim} #{i + 1}: SIGKILL {target} (roles {roles})")
        await asyncio.sleep(args.down_s)
        if victim == "coordinator":
            await fab.coords[target].start()
        else:
            server = fab.nats.server(target)
            await asyncio.to_thread(server.start, wait=True, timeout_s=60)
            rejoin_s = await wait_cluster_current(fab)
    t_restart = time.monotonic()
    await asyncio.sleep(args.settle_s)
    recovery_s = await wait_flowing(fab, args.round_ms)
    end_t, end_wall = time.monotonic(), time.time()
    after = {c: await fab.scrape(c) for c in COORDS}
    deltas = {}
    for c in COORDS:
        if c == target:  # killed and restarted: (at the kill - before) + (now - 0)
            deltas[c] = counter_delta(before[c], at_kill, after[c])
        else:
            deltas[c] = counter_delta(before[c], after[c], {})
    return {
        "victim": target,
        "roles": roles,
        "t_window": (start_t, end_t),
        "wall_window": (start_wall, end_wall),
        "t_kill": t_kill,
        "wall_kill": wall_kill,
        "down_s": round(t_restart - t_kill, 3),
        "rejoin_s": round(rejoin_s, 3),
        "recovery_wait_s": round(recovery_s, 3),
        "steps": steps,
        "counters": deltas,
    }


def _short(key: str) -> str:
    """``cctf_x_total{otel_scope_name="..",...,reason="round"}`` -> ``cctf_x_total{reason="round"}``."""
    name, _, labels = key.partition("{")
    kept = [kv for kv in labels.rstrip("}").split(",") if kv and not kv.startswith("otel_scope")]
    return f"{name}{{{','.join(kept)}}}" if kept else name


def counter_delta(
    start: dict[str, float], end: dict[str, float], restarted: dict[str, float]
) -> dict[str, float]:
    """Counter increases over an episode (``restarted``: counters of a new incarnation from 0)."""
    out: dict[str, float] = defaultdict(float)
    for k in set(start) | set(end):
        if k.endswith("_total") or "_total{" in k:
            out[_short(k)] += max(0.0, end.get(k, 0.0) - start.get(k, 0.0))
    for k, v in restarted.items():
        if k.endswith("_total") or "_total{" in k:
            out[_short(k)] += v
    return {k: v for k, v in sorted(out.items()) if v}


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
) -> tuple[int, int, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Ballots stored for rounds r0..r1: (acked, in a used verdict's round at the subscriber, the
    others, per coordinator the rounds of stored ballots it published no verdict for: ``ballots``,
    and ``unused`` of them also without a used verdict at the subscriber)."""
    assert fab.auditor is not None
    used = {(a.name, a.round) for a in fab.arrivals}
    acked = accounted = 0
    unaccounted: list[dict[str, Any]] = []
    no_verdict: dict[str, set[int]] = defaultdict(set)
    missing_by_c: dict[str, int] = defaultdict(int)
    unused_by_c: dict[str, int] = defaultdict(int)
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
                missing_by_c[c] += 1
                unused_by_c[c] += bool(missing)
    per_c = {
        c: {"rounds": sorted(v), "ballots": missing_by_c[c], "unused": unused_by_c[c]}
        for c, v in no_verdict.items()
    }
    return acked, accounted, unaccounted, per_c


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cctf-kills-"))
    fab = Fabric(workdir, round_ms=args.round_ms)
    episodes: dict[str, list[dict[str, Any]]] = {v: [] for v in args.victims}
    counters: dict[str, dict[str, float]] = {}
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop every process started, then exit
        loop.add_signal_handler(sig, me.cancel)
    try:
        log(f"starting the fabric in {workdir}")
        await fab.start()
        await fab.wait_verdicts()
        log(f"verdicts flowing; warm-up {args.warmup_s}s")
        await asyncio.sleep(args.warmup_s)
        for victim in args.victims:
            for i in range(args.rolls if victim in ROLLING else args.kills):
                episodes[victim].append(await episode(fab, victim, i, args))
        log("draining late rounds")
        await asyncio.sleep(max(5.0, 4 * args.round_ms / 1000))
        for c in COORDS:
            counters[c] = await fab.scrape(c)
    finally:
        await fab.stop()
        if args.raw is not None:
            raw = {
                "arrivals": [vars(a) for a in fab.arrivals],
                "ballots": sorted(fab.auditor.ballots) if fab.auditor else [],
                "verdicts": sorted(fab.auditor.verdicts.items()) if fab.auditor else [],
                "episodes": episodes,
            }
            args.raw.write_text(json.dumps(raw, default=str))
    return report(fab, args, episodes, counters, workdir)


def expired_by_reason(counters: dict[str, float]) -> dict[str, float]:
    """Ballots a coordinator settled without a verdict, by reason, all regions: terminated
    (``cctf_messages_terminated_total``: refused, e.g. ``round``) or acknowledged and counted as
    expired (``cctf_ballots_expired_total``: ``shed``, ``superseded``, ``late``)."""
    out: dict[str, float] = defaultdict(float)
    for k, v in counters.items():
        kinds = ("cctf_messages_terminated_total", "cctf_ballots_expired_total")
        if k.startswith(kinds) and 'reason="' in k:
            out[k.split('reason="')[1].split('"')[0]] += v
    return dict(out)


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
            expired = {c: expired_by_reason(cs) for c, cs in e["counters"].items()}
            unaccounted = {
                c: max(0, int(v["ballots"] - sum(expired.get(c, {}).values())))
                for c, v in no_verdict.items()
            }
            # a ballot is accounted when its round has a used verdict at the subscriber, or when
            # each coordinator published a verdict for it or counted it as expired
            lost = [
                max(0, int(v["unused"] - sum(expired.get(c, {}).values())))
                for c, v in no_verdict.items()
            ]
            kills.append(
                {
                    "victim": e["victim"],
                    "meta_leader": e["roles"]["meta"],
                    "vote_streams_led": e["roles"]["vote_streams_led"].get(e["victim"], []),
                    "verdict_stream_leader": e["roles"]["verdict_stream_leader"],
                    **g,
                    "rounds": [r0, r1],
                    "ballots_acked": acked,
                    "ballots_in_used_verdict": accounted,
                    "ballots_without_used_verdict": acked - accounted,
                    "without_used_verdict": missing[:20],
                    "without_verdict_by_coordinator": no_verdict,
                    "counted_expired_by_coordinator": expired,
                    "unaccounted_by_coordinator": unaccounted,
                    "ballots_unaccounted": max(lost, default=0),
                    "coordinator_counters": e["counters"],
                    "down_s": e["down_s"],
                    "rejoin_s": e["rejoin_s"],
                    "recovery_wait_s": e["recovery_wait_s"],
                    "steps": e["steps"],
                }
            )
        summary = {
            "kills": len(kills),
            "max_gap_s": max((k["max_gap_s"] for k in kills), default=None),
            "gaps_s": [k["max_gap_s"] for k in kills],
            "kills_with_gap_over_2s": sum(k["max_gap_s"] > BOUND_S for k in kills),
            "ballots_acked": sum(k["ballots_acked"] for k in kills),
            "ballots_in_used_verdict": sum(k["ballots_in_used_verdict"] for k in kills),
            "ballots_without_used_verdict": sum(k["ballots_without_used_verdict"] for k in kills),
            "ballots_unaccounted": sum(k["ballots_unaccounted"] for k in kills),
            "per_kill": kills,
        }
        ok = (
            summary["kills_with_gap_over_2s"] == 0
            and summary["ballots_unaccounted"] == 0
            and summary["ballots_without_used_verdict"] == 0
        )
        summary["ok"] = ok
        all_ok = all_ok and ok
        out["victims"][victim] = summary
    out["coordinator_counters"] = {
        c: {k: v for k, v in cs.items() if not k.startswith("cctf_decision_latency")}
        for c, cs in counters.items()
    }
    out["subscriber_lines_unparsed"] = len(fab.sub_errors)
    out["subscriber_exits"] = fab.sub_exits
    out["auditor_errors"] = fab.auditor.errors if fab.auditor else None
    out["ok"] = all_ok
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=5, help="kills per victim class (default 5)")
    p.add_argument(
        "--victims",
        default=",".join(VICTIMS),
        help="comma-separated victim classes: " + ", ".join(VICTIMS + ROLLING),
    )
    p.add_argument("--rolls", type=int, default=1, help="rolling restarts per rolling-* class")
    p.add_argument("--raw", type=Path, default=None, help="write arrivals/ballots/verdicts here")
    p.add_argument("--down-s", type=float, default=6.0, help="seconds a victim stays down")
    p.add_argument("--settle-s", type=float, default=6.0, help="seconds after its restart")
    p.add_argument("--pre-s", type=float, default=2.0, help="seconds measured before each kill")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--round-ms", type=int, default=1000)
    p.add_argument("--workdir", default=None, help="work directory (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.victims = [v for v in args.victims.split(",") if v]
    bad = [v for v in args.victims if v not in VICTIMS + ROLLING]
    if bad:
        p.error(f"unknown victim class {bad[0]!r} (choose from {', '.join(VICTIMS + ROLLING)})")
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
            f"{s['ballots_acked']}, without a used verdict {s['ballots_without_used_verdict']}, "
            f"unaccounted {s['ballots_unaccounted']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
