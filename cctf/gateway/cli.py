"""``cctf gateway --config FILE``: serve the HTTP API until SIGTERM or SIGINT.

Logs (JSON lines) go to stderr; one ``gateway_listening`` line carries the URL. Exit codes: 0 stopped
by SIGTERM/SIGINT (in every state: connecting, serving; within a few seconds), 1 cannot run (NATS
still unreachable after a few minutes of retries, the address cannot be bound), 2 invalid
configuration (or a file it names).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Final

from cctf import telemetry
from cctf.util.deadline import stop_task

__all__ = ["register"]

EXIT_STOPPED: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
#: first-connection attempts per server (0.2 - 0.5 s apart: a few minutes) before exit 1
CONNECT_RETRIES: Final = 600


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="serve the relying-party HTTP API",
        description="Serve /v1/trust, /v1/workloads, /v1/validate/*, /healthz and /metrics "
        "(OpenAPI at /openapi.json). Exit codes: 0 stopped by SIGTERM/SIGINT, 1 cannot run, "
        "2 invalid config.",
    )
    p.add_argument("--config", required=True, type=Path, help="gateway config (YAML or JSON)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="json", choices=("json", "console"))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cctf.bus.settings import NatsSettingsError
    from cctf.errors import ConfigError
    from cctf.gateway.config import load_gateway_config

    telemetry.configure_logging(json=args.log_format == "json", level=args.log_level)
    log = telemetry.get_logger("cctf.gateway")
    try:
        config = load_gateway_config(args.config)
        trust = config.load_trust()
        urls, user, password = config.nats.resolve()
        config.nats.client_tls()  # nats.tls: the files must be usable (docs/ca.md §8)
    except (ConfigError, NatsSettingsError) as exc:
        log.error("config_invalid", error=str(exc))
        print(f"cctf gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_serve(config, trust, urls, user, password))
    except KeyboardInterrupt:
        return EXIT_STOPPED


async def _serve(config: object, trust: object, urls: list[str], user: str, password: str) -> int:
    from cctf.client.identity import IdentityClient
    from cctf.client.sdk import TrustClient
    from cctf.crypto.trust import TrustConfig
    from cctf.gateway.app import create_app
    from cctf.gateway.config import GatewayConfig
    from cctf.gateway.server import GatewayServer

    assert isinstance(config, GatewayConfig) and isinstance(trust, TrustConfig)
    log = telemetry.get_logger("cctf.gateway")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    log.info("gateway_connecting", urls=urls, user=user, region=config.region)
    connecting = asyncio.create_task(
        TrustClient.connect(
            urls,
            user,
            password,
            trust,
            config.region,
            policy=config.policy(),
            request_timeout=config.request_timeout_ms / 1000,
            round_ms=config.round_ms,
            max_age_ms=config.max_age_ms,
            coordinators=None if config.coordinators is None else config.coordinators.policy(),
            # a service waits for NATS (minutes, like the coordinator); SIGTERM ends the wait
            initial_retries=CONNECT_RETRIES,
            tls=config.nats.client_tls(),  # None: the password path
        )
    )
    await asyncio.wait({connecting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        await stop_task(connecting, 1.0, what="NATS connect")
        log.info("gateway_stopped", state="connecting")
        return EXIT_STOPPED
    try:
        client = connecting.result()
    except Exception as exc:
        log.error("nats_connect_failed", error=str(exc) or type(exc).__name__, user=user)
        return EXIT_FAILED
    async with client:
        identity = IdentityClient(
            client,
            config.identity,
            cache_size=config.material_cache,
            require_dnssec=config.require_dnssec,
            dns_lkg_holds=config.dns_lkg_holds,
        )
        host, port = config.address
        from cctf.logmon.apiclient import LogApiClient

        app = create_app(
            identity, max_body_bytes=config.max_body_bytes, log=LogApiClient(client.nc)
        )
        server = GatewayServer(app, host, port)
        try:
            await server.start()
        except OSError as exc:
            log.error("listen_failed", error=str(exc), listen=config.listen)
            return EXIT_FAILED
        log.info("gateway_listening", url=server.url, region=config.region)
        serving = asyncio.create_task(server.wait())
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await server.stop()
    log.info("gateway_stopped", state="serving")
    return EXIT_STOPPED if stop.is_set() else EXIT_FAILED
