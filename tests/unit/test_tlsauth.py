"""cctf.bus.tlsauth (pure) and its rendering: one user per agent certificate, the README example."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.bus.accounts import build_users, inbox_prefix, permissions_for
from cctf.bus.tlsauth import (
    ServerTls,
    agent_tls_user,
    agent_tls_users,
    role_tls_user,
    spiffe_agent_id,
)
from cctf.ca.profile import agent_spiffe_id
from cctf.devfabric.nats_config import render_server_config

README = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "README.md"
_ID = st.from_regex(r"[a-z0-9][a-z0-9-]{0,15}", fullmatch=True)


@given(region=_ID, agent=_ID)
def test_agent_user_is_its_spiffe_id_with_only_its_own_subjects(region: str, agent: str) -> None:
    u = agent_tls_user("cctf.test", region, agent)
    assert u.san == spiffe_agent_id("cctf.test", region, agent)
    assert u.san == agent_spiffe_id("cctf.test", region, agent)  # the CA's profile, same string
    assert u.permissions is not None
    for subject in u.permissions.publish_allow:
        kind_region_agent = subject.removeprefix("cctf.v1.").removesuffix(".>")
        assert kind_region_agent.endswith(f".{region}.{agent}")
    assert u.permissions.subscribe_allow == (inbox_prefix(u.inbox) + ".>",)
    assert u.inbox == f"agent-{region}.{agent}"


def test_bad_names_and_duplicates_are_refused() -> None:
    for td, region, agent in (("a/b", "r", "a"), ("td", "R!", "a"), ("td", "r", "a.b")):
        with pytest.raises(ValueError):
            agent_tls_user(td, region, agent)
    with pytest.raises(ValueError, match="duplicate"):
        agent_tls_users("td", [("r", "a"), ("r", "a")])
    with pytest.raises(ValueError, match="one certificate per agent"):
        role_tls_user("spiffe://td/x", "agent-r", ["r"])
    u = role_tls_user("spiffe://td/cctf/coordinator", "coordinator", ["r"])
    assert u.permissions == permissions_for("coordinator", ["r"]) and u.account == "CCTF"


def test_tls_users_need_the_tls_block() -> None:
    with pytest.raises(ValueError, match="tls block"):
        render_server_config(
            server_name="n",
            port=1,
            http_port=2,
            users=build_users(["r"]),
            store_dir=None,
            tls_users=agent_tls_users("td", [("r", "a")]),
        )


def test_readme_production_example_is_what_the_code_renders() -> None:
    regions = ("us-east", "eu-west")
    config = render_server_config(
        server_name="n1",
        port=4222,
        http_port=8222,
        users={"sys": build_users(regions)["sys"]},
        regions=regions,
        store_dir=None,
        tls=ServerTls(
            cert_file="/etc/nats/server.pem",
            key_file="/etc/nats/server-key.pem",
            ca_file="/etc/nats/client-cas.pem",
        ),
        tls_users=agent_tls_users("prod.example", [("us-east", "a1"), ("eu-west", "b1")]),
    )
    text = README.read_text()
    block = text.split("which renders, for the agent `a1` of `us-east` (abridged):\n\n```\n", 1)[1]
    block = block.split("```", 1)[0]
    tls_part, account_part = block.split("}\n", 1)
    assert tls_part + "}\n" in config
    user_part = account_part.split("    imports: [ ...", 1)[0]
    start = '      {\n        user: "spiffe://prod.example/cctf/agent/us-east/a1"'
    assert start in user_part
    assert user_part[user_part.index(start) :] in config
    assert config.count("password:") == 1  # the system user only: nothing per region


def test_a_join_user_may_only_ask_for_its_own_first_certificate() -> None:
    from cctf.bus.tlsauth import join_tls_user

    u = join_tls_user("prod.example", "us-east", "a1")
    assert u.san == "spiffe://prod.example/cctf/join/us-east/a1"
    assert u.account == "AGENT_US_EAST" and u.inbox == "join-us-east.a1"
    assert u.permissions is not None
    assert u.permissions.publish_allow == ("cctf.v1.ca.join.us-east.a1",)
    assert u.permissions.subscribe_allow == ("_INBOX.join-us-east.a1.>",)
