"""``cctf nats``: run a local NATS JetStream fabric.

``cctf nats up`` starts one node or a 3-node cluster, creates the CCTF streams, writes a credentials
file (mode 0600) and runs until Ctrl-C or SIGTERM, then stops every nats-server it started.
Passwords are never printed: they are only in the credentials file and the generated configs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from cctf.bus.accounts import ADMIN_USER, DEFAULT_REGIONS, validate_region
from cctf.bus.leaders import LeaderReport, balance_leaders
from cctf.bus.streams import StreamSetupError, ensure_streams
from cctf.devfabric.nats import NatsFabric, NatsFabricError
from cctf.devfabric.nats_config import render_accounts_conf, render_tls_accounts_conf
from cctf.util.deadline import stop_task

_log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".cctf/nats")


def _regions(text: str) -> tuple[str, ...]:
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    if not regions:
        raise argparse.ArgumentTypeError("at least one region is required")
    try:
        for region in regions:
            validate_region(region)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if len(set(regions)) != len(regions):
        raise argparse.ArgumentTypeError("duplicate region")
    return regions


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``nats`` command to the ``cctf`` parser."""
    parser = subparsers.add_parser(
        "nats",
        help="run a local NATS JetStream fabric",
        description="Run a local NATS JetStream fabric (nats-server processes, streams, users).",
    )
    actions = parser.add_subparsers(dest="nats_action", metavar="ACTION")
    up = actions.add_parser(
        "up",
        help="start nats-server node(s), create the streams, run until Ctrl-C",
        description="Start a local NATS fabric and run until Ctrl-C or SIGTERM (then exit 0).",
    )
    up.add_argument("--nodes", type=int, choices=(1, 3), default=3, help="1 or 3 (default 3)")
    up.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"working directory for configs, logs and JetStream data (default {DEFAULT_DIR})",
    )
    up.add_argument(
        "--regions",
        type=_regions,
        default=DEFAULT_REGIONS,
        help="comma-separated regions (default " + ",".join(DEFAULT_REGIONS) + ")",
    )
    up.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="where to write the credentials JSON, mode 0600 (default DIR/credentials.json)",
    )
    up.add_argument(
        "--stream-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the cluster to accept the streams (default 30)",
    )
    up.set_defaults(func=_cmd_up)
    bal = actions.add_parser(
        "balance",
        help="spread the stream leaders evenly over the cluster's nodes",
        description="Spread the replicated streams' leaders over the nodes (preferred-leader "
        "stepdowns: each group of per-region streams evenly, then the totals). Exit 0 when every "
        "planned move took place, 1 when some did not, 2 on a usage error, 3 when the bus cannot "
        "be read.",
    )
    bal.add_argument("--credentials", type=Path, required=True, help="NATS credentials (JSON)")
    bal.add_argument("--user", default=ADMIN_USER, help=f"user (default {ADMIN_USER})")
    bal.add_argument("--timeout", type=float, default=20.0, help="seconds (default 20)")
    bal.add_argument("--json", action="store_true", help="print one JSON object")
    bal.set_defaults(func=_cmd_balance)
    conf = actions.add_parser(
        "accounts-conf",
        help="print deploy/nats/accounts.conf (users and permissions) for the given regions",
        description="Print the static accounts.conf (passwords from environment variables).",
    )
    conf.add_argument(
        "--regions",
        type=_regions,
        default=DEFAULT_REGIONS,
        help="comma-separated regions (default " + ",".join(DEFAULT_REGIONS) + ")",
    )
    conf.add_argument(
        "--tls",
        action="store_true",
        help="the NATS-over-TLS shape (verify_and_map): certificate-mapped users, no passwords",
    )
    conf.add_argument("--trust-domain", default="cctf.example", help="with --tls")
    conf.add_argument(
        "--agents",
        default="",
        help="with --tls: comma-separated region/agent (default agent-<region> per region)",
    )
    conf.set_defaults(func=_cmd_accounts_conf)

    def _help(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_help)


async def _create_streams(fabric: NatsFabric, timeout_s: float, stop: threading.Event) -> bool:
    """Create the streams; False if ``stop`` was set first."""
    nc = await fabric.connect(ADMIN_USER, name="cctf-nats-up", max_reconnect_attempts=5)
    try:
        task = asyncio.create_task(
            ensure_streams(
                nc.jetstream(), fabric.regions, fabric.stream_replicas, timeout_s=timeout_s
            )
        )
        while not task.done():
            if stop.is_set():
                await stop_task(task, 2.0, what="stream creation")
                return False
            await asyncio.wait({task}, timeout=0.2)
        await task
        if fabric.stream_replicas > 1:  # JetStream placed the leaders at random: spread them
            try:
                report = await balance_leaders(nc, timeout_s=timeout_s)
            except Exception as exc:  # the fabric works unspread: warn, never fail the start
                _log.warning("stream leaders not spread: %r", exc)
            else:
                if report.errors:
                    _log.warning("stream leaders not all spread: %s", report.errors)
        return True
    finally:
        await nc.close()


