"""``cctf watch`` and ``cctf check``: the subscriber SDK on the command line.

Both read a credentials file (``{"urls": [...], "users": {name: {"user", "password"}}}``, written by
:meth:`cctf.devfabric.nats.NatsFabric.write_credentials`) and a trust config, connect as ``--user``
(``client`` by default) and print verified verdicts only. Logs (JSON lines, including every rejected
verdict and its reason) go to stderr; verdicts go to stdout. ``--round-ms`` must be the deployment's
round length (every verdict's round is checked against its issue time). Both commands stop within a
few seconds of SIGTERM or SIGINT in every state (connecting, running, reconnecting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from cctf.client.coordquorum import parse_policy
from cctf.client.present import verdict_line, verdict_to_json
from cctf.client.sdk import FetchError, NoVerdict, TrustClient, VerdictRejected
from cctf.client.verify import DEFAULT_ROUND_MS

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad arguments (argparse's own code, and ours for bad values)
EXIT_NOT_TRUSTED = 3
EXIT_LKG = 4  # TRUSTED from Last-Known-Good evidence (an attestation during an outage)
EXIT_INTERRUPTED = 130  # SIGINT
EXIT_TERMINATED = 143  # SIGTERM

_EXIT_CODES_WATCH = """\
exit codes:
  0    --count verdicts were printed (LKG attestations included, shown with
       "LKG age=..s basis=<round>" and a JSON "lkg" object; --no-lkg skips them)
  1    error: unreadable credentials or trust file, connection failure, stream ended
  2    usage error (also a bad --region, --count, --round-ms or --min-suite value)
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM); both within a few seconds, whether connecting,
       streaming or waiting for NATS to come back
