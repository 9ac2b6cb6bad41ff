"""The gateway config: the commented example loads, paths are anchored, bad values are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctf.errors import ConfigError
from cctf.gateway.config import load_gateway_config, parse_listen

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_loads_with_anchored_paths() -> None:
    config = load_gateway_config(EXAMPLES / "gateway.yaml")
    assert config.region == "us-east" and config.address == ("127.0.0.1", 8480)
    assert config.trust_file == str(EXAMPLES / "trust.json")
    assert config.nats.credentials == str(EXAMPLES / ".cctf/nats/credentials.d/client.json")
    (w,) = config.identity.workloads
    assert w.policy.require == ["mtls"]
    assert config.identity.trust_domains[0].ca_file == str(EXAMPLES / "ca/web-root.pem")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"listen": "nowhere"}, "listen must look like host:port"),
        ({"region": "US EAST"}, "region"),
        ({"min_suite": "rot13"}, "min_suite"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"surprise": 1}, "surprise"),
        ({"identity": {"workloads": [{"spiffe_id": "spiffe://x.test/a"}]}}, "trust domain"),
        ({"coordinators": {"k": 1, "of": ["c1", "c2"]}}, "2k > m"),
        ({"coordinators": {"k": 2, "of": ["c1", "c1", "c2"]}}, "twice"),
    ],
)
def test_bad_values_are_one_line_config_errors(
    tmp_path: Path, change: dict[str, object], needle: str
) -> None:
    doc = {
        "region": "us-east",
        "trust_file": "trust.json",
        "nats": {"credentials": "creds.json", "user": "client"},
        **change,
    }
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_parse_listen() -> None:
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError):
        parse_listen("host:99999")


def test_coordinators_policy_k_of_m(tmp_path: Path) -> None:
    doc = {
        "region": "us-east",
        "trust_file": "trust.json",
        "nats": {"credentials": "creds.json", "user": "client"},
        "coordinators": {"k": 2, "of": ["c1", "c2", "c3"]},
    }
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    config = load_gateway_config(path)
    assert config.coordinators is not None
    policy = config.coordinators.policy()
    assert (policy.k, policy.of) == (2, ("c1", "c2", "c3"))
    assert load_gateway_config(EXAMPLES / "gateway.yaml").coordinators is None  # commented out
