"""``cctf coordinator run --config FILE [--log-level info]``: run one coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from pathlib import Path

from cctf import telemetry
from cctf.bus.settings import NatsSettingsError
from cctf.coordinator.config import ConfigError, CoordinatorConfig
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import TrustConfig

_LEVELS = ("debug", "info", "warning", "error")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "coordinator",
        help="run the quorum coordinator",
        description="Verify ballots, tally votes and publish signed verdicts.",
    )
    sub = parser.add_subparsers(dest="coordinator_command", metavar="ACTION")
    run = sub.add_parser("run", help="run a coordinator until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path, help="coordinator config (JSON)")
    run.add_argument("--log-level", default="info", choices=_LEVELS)
    run.add_argument(
        "--log-format", default="json", choices=("json", "console"), help="log line format"
    )
    run.set_defaults(func=_run)

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_usage)


def _run(args: argparse.Namespace) -> int:
    telemetry.configure_logging(json=args.log_format == "json", level=args.log_level)
    log = telemetry.get_logger("cctf.coordinator.cli")
    try:
        config = CoordinatorConfig.load(args.config)
        key = config.load_key()
        trust = config.load_trust()
        urls, user, password = config.nats.resolve()
    except (ConfigError, NatsSettingsError) as exc:
        log.error("config_invalid", error=str(exc))
        print(f"cctf coordinator: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config, key, trust, urls, user, password))
    except KeyboardInterrupt:
        return 130


async def _serve(
    config: CoordinatorConfig,
    key: SigningKey,
    trust: TrustConfig,
    urls: list[str],
    user: str,
    password: str,
) -> int:
    # imported here so that ``cctf --help`` does not load nats
    from cctf.bus.accounts import NatsUser
    from cctf.bus.connect import connect
    from cctf.coordinator.service import Coordinator, CoordinatorError

    log = telemetry.get_logger("cctf.coordinator.cli")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        nc = await connect(
            urls, NatsUser(user, password), name=f"cctf-coordinator-{config.coordinator}"
        )
    except Exception as exc:
        log.error("nats_connect_failed", error=str(exc), user=user)
        return 1
    coordinator = Coordinator.from_config(config, nc, key=key, trust=trust, owns_nc=True)
    try:
        await coordinator.start()
    except Exception as exc:
        log.error("coordinator_start_failed", error=str(exc))
        with contextlib.suppress(Exception):
            await nc.close()
        return 1
    # Everything allocated so far (modules, keys, trust, config) lives as long as this process:
    # take it out of the cyclic collector's view, or every full collection scans it again
    # (measured: 50 - 65 ms event-loop pauses under load; 3-node p99 9.7 -> 8.8 ms, +7 % verdicts/s).
    gc.collect()
    gc.freeze()
    if config.metrics_port is not None:
        telemetry.start_prometheus(config.metrics_port)
        log.info("metrics_serving", port=config.metrics_port)
    run = asyncio.create_task(coordinator.run_until_stopped())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await coordinator.stop()
    try:
        await run
    except CoordinatorError as exc:
        log.error("coordinator_exited", error=str(exc))
        return 1
    return 0
