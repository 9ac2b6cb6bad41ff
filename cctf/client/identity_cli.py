"""``cctf workload`` and ``cctf validate cert|token``: identity decisions on the command line.

Same options, logging and signal handling as ``cctf check`` (:mod:`cctf.client.cli`), plus
``--identity FILE`` (the identity targets: trust domains, issuers, workloads and their policies,
:class:`cctf.identity.targets.IdentityTargets`). Tokens and chains are read from files (bounded),
never from the command line (where ``ps`` would show them), and are never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Final

from cctf.client.cli import (
    EXIT_NOT_TRUSTED,
    EXIT_OK,
    EXIT_USAGE,
    _common,
    _connect_error,
    _fail,
    _run,
    _Setup,
    _setup,
    _usage_error,
)

__all__ = ["register"]

MAX_TOKEN_FILE: Final = 16 * 1024
MAX_CHAIN_FILE: Final = 64 * 1024

_EXIT_CODES_WORKLOAD = """\
exit codes:
  0    the workload is TRUSTED under its policy
  3    the decision is REFUSED or UNAVAILABLE
  1    an error: unreadable files, unknown workload, connection failure, the bus
       cannot be asked
  2    usage error (also a bad SPIFFE_ID, --region, --timeout or --round-ms value)
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM)
"""
_EXIT_CODES_VALIDATE = """\
exit codes:
  0    the credential is valid under the quorum-verified keys
  3    the credential is invalid (or no quorum-verified keys to judge it: fail closed)
  1    an error: unreadable files, connection failure, the bus cannot be asked
  2    usage error
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM)
"""


def _identity_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--identity", type=Path, required=True, help="identity targets file (YAML or JSON)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the bus (default 5)"
    )
    p.add_argument(
        "--max-age-ms",
        type=int,
        default=None,
        help="refuse verdicts issued longer ago than this (default: two rounds)",
    )
    p.add_argument(
        "--require-dnssec", action="store_true", help="the dns path holds only when secure"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    wl = subparsers.add_parser(
        "workload",
        help="the negotiated trust decision for a workload",
        description="Negotiate a workload's decision from its dns, mtls and oidc paths "
        "(signed verdicts, and the token / chain given) under its policy.",
        epilog=_EXIT_CODES_WORKLOAD,
        formatter_class=raw,
    )
    wl.add_argument("spiffe_id", metavar="SPIFFE_ID", help="the workload's SPIFFE ID")
    wl.add_argument("--token-file", type=Path, help="a token it presented (OIDC path)")
    wl.add_argument("--chain-file", type=Path, help="a PEM chain it presented (mtls path)")
    _identity_options(wl)
    wl.set_defaults(func=run_workload)

    val = subparsers.add_parser(
        "validate",
        help="validate a certificate chain or token under quorum-verified keys",
        description="Validate a presented credential locally under quorum-verified keys.",
    )
    sub = val.add_subparsers(dest="validate_command", metavar="WHAT")
    cert = sub.add_parser(
        "cert",
        help="validate an X.509-SVID chain (PEM file, leaf first)",
        epilog=_EXIT_CODES_VALIDATE,
        formatter_class=raw,
    )
    cert.add_argument("file", metavar="FILE", type=Path, help="PEM chain, leaf first")
    _identity_options(cert)
    cert.set_defaults(func=run_validate_cert)
    tok = sub.add_parser(
        "token",
        help="validate a JWT-SVID or OIDC ID token (file)",
        epilog=_EXIT_CODES_VALIDATE,
        formatter_class=raw,
    )
    tok.add_argument("file", metavar="FILE", type=Path, help="file holding the compact JWT")
    tok.add_argument("--audience", required=True, help="the audience expected")
    _identity_options(tok)
    tok.set_defaults(func=run_validate_token)

    def _usage(_args: argparse.Namespace) -> int:
        val.print_help()
        return EXIT_USAGE

    val.set_defaults(func=_usage)


def _read(path: Path, limit: int, what: str) -> str:
    from cctf.util.files import read_bounded

    try:
        data = read_bounded(path, what, limit)
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path}: not ASCII text") from None
    except Exception as exc:
        raise ValueError(" ".join(str(exc).split()) or f"cannot read {what} {path}") from None


def _usage(args: argparse.Namespace) -> str | None:
    if (problem := _usage_error(args)) is not None:
        return problem
    spiffe_id = getattr(args, "spiffe_id", None)
    if spiffe_id is not None:
        from cctf.identity.errors import IdentityError
        from cctf.identity.spiffeid import parse_spiffe_id

        try:
            parse_spiffe_id(spiffe_id)
        except IdentityError as exc:
            return str(exc)
    audience = getattr(args, "audience", None)
    if audience is not None and not 0 < len(audience) <= 512:
        return "--audience must be 1..512 characters"
    return None


def _start(args: argparse.Namespace) -> tuple[_Setup, Any] | int:
    if (problem := _usage(args)) is not None:
        return _fail(problem, EXIT_USAGE)
    from cctf.errors import ConfigError
    from cctf.identity.targets import load_identity_targets

    try:
        setup = _setup(args)
        targets = load_identity_targets(args.identity)
    except (ValueError, ConfigError) as exc:
        return _fail(str(exc))
    return setup, targets


async def _client(args: argparse.Namespace, setup: _Setup, targets: Any) -> Any:
    from cctf.client.identity import IdentityClient
    from cctf.client.sdk import TrustClient

    logging.getLogger("cctf.bus").setLevel(logging.CRITICAL)
    trust = await TrustClient.connect(
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
    return IdentityClient(trust, targets, require_dnssec=args.require_dnssec)


def _print(args: argparse.Namespace, obj: dict[str, Any], line: str) -> None:
    """JSON (exact) or the text line with non-printable characters escaped (a subject from a token
    can neither end the line nor drive the terminal)."""
    from cctf.client.present import _printable

    print(json.dumps(obj, separators=(",", ":")) if args.json else _printable(line), flush=True)


def run_workload(args: argparse.Namespace) -> int:
    started = _start(args)
    if isinstance(started, int):
        return started
    setup, targets = started
    try:
        token = _read(args.token_file, MAX_TOKEN_FILE, "token file") if args.token_file else None
        chain = _read(args.chain_file, MAX_CHAIN_FILE, "chain file") if args.chain_file else None
    except ValueError as exc:
        return _fail(str(exc))

    async def main() -> int:
        from cctf.client.identity import UnknownWorkload, workload_to_json
        from cctf.client.sdk import FetchError

        try:
            client = await _client(args, setup, targets)
        except Exception as exc:
            return _connect_error(setup, exc)
        async with client.trust:
            try:
                decision = await client.workload(args.spiffe_id, token=token, chain=chain)
            except (UnknownWorkload, FetchError) as exc:
                return _fail(str(exc))
        obj = workload_to_json(decision)
        paths = " ".join(f"{p}={r['state']}({r['reason']})" for p, r in obj["paths"].items())
        _print(args, obj, f"{obj['workload']} {obj['outcome'].upper()} {paths}")
        return EXIT_OK if obj["outcome"] == "trusted" else EXIT_NOT_TRUSTED

    return _run(main())


def _run_validate(args: argparse.Namespace, kind: str) -> int:
    started = _start(args)
    if isinstance(started, int):
        return started
    setup, targets = started
    limit = MAX_CHAIN_FILE if kind == "cert" else MAX_TOKEN_FILE
    try:
        credential = _read(args.file, limit, "chain file" if kind == "cert" else "token file")
    except ValueError as exc:
        return _fail(str(exc))

    async def main() -> int:
        from cctf.client.sdk import FetchError

        try:
            client = await _client(args, setup, targets)
        except Exception as exc:
            return _connect_error(setup, exc)
        async with client.trust:
            try:
                if kind == "cert":
                    decision = await client.validate_certificate(credential)
                else:
                    decision = await client.validate_token(credential, args.audience)
            except FetchError as exc:
                return _fail(str(exc))
        obj = decision.to_json()
        who = obj["spiffe_id"] or obj["subject"] or "-"
        why = ",".join(obj["reasons"]) or "ok"
        _print(args, obj, f"{obj['decision'].upper()} {who} {why}: {obj['detail']}")
        return EXIT_OK if decision.valid else EXIT_NOT_TRUSTED

    return _run(main())


def run_validate_cert(args: argparse.Namespace) -> int:
    return _run_validate(args, "cert")


def run_validate_token(args: argparse.Namespace) -> int:
    return _run_validate(args, "token")