def _cmd_balance(args: argparse.Namespace) -> int:
    from cctf.bus.connect import connect
    from cctf.bus.credentials import load_credentials
    from cctf.errors import CctfError

    if not 0 < args.timeout <= 600:
        print("cctf nats balance: --timeout must be more than 0 and at most 600", file=sys.stderr)
        return 2
    try:
        creds = load_credentials(args.credentials)
        user = creds.users[args.user]
    except (CctfError, OSError, ValueError, KeyError) as exc:
        print(f"cctf nats balance: cannot use the credentials: {exc!r}", file=sys.stderr)
        return 2

    async def run() -> LeaderReport:
        nc = await connect(creds.urls, user, name="cctf-nats-balance", initial_retries=2)
        try:
            return await balance_leaders(nc, timeout_s=args.timeout)
        finally:
            await nc.close()

    try:
        report = asyncio.run(run())
    except Exception as exc:  # the bus: connection, permission, timeout
        print(f"cctf nats balance: {exc!r}"[:500], file=sys.stderr)
        return 3
    if args.json:
        print(
            json.dumps(
                {
                    "moved": report.done,
                    "asked": report.moved,
                    "errors": report.errors,
                    "leaders": report.after,
                    "per_node": report.per_node(),
                }
            )
        )
    else:
        for group, counts in sorted(report.per_node().items()):
            print(f"{group}: " + ", ".join(f"{n} {c}" for n, c in sorted(counts.items())))
        print(f"moved {len(report.done)} of {len(report.moved)} leader(s) asked to move")
        for name, error in report.errors.items():
            print(f"not moved: {name}: {error}", file=sys.stderr)
    return 1 if report.errors else 0


def _cmd_accounts_conf(args: argparse.Namespace) -> int:
    if not args.tls:
        sys.stdout.write(render_accounts_conf(args.regions))
        return 0
    try:
        agents = [
            (r, a)
            for r, a in (item.split("/", 1) for item in args.agents.split(",") if "/" in item)
        ] or [(r, f"agent-{r}") for r in args.regions]
        sys.stdout.write(render_tls_accounts_conf(args.trust_domain, agents, args.regions))
    except ValueError as exc:
        print(f"cctf nats: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    received: list[int] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _on_signal)
    workdir: Path = args.dir
    credentials: Path = args.credentials or workdir / "credentials.json"
    fabric: NatsFabric | None = None
    try:
        try:
            fabric = NatsFabric.start(workdir, nodes=args.nodes, regions=args.regions)
            if stop.is_set() or not asyncio.run(_create_streams(fabric, args.stream_timeout, stop)):
                return 0
        except (NatsFabricError, StreamSetupError, OSError) as exc:
            print(f"cctf nats up: {exc}", file=sys.stderr)
            return 1
        path = fabric.write_credentials(credentials)
        own = fabric.write_user_credentials(credentials.parent / "credentials.d")
        print(f"NATS fabric up: {len(fabric.servers)} node(s), regions {','.join(fabric.regions)}")
        for url in fabric.urls:
            print(f"  client url: {url}")
        for server in fabric.servers:
            print(f"  {server.name}: monitoring {server.monitor_url}, log {server.log_path}")
        print(f"credentials: {path.resolve()} (mode 0600; every user: the operator's)")
        some = next(iter(own.values()))
        print(
            f"own credentials: {some.parent.resolve()}/<user>.json (one user each: hand these out)"
        )
        print("press Ctrl-C to stop", flush=True)
        warned: set[str] = set()
        while not stop.wait(0.5):
            for server in fabric.servers:
                if not server.running and server.name not in warned:
                    warned.add(server.name)
                    print(
                        f"warning: nats-server {server.name} exited "
                        f"(code {server.returncode}); see {server.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
        print("stopping NATS fabric", flush=True)
        return 0
    finally:
        if fabric is not None:
            fabric.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cctf nats ...`` on its own (``python -m cctf.devfabric.nats_cli up``)."""
    parser = argparse.ArgumentParser(prog="cctf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["nats", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
