"""``cctf demo``: run the local fabric and show verdicts live."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cctf import telemetry
from cctf.errors import CctfError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a local fabric (NATS, DNS, identity fabric, agents, coordinator, gateway)",
        description=(
            "Start a complete local CCTF fabric (all three trust paths: DNSSEC-signed zone, SPIFFE "
            "trust domain with workloads behind TLS, OIDC issuer) and print every verified verdict "
            "and workload decision. Progress goes to stderr, verdicts and decisions to stdout. Exit codes: 0 done, 1 verdicts missing or a component "
            "failed (or the metrics port is busy), 2 bad arguments, 130 interrupted (Ctrl-C), "
            "143 terminated (SIGTERM)."
        ),
    )
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: run)")
    p.add_argument("--poison", type=int, default=0, metavar="K", help="K resolvers forge answers")
    p.add_argument("--blackhole", type=int, default=0, metavar="K", help="K resolvers never answer")
    p.add_argument(
        "--bogus",
        type=int,
        default=0,
        metavar="K",
        help="K resolvers serve tampered DNSSEC records (bogus: never counted towards TRUSTED)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per verdict on stdout")
    p.add_argument("--nodes", type=int, default=3, choices=(1, 3), help="NATS nodes (default 3)")
    p.add_argument(
        "--coordinators",
        type=int,
        default=1,
        choices=(1, 3),
        help="coordinators (default 1); 3: each on its own subjects, the subscriber uses 2-of-3",
    )
    p.add_argument("--round-ms", type=int, default=1000, help="round length in ms (default 1000)")
    p.add_argument("--k", type=int, default=3, help="quorum size k of n=5 (default 3)")
    p.add_argument(
        "--suite",
        default="hybrid-ed25519-ml-dsa-65",
        choices=("hybrid-ed25519-ml-dsa-65", "ml-dsa-65", "ed25519"),
        help="signature suite for every key (default hybrid)",
    )
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument(
        "--fabric-file",
        type=Path,
        default=Path(".cctf") / "fabric.json",
        help="where to write DNS control endpoints for `cctf chaos` (default .cctf/fabric.json)",
    )
    p.add_argument("--log-level", default="error", help="component log level (default error)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the coordinator's Prometheus metrics on ADDR:PORT/metrics (1..65535)",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address for --metrics-port (default 127.0.0.1)",
    )
    p.add_argument(
        "--fail-path",
        action="append",
        default=[],
        choices=("dns", "mtls", "oidc"),
        help=(
            "take a trust path down for the whole run (repeatable): dns blackholes every resolver, "
            "mtls the workload TLS endpoints, oidc the OIDC issuer"
        ),
    )
    p.add_argument(
        "--mtls-fault",
        default="down",
        choices=("down", "wrong-identity"),
        help="with --fail-path mtls: endpoints down (default) or presenting another SPIFFE ID",
    )
    p.add_argument(
        "--gateway-port",
        type=int,
        default=0,
        metavar="P",
        help="serve the gateway on 127.0.0.1:P (default: a free port; the URL is printed)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cctf.crypto.suites import SuiteId
    from cctf.devfabric.demo import DemoOptions, main_sync

    telemetry.configure_logging(json=True, level=args.log_level)
    opts = DemoOptions(
        rounds=args.rounds,
        poison=args.poison,
        blackhole=args.blackhole,
        bogus=args.bogus,
        gateway_port=args.gateway_port,
        json=args.json,
        nodes=args.nodes,
        coordinators=args.coordinators,
        round_ms=args.round_ms,
        k=args.k,
        suite=SuiteId(args.suite),
        workdir=args.dir,
        keep_workdir=args.dir is not None,
        fabric_file=args.fabric_file,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        fail_paths=tuple(args.fail_path),
        mtls_fault=args.mtls_fault,
    )
    try:
        opts.validate()
    except ValueError as exc:
        print(f"cctf demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        return main_sync(opts)
    except CctfError as exc:
        print(f"cctf demo: error: {exc}", file=sys.stderr)
        return 1
