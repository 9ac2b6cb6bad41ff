"""The README's configuration snippets for real infrastructure are valid: every YAML block parses,
the resolver entries are valid resolver specs and the ``identity:`` blocks together are a valid
``IdentityTargets`` (so a user copying them starts from something the agents accept)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cctf.agents.spec import ResolverSpec
from cctf.identity.targets import IdentityTargets, identity_targets_from

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README.read_text()) if kind == lang]


def yaml_blocks() -> list[Any]:
    return [yaml.safe_load(b) for b in blocks("yaml")]


def test_yaml_blocks_parse() -> None:
    docs = yaml_blocks()
    assert len(docs) >= 3
    assert all(isinstance(d, dict) for d in docs)


def test_resolver_examples_are_valid_specs() -> None:
    entries = [r for d in yaml_blocks() for r in d.get("resolvers", [])]
    assert len(entries) >= 3
    specs = [ResolverSpec.from_dict(r) for r in entries]
    assert {s.transport.value for s in specs} >= {"udp", "dot", "doh"}


def test_identity_examples_form_valid_targets() -> None:
    merged: dict[str, list[Any]] = {"trust_domains": [], "issuers": [], "workloads": []}
    for d in yaml_blocks():
        for key, items in (d.get("identity") or {}).items():
            merged[key].extend(items)
    # the workload example lives in the trust domain the bundle example names
    targets = identity_targets_from(merged, "README identity examples")
    assert isinstance(targets, IdentityTargets)
    assert targets.trust_domains and targets.issuers and targets.workloads
    assert all(w.policy.require == ["mtls"] for w in targets.workloads)


def test_code_block_lines_fit() -> None:
    for lang in ("yaml", "sh", "", "json"):
        for body in blocks(lang):
            for line in body.splitlines():
                assert len(line) <= 100, line
