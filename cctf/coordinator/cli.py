"""``cctf coordinator run --config FILE [--log-level info]``: run one coordinator until SIGINT/SIGTERM.

Exit codes: 0 stopped by SIGTERM or SIGINT (in every state: connecting, running, NATS gone; within
5 s), 1 the coordinator could not run (NATS connection closed for good, consumers cannot be bound),
2 the configuration (or a file it names) is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cctf import telemetry
from cctf.bus.settings import NatsSettingsError
from cctf.coordinator.config import ConfigError, CoordinatorConfig, load_coordinator_config
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import TrustConfig
from cctf.util.deadline import stop_task

if TYPE_CHECKING:
    from cctf.bus.connect import Connection
    from cctf.coordinator.service import Coordinator

_LEVELS = ("debug", "info", "warning", "error")
EXIT_STOPPED: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
_STOP_BUDGET_S: Final = 3.5  # of the 5 s a stop may take
#: ``gc.set_threshold`` of a running coordinator (young, middle, old generations; defaults 700, 10, 10)
GC_THRESHOLDS: Final = (20_000, 20, 100)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "coordinator",
        help="run the quorum coordinator",
        description="Verify ballots, tally votes and publish signed verdicts.",
    )
    sub = parser.add_subparsers(dest="coordinator_command", metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="run a coordinator until SIGINT/SIGTERM",
        description="Exit codes: 0 stopped by SIGTERM/SIGINT, 1 cannot run, 2 invalid config.",
    )
    run.add_argument("--config", required=True, type=Path, help="coordinator config (YAML or JSON)")
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
        config = load_coordinator_config(args.config)
        key = config.load_key()
        trust = config.load_trust()
        urls, user, password = config.nats_settings().resolve()
        config.nats_settings().client_tls()  # nats.tls: the files must be usable (docs/ca.md §8)
    except (ConfigError, NatsSettingsError) as exc:
        log.error("config_invalid", error=str(exc))
        print(f"cctf coordinator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_serve(config, key, trust, urls, user, password))
    except KeyboardInterrupt:
        return EXIT_STOPPED


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
    waiter = asyncio.create_task(stop.wait())
    log.info("nats_connecting", servers=len(urls))  # SIGINT/SIGTERM handled from here on
    connecting = asyncio.create_task(
        connect(
            urls,
            NatsUser(user, password),
            name=f"cctf-coordinator-{config.coordinator}",
            tls=config.nats_settings().client_tls(),  # None: the password path
        )
    )
    await asyncio.wait({connecting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():  # a signal while (re)trying to connect
        await stop_task(connecting, 1.0, what="NATS connect")
        log.info("coordinator_stopped", state="connecting")
        return EXIT_STOPPED
    try:
        nc = connecting.result()
    except Exception as exc:
        log.error("nats_connect_failed", error=str(exc), user=user)
        return EXIT_FAILED
    try:
        coordinator = Coordinator(config, nc, key=key, trust=trust, owns_conn=True)
        starting = asyncio.create_task(coordinator.start())
        await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            await stop_task(starting, 1.0, what="coordinator start")
            await _close(nc)
            return EXIT_STOPPED
        starting.result()
    except Exception as exc:
        log.error("coordinator_start_failed", error=str(exc))
        await _close(nc)
        return EXIT_FAILED
    # Everything allocated so far (modules, keys, trust, config) lives as long as this process:
    # take it out of the cyclic collector's view, or every full collection scans it again
    # (measured: 50 - 65 ms event-loop pauses under load; 3-node p99 9.7 -> 8.8 ms, +7 % verdicts/s).
    gc.collect()
    gc.freeze()
    # The hot path allocates ~100 short-lived objects per vote (decoded votes, tally entries,
    # verdicts): with the default young threshold (700) the collector runs every few votes and
    # scans the survivors of the growing tallies, caches and indexes each time (measured with
    # benchmarks/ingest.py: 43 % of the ingest-to-decision CPU). A larger young generation lets
    # most of them die before any collection (cycles are still collected, just less often). Not
    # too large: a young collection scans every tracked object allocated since the last one that
    # is still alive, one pause; at 50,000 those pauses reached 15 - 33 ms on the 2-core bench
    # machine and set the 100-name latency p99, at 20,000 they stay under ~10 ms for about the
    # same total GC time (the state a coordinator keeps is mostly untracked: wire structs,
    # decisions and the policy's per-name state are ``gc=False`` structs, answers are tuples).
    gc.set_threshold(*GC_THRESHOLDS)
    address = config.metrics_address
    if address is not None:
        try:
            telemetry.start_prometheus(address.port, address.host)
        except OSError as exc:
            log.error("metrics_failed", error=str(exc), address=config.metrics)
            await _stop(coordinator)
            return EXIT_FAILED
        log.info("metrics_serving", address=config.metrics)
    run = asyncio.create_task(coordinator.run_until_stopped())
    await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await _stop(coordinator)
    try:
        await asyncio.wait_for(run, 0.5)
    except CoordinatorError as exc:
        log.error("coordinator_exited", error=str(exc))
        return EXIT_FAILED
    except (TimeoutError, Exception):  # noqa: S110 - stopped; nothing more to report
        pass
    return EXIT_STOPPED if stop.is_set() else EXIT_FAILED


async def _stop(coordinator: Coordinator) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(coordinator.stop(), _STOP_BUDGET_S)


async def _close(nc: Connection) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(nc.close(), 1.0)
