"""Every example component config holds only its OWN NATS credential (issue #9 scope 4): a
``credentials.d/<user>.json`` file of its own user (one password, `cctf nats up`), never the
operator's file with every user's password, and the ``tls`` alternative is one certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from cctf.agents.config import load_agent_config
from cctf.bus.settings import NatsSettings
from cctf.ca.config import load_ca_config
from cctf.coordinator.config import load_coordinator_config
from cctf.gateway.config import load_gateway_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _agent(p: Path) -> NatsSettings:
    try:
        return load_agent_config(p).nats
    except Exception:  # the example ships no credentials file: read the block itself
        from cctf.util.files import read_document

        return NatsSettings.from_json(read_document(p, "example")["nats"], base=p.parent)


def _ca(p: Path) -> NatsSettings:
    nats = load_ca_config(p).nats
    assert nats is not None
    return nats


LOADERS = {
    "agent.yaml": _agent,
    "agent.json": _agent,
    "coordinator.yaml": lambda p: load_coordinator_config(p).nats,
    "coordinator.json": lambda p: load_coordinator_config(p).nats,
    "gateway.yaml": lambda p: load_gateway_config(p).nats,
    "ca.yaml": _ca,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_each_example_points_at_its_own_credential(name: str) -> None:
    nats = LOADERS[name](EXAMPLES / name)
    assert nats.credentials is not None and nats.tls is None and nats.password is None
    path = Path(nats.credentials)
    assert path.parent.name == "credentials.d" and path.name == f"{nats.user}.json"


def test_every_component_config_with_a_nats_block_is_checked() -> None:
    with_nats = {
        p.name
        for p in EXAMPLES.iterdir()
        if p.suffix in (".yaml", ".json")
        and any(line.startswith(("nats:", '  "nats":')) for line in p.read_text().splitlines())
    }
    assert with_nats == set(LOADERS), with_nats ^ set(LOADERS)
