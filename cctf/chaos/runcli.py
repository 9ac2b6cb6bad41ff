"""``cctf chaos run SCENARIO|all [--checks N] [--json]``: the chaos suite against the local fabric.

Exit codes: 0 no false trust within the threat model, 1 false trust (or a scenario failed to run),
2 usage error. Progress goes to stderr; the report (a table, or JSON) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from cctf.chaos.scenarios.catalog import (
    SCENARIOS,
    Options,
    Scenario,
    ScenarioError,
    all_scenarios,
    build,
)

EXIT_OK = 0
EXIT_FALSE_TRUST = 1
EXIT_USAGE = 2

_COLUMNS = (
    ("checks", "checks"),
    ("correct", "correct"),
    ("false_trust", "false_trust"),
    ("false_deny", "false_deny"),
    ("unavailable", "unavail"),
    ("lkg_served", "lkg"),
    ("integrity_pct", "integrity%"),
    ("availability_pct", "avail%"),
    ("time_to_recover_ms", "ttr_ms"),
)


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a chaos scenario against the local fabric and score every trust check",
        description="Start the local fabric (NATS, 5 DNS servers, coordinator, 5 agents, a "
        "verifying subscriber), apply the scenario's fault schedule and score every trust check "
        "against ground truth. Scenarios: " + ", ".join(SCENARIOS) + ", all.",
    )
    run.add_argument("scenario", metavar="SCENARIO", help="a scenario name, or all")
    run.add_argument("--checks", type=_positive, default=10_000, help="total trust checks")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.add_argument("--round-ms", type=_positive, default=1_000, help="round length")
    run.add_argument(
        "--phase-rounds", type=_positive, default=6, help="rounds per phase of the schedule"
    )
    run.add_argument(
        "--safe-mode", action="store_true", help="coordinator with automatic safe mode on"
    )
    run.add_argument("--hold-rounds", type=_positive, default=3, help="safe-mode answer hold")
    run.add_argument(
        "--lkg-cap-rounds",
        type=_positive,
        default=None,
        help="LKG cap of dns-blackhole in rounds (default 2 phases)",
    )
    run.add_argument(
        "--colluders",
        type=_positive,
        nargs="+",
        default=[1, 2, 3, 4],
        help="poison: colluding resolvers, one phase each (default: 1 2 3 4)",
    )
    run.add_argument(
        "--log-level",
        default="error",
        choices=("debug", "info", "warning", "error"),
        help="log level of the fabric's components on stderr (default: %(default)s)",
    )
    run.set_defaults(func=_cmd_run)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return int(text)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fails(report: dict[str, Any]) -> bool:
    """False trust within the threat model (colluders below k), or a scenario that did not run."""
    if "error" in report:
        return True
    return int(report["false_trust"]) - int(report.get("false_trust_beyond_model", 0)) > 0


def _cmd_run(args: argparse.Namespace) -> int:
    import logging

    from cctf import telemetry
    from cctf.chaos.runner import run_scenario

    telemetry.configure_logging(json=True, level=args.log_level)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()))
    opts = Options(
        round_ms=args.round_ms,
        phase_rounds=args.phase_rounds,
        safe_mode=args.safe_mode,
        hold_rounds=args.hold_rounds,
        lkg_cap_rounds=args.lkg_cap_rounds,
        colluders=tuple(args.colluders),
    )
    try:
        scenarios: list[Scenario] = (
            all_scenarios(opts) if args.scenario == "all" else [build(args.scenario, opts)]
        )
    except ScenarioError as exc:
        print(f"cctf chaos run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reports: list[dict[str, Any]] = []
    received: list[int] = []

    async def run_all() -> None:
        # SIGINT/SIGTERM cancel the run: every process, socket and namespace it started is
        # stopped by the runner's exit stack before the command exits (128 + the signal)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(sig: int) -> None:
            received.append(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        for sc in scenarios:
            try:
                reports.append(await run_scenario(sc, args.checks, _progress))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _progress(f"{sc.name}: failed to run: {type(exc).__name__}: {exc}")
                reports.append(
                    {"scenario": sc.name, "parameters": sc.to_params(), "error": str(exc)}
                )

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(run_all())
    if received:
        _progress(f"stopped by signal {received[0]}; everything it started is stopped")
        return 128 + received[0]
    if args.json:
        if args.scenario == "all":
            print(json.dumps({"scenarios": reports}, sort_keys=True))
        else:
            print(json.dumps(reports[0], sort_keys=True))
    else:
        print(table(reports))
    return EXIT_FALSE_TRUST if any(fails(r) for r in reports) else EXIT_OK


def table(reports: list[dict[str, Any]]) -> str:
    """The reports as a text table: one line per scenario, then one per phase."""
    head = ["scenario / phase"] + [h for _, h in _COLUMNS]
    rows: list[list[str]] = []
    for r in reports:
        label = r["scenario"] + (" (safe mode)" if r["parameters"].get("safe_mode") else "")
        if "error" in r:
            rows.append([label, f"error: {r['error']}"])
            continue
        rows.append([label] + [_cell(r.get(k)) for k, _ in _COLUMNS])
        for p in r.get("phases", []):
            rows.append(["  " + p["phase"]] + [_cell(p.get(k)) for k, _ in _COLUMNS[:-1]])
        for key, group in r.items():  # named groups of phases (e.g. lkg_within_cap)
            if isinstance(group, dict) and "phases" in group:
                rows.append([f"  = {key}"] + [_cell(group.get(k)) for k, _ in _COLUMNS[:-1]])
    widths = [max(len(row[i]) for row in [head, *rows] if i < len(row)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)) for row in [head, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
