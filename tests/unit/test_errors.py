"""Every error a CLI catches (and every error the packaging-owned rooms define) derives from the root
``cctf.errors.CctfError``, so "anything CCTF refused" is one ``except`` and one line on stderr."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cctf.chaos
import cctf.crypto
import cctf.devfabric
import cctf.util
from cctf.agents.ballot import BallotError
from cctf.agents.config import ConfigError as AgentConfigError
from cctf.bus.settings import NatsSettingsError
from cctf.bus.streams import StreamSetupError
from cctf.chaos.control import ChaosControlError, FabricFileError
from cctf.chaos.faults import FaultError
from cctf.cli import main
from cctf.client.sdk import FetchError, NoVerdict, TrustClientError, VerdictRejected
from cctf.coordinator.config import ConfigError as CoordinatorConfigError
from cctf.coordinator.service import CoordinatorError
from cctf.crypto.cli import CliError
from cctf.crypto.errors import CryptoError, KeyFileError
from cctf.devfabric.demo import DemoError
from cctf.devfabric.nats import NatsFabricError
from cctf.errors import CctfError, ConfigError
from cctf.ids import IdError

CAUGHT_BY_CLIS = [
    AgentConfigError,
    BallotError,
    ChaosControlError,
    CliError,
    ConfigError,
    CoordinatorConfigError,
    CoordinatorError,
    CryptoError,
    DemoError,
    FabricFileError,
    FaultError,
    FetchError,
    IdError,
    KeyFileError,
    NatsFabricError,
    NatsSettingsError,
    NoVerdict,
    StreamSetupError,
    TrustClientError,
    VerdictRejected,
]


@pytest.mark.parametrize("error", CAUGHT_BY_CLIS, ids=lambda e: f"{e.__module__}.{e.__name__}")
def test_errors_caught_by_the_clis_derive_from_the_root(error: type[BaseException]) -> None:
    assert issubclass(error, CctfError)


def _defined_errors(package: object) -> list[type[BaseException]]:
    found = []
    path = package.__path__  # type: ignore[attr-defined]
    for info in pkgutil.walk_packages(path, package.__name__ + "."):  # type: ignore[attr-defined]
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, BaseException):
                found.append(cls)
    return found


@pytest.mark.parametrize("package", [cctf.chaos, cctf.crypto, cctf.devfabric, cctf.util])
def test_every_error_defined_in_these_rooms_derives_from_the_root(package: object) -> None:
    errors = _defined_errors(package)
    assert errors or package is cctf.util
    assert [e for e in errors if not issubclass(e, CctfError)] == []


def test_an_absurd_key_file_is_one_line_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    # `keys show` on a trust file that is too deeply nested: the refusal reaches stderr as one line
    path = f"{tmp_path}/deep.json"
    with open(path, "w") as fh:
        fh.write("[" * 100_000)
    assert main(["keys", "show", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid JSON" in err and "Traceback" not in err
