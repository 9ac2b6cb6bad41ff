"""``cctf chaos``: run a fault-injecting DNS server, and switch faults of running ones.

    cctf chaos serve [--zone FILE --origin ORIGIN] [--sign] [--host H] [--port N] [fault options]
    cctf chaos set    SELECTOR (--blackhole|--servfail|--refused|--poison ADDR|--clear) [--ttl N]
                      [--delay-ms N] [--dnssec FAULT] [--json]
    cctf chaos status SELECTOR [--all] [--json]
    cctf chaos run    SCENARIO|all [--checks N] [--json]   (see cctf.chaos.runcli)

    SELECTOR: --fabric PATH --resolver ID  |  --control HOST:PORT --token-file FILE

Exit codes: 0 success, 1 a request failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cctf.chaos.control import (
    DEFAULT_FABRIC_PATH,
    ChaosControlClient,
    ChaosControlError,
    FabricFileError,
    HostPort,
    load_fabric_resolvers,
    read_token_file,
    write_token_file,
)
from cctf.chaos.faults import DNSSEC_FAULTS, MAX_DELAY_MS, MAX_TTL, FaultError, Faults
from cctf.errors import CctfError

if TYPE_CHECKING:
    from cctf.chaos.dnsserver import FaultyDnsServer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(CctfError):
    """Bad usage: printed as one line, exit 2."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = subparsers.add_parser(
        "chaos",
        help="fault-injecting DNS servers",
        description="Run a fault-injecting authoritative DNS server, or change the faults of a "
        "running one through its control channel.",
    )
    chaos.set_defaults(func=lambda _args: _print_help(chaos))
    sub = chaos.add_subparsers(dest="chaos_command", metavar="SUBCOMMAND")

    serve = sub.add_parser(
        "serve",
        help="run a fault-injecting DNS server until Ctrl-C/SIGTERM",
        description="Run a fault-injecting DNS server until Ctrl-C or SIGTERM (then exit 0).",
    )
    serve.add_argument("--zone", metavar="FILE", help="zone file (default: the built-in demo zone)")
    serve.add_argument("--origin", metavar="ORIGIN", help="zone origin (default: demo.test.)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument("--port", type=_port, default=0, help="UDP+TCP port (default: any free one)")
    serve.add_argument(
        "--control-port", type=_port, default=0, help="control channel port (default: any free one)"
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help="where to write the control token, mode 0600 "
        "(default: .cctf/chaos-<dns-port>.token; removed on exit)",
    )
    serve.add_argument(
        "--sign",
        action="store_true",
        help="sign the zone with fresh DNSSEC keys (printed: its DS trust anchor for agents)",
    )
    _add_fault_options(serve, with_clear=False)
    serve.set_defaults(func=_cmd_serve)

    setp = sub.add_parser("set", help="change the faults of a running server")
    _add_selector(setp, allow_all=False)
    _add_fault_options(setp, with_clear=True)
    setp.add_argument("--json", action="store_true", help="print the result as JSON")
    setp.set_defaults(func=_cmd_set)

    status = sub.add_parser("status", help="show faults and counters of running servers")
    _add_selector(status, allow_all=True)
    status.add_argument("--json", action="store_true", help="print the result as JSON")
    status.set_defaults(func=_cmd_status)

    from cctf.chaos.runcli import add_run_parser

    add_run_parser(sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (0..65535)")
    return int(text)


def _ttl(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_TTL:
        raise argparse.ArgumentTypeError(f"invalid TTL {text!r} (0..{MAX_TTL})")
    return int(text)


def _delay(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_DELAY_MS:
        raise argparse.ArgumentTypeError(f"invalid delay {text!r} (0..{MAX_DELAY_MS} ms)")
    return int(text)


def _add_fault_options(parser: argparse.ArgumentParser, *, with_clear: bool) -> None:
    group = parser.add_argument_group("faults")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("--blackhole", action="store_true", help="never answer")
    mode.add_argument("--servfail", action="store_true", help="answer SERVFAIL")
    mode.add_argument("--refused", action="store_true", help="answer REFUSED")
    mode.add_argument("--poison", metavar="ADDR", help="forge this IPv4 address in A answers")
    if with_clear:
        mode.add_argument("--clear", action="store_true", help="remove all faults")
    group.add_argument("--poison6", metavar="ADDR", help="forge this IPv6 address in AAAA answers")
    group.add_argument("--ttl", type=_ttl, metavar="N", help="override the TTL of answer records")
    group.add_argument("--delay-ms", type=_delay, metavar="N", help="answer N milliseconds late")
    group.add_argument(
        "--dnssec",
        choices=DNSSEC_FAULTS,
        help="DNSSEC fault of a signed zone (tampered: bad signature, expired: expired RRSIGs, "
        "no-rrsig, wrong-ds / missing-ds: at delegations)",
    )


def _add_selector(parser: argparse.ArgumentParser, *, allow_all: bool) -> None:
    group = parser.add_argument_group("which server")
    group.add_argument(
        "--fabric",
        metavar="PATH",
        help=f"fabric state file (default with --resolver/--all: {DEFAULT_FABRIC_PATH})",
    )
    group.add_argument("--resolver", metavar="ID", help="resolver id in the fabric file")
    if allow_all:
        group.add_argument("--all", action="store_true", help="every resolver of the fabric file")
    group.add_argument("--control", metavar="HOST:PORT", help="control address of one server")
    group.add_argument("--token-file", metavar="FILE", help="file holding the control token")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")


def _faults_from_args(args: argparse.Namespace) -> Faults:
    try:
        return Faults(
            blackhole=bool(args.blackhole),
            servfail=bool(args.servfail),
            refused=bool(args.refused),
            poison=args.poison,
            poison6=args.poison6,
            ttl=args.ttl,
            delay_ms=args.delay_ms or 0,
            dnssec=args.dnssec,
        )
    except FaultError as exc:
        raise _UsageError(str(exc)) from None


def _targets(args: argparse.Namespace) -> list[tuple[str, ChaosControlClient]]:
    """``[(label, client)]`` for the selected servers; raises ``_UsageError``."""
    use_all = bool(getattr(args, "all", False))
    if args.control is not None or args.token_file is not None:
        if args.fabric is not None or args.resolver is not None or use_all:
            raise _UsageError("use either --control/--token-file or --fabric/--resolver, not both")
        if args.control is None or args.token_file is None:
            raise _UsageError("--control and --token-file go together")
        try:
            address = HostPort.parse(args.control)
            token = read_token_file(args.token_file)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        client = ChaosControlClient(address.host, address.port, token, timeout=args.timeout)
        return [(str(address), client)]
    if args.resolver is None and not use_all:
        hint = "--resolver ID (or --all)" if hasattr(args, "all") else "--resolver ID"
        raise _UsageError(
            f"choose a server: --fabric PATH {hint}, or --control HOST:PORT --token-file F"
        )
    if args.resolver is not None and use_all:
        raise _UsageError("--resolver and --all exclude each other")
    try:
        resolvers = load_fabric_resolvers(args.fabric or DEFAULT_FABRIC_PATH)
    except FabricFileError as exc:
        raise _UsageError(str(exc)) from None
    if use_all:
        if not resolvers:
            raise _UsageError("the fabric file lists no resolvers")
        return [(rid, ep.client(timeout=args.timeout)) for rid, ep in sorted(resolvers.items())]
    endpoint = resolvers.get(args.resolver)
    if endpoint is None:
        known = ", ".join(sorted(resolvers)) or "none"
        raise _UsageError(f"no resolver {args.resolver!r} in the fabric file (known: {known})")
    return [(args.resolver, endpoint.client(timeout=args.timeout))]


def _usage(message: str) -> int:
    print(f"cctf chaos: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- set ------------------------------------------------------------------------------------------


def _cmd_set(args: argparse.Namespace) -> int:
    try:
        if args.clear:
            if (
                args.poison6 is not None
                or args.ttl is not None
                or args.delay_ms is not None
                or args.dnssec is not None
            ):
                raise _UsageError("--clear cannot be combined with other fault options")
            faults = Faults()
        else:
            faults = _faults_from_args(args)
            if not faults.active:
                raise _UsageError(
                    "say what to set: --blackhole, --servfail, --refused, --poison ADDR, "
                    "--poison6 ADDR, --ttl N, --delay-ms N, --dnssec FAULT, or --clear"
                )
        targets = _targets(args)
    except _UsageError as exc:
        return _usage(str(exc))
    label, client = targets[0]
    try:
        result = asyncio.run(client.set(faults))
    except ChaosControlError as exc:
        _emit_error(args, label, str(exc))
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"ok": True, "server": label, "faults": result.to_dict()}))
    else:
        print(f"{label}: faults {result.describe()}")
    return EXIT_OK


def _emit_error(args: argparse.Namespace, label: str, message: str) -> None:
    if args.json:
        print(json.dumps({"ok": False, "server": label, "error": message}))
    else:
        print(f"{label}: error: {message}", file=sys.stderr)


# -- status ---------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        targets = _targets(args)
    except _UsageError as exc:
        return _usage(str(exc))

    results = asyncio.run(_gather_each(targets))
    failed = any(isinstance(r, ChaosControlError) for r in results)
    if args.json:
        entries: list[dict[str, Any]] = []
        for (label, _), result in zip(targets, results, strict=True):
            if isinstance(result, ChaosControlError):
                entries.append({"server": label, "ok": False, "error": str(result)})
            else:
                entries.append({"server": label, "ok": True, **result})
        print(json.dumps(entries[0] if len(entries) == 1 else {"servers": entries}))
    else:
        for (label, _), result in zip(targets, results, strict=True):
            if isinstance(result, ChaosControlError):
                print(f"{label}: error: {result}", file=sys.stderr)
            else:
                print(f"{label}: {_status_line(result)}")
    return EXIT_FAILED if failed else EXIT_OK


async def _gather_each(
    targets: list[tuple[str, ChaosControlClient]],
) -> list[dict[str, Any] | ChaosControlError]:
    async def one(client: ChaosControlClient) -> dict[str, Any] | ChaosControlError:
        try:
            return await client.stats()
        except ChaosControlError as exc:
            return exc

    return list(await asyncio.gather(*(one(client) for _, client in targets)))


def _status_line(result: dict[str, Any]) -> str:
    try:
        faults = Faults.from_dict(result.get("faults") or {}).describe()
    except (FaultError, TypeError):
        faults = "?"
    stats = result.get("stats") or {}
    return (
        f"faults {faults}; queries {stats.get('received', '?')}, "
        f"answered {stats.get('answered', '?')}, dropped {stats.get('dropped_total', '?')}"
    )


# -- serve ----------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from cctf.chaos.dnsserver import FaultyDnsServer
    from cctf.chaos.signing import sign
    from cctf.chaos.zone import DEMO_ORIGIN, demo_zone, load_zone_file

    try:
        faults = _faults_from_args(args)
        if args.zone is not None:
            zone = load_zone_file(args.zone, args.origin or DEMO_ORIGIN)
        else:
            zone = demo_zone(args.origin or DEMO_ORIGIN)
        signed = sign(zone) if args.sign else None
        server = FaultyDnsServer(
            zone,
            host=args.host,
            port=args.port,
            faults=faults,
            control=True,
            control_port=args.control_port,
            signed=signed,
        )
    except (_UsageError, ValueError) as exc:
        return _usage(str(exc))
    try:
        token_path = Path(args.token_file).absolute() if args.token_file else None
        anchors = signed.trust_anchors if signed is not None else []
        return asyncio.run(_serve(server, token_path, anchors))
    except OSError as exc:
        print(f"cctf chaos serve: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _serve(server: FaultyDnsServer, token_path: Path | None, anchors: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    path = token_path or Path.cwd() / ".cctf" / f"chaos-{server.port}.token"
    control = server.control
    assert control is not None
    try:
        write_token_file(path, server.control_token)
        print(f"dns {_addr(server.host, server.port)} udp+tcp zone {server.responder.origin}")
        print(f"control {_addr(control.host, control.port)}")
        print(f"token-file {path}")
        for anchor in anchors:
            print(f"trust-anchor {anchor}")
        print(f"faults {server.faults.describe()}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        with contextlib.suppress(OSError):
            path.unlink()
    return EXIT_OK


def _addr(host: str, port: int) -> str:
    return str(HostPort(host, port))
