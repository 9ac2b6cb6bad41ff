"""``cctf keys``: generate signing keys, assemble trust configs, inspect key files.

::

    cctf keys generate --role agent|coordinator --principal ID --region REGION
                       [--suite SUITE] --out DIR [--force] [--json]
    cctf keys trust --out trust.json PUB.json [PUB.json ...] [--json]
    cctf keys show FILE [--json]

``generate`` writes ``DIR/<principal>.key.json`` (the private seeds, mode 0600) and
``DIR/<principal>.pub.json`` (a trust entry: key id, role, principal, region, public keys).
``trust`` merges trust entries (or whole trust configs) into ``--out``; entries already in an existing
``--out`` file are kept. ``show`` prints key id, suite, role, principal and region of a public entry,
a key file or a trust config, and never private material.

Exit codes: 0 success, 1 a file could not be read, written or is malformed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cctf.crypto.errors import KeyFileError
from cctf.crypto.keys import SigningKey, load_signing_key, read_json, save_signing_key
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.errors import CctfError
from cctf.ids import IdError as SubjectError
from cctf.ids import check_id
from cctf.util.files import write_file_atomic

KEY_SUFFIX = ".key.json"
PUB_SUFFIX = ".pub.json"


class CliError(CctfError):
    """A user-facing failure: the message is printed and the command exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _id_arg(what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return check_id(value, what)
        except SubjectError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="generate signing keys, build trust configs, inspect key files",
        description="Generate signing keys, build trust configs, inspect key files.",
    )
    keys.set_defaults(func=lambda _args: _usage(keys))
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")

    gen = sub.add_parser(
        "generate",
        help="generate a signing key and its public trust entry",
        description="Write DIR/<principal>.key.json (private, 0600) and DIR/<principal>.pub.json.",
    )
    gen.add_argument("--role", required=True, choices=[r.value for r in Role])
    gen.add_argument("--principal", required=True, type=_id_arg("principal"), metavar="ID")
    gen.add_argument("--region", required=True, type=_id_arg("region"), metavar="REGION")
    gen.add_argument(
        "--suite",
        default=SuiteId.HYBRID.value,
        choices=[s.value for s in SuiteId],
        help="signature suite (default: %(default)s)",
    )
    gen.add_argument("--out", required=True, type=Path, metavar="DIR")
    gen.add_argument("--force", action="store_true", help="overwrite existing key files")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(func=_guarded(_generate))

    trust = sub.add_parser(
        "trust",
        help="merge public entries into a trust config",
        description="Merge public entries (.pub.json) or trust configs into the trust config OUT; "
        "entries already in an existing OUT are kept.",
    )
    trust.add_argument("--out", required=True, type=Path, metavar="OUT")
    trust.add_argument("inputs", nargs="+", type=Path, metavar="PUB.json")
    trust.add_argument("--json", action="store_true", help="print one JSON object")
    trust.set_defaults(func=_guarded(_trust))

    show = sub.add_parser(
        "show",
        help="show a key file, public entry or trust config (never private material)",
        description="Print key id, suite, role, principal and region; never private material.",
    )
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_guarded(_show))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


Command = Callable[[argparse.Namespace], int]


