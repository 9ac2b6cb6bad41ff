"""``cctf log serve|verify|head|proof|consistency``: the durable logs on the command line.

Every command reads a credentials file (``cctf nats up``) and connects as ``--user`` (``client`` by
default; ``serve`` needs a user that may answer ``cctf.v1.logapi.>``: ``coordinator`` by default),
and checks the log with its public key: ``--trust`` (the trust config: the key whose kid the log's
origin names, principal = the log id) or ``--key`` (a public key JSON, e.g. the CA log's).

* ``verify``: re-derive the root from every stored record (each signed head checked, each head
  consistent with the one before, so with every earlier one); ``--size N --root HEX`` also checks a
  head seen elsewhere (a demo, a client) against the log. Progress on stderr for long runs.
* ``head``: the newest stored head, its signature verified.
* ``proof``: the inclusion proof of ``--index`` in the head of ``--size`` (default: the newest),
  re-derived from the stream and verified before it is printed.
* ``consistency``: the proof between two stored heads (``--size1``, ``--size2``), verified.
* ``serve``: follow the log(s) and answer the log API (wire-protocol.md §9.4) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TERMINATED = 143

_EXIT_CODES = """\
exit codes:
  0    done: the log verified (verify), the head/proof printed and verified
  1    the log does NOT verify (a record, signature, root or consistency check
       failed: the reason is printed), or the head/index/size asked for is not stored
  2    usage error, unreadable credentials/trust/key file, unknown key
  3    the bus could not be read (connection, timeout, permission, no CCTF_LOG)
  143  terminated (SIGTERM, serve)
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "log",
        help="verify and serve the durable transparency logs (CCTF_LOG)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ops = p.add_subparsers(dest="log_command", metavar="OP", required=True)

    def common(q: argparse.ArgumentParser, user: str = "client") -> None:
        q.add_argument("--credentials", type=Path, required=True, help="NATS credentials (JSON)")
        q.add_argument("--user", default=user, help=f"user in the credentials (default {user})")
        q.add_argument("--trust", type=Path, help="trust config holding the log's key")
        q.add_argument("--key", type=Path, help="the log's public key (JSON) instead of --trust")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        q.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")

    v = ops.add_parser("verify", help="re-derive the root from every entry", epilog=_EXIT_CODES)
    v.add_argument("--log", required=True, help="log id (coordinator id, or ca)")
    v.add_argument("--size", type=int, help="also check a head of this size seen elsewhere")
    v.add_argument("--root", help="... with this root (hex)")
    common(v)
    h = ops.add_parser("head", help="the newest head", epilog=_EXIT_CODES)
    h.add_argument("--log", required=True)
    common(h)
    pr = ops.add_parser("proof", help="an inclusion proof", epilog=_EXIT_CODES)
    pr.add_argument("--log", required=True)
    pr.add_argument("--index", type=int, required=True)
    pr.add_argument("--size", type=int, help="a stored head's size (default: the newest)")
    common(pr)
    c = ops.add_parser("consistency", help="a consistency proof", epilog=_EXIT_CODES)
    c.add_argument("--log", required=True)
    c.add_argument("--size1", type=int, required=True)
    c.add_argument("--size2", type=int, help="default: the newest head")
    common(c)
    s = ops.add_parser("serve", help="follow logs and answer the log API", epilog=_EXIT_CODES)
    s.add_argument("--log", action="append", required=True, help="log id (repeatable)")
    common(s, user="coordinator")
    p.set_defaults(func=_main)


class _Usage(Exception):
    pass


def _load(args: argparse.Namespace) -> tuple[list[str], Any, Any, Any]:
    from cctf.bus.credentials import load_credentials
    from cctf.crypto.keys import PublicKeySet, read_json
    from cctf.crypto.trust import TrustConfig
    from cctf.errors import CctfError
    from cctf.translog.logstate import check_log_id

    for log_id in args.log if isinstance(args.log, list) else [args.log]:
        try:
            check_log_id(log_id)
        except CctfError as exc:
            raise _Usage(str(exc)) from None
    if (args.trust is None) == (args.key is None):
        raise _Usage("give exactly one of --trust and --key")
    if not 0 < args.timeout <= 3600:
        raise _Usage("--timeout must be more than 0 and at most 3600 seconds")
    try:
        creds = load_credentials(args.credentials)
        trust = TrustConfig.load(args.trust) if args.trust else None
        key = PublicKeySet.from_json(read_json(args.key, "log key")) if args.key else None
    except (CctfError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _Usage(f"cannot read the files: {exc}") from None
    if args.user not in creds.users:
        raise _Usage(f"user {args.user!r} is not in {args.credentials}")
    return creds.urls, creds.users[args.user], trust, key


def _main(args: argparse.Namespace) -> int:
    try:
        urls, user, trust, key = _load(args)
    except _Usage as exc:
        print(f"cctf log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_run(args, urls, user, trust, key))


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj, separators=(",", ":")) if args.json else text, flush=True)


