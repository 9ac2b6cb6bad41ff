"""The ``cctf`` command line.

Each sub-command lives in its own module that exposes ``register(subparsers)``; the module adds its
parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Modules are imported lazily so ``cctf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from cctf.errors import CctfError

# sub-command name -> module exposing ``register(subparsers)``
_COMMANDS: dict[str, str] = {
    "keys": "cctf.crypto.cli",
    "demo": "cctf.devfabric.demo_cli",
    "chaos": "cctf.chaos.cli",
    "nats": "cctf.devfabric.nats_cli",
    "agent": "cctf.agents.cli",
    "coordinator": "cctf.coordinator.cli",
    "watch": "cctf.client.cli",
    "check": "cctf.client.cli",
    "workload": "cctf.client.identity_cli",
    "validate": "cctf.client.identity_cli",
    "gateway": "cctf.gateway.cli",
    "safe-mode": "cctf.client.safemode_cli",
    "log": "cctf.logmon.cli",
    "ca": "cctf.ca.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``only``, import just that sub-command's module (fast start-up)."""
    parser = argparse.ArgumentParser(
        prog="cctf",
        description="Cross-Cloud Trust Fabric: quorum-verified DNS trust over NATS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [_COMMANDS[only]] if only in _COMMANDS else list(dict.fromkeys(_COMMANDS.values()))
    for module_name in modules:
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
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except (
        BrokenPipeError
    ):  # `cctf watch | head`: the reader left; stop quietly, like any Unix filter
        _silence_stdout()
        return 141  # 128 + SIGPIPE
    except CctfError as exc:  # a refusal no sub-command reported itself: one line, no traceback
        print(f"cctf {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