"""
_EXIT_CODES_CHECK = """\
exit codes:
  0    the latest verified verdict is TRUSTED (fresh evidence)
  4    the latest verified verdict is an LKG attestation: TRUSTED from the
       evidence of an earlier round during an outage (JSON "lkg": {age_ms,
       basis_round, basis_ms})
  3    the latest verified verdict is DISPUTED or UNAVAILABLE
  1    no verdict, the verdict was rejected (bad signature, unknown key, expired,
       stale: older than --max-age-ms, an LKG attestation with --no-lkg, ...:
       fail closed), or an error (files, connection, timeout)
  2    usage error (also a bad NAME, --qtype, --region, --timeout, --max-age-ms,
       --round-ms or --min-suite value)
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM)
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials", type=Path, required=True, help="NATS credentials file (JSON)")
    p.add_argument("--trust", type=Path, required=True, help="trust config (coordinator keys)")
    p.add_argument("--region", required=True, help="region whose verdicts to read")
    p.add_argument("--user", default="client", help="user in the credentials file (default client)")
    p.add_argument(
        "--min-suite",
        default="hybrid-ed25519-ml-dsa-65",
        help="weakest signature suite accepted (default hybrid-ed25519-ml-dsa-65)",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument(
        "--round-ms",
        type=int,
        default=DEFAULT_ROUND_MS,
        help=f"the deployment's round length in ms (default {DEFAULT_ROUND_MS})",
    )
    p.add_argument(
        "--no-lkg",
        action="store_true",
        help="refuse Last-Known-Good attestations (TRUSTED from an earlier round's evidence)",
    )
    p.add_argument(
        "--coordinators",
        default=None,
        metavar="K:C1,C2,...",
        help="k-of-m coordinators: use a verdict only when K of the listed coordinators signed "
        "the same outcome and answer for the round (e.g. 2:c1,c2,c3); else fail closed "
        "(reason coordinator_quorum)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="stderr log level (default warning)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = subparsers.add_parser(
        "watch",
        help="stream verified verdicts of a region",
        description="Stream verified verdicts of a region, one per line: "
        "'<name> <qtype> round=<r> <OUTCOME> <answer…> agree=<a>/<n>' (or JSON with --json). "
        "Verdicts that fail verification are skipped and logged on stderr.",
        epilog=_EXIT_CODES_WATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(watch)
    watch.add_argument("--count", type=int, default=None, help="exit 0 after N verdicts")
    watch.add_argument(
        "--deliver",
        choices=("new", "last_per_subject", "all"),
        default="new",
        help="where to start: new verdicts only (default), the latest stored per subject, or all",
    )
    watch.set_defaults(func=run_watch)

    check = subparsers.add_parser(
        "check",
        help="print the latest verified verdict for a name",
        description="Fetch, verify and print the latest verdict for NAME in a region.",
        epilog=_EXIT_CODES_CHECK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("name", metavar="NAME", help="DNS name")
    check.add_argument("--qtype", default="A", type=str.upper, help="query type (default A)")
    _common(check)
    check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the bus (default 5)"
    )
    check.add_argument(
        "--max-age-ms",
        type=int,
        default=None,
        help="refuse a verdict issued longer ago than this (default: two rounds)",
    )
    check.set_defaults(func=run_check)


@dataclass
class _Setup:
    urls: list[str]
    user: str
    password: str
    client_kwargs: dict[str, Any]


def _setup(args: argparse.Namespace) -> _Setup:
    """Configure logging and read the files; raises ``ValueError`` with a message on bad input."""
    from cctf.bus.credentials import load_credentials
    from cctf.crypto.errors import CryptoError
    from cctf.crypto.policy import SuitePolicy
    from cctf.crypto.trust import TrustConfig
    from cctf.telemetry import configure_logging

    configure_logging(level=args.log_level)
    try:
        creds = load_credentials(args.credentials)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read credentials {args.credentials}: {exc}") from None
    if args.user not in creds.users:
        raise ValueError(f"user {args.user!r} is not in {args.credentials}")
    try:
        trust = TrustConfig.load(args.trust)
        policy = SuitePolicy.parse(args.min_suite)
    except CryptoError as exc:
        raise ValueError(str(exc)) from None
    user = creds.users[args.user]
    return _Setup(
        creds.urls,
        user.name,
        user.password,
        {
            "trust": trust,
            "policy": policy,
            "region": args.region,
            "round_ms": args.round_ms,
            "accept_lkg": not args.no_lkg,
            "coordinators": None if args.coordinators is None else parse_policy(args.coordinators),
        },
    )


def _emit(args: argparse.Namespace, verdict: Any, client: TrustClient) -> None:
    """One verdict; a batch-signed one with its log position (JSON ``"log"``: ``{"origin",
    "index", "size", "root"}``, ``null`` for a per-verdict signature; text: ``log=<index>/<size>``)."""
    checked = client.last_checked(verdict.qname, verdict.qtype)
    position = checked.log if checked is not None and checked.verdict is verdict else None
    if args.json:
        shown = verdict_to_json(verdict)
        shown["log"] = None if position is None else position.to_json()
        print(json.dumps(shown, separators=(",", ":")), flush=True)
    else:
        line = verdict_line(verdict)
        if position is not None:
            line += f" log={position.index}/{position.size}"
        print(line, flush=True)


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"cctf: {message}", file=sys.stderr)
    return code


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments' values (before any file is read), or ``None``."""
    from cctf.crypto.errors import CryptoError
    from cctf.crypto.policy import SuitePolicy
    from cctf.ids import IdError, check_id

    try:
        check_id(args.region, "region")
        SuitePolicy.parse(args.min_suite)
    except (IdError, CryptoError) as exc:
        return str(exc)
    if args.coordinators is not None:
        try:
            parse_policy(args.coordinators)
        except ValueError as exc:
            return str(exc)
    if args.round_ms < 1:
        return "--round-ms must be positive"
    if getattr(args, "count", None) is not None and args.count < 1:
        return "--count must be at least 1"
    if getattr(args, "max_age_ms", None) is not None and args.max_age_ms < 0:
        return "--max-age-ms must not be negative"
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not (0 < timeout <= 3600):  # also refuses nan
        return "--timeout must be more than 0 and at most 3600 seconds"
    if getattr(args, "name", None) is not None:
        from cctf.bus_schemas.subjects import SubjectError, verdict_subject

        try:
            verdict_subject(args.region, args.name, args.qtype)
        except (SubjectError, IdError) as exc:
            return str(exc)
    return None


def _connect_error(setup: _Setup, exc: BaseException) -> int:
    detail = str(exc) or type(exc).__name__
    return _fail(f"cannot connect to {', '.join(setup.urls)}: {detail}")


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main``; SIGTERM or SIGINT cancels it (its clean-up still runs) and gives 143 or 130."""

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stopped_by: list[int] = []

        def stop(code: int) -> None:
            if not stopped_by:
                stopped_by.append(code)
                task.cancel()

        signals = {signal.SIGTERM: EXIT_TERMINATED, signal.SIGINT: EXIT_INTERRUPTED}
        for sig, code in signals.items():
            loop.add_signal_handler(sig, stop, code)
        try:
            return await main
        except asyncio.CancelledError:
            if not stopped_by:
                raise
            return stopped_by[0]
        finally:
            for sig in signals:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

    return asyncio.run(guarded())


def run_watch(args: argparse.Namespace) -> int:
    if (problem := _usage_error(args)) is not None:
        return _fail(problem, EXIT_USAGE)
    try:
        setup = _setup(args)
    except ValueError as exc:
        return _fail(str(exc))
    return _run(_watch(args, setup))


async def _watch(args: argparse.Namespace, setup: _Setup) -> int:
    bus_log = logging.getLogger("cctf.bus")
    level = bus_log.level
    bus_log.setLevel(logging.CRITICAL)  # a failed connect is the one-line error below
    try:
        client = await TrustClient.connect(
            setup.urls, setup.user, setup.password, log_errors=False, **setup.client_kwargs
        )
    except Exception as exc:
        return _connect_error(setup, exc)
    finally:
        bus_log.setLevel(level)
    # Connected: the client rides out server restarts (reconnecting without limit); log them.
    client.log_connection_errors()
    async with client:
        try:
            vs = await open_retrying(lambda: client.stream(deliver=args.deliver), _progress)
        except FetchError as exc:
            return _fail(f"cannot open the verdict stream: {exc}")
        seen = 0
        try:
            async with vs:
                async for verdict in vs:
                    _emit(args, verdict, client)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        return EXIT_OK
        except Exception as exc:
            return _fail(f"verdict stream failed: {exc!r}")
    return _fail("verdict stream ended (connection closed)")


#: ``cctf watch`` start-up: transient fetch errors (a loaded or starting cluster: a timeout, no
#: stream leader yet) are retried with exponential backoff for this long in all.
START_RETRY_S: Final = 30.0
_FIRST_BACKOFF_S: Final = 0.2
_MAX_BACKOFF_S: Final = 5.0


def _progress(message: str) -> None:
    print(f"cctf: {message}", file=sys.stderr, flush=True)


async def open_retrying(
    open_: Callable[[], Awaitable[T]],
    progress: Callable[[str], None],
    *,
    total_s: float = START_RETRY_S,
    first_s: float = _FIRST_BACKOFF_S,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``open_()``, retried while it raises a transient :class:`FetchError` (one progress line per
    retry) for at most ``total_s``; a permanent one, or the last, is raised."""
    deadline = monotonic() + total_s
    delay = first_s
    attempt = 1
    while True:
        try:
            return await open_()
        except FetchError as exc:
            left = deadline - monotonic()
            if not exc.transient or left <= 0:
                raise
            wait = min(delay, left)
            progress(f"attempt {attempt} failed ({str(exc)[:200]}); retrying in {wait:.1f} s")
            await sleep(wait)
            delay = min(delay * 2, _MAX_BACKOFF_S)
            attempt += 1


def run_check(args: argparse.Namespace) -> int:
    if (problem := _usage_error(args)) is not None:
        return _fail(problem, EXIT_USAGE)
    try:
        setup = _setup(args)
    except ValueError as exc:
        return _fail(str(exc))
    return _run(_check(args, setup))


async def _check(args: argparse.Namespace, setup: _Setup) -> int:
    from cctf.bus_schemas.messages import Outcome

    # One answer, one line: connection errors are the one-line failure below, not log lines.
    logging.getLogger("cctf.bus").setLevel(logging.CRITICAL)
    try:
        client = await TrustClient.connect(
            setup.urls,
            setup.user,
            setup.password,
            request_timeout=args.timeout,
            connect_timeout=args.timeout,
            initial_retries=1,
            log_errors=False,
            max_age_ms=args.max_age_ms,
            **setup.client_kwargs,
        )
    except Exception as exc:
        return _connect_error(setup, exc)
    async with client:
        try:
            verdict = await client.check(args.name, args.qtype)
        except NoVerdict as exc:
            return _fail(str(exc))
        except VerdictRejected as exc:
            return _fail(f"rejected ({exc.reason.value}): {exc.detail}")
        except FetchError as exc:
            return _fail(str(exc))
        _emit(args, verdict, client)
    if verdict.outcome is not Outcome.TRUSTED:
        return EXIT_NOT_TRUSTED
    return EXIT_LKG if verdict.is_lkg else EXIT_OK