class _Progress:
    """``cctf log verify: 1200/5000 records`` on stderr at most once a second."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._next = time.monotonic() + 1.0

    def __call__(self, seq: int, last: int) -> None:
        now = time.monotonic()
        if now >= self._next and seq < last:
            print(f"cctf log {self._what}: stream sequence {seq}/{last}", file=sys.stderr)
            self._next = now + 1.0


async def _run(args: argparse.Namespace, urls: list[str], user: Any, trust: Any, key: Any) -> int:
    from cctf.bus.connect import connect
    from cctf.bus.logstream import LogReadError
    from cctf.logmon.monitor import log_verifier
    from cctf.translog.errors import MirrorError, TranslogError

    op = args.log_command
    try:
        conn = await asyncio.wait_for(
            connect(urls, user, name=f"cctf-log-{op}", initial_retries=2), args.timeout
        )
    except Exception as exc:
        print(f"cctf log {op}: cannot connect: {exc!r}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    def resolve(log_id: str) -> Any:
        return lambda origin: log_verifier(log_id, origin, trust=trust, key=key)

    try:
        if op == "serve":
            return await _serve(args, conn, resolve)
        return await asyncio.wait_for(_once(args, conn, resolve(args.log)), args.timeout)
    except LogReadError as exc:
        print(f"cctf log {op}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MirrorError as exc:
        if exc.reason == "unknown-key":
            print(f"cctf log {op}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            _out(args, {"log": {"id": args.log, "verified": False, "error": exc.reason}}, "")
        print(f"cctf log {op}: log {args.log} does NOT verify: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except TranslogError as exc:
        print(f"cctf log {op}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except TimeoutError:
        print(f"cctf log {op}: timed out after {args.timeout} s", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 2)


def _hexes(proof: list[bytes]) -> list[str]:
    return [p.hex() for p in proof]


async def _once(args: argparse.Namespace, conn: Any, resolve: Any) -> int:
    from cctf.bus.logstream import last_record
    from cctf.logmon.monitor import verify_log
    from cctf.translog.errors import TranslogError
    from cctf.translog.merkle import verify_consistency, verify_inclusion
    from cctf.translog.note import open_checkpoint

    op, log_id = args.log_command, args.log
    if op == "head":
        stored = await last_record(conn, log_id, leader=False)
        if stored is None:
            print(f"cctf log head: log {log_id} is empty", file=sys.stderr)
            return EXIT_INVALID
        rec = stored.record
        cp = open_checkpoint(rec.checkpoint, resolve(rec.origin), rec.origin)
        obj = {"log": log_id, "origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex()}
        _out(
            args,
            {**obj, "checkpoint": rec.checkpoint},
            f"{log_id} size={cp.size} root={cp.root_hash.hex()}",
        )
        return EXIT_OK
    mirror, records = await verify_log(conn, log_id, resolve, progress=_Progress(op))
    if mirror is None or mirror.last is None:
        if op == "verify":
            _out(
                args,
                {"log": {"id": log_id, "size": 0, "root": "", "verified": True}},
                f"{log_id}: empty",
            )
            return EXIT_OK
        print(f"cctf log {op}: log {log_id} is empty", file=sys.stderr)
        return EXIT_INVALID
    last = mirror.last
    if op == "verify":
        first = mirror.heads[0]
        mirror.check_consistency(first.size, last.size)
        if args.size is not None or args.root is not None:
            try:
                root = bytes.fromhex(args.root or "")
            except ValueError:
                root = b""
            head = mirror.head_at(args.size) if args.size is not None else None
            if head is None or head.root != root:
                raise TranslogError(
                    "head-mismatch", f"the log holds no head of size {args.size} with that root"
                )
        obj = {
            "id": log_id,
            "size": last.size,
            "root": last.root.hex(),
            "verified": True,
            "records": records,
            "heads": len(mirror.heads),
        }
        _out(
            args,
            {"log": obj},
            f"{log_id}: size={last.size} root={last.root.hex()} verified "
            f"({records} records, every head consistent)",
        )
        return EXIT_OK
    if op == "proof":
        head = last if args.size is None else mirror.head_at(args.size)
        if head is None or not 0 <= args.index < head.size:
            print(
                f"cctf log proof: no head of size {args.size} holding index {args.index}",
                file=sys.stderr,
            )
            return EXIT_INVALID
        proof = mirror.tree.inclusion_proof(args.index, head.size)
        leaf = mirror.tree.leaf_hash(args.index)
        verify_inclusion(leaf, args.index, head.size, proof, head.root)
        obj = {
            "log": log_id,
            "index": args.index,
            "size": head.size,
            "root": head.root.hex(),
            "leaf_hash": leaf.hex(),
            "proof": _hexes(proof),
            "checkpoint": head.note,
        }
        text = "\n".join(
            [f"{log_id} index={args.index} size={head.size} root={head.root.hex()}", *_hexes(proof)]
        )
        _out(args, obj, text)
        return EXIT_OK
    size2 = last.size if args.size2 is None else args.size2
    h1, h2 = mirror.head_at(args.size1), mirror.head_at(size2)
    if h1 is None or h2 is None or h1.size > h2.size:
        print(
            f"cctf log consistency: no stored heads of sizes {args.size1} <= {size2}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    proof = mirror.check_consistency(h1.size, h2.size)
    verify_consistency(h1.size, h2.size, proof, h1.root, h2.root)
    obj = {
        "log": log_id,
        "size1": h1.size,
        "size2": h2.size,
        "root1": h1.root.hex(),
        "root2": h2.root.hex(),
        "proof": _hexes(proof),
    }
    _out(args, obj, "\n".join([f"{log_id} {h1.size} -> {h2.size} consistent", *_hexes(proof)]))
    return EXIT_OK


async def _serve(args: argparse.Namespace, conn: Any, resolve: Any) -> int:
    from cctf.logmon.monitor import LogMonitor
    from cctf.telemetry import configure_logging, get_logger

    configure_logging()
    log = get_logger("cctf.logmon")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    monitors = [LogMonitor(conn, log_id, resolve(log_id)) for log_id in args.log]
    for m in monitors:
        await m.start()
    log.info("log_serve_started", logs=args.log)
    await stop.wait()
    for m in monitors:
        await m.stop()
    log.info("log_serve_stopped", logs=args.log, records=sum(m.records for m in monitors))
    return EXIT_TERMINATED
