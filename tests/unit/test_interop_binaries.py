"""The interop tests' binary lookup: skip with the reason off CI, FAIL on CI (CI=true)."""

from __future__ import annotations

import pytest
from unboundhelpers import find_binary

MISSING = "cctf-no-such-dns-binary"


def test_a_missing_binary_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"on CI: {MISSING} is not installed"):
        find_binary(MISSING)


def test_a_missing_binary_skips_with_the_reason_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} is not installed"):
        find_binary(MISSING)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        find_binary(MISSING)


def test_a_present_binary_is_found() -> None:
    assert find_binary("sh").endswith("/sh")
