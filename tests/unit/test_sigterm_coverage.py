"""Every long-running ``cctf`` command has a process-level test that SIGTERMs it (the house rule:
every process exits on SIGTERM). A new ``run``/``serve``/``up``/``watch`` sub-command fails this
test until a SIGTERM test is listed for it here.

Each listed test starts the real command as a process, sends SIGTERM and checks its exit code (and,
where the issue demands one, the time it took).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cctf.cli import build_parser

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"

#: command -> "file::test" that SIGTERMs it as a process
SIGTERM_TESTS: dict[str, str] = {
    "nats up": "test_nats_deploy.py::test_cli_up_runs_until_sigterm_and_stops_every_server",
    "agent run": "test_agent_cli.py::test_sigterm_while_running_exits_0_within_5s",
    "coordinator run": "test_coordinator_signals.py::test_sigterm_while_running",
    "chaos serve": "test_chaos_control.py::test_cli_serve_runs_until_sigterm",
    "chaos run": "test_chaos_suite.py::test_sigterm_stops_the_run_and_everything_it_started",
    "log serve": "test_log_cli.py::test_log_commands_and_api",
    "ca serve": "test_ca_cli.py::test_ca_cli_init_serve_issue_list_revoke",
    "gateway": "test_gateway_process.py::test_sigterm_while_connecting_to_an_unreachable_nats_is_exit_0",
    "demo": "test_demo.py::test_demo_serves_metrics_on_the_given_port",
    "watch": "test_client_process.py::test_watch_exits_on_sigterm_while_running",
    "safe-mode watch": "test_safemode_cli.py::test_watch_streams_announcements_and_exits_on_sigterm",
}  # fmt: skip

#: sub-command names that run until stopped
_LONG_RUNNING = {"run", "serve", "up", "watch"}
#: top-level commands that run until stopped (or until their rounds are done)
_LONG_RUNNING_TOP = {"demo", "gateway", "watch"}


def _commands() -> list[str]:
    parser = build_parser()
    out: list[str] = []
    (top,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in top.choices.items():
        if name in _LONG_RUNNING_TOP:
            out.append(name)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [f"{name} {s}" for s in action.choices if s in _LONG_RUNNING]
    return sorted(out)


def test_every_long_running_command_has_a_sigterm_test() -> None:
    assert sorted(SIGTERM_TESTS) == _commands()


@pytest.mark.parametrize("command", sorted(SIGTERM_TESTS))
def test_the_listed_test_exists_and_sends_sigterm(command: str) -> None:
    file, name = SIGTERM_TESTS[command].split("::")
    text = (INTEGRATION / file).read_text()
    start = text.index(f"def {name}(")  # the test exists
    end = text.find("\ndef ", start + 1)
    end2 = text.find("\nasync def ", start + 1)
    body = text[start : min(e for e in (end, end2, len(text)) if e != -1)]
    # SIGTERM sent in the test or through a helper named for it (_sigterm_and_time, terminate...)
    assert "sigterm" in body.lower() or "terminate" in body, (command, SIGTERM_TESTS[command])
