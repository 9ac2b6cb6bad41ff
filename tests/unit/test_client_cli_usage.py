"""``cctf check`` / ``cctf watch`` with malformed values: exit 2 (usage), one short line, no file read.

The credentials and trust paths do not exist: a usage error must be reported before any file is read
or any connection is tried (so it is never mistaken for "no verdict" or "cannot connect").
"""

from __future__ import annotations

import pytest

from cctf.cli import main

FILES = ["--credentials", "/nonexistent/creds.json", "--trust", "/nonexistent/trust.json"]
CHECK_BAD = [
    ["a" * 300],  # name over 253 octets
    ["a..b"],  # empty label
    ["example.com", "--qtype", "A" * 10_000],
    ["example.com", "--qtype", "A-B"],
    ["example.com", "--region", "US EAST"],
    ["example.com", "--region", "r" * 5_000],
    ["example.com", "--timeout", "nan"],
    ["example.com", "--timeout", "-1"],
    ["example.com", "--timeout", "0"],
    ["example.com", "--max-age-ms", "-5"],
    ["example.com", "--round-ms", "0"],
    ["example.com", "--min-suite", "rot13"],
    ["example.com", "--coordinators", "1:c1,c2"],  # 2k > m violated
    ["example.com", "--coordinators", "c1,c2,c3"],
    ["example.com", "--coordinators", "2:c1,c1,c2"],
]
WATCH_BAD = [
    ["--count", "0"],
    ["--count", "-1"],
    ["--region=-bad"],
    ["--round-ms", "-5"],
    ["--coordinators", "2:C1,c2,c3"],
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("bad", CHECK_BAD, ids=lambda a: " ".join(a)[:40])
def test_check_bad_values_are_usage_errors(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", bad[0], *FILES, "--region", "us-east", *bad[1:]]
    rc, out, err = _run(argv, capsys)
    assert rc == 2, err
    assert out == ""
    assert err.count("\n") == 1 and len(err) < 300, err
    assert "nonexistent" not in err  # refused before reading any file


@pytest.mark.parametrize("bad", WATCH_BAD, ids=lambda a: " ".join(a))
def test_watch_bad_values_are_usage_errors(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run(["watch", *FILES, "--region", "us-east", *bad], capsys)
    assert rc == 2, err
    assert out == "" and err.count("\n") == 1 and len(err) < 300, err


def test_file_errors_stay_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["check", "example.com", *FILES, "--region", "us-east"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "ConfigError(" not in err, err
