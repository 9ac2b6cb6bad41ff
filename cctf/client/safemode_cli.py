"""``cctf safe-mode enter|leave|status|watch``: the operator's safe-mode commands and their state.

``enter`` / ``leave`` sign a :class:`~cctf.bus_schemas.control.SafeModeCommand` with an *operator*
key (``cctf keys generate --role operator``; the coordinators' trust config must hold its public
entry) and publish it on ``cctf.v1.operator.<region>`` as a NATS user allowed to (``admin``: no other
user may publish there). With ``--trust`` the command waits for the coordinator's signed answer on
``cctf.v1.control.<region>`` and prints it. ``status`` prints the verified last announcement of a
region (its active scopes), ``watch`` streams verified announcements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from cctf.client.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, _fail, _run

EXIT_TIMEOUT = 4

_EPILOG = """\
exit codes:
  0    done (enter/leave: the coordinator announced the result when --trust is given)
  1    error: files, connection, refused publish, no or rejected announcement
  2    usage error (bad --region, --name, --reason)
  4    enter/leave: no answer from a coordinator within --timeout
  130  interrupted (SIGINT)   143  terminated (SIGTERM)
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sm = subparsers.add_parser(
        "safe-mode",
        help="enter, leave, show or watch safe mode (signed operator commands and announcements)",
        description="Enter or leave safe mode for a region or a name (signed operator command), "
        "show a region's verified state, or watch its signed announcements.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def _usage(_args: argparse.Namespace) -> int:
        sm.print_help()
        return EXIT_USAGE

    sm.set_defaults(func=_usage)
    sub = sm.add_subparsers(dest="safe_mode_command", metavar="ACTION")
    for action in ("enter", "leave"):
        p = sub.add_parser(action, help=f"{action} safe mode (signed operator command)")
        _common(p, user="admin", trust_required=False)
        p.add_argument("--name", default="", help="a DNS name or SPIFFE ID (default: the region)")
        p.add_argument("--reason", required=True, help="why (recorded in the announcement)")
        p.add_argument("--key", type=Path, required=True, help="the operator's signing key file")
        p.add_argument("--operator", required=True, help="the operator key's principal")
        p.set_defaults(func=run_command, action=action)
    status = sub.add_parser("status", help="the region's verified safe-mode state")
    _common(status, user="client", trust_required=True)
    status.set_defaults(func=run_status)
    watch = sub.add_parser("watch", help="stream the region's verified announcements")
    _common(watch, user="client", trust_required=True)
    watch.add_argument("--count", type=int, default=None, help="exit 0 after N announcements")
    watch.set_defaults(func=run_watch)


def _common(p: argparse.ArgumentParser, *, user: str, trust_required: bool) -> None:
    p.add_argument("--credentials", type=Path, required=True, help="NATS credentials file (JSON)")
    p.add_argument("--user", default=user, help=f"user in the credentials file (default {user})")
    p.add_argument("--region", required=True, help="the region")
    p.add_argument(
        "--trust",
        type=Path,
        required=trust_required,
        help="trust config (coordinator keys)"
        + ("" if trust_required else ": wait for the answer"),
    )
    p.add_argument("--min-suite", default="hybrid-ed25519-ml-dsa-65", help="weakest suite accepted")
    p.add_argument(
        "--coordinators",
        default=None,
        metavar="K:C1,C2,...",
        help="k-of-m: combine the announcements of these coordinators (their own subjects)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON lines")


def announcement_json(a: Any) -> dict[str, Any]:
    return {
        "region": a.region,
        "scope": a.scope,
        "state": a.state.value,
        "cause": a.cause.value,
        "rule": a.rule,
        "reason": a.reason,
        "round": a.round,
        "active": list(a.active),
        "issued_ms": a.issued_ms,
        "coordinator": a.coordinator,
    }


def announcement_line(a: Any) -> str:
    scope = a.scope or "*"
    active = ",".join(s or "*" for s in a.active) or "-"
    text = f"{a.region} {scope} {a.state.value.upper()} cause={a.cause.value} active={active}"
    return (f"{text} why={a.reason!r}" if a.reason else text).encode("unicode_escape").decode()


def _print(args: argparse.Namespace, a: Any) -> None:
    print(json.dumps(announcement_json(a)) if args.json else announcement_line(a), flush=True)


class _Bad(ValueError):
    pass


def _prepare(args: argparse.Namespace) -> dict[str, Any]:
    from cctf.bus.credentials import load_credentials
    from cctf.client.coordquorum import parse_policy
    from cctf.crypto.errors import CryptoError
    from cctf.crypto.policy import SuitePolicy
    from cctf.crypto.trust import TrustConfig
    from cctf.errors import CctfError
    from cctf.ids import IdError, check_id

    try:
        check_id(args.region, "region")
        policy = SuitePolicy.parse(args.min_suite)
        coordinators = None if args.coordinators is None else parse_policy(args.coordinators)
    except (IdError, CryptoError, ValueError) as exc:
        raise _Bad(str(exc)) from None
    if not (0 < args.timeout <= 3600):
        raise _Bad("--timeout must be more than 0 and at most 3600 seconds")
    try:
        creds = load_credentials(args.credentials)
        trust = TrustConfig.load(args.trust) if args.trust is not None else None
    except (OSError, CctfError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if args.user not in creds.users:
        raise ValueError(f"user {args.user!r} is not in {args.credentials}")
    return {"creds": creds, "trust": trust, "policy": policy, "coordinators": coordinators}


async def _connect(args: argparse.Namespace, creds: Any) -> Any:
    from cctf.bus.connect import connect

    return await connect(
        creds.urls,
        creds.users[args.user],
        name=f"cctf-safe-mode-{os.getpid()}",
        initial_retries=2,
        max_reconnect_attempts=2,
    )


def run_command(args: argparse.Namespace) -> int:
    from cctf.bus_schemas.control import MAX_REASON_CHARS, scope_of
    from cctf.bus_schemas.subjects import SubjectError
    from cctf.crypto.errors import CryptoError
    from cctf.crypto.keys import load_signing_key
    from cctf.ids import IdError, check_id

    try:
        prepared = _prepare(args)
        scope = scope_of(args.name)
        check_id(args.operator, "operator")
        if not args.reason or len(args.reason) > MAX_REASON_CHARS:
            raise _Bad(f"--reason must be 1 to {MAX_REASON_CHARS} characters")
    except (_Bad, SubjectError, IdError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        key = load_signing_key(args.key)
    except (OSError, CryptoError, ValueError) as exc:
        return _fail(f"cannot read the operator key {args.key}: {exc}")
    return _run(_command(args, prepared, key, scope))


async def _command(args: argparse.Namespace, prepared: dict[str, Any], key: Any, scope: str) -> int:
    from cctf.bus.headers import MSG_ID
    from cctf.bus.reader import ReadError, open_ordered_feed
    from cctf.bus.streams import CONTROL_STREAM
    from cctf.bus_schemas.control import Action, SafeModeCause, SafeModeCommand
    from cctf.bus_schemas.envelope import Rejected, seal
    from cctf.bus_schemas.messages import MessageType, encode
    from cctf.bus_schemas.subjects import operator_subject
    from cctf.client.verify_control import AnnouncementVerifier
    from cctf.clock import SYSTEM_CLOCK

    now = SYSTEM_CLOCK.now_ms()
    cmd = SafeModeCommand(
        operator=args.operator,
        region=args.region,
        scope=scope,
        action=Action(args.action),
        reason=args.reason,
        issued_ms=now,
    )
    subject = operator_subject(args.region)
    data = seal(
        key, subject, MessageType.SAFEMODE_COMMAND, encode(cmd), now_ms=now, lifetime_ms=60_000
    )
    try:
        nc = await _connect(args, prepared["creds"])
    except Exception as exc:
        return _fail(f"cannot connect: {exc or type(exc).__name__}")
    try:
        feed = None
        trust = prepared["trust"]
        if trust is not None:
            # every coordinator's answer: the region's subject and per-coordinator subjects
            # (cctf.v1.control.<region>.<coordinator>); other regions are refused by the verifier
            feed = await open_ordered_feed(nc, CONTROL_STREAM, "cctf.v1.control.>")
        try:
            await nc.jetstream().publish(
                subject,
                data,
                timeout=args.timeout,
                headers={MSG_ID: f"op1.{data[-32:].hex()}"},
                stream=CONTROL_STREAM,  # no other stream stores a copy (threat model)
            )
        except Exception as exc:
            return _fail(f"command not accepted by the bus: {exc or type(exc).__name__}")
        if feed is None:
            print(f"published {args.action} {args.region}/{scope or '*'}", flush=True)
            return EXIT_OK
        verifier = AnnouncementVerifier(trust, SYSTEM_CLOCK, prepared["policy"], args.region)
        reason = f"operator {args.operator}: {args.reason}"

        async def answer() -> int:
            async for msg in feed:
                try:
                    a = verifier.verify(msg.data, msg.subject)
                except Rejected:
                    continue
                if a.cause is SafeModeCause.OPERATOR and a.reason == reason[: len(a.reason)]:
                    _print(args, a)
                    return EXIT_OK
            return _fail("announcement feed ended")

        try:
            return await asyncio.wait_for(answer(), args.timeout)
        except TimeoutError:
            return _fail(f"no coordinator answered within {args.timeout:g} s", EXIT_TIMEOUT)
        finally:
            await feed.close()
    except ReadError as exc:
        return _fail(str(exc))
    finally:
        await nc.close()


def run_status(args: argparse.Namespace) -> int:
    return _reader_run(args, watch=False)


def run_watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        return _fail("--count must be at least 1", EXIT_USAGE)
    return _reader_run(args, watch=True)


def _reader_run(args: argparse.Namespace, *, watch: bool) -> int:
    try:
        prepared = _prepare(args)
    except _Bad as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ValueError as exc:
        return _fail(str(exc))
    return _run(_read(args, prepared, watch))


async def _read(args: argparse.Namespace, prepared: dict[str, Any], watch: bool) -> int:
    from cctf.client.errors import TrustClientError
    from cctf.client.safemode import SafeModeReader
    from cctf.clock import SYSTEM_CLOCK

    try:
        nc = await _connect(args, prepared["creds"])
    except Exception as exc:
        return _fail(f"cannot connect: {exc or type(exc).__name__}")
    coordinators = prepared["coordinators"]
    reader = SafeModeReader(
        nc,
        prepared["trust"],
        SYSTEM_CLOCK,
        prepared["policy"],
        request_timeout=args.timeout,
        coordinators=lambda: coordinators,
    )
    try:
        if not watch:
            status = await reader.status(args.region)
            if status.combined is None:
                _print(args, status.announcement)
                return EXIT_OK
            import msgspec

            shown = msgspec.structs.replace(status.announcement, active=list(status.combined))
            if args.json:
                obj = announcement_json(shown)
                obj["signers"] = list(status.signers)
                print(json.dumps(obj), flush=True)
            else:
                print(announcement_line(shown) + " signers=" + ",".join(status.signers), flush=True)
            return EXIT_OK
        seen = 0
        async for a in reader.watch(args.region):
            _print(args, a)
            seen += 1
            if args.count is not None and seen >= args.count:
                return EXIT_OK
        return _fail("announcement feed ended")
    except TrustClientError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    finally:
        await nc.close()
