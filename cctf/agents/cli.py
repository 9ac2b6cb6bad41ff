"""``cctf agent``: run a resolver agent.

::

    cctf agent run --config agent.yaml [--rounds N] [--log-level info] [--log-format json|console]

Exit codes: 0 after ``--rounds`` rounds or on SIGINT/SIGTERM (a clean stop, within 5 s in every state:
while connecting it stops at once; while running the current round ends early, its publishes stop
retrying, a round still querying after 2 s is cancelled, and the NATS connection is drained for at
most 1.5 s); 2 for an invalid configuration (the
message says what is wrong); 1 when NATS cannot be reached at start (every server tried
:data:`CONNECT_RETRIES` + 1 times). Once connected, a NATS outage is ridden out: the client reconnects
and the rounds in between are logged as failed. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from pathlib import Path
from typing import Any, Final

from cctf.agents.config import AgentConfig, ConfigError, load_agent_config
from cctf.crypto.keys import SigningKey
from cctf.errors import ConfigError as RootConfigError
from cctf.telemetry import configure_logging, get_logger

_LEVELS = ("debug", "info", "warning", "error")
#: After SIGINT/SIGTERM: the current round may finish within this, then it is cancelled; the NATS
#: connection is then drained and closed within the next two bounds (5 s in all, with slack).
_STOP_GRACE_S = 2.0
_DRAIN_TIMEOUT_S = 1.5
_CLOSE_TIMEOUT_S = 0.5
#: ``gc.set_threshold`` of a running agent (young, middle, old generations; defaults 700, 10, 10),
#: as the coordinator's (:data:`cctf.coordinator.cli.GC_THRESHOLDS`; cycles are still collected).
GC_THRESHOLDS: Final = (20_000, 20, 100)
#: Initial connection attempts per server after the first (then exit 1).
CONNECT_RETRIES = 10


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("agent", help="run a resolver agent")
    sub = parser.add_subparsers(dest="agent_command", metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="query the configured resolvers every round and publish signed ballots",
        description="Run a resolver agent until stopped (SIGINT/SIGTERM) or for --rounds rounds.",
    )
    run.add_argument("--config", required=True, metavar="FILE", help="agent config (YAML or JSON)")
    run.add_argument(
        "--rounds", type=_positive_int, default=None, metavar="N", help="stop after N rounds"
    )
    run.add_argument("--log-level", choices=_LEVELS, default="info")
    run.add_argument("--log-format", choices=("json", "console"), default="json")
    run.set_defaults(func=_cmd_run)
    parser.set_defaults(func=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    configure_logging(json=args.log_format == "json", level=args.log_level)
    log = get_logger("cctf.agent.cli")
    try:
        config = load_agent_config(args.config)
        key = config.load_key()
        if config.ca is not None:  # the CA's intermediate must be readable before connecting
            from cctf.ca.config import load_certificate

            load_certificate(config.ca.intermediate, "ca.intermediate")
        if config.ca is None or config.ca.join_cert is None:  # else: made by the bootstrap
            config.nats.client_tls()  # nats.tls: the files must be usable before connecting
    except (ConfigError, RootConfigError) as exc:
        print(f"cctf agent: invalid configuration: {exc}", file=sys.stderr)
        return 2
    log.info("agent.config", config=args.config, agent=config.agent, region=config.region)
    return asyncio.run(_run(config, key, args.rounds))


async def _run(config: AgentConfig, key: SigningKey, rounds: int | None) -> int:
    # imported here: the NATS client is only needed when an agent actually runs
    from cctf.agents.resolver import ResolverAgent
    from cctf.bus.connect import connect

    log = get_logger("cctf.agent.cli")
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    agent: ResolverAgent | None = None
    signals = 0
    hard_stop: asyncio.TimerHandle | None = None

    def on_signal() -> None:
        nonlocal signals, hard_stop
        signals += 1
        if agent is not None and signals == 1 and main_task is not None:
            log.info("agent.signal", action="stopping after the current round")
            agent.stop()
            # a round's DNS queries may run for most of a long round: do not wait for them
            hard_stop = loop.call_later(_STOP_GRACE_S, main_task.cancel)
        elif main_task is not None:
            main_task.cancel()  # second signal, or still connecting: stop now

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    nc: Any = None
    try:
        if config.ca is not None and config.ca.join_cert is not None and config.nats.tls:
            # no valid certificate of its own yet: the first one over the join credential
            from cctf.ca.bootstrap import bootstrap, needs_certificate
            from cctf.clock import SYSTEM_CLOCK

            if needs_certificate(Path(config.nats.tls.cert), SYSTEM_CLOCK.now_ms()):
                try:
                    got = await bootstrap(
                        list(config.nats.urls),
                        key,
                        agent=config.agent,
                        region=config.region,
                        config=config.ca,
                        server_ca=Path(config.nats.tls.ca),
                        retries=CONNECT_RETRIES,
                    )
                except asyncio.CancelledError:
                    _uncancel(main_task)
                    log.info("agent.cancelled", state="bootstrap")
                    return 0
                except Exception as exc:
                    log.error("agent.bootstrap_failed", error=str(exc)[:300] or type(exc).__name__)
                    print(
                        f"cctf agent: no first certificate over the join credential "
                        f"({str(exc)[:300] or type(exc).__name__})",
                        file=sys.stderr,
                    )
                    return 1
                log.info("agent.bootstrapped", serial=got.serial, not_after_ms=got.not_after_ms)
        tls = config.nats.client_tls()  # a certificate: reloaded on every renewal below
        try:
            nc = await connect(
                list(config.nats.urls),
                config.nats.nats_user(),
                name=f"cctf-agent-{config.agent}",
                initial_retries=CONNECT_RETRIES,
                tls=tls,
            )
        except asyncio.CancelledError:
            _uncancel(main_task)
            log.info("agent.cancelled", state="connecting")
            return 0
        except Exception as exc:
            log.error(
                "agent.nats_unreachable", error=type(exc).__name__, urls=list(config.nats.urls)
            )
            print(
                f"cctf agent: cannot reach NATS at {', '.join(config.nats.urls)} "
                f"({type(exc).__name__})",
                file=sys.stderr,
            )
            return 1
        renewer = None
        if config.ca is not None:  # a certificate before the first round, renewed at 2/3
            from cctf.ca.renew import CertRenewer

            renewer = CertRenewer(
                nc, key, agent=config.agent, region=config.region, config=config.ca
            )
            if tls is not None:  # reconnects present the current certificate (docs/ca.md §8)
                renewer.on_renewed.append(tls.reload)
            try:
                await renewer.obtain_until(0)  # one try now; the task keeps trying
            except asyncio.CancelledError:
                _uncancel(main_task)
                log.info("agent.cancelled", state="certificate")
                return 0
            renewer.start()
        agent = ResolverAgent.from_config(config, nc, key=key)
        _tune_gc()
        try:
            await agent.run(rounds)
        except asyncio.CancelledError:
            _uncancel(main_task)
            log.info("agent.cancelled", state="running")
        finally:
            if renewer is not None:
                await renewer.stop()
        return 0
    finally:
        if hard_stop is not None:
            hard_stop.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), _DRAIN_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), _CLOSE_TIMEOUT_S)


def _tune_gc() -> None:
    """The agent's garbage-collector settings, once set up (:data:`GC_THRESHOLDS`): what is alive
    now (modules, config, the agent) is frozen out of the collector's view, and the young
    generation is large. A round allocates a few short-lived objects per query (futures, timer
    handles, observations, votes) while the answer memo and the DNSSEC chain cache hold thousands
    of long-lived ones; with the defaults the collector ran every few hundred queries and scanned
    those again (``benchmarks/load.py``, one warm 3,000-name round alone: 175 -> 104 ms of CPU in
    ``query_all``, and no more 130-180 ms pauses while building the ballots)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _uncancel(task: asyncio.Task[Any] | None) -> None:
    """The cancellation was ours and is handled: let the clean-up await normally."""
    if task is not None:
        while task.uncancel():
            pass
