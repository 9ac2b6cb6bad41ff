"""Coordinator config: the example files load (YAML and JSON), paths are anchored, errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctf.coordinator.config import ConfigError, NameSet, load_coordinator_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["coordinator.yaml", "coordinator.json"])
def test_example_configs_load(name: str) -> None:
    cfg = load_coordinator_config(EXAMPLES / name)
    assert cfg.coordinator == "coord-1" and cfg.quorum.k == 3 and cfg.quorum.n == 5
    assert cfg.key_file == str(EXAMPLES / "keys/coord-1.key.json")
    assert cfg.nats is not None
    assert cfg.nats.credentials == str(EXAMPLES / ".cctf/nats-credentials.json")
    assert cfg.nats_settings().user == "coordinator"
    address = cfg.metrics_address
    assert address is not None and (address.host, address.port) == ("127.0.0.1", 9464)
    assert cfg.name_set.admits("www.example.com.", "AAAA")
    assert not cfg.name_set.admits("evil.example.com.", "A")


def test_yaml_and_json_examples_agree() -> None:
    y = load_coordinator_config(EXAMPLES / "coordinator.yaml")
    j = load_coordinator_config(EXAMPLES / "coordinator.json")
    for field in ("coordinator", "region", "rule", "electorate", "names", "metrics", "nats"):
        assert getattr(y, field) == getattr(j, field), field


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    obj = json.loads((EXAMPLES / "coordinator.json").read_text())
    obj["round_ms"] = 5
    path = tmp_path / "c.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError) as err:
        load_coordinator_config(path)
    text = str(err.value)
    assert str(path) in text and "$.round_ms" in text and "\n" not in text
    (tmp_path / "c.yaml").write_text("coordinator: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_coordinator_config(tmp_path / "c.yaml")


def test_unconfigured_and_wildcard_names() -> None:
    names = NameSet([("WWW.Example.com", "A"), ("*.zone.test.", "A"), ("*.", "TXT")])
    assert names.admits("www.example.com.", "A")
    assert not names.admits("www.example.com.", "AAAA")
    assert names.admits("a.zone.test.", "A") and names.admits("b.a.zone.test.", "A")
    assert not names.admits("zone.test.", "A")  # strictly below the zone
    assert not names.admits("xzone.test.", "A")
    assert names.admits("anything.", "TXT") and not names.admits(".", "TXT")