def _guarded(func: Command) -> Command:
    """Turn :class:`CliError` and :class:`KeyFileError` into a message on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            code = func(args)
        except CliError as exc:
            print(f"cctf keys {args.keys_command}: error: {exc}", file=sys.stderr)
            return exc.code
        except KeyFileError as exc:
            print(f"cctf keys {args.keys_command}: error: {exc}", file=sys.stderr)
            return 1
        return code

    return run


def _write_public_json(path: Path, obj: dict[str, Any]) -> None:
    """Write a public (world-readable, 0644) JSON file atomically."""
    try:
        write_file_atomic(path, json.dumps(obj, indent=2) + "\n", mode=0o644)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} exists and is not a directory")
    key_path = out / f"{args.principal}{KEY_SUFFIX}"
    pub_path = out / f"{args.principal}{PUB_SUFFIX}"
    if not args.force:
        for path in (key_path, pub_path):
            if path.exists():
                raise CliError(f"{path} already exists; pass --force to overwrite it")
    key = SigningKey.generate(SuiteId(args.suite))
    entry = TrustEntry(Role(args.role), args.principal, args.region, key.public)
    try:
        save_signing_key(key_path, key)
    except OSError as exc:
        raise CliError(f"cannot write {key_path}: {exc.strerror}") from None
    _write_public_json(pub_path, entry.to_json())
    if args.json:
        _print_json(
            {**_describe(entry), "key_file": str(key_path), "pub_file": str(pub_path)},
        )
    else:
        print(f"key id:      {key.kid}")
        print(f"suite:       {key.suite.value}")
        print(f"private key: {key_path}")
        print(f"public key:  {pub_path}")
    return 0


def _entries_of(path: Path) -> list[TrustEntry]:
    """The trust entries in a public entry file or a trust config; rejects private key files."""
    obj = read_json(path, "public key file")
    try:
        if obj.get("kind") == "cctf-signing-key":
            raise CliError(f"{path} is a private key file; give its {PUB_SUFFIX} file instead")
        if "keys" in obj:
            return list(TrustConfig.from_json(obj))
        return [TrustEntry.from_json(obj)]
    except KeyFileError as exc:
        raise CliError(f"{path}: {exc}") from None


def _trust(args: argparse.Namespace) -> int:
    out: Path = args.out
    existing: dict[str, TrustEntry] = {}
    if out.exists():
        try:
            existing = {e.kid: e for e in TrustConfig.load(out)}
        except KeyFileError as exc:
            raise CliError(f"existing trust config {out}: {exc}") from None
    merged = dict(existing)
    source: dict[str, Path] = {}
    added = kept = 0
    for path in args.inputs:
        for entry in _entries_of(path):
            if entry.kid in source:
                raise CliError(
                    f"duplicate key id {entry.kid} in {source[entry.kid]} and {path}",
                )
            source[entry.kid] = path
            if entry.kid in existing:
                if existing[entry.kid] != entry:
                    raise CliError(
                        f"key id {entry.kid} from {path} is already in {out} "
                        "with a different role, principal or region",
                    )
                kept += 1
                continue
            merged[entry.kid] = entry
            added += 1
    config = TrustConfig(merged.values())
    try:
        config.save(out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}") from None
    if args.json:
        _print_json(
            {
                "file": str(out),
                "keys": len(config),
                "added": added,
                "already_present": kept,
                "kids": [e.kid for e in config],
            },
        )
    else:
        print(f"wrote {out}: {len(config)} keys ({added} added, {kept} already present)")
    return 0


def _show(args: argparse.Namespace) -> int:
    path: Path = args.file
    obj = read_json(path, "key file")
    info: dict[str, Any]
    try:
        if obj.get("kind") == "cctf-signing-key":
            info = _describe_private(path, obj)
        elif "keys" in obj:
            info = {
                "file": str(path),
                "type": "trust-config",
                "keys": [_describe(e) for e in TrustConfig.from_json(obj)],
            }
        else:
            info = {"file": str(path), "type": "public-key", **_describe(TrustEntry.from_json(obj))}
    except KeyFileError as exc:
        raise CliError(f"{path}: {exc}") from None
    if args.json:
        _print_json(info)
    elif info["type"] == "trust-config":
        print(f"{path}: trust config with {len(info['keys'])} keys")
        for e in info["keys"]:
            print(f"  {e['kid']}  {e['suite']}  {e['role']}  {e['principal']}  {e['region']}")
    else:
        print(f"file:      {path} ({info['type']})")
        for field in ("kid", "suite", "role", "principal", "region"):
            value = info.get(field)
            print(f"{field + ':':<10} {'(unknown)' if value is None else value}")
    return 0


def _describe(entry: TrustEntry) -> dict[str, Any]:
    return {
        "kid": entry.kid,
        "suite": entry.keys.suite.value,
        "role": entry.role.value,
        "principal": entry.principal,
        "region": entry.region,
    }


def _describe_private(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """Describe a key file by its public half; role etc. come from a sibling ``.pub.json``."""
    key = load_signing_key(path)
    recorded = obj.get("public")
    if isinstance(recorded, dict) and recorded.get("kid") not in (None, key.kid):
        raise CliError(
            f"{path}: recorded key id {recorded.get('kid')!r} does not match its seeds ({key.kid})"
        )
    info: dict[str, Any] = {
        "file": str(path),
        "type": "signing-key",
        "kid": key.kid,
        "suite": key.suite.value,
        "role": None,
        "principal": None,
        "region": None,
    }
    if path.name.endswith(KEY_SUFFIX):
        pub = path.with_name(path.name[: -len(KEY_SUFFIX)] + PUB_SUFFIX)
        try:
            entry = TrustEntry.from_json(read_json(pub, "public key file"))
        except KeyFileError:
            return info  # no usable sibling: role, principal and region stay unknown
        if entry.kid == key.kid:
            info.update(_describe(entry))
    return info


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True))
