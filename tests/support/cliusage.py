"""Run ``cctf`` in the test process, for usage errors (no process start-up: ~1 s of CPU each saved).

``main_in_process(argv, capsys)`` returns (exit code, stdout, stderr) of ``cctf.cli.main(argv)``: an
argparse refusal (``SystemExit``) gives its code. The logging set-up a sub-command does (process-wide
structlog configuration, bound to the captured stderr) is undone afterwards, so later tests log as
before. Only for arguments refused before anything starts: a process-level behaviour (signals, exit
on SIGTERM, no processes left behind) needs the real process.
"""

from __future__ import annotations

import pytest
import structlog

from cctf.cli import main

__all__ = ["main_in_process"]


def main_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    saved = structlog.get_config()
    try:
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        structlog.configure(**saved)
    out, err = capsys.readouterr()
    return rc, out, err
