"""Coordinator config: the example files load (YAML and JSON), paths are anchored, errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctf.config import convert_config
from cctf.coordinator.config import (
    ConfigError,
    CoordinatorConfig,
    NameSet,
    load_coordinator_config,
)
from cctf.coordinator.pipeline.identity import IdentitySet
from cctf.coordinator.tally import QuorumRule

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["coordinator.yaml", "coordinator.json"])
def test_example_configs_load(name: str) -> None:
    cfg = load_coordinator_config(EXAMPLES / name)
    assert cfg.coordinator == "coord-1" and cfg.quorum.k == 3 and cfg.quorum.n == 5
    assert cfg.key_file == str(EXAMPLES / "keys/coord-1.key.json")
    assert cfg.nats is not None
    assert cfg.nats.credentials == str(EXAMPLES / ".cctf/nats/credentials.d/coordinator.json")
    assert cfg.nats_settings().user == "coordinator"
    address = cfg.metrics_address
    assert address is not None and (address.host, address.port) == ("127.0.0.1", 9464)
    assert cfg.name_set.admits("www.example.com.", "AAAA")
    assert not cfg.name_set.admits("evil.example.com.", "A")
    assert cfg.identity is not None
    allow = IdentitySet(cfg.identity)
    assert allow.admits("bundle", "demo.test") and allow.admits("jwks", "https://127.0.0.1:8444")
    assert allow.admits("mtls", "spiffe://demo.test/api") and not allow.admits("bundle", "x.test")
    assert cfg.identity_quorum == QuorumRule(3, 5) and len(cfg.identity_agents) == 5


def test_yaml_and_json_examples_agree() -> None:
    y = load_coordinator_config(EXAMPLES / "coordinator.yaml")
    j = load_coordinator_config(EXAMPLES / "coordinator.json")
    assert y.safe_mode.auto_safe_mode and y.safe_mode.hold_rounds == 3  # docs/policy.md
    fields = ("coordinator", "region", "rule", "electorate", "names", "metrics", "nats")
    for field in (*fields, "identity", "identity_electorate", "identity_rule", "safe_mode", "lkg"):
        assert getattr(y, field) == getattr(j, field), field


def test_lkg_example_and_rules() -> None:
    from cctf.coordinator.lkgconfig import LkgConfig, LkgNameCap

    y = load_coordinator_config(EXAMPLES / "coordinator.yaml")
    policy = y.lkg.policy()
    assert policy.cap_ms(("api.example.com.", "A")) == 120_000
    assert policy.cap_ms(("www.example.com.", "A")) == 900_000
    assert policy.lifetime_ms == 30_000
    with pytest.raises(ValueError, match="twice"):
        LkgConfig(
            names=[
                LkgNameCap(name="a.example.", max_staleness_ms=5_000),
                LkgNameCap(name="A.example", max_staleness_ms=6_000),
            ]
        )
    with pytest.raises(ValueError, match=r"lkg\.names"):
        LkgNameCap(name="a..b", max_staleness_ms=5_000)


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


def _with(**over: object) -> CoordinatorConfig:
    obj = json.loads((EXAMPLES / "coordinator.json").read_text())
    obj.update(over)
    return convert_config(obj, CoordinatorConfig, "coordinator config")


def test_identity_defaults_and_errors() -> None:
    cfg = _with(identity_electorate=[], identity_rule=None)
    assert cfg.identity_agents == (
        "agent-us-east",
        "agent-eu-west",
        "agent-ap-south",
        "agent-us-west",
        "agent-eu-north",
    )
    assert cfg.identity_quorum == QuorumRule(3, 5)
    three = _with(identity_electorate=["a1", "a2", "a3"], identity_rule=None)
    assert three.identity_quorum == QuorumRule(2, 3) and three.agent_ids >= {"a1", "agent-us-east"}
    for over, message in (
        ({"identity_rule": {"k": 2, "n": 5}}, "2\\*k > n"),
        ({"identity_electorate": ["a1", "a1"], "identity_rule": None}, "twice"),
        ({"identity_electorate": ["Bad"], "identity_rule": None}, "identity_electorate"),
        ({"identity_rule": {"k": 2, "n": 3}}, "identity_rule.n is 3"),
        ({"identity": None}, "need an identity: block"),
        ({"identity": {"trust_domains": [{"name": "UPPER.test", "bundle_file": "b"}]}}, "identity"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            _with(**over)
        assert "\n" not in str(err.value)
