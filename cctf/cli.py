"""The ``cctf`` command line.

Each sub-command lives in its own module that exposes ``register(subparsers)``; the module adds its
parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Modules are imported lazily so ``cctf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# sub-command name -> module exposing ``register(subparsers)``
_COMMANDS: dict[str, str] = {
    "keys": "cctf.crypto.cli",
    "demo": "cctf.fabric.demo_cli",
    "chaos": "cctf.chaos.cli",
    "nats": "cctf.fabric.nats_cli",
    "agent": "cctf.agents.cli",
    "coordinator": "cctf.coordinator.cli",
    "watch": "cctf.client.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctf",
        description="Cross-Cloud Trust Fabric: quorum-verified DNS trust over NATS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = (
            module.register
        )
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
