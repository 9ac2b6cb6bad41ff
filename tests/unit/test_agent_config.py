"""Agent configuration: the example files load (YAML and JSON), defaults, key checks, and one-line
errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dns.name
import pytest
from wirefactories import make_identity

from cctf.agents.config import AgentConfig, ConfigError, load_agent_config
from cctf.crypto.keys import save_signing_key
from cctf.crypto.trust import TrustConfig

AGENT = "agent-1"
REGION = "us-east"
ME = make_identity(AGENT, REGION)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    key_path = tmp_path / f"{AGENT}.key.json"
    save_signing_key(key_path, ME.key)
    cfg: dict[str, Any] = {
        "agent": AGENT,
        "region": REGION,
        "key_file": key_path.name,
        "nats": {"urls": ["nats://127.0.0.1:4222"], "user": "agent-us-east", "password": "pw"},
        "resolvers": [
            {"id": "r1", "address": "127.0.0.1", "port": 5301, "transport": "udp"},
            {"id": "r2", "address": "::1", "transport": "tcp"},
        ],
        "names": [["www.demo.test", "A"], ["api.demo.test.", "aaaa"]],
    }
    cfg.update(overrides)
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return path


def test_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_agent_config(write_config(tmp_path))
    assert cfg.agent == AGENT and cfg.region == REGION
    assert cfg.names == (("www.demo.test.", "A"), ("api.demo.test.", "AAAA"))
    assert [r.id for r in cfg.resolvers] == ["r1", "r2"] and cfg.resolvers[1].port == 53
    assert (cfg.round_ms, cfg.query_deadline_ms, cfg.ballot_lifetime_ms) == (1000, 600, 30000)
    assert cfg.publish_timeout_ms == 400
    assert cfg.key_file == (tmp_path / f"{AGENT}.key.json").resolve()
    assert "pw" not in repr(cfg)
    assert cfg.load_key().kid == ME.kid


def test_ballot_bounds_default_and_range(tmp_path: Path) -> None:
    # D6: a round's votes are split over bounded ballots
    cfg = load_agent_config(write_config(tmp_path))
    assert (cfg.ballot_max_votes, cfg.ballot_max_bytes) == (1000, 256 * 1024)
    cfg = load_agent_config(write_config(tmp_path, ballot_max_votes=10, ballot_max_bytes=20_000))
    assert (cfg.ballot_max_votes, cfg.ballot_max_bytes) == (10, 20_000)
    for bad in ({"ballot_max_votes": 0}, {"ballot_max_votes": 5000}, {"ballot_max_bytes": 100}):
        with pytest.raises(ConfigError, match="ballot_max"):
            load_agent_config(write_config(tmp_path, **bad))


def test_config_from_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(
        json.dumps(
            {
                "urls": ["nats://127.0.0.1:1", "nats://127.0.0.1:2"],
                "users": {"agent-us-east": {"user": "agent-us-east", "password": "s3cret"}},
            }
        )
    )
    path = write_config(
        tmp_path,
        nats={"credentials": "creds.json", "user": "agent-us-east"},
        round_ms=500,
    )
    cfg = AgentConfig.load(path)
    assert cfg.nats.urls == ("nats://127.0.0.1:1", "nats://127.0.0.1:2")
    assert cfg.nats.password == "s3cret" and "s3cret" not in repr(cfg)
    assert cfg.query_deadline_ms == 300


def test_config_refuses_nats_user_of_another_region(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, nats={"urls": ["nats://127.0.0.1:4222"], "user": "agent-eu-west", "password": "x"}
    )
    with pytest.raises(ConfigError, match=r"agent-eu-west.*must connect as 'agent-us-east'"):
        load_agent_config(path)


def test_config_refuses_key_of_another_region(tmp_path: Path) -> None:
    other = make_identity(AGENT, "eu-west", key=ME.key)  # same key, trusted for eu-west
    trust = tmp_path / "trust.json"
    TrustConfig([other.entry]).save(trust)
    cfg = load_agent_config(write_config(tmp_path, trust="trust.json"))
    with pytest.raises(ConfigError, match=r"region 'eu-west'.*region is 'us-east'"):
        cfg.load_key()
    # the same through a .pub.json beside the key file (as `cctf keys generate` writes it)
    (tmp_path / f"{AGENT}.pub.json").write_text(json.dumps(other.entry.to_json()))
    cfg = load_agent_config(write_config(tmp_path))
    with pytest.raises(ConfigError, match="region 'eu-west'"):
        cfg.load_key()
    # another principal's key
    (tmp_path / f"{AGENT}.pub.json").write_text(
        json.dumps(make_identity("agent-9", REGION, key=ME.key).entry.to_json())
    )
    with pytest.raises(ConfigError, match="belongs to agent 'agent-9'"):
        load_agent_config(write_config(tmp_path)).load_key()
    # and a matching entry is fine
    (tmp_path / f"{AGENT}.pub.json").write_text(json.dumps(ME.entry.to_json()))
    assert load_agent_config(write_config(tmp_path)).load_key().kid == ME.kid


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agent": "Agent_1"}, "invalid agent id"),
        ({"region": None}, "missing required field `region`"),
        ({"bogus": 1}, "unknown field `bogus`"),
        ({"names": []}, r"length >= 1 - at `\$.names`"),
        ({"names": [["www.demo.test.", "A"], ["WWW.demo.test", "A"]]}, "duplicate"),
        ({"names": [["www.demo.test."]]}, r"names\[0\]"),
        ({"names": [["www.demo.test.", "ANY"]]}, "cannot be queried"),
        ({"resolvers": [{"id": "r1", "address": "dns.example", "transport": "udp"}]}, "literal"),
        (
            {
                "resolvers": [
                    {"id": "r1", "address": "127.0.0.1", "transport": "udp"},
                    {"id": "r1", "address": "127.0.0.2", "transport": "udp"},
                ]
            },
            "duplicate resolver id",
        ),
        ({"round_ms": 1000, "query_deadline_ms": 1000}, "query_deadline_ms"),
        ({"round_ms": "1000"}, r"Expected `int`, got `str` - at `\$.round_ms`"),
        ({"round_ms": 5}, r">= 100 - at `\$.round_ms`"),
        ({"names": [["a" * 64 + ".test.", "A"]]}, r"names\[0\].*63 octets"),
        ({"names": [["www.demo.test.", "A", "x"]]}, r"length 2, got 3 - at `\$.names\[0\]`"),
        ({"resolvers": []}, r"length >= 1 - at `\$.resolvers`"),
        (
            {
                "resolvers": [
                    {"id": f"r{i}", "address": "127.0.0.1", "transport": "udp"} for i in range(65)
                ]
            },
            "at most 64 voters",
        ),
        ({"trust": ""}, r"length >= 1 - at `\$.trust`"),
        ({"ballot_lifetime_ms": 3_600_000}, "ballot_lifetime_ms"),
        ({"nats": {"urls": ["nats://h:1"], "user": "agent-us-east"}}, "nats.password"),
        ({"nats": {"urls": ["http://h:1"], "user": "agent-us-east", "password": "x"}}, "nats.urls"),
        ({"nats": {"credentials": "missing.json", "user": "agent-us-east"}}, "cannot read"),
    ],
)
def test_config_validation_errors(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_agent_config(write_config(tmp_path, **overrides))


def test_config_unreadable_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_agent_config(bad)


def test_only_what_a_coordinator_would_refuse_is_refused(tmp_path: Path) -> None:
    obj = json.loads(write_config(tmp_path).read_text())
    # 5,000 names x 2 resolvers: 10,000 votes, sent as several ballots
    obj["names"] = [[f"n{i}.scale.test.", "A"] for i in range(5_000)]
    assert AgentConfig.from_dict(obj, base_dir=tmp_path).query_count == 10_000
    obj["names"] = [[f"n{i}.test.", "A"] for i in range(131_073)]  # (too big for a config file)
    with pytest.raises(
        ConfigError,
        match=r"131073 names x 2 resolvers = 262146 votes per round; an agent sends at most 64",
    ):
        AgentConfig.from_dict(obj, base_dir=tmp_path)


def test_config_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, round_ms="x")
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    bad = tmp_path / "agent.yaml"
    bad.write_text("agent: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_agent_config(bad)
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_agent_config(big)


def test_yaml_config_loads_like_json(tmp_path: Path) -> None:
    json_cfg = load_agent_config(write_config(tmp_path))
    obj = json.loads((tmp_path / "agent.json").read_text())
    (tmp_path / "agent.yaml").write_text(json.dumps(obj))  # JSON is YAML
    assert load_agent_config(tmp_path / "agent.yaml") == json_cfg


@pytest.mark.parametrize("name", ["agent.yaml", "agent.json"])
def test_example_configs_load(name: str) -> None:
    creds = EXAMPLES / ".cctf" / "nats" / "credentials.d" / "agent-us-east.json"
    cfg = AgentConfig.from_dict(
        {
            **_example(name),
            "nats": {
                "urls": ["nats://127.0.0.1:4222"],
                "user": "agent-us-east",
                "password": "example",
            },
        },
        base_dir=EXAMPLES,
    )
    assert (cfg.agent, cfg.region) == ("agent-us-east", "us-east")
    assert cfg.key_file == EXAMPLES / "keys" / "agent-us-east.key.json"
    assert [r.id for r in cfg.resolvers] == ["r1", "r2", "r3"]
    assert cfg.names[0] == ("www.example.com.", "A")
    assert (cfg.round_ms, cfg.query_deadline_ms, cfg.ballot_lifetime_ms) == (1000, 600, 30000)
    assert cfg.identity is not None and cfg.identity_probe_every_ms is None
    assert [t.name for t in cfg.identity.trust_domains] == ["example.org"]
    assert [w.endpoint for w in cfg.identity.workloads] == ["api.example.org:443"]
    # as written (credentials file): valid up to reading that file, which the example does not ship
    with pytest.raises(ConfigError, match=f"cannot read credentials file {creds}"):
        load_agent_config(EXAMPLES / name)


def _example(name: str) -> Any:
    from cctf.util.files import read_document

    return read_document(EXAMPLES / name, "example")


def test_yaml_and_json_examples_agree() -> None:
    assert _example("agent.yaml") == _example("agent.json")


def test_dnssec_block_is_checked(tmp_path: Path) -> None:
    from cctf.chaos.signing import signed_demo_zone

    anchor = signed_demo_zone().trust_anchor
    good = {"trust_anchors": [anchor], "validating_resolvers": ["r1"]}
    cfg = load_agent_config(write_config(tmp_path, dnssec=good))
    assert cfg.validating_resolvers == frozenset({"r1"})
    assert cfg.trust_anchors.covering(dns.name.from_text("www.demo.test.")) is not None
    plain = load_agent_config(write_config(tmp_path))
    assert plain.trust_anchors.zones == frozenset() and not plain.validating_resolvers
    for block, message in (
        ({"trust_anchors": ["demo.test. IN A 192.0.2.1"]}, r"dnssec.trust_anchors\[0\]"),
        ({"validating_resolvers": ["r9"]}, "dnssec.validating_resolvers: r9"),
        ({"anchors": []}, "anchors"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_agent_config(write_config(tmp_path, dnssec=block))
