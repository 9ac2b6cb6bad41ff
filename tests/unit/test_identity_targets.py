"""Identity targets (decision 5): the example loads; every field rule and cross-reference gives a
one-line ConfigError naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cctf.errors import ConfigError
from cctf.identity.negotiator import AllOf, AtLeast, Requires, policy_from_spec
from cctf.identity.negotiator import Path as TPath
from cctf.identity.targets import (
    IdentityTargets,
    check_endpoint,
    identity_targets_from,
    load_identity_targets,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE: dict[str, Any] = {
    "trust_domains": [{"name": "demo.test", "bundle_endpoint": "https://127.0.0.1:8443/bundle"}],
    "issuers": [{"issuer": "https://127.0.0.1:8444", "audiences": ["cctf", "other"]}],
    "workloads": [
        {
            "spiffe_id": "spiffe://demo.test/api",
            "dns_name": "api.demo.test.",
            "endpoint": "127.0.0.1:9443",
            "issuer": "https://127.0.0.1:8444",
        }
    ],
}


def test_example_loads_with_paths_anchored() -> None:
    t = load_identity_targets(EXAMPLES / "identity.yaml")
    assert [d.name for d in t.trust_domains] == ["demo.test", "partner.example"]
    assert t.trust_domains[0].ca_file == str(EXAMPLES / "ca/web-root.pem")
    assert t.trust_domains[1].bundle_file == str(EXAMPLES / "bundles/partner.example.json")
    api = t.workload("spiffe://demo.test/api")
    assert api is not None and api.expected_subject == "spiffe://demo.test/api"
    assert t.audience_of(api) == "cctf"
    pay = t.workload("spiffe://demo.test/payments")
    assert pay is not None and pay.policy.require == ["mtls"]
    assert policy_from_spec(pay.policy) == AllOf(AtLeast(2), Requires(TPath.MTLS))
    assert policy_from_spec(api.policy) == AtLeast(2)
    assert t.workload("spiffe://demo.test/none") is None


def test_defaults() -> None:
    t = identity_targets_from(BASE)
    w = t.workloads[0]
    assert (w.qtype, w.policy.at_least, w.policy.require) == ("A", 2, [])
    assert t.audience_of(w) == "cctf"
    assert t.trust_domains[0].refresh_ms == 300_000
    assert identity_targets_from({}) == IdentityTargets()


def mutate(path: list[Any], value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    node: Any = cfg
    for p in path[:-1]:
        node = node[p]
    if value is KeyError:
        del node[path[-1]]
    elif isinstance(node, list) and path[-1] == len(node):
        node.append(value)
    else:
        node[path[-1]] = value
    return cfg


BAD = [
    (["trust_domains", 0, "name"], "Demo.test", "upper-case"),
    (["trust_domains", 0, "name"], "demo test", "characters"),
    (["trust_domains", 0, "bundle_endpoint"], "http://127.0.0.1:8443/bundle", "https"),
    (["trust_domains", 0, "bundle_endpoint"], "https://u:p@127.0.0.1/bundle", "userinfo"),
    (["trust_domains", 0, "bundle_endpoint"], "https://127.0.0.1/b#frag", "fragment"),
    (["trust_domains", 0, "bundle_endpoint"], "https:///bundle", "host"),
    (["trust_domains", 0, "bundle_file"], "b.json", "exactly one"),
    (["trust_domains", 0, "refresh_ms"], 10, ">= 1000"),
    (["issuers", 0, "issuer"], "https://127.0.0.1:8444?x=1", "query"),
    (["issuers", 0, "issuer"], "http://127.0.0.1:8444", "https"),
    (["issuers", 0, "audiences"], [], "length >= 1"),
    (["issuers", 0, "audiences"], ["a", "a"], "duplicate audiences"),
    (["workloads", 0, "spiffe_id"], "spiffe://demo.test/../x", "'..' path segment"),
    (["workloads", 0, "spiffe_id"], "spiffe://other.test/api", "not in trust_domains"),
    (["workloads", 0, "dns_name"], "API.demo.test", "normalized"),
    (["workloads", 0, "qtype"], "a", "qtype"),
    (["workloads", 0, "endpoint"], "127.0.0.1", "host:port"),
    (["workloads", 0, "endpoint"], "127.0.0.1:0", "host:port"),
    (["workloads", 0, "endpoint"], "::1:443", "[addr]:port"),
    (["workloads", 0, "issuer"], "https://127.0.0.1:9999", "not in issuers"),
    (["workloads", 0, "audience"], "nope", "not one of the issuer's audiences"),
    (["workloads", 0, "policy"], {"at_least": 4}, "<= 3"),
    (["workloads", 0, "policy"], {"require": ["mtls", "mtls"]}, "duplicate paths"),
    (["workloads", 0, "policy"], {"require": ["x509"]}, "Invalid enum value"),
    (["workloads", 0, "colour"], "red", "unknown field"),
    (["trust_domains", 1], BASE["trust_domains"][0], "duplicate trust domain"),
    (["issuers", 1], BASE["issuers"][0], "duplicate issuer"),
    (["workloads", 1], BASE["workloads"][0], "duplicate spiffe_id"),
]


@pytest.mark.parametrize(("path", "value", "needle"), BAD)
def test_bad_values_are_one_line_errors(path: list[Any], value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        identity_targets_from(mutate(path, value))
    msg = str(info.value)
    assert "\n" not in msg
    assert needle.lower() in msg.lower(), msg


def test_discovery_location() -> None:
    t = identity_targets_from(BASE)
    assert (
        t.issuers[0].discovery_location == "https://127.0.0.1:8444/.well-known/openid-configuration"
    )
    cfg = mutate(["issuers", 0, "issuer"], "https://idp.example/tenant/")
    cfg["workloads"][0]["issuer"] = "https://idp.example/tenant/"
    t = identity_targets_from(cfg)
    assert (
        t.issuers[0].discovery_location
        == "https://idp.example/tenant/.well-known/openid-configuration"
    )
    cfg["issuers"][0]["discovery_url"] = (
        "https://idcs-1.identity.oraclecloud.com/.well-known/openid-configuration"
    )
    assert identity_targets_from(cfg).issuers[0].discovery_location.startswith("https://idcs-1.")
    cfg["issuers"][0]["discovery_url"] = "http://idcs-1.identity.oraclecloud.com/x"
    with pytest.raises(ConfigError, match="discovery_url"):
        identity_targets_from(cfg)


def test_subject_without_issuer_refused() -> None:
    cfg = mutate(["workloads", 0, "issuer"], KeyError)
    cfg["workloads"][0]["subject"] = "x"
    with pytest.raises(ConfigError, match="need an issuer"):
        identity_targets_from(cfg)


def test_list_sizes_bounded() -> None:
    many = [{"name": f"d{i}.test", "bundle_file": "b.json"} for i in range(65)]
    with pytest.raises(ConfigError, match="length <= 64"):
        identity_targets_from({"trust_domains": many})


def test_endpoint_forms() -> None:
    assert check_endpoint("[::1]:443") == ("::1", 443)
    assert check_endpoint("api.demo.test:8443") == ("api.demo.test", 8443)
    for bad in ("[::1:443", "[zz]:1", "a b:1", ":443", "h:65536", "h:-1"):
        with pytest.raises(ValueError):
            check_endpoint(bad)
