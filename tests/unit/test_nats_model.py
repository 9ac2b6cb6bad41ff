"""The bus's pure parts: stream definitions, the account model, the server version floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.bus.accountmap import ExportKind, accounts_for
from cctf.bus.accounts import (
    ACCOUNT_NAME,
    CLIENT_ACCOUNT_NAME,
    CLIENT_JS_API_PREFIX,
    CLIENT_LIVE_SUBJECTS,
    DEFAULT_REGIONS,
    GRANTS,
    LOG_API_SUBJECTS,
    Role,
    StreamKind,
    account_of,
    granted_subjects,
    inbox_prefix,
    js_api_prefix,
    permissions_for,
    role_of,
)
from cctf.bus.streams import (
    MIN_SERVER_VERSION,
    StreamSetupError,
    check_server_version,
    control_stream_config,
    log_stream_config,
    verdict_stream_config,
    votes_stream_config,
    votes_stream_name,
    votes_subjects,
)

REGION = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)


def test_servers_older_than_the_stream_features_are_refused() -> None:
    check_server_version(MIN_SERVER_VERSION)
    check_server_version((2, 12, 1))
    with pytest.raises(StreamSetupError, match=r"nats-server 2\.9\.10 is too old"):
        check_server_version((2, 9, 10))


@given(REGION)
def test_vote_stream_names_are_injective_and_bounded(region: str) -> None:
    name = votes_stream_name(region)
    assert name.removeprefix("CCTF_VOTES_").lower().replace("_", "-") == region
    assert votes_subjects(region) == f"cctf.v1.vote.{region}.>"
    config = votes_stream_config(region, 3)
    assert config.discard_new_per_subject and config.max_msgs_per_subject
    assert config.max_msgs and config.max_bytes and config.max_msg_size
    assert config.deny_delete and config.deny_purge and config.num_replicas == 3


def test_roles_inboxes_and_allow_lists() -> None:
    assert role_of("agent-eu-west") is Role.AGENT
    assert role_of("client") is Role.CLIENT
    for bad in ("agent-EU", "nobody", "agent", "agent-"):
        with pytest.raises(ValueError):
            role_of(bad)
    assert inbox_prefix("agent-eu-west") == "_INBOX.agent-eu-west"
    for user in ("client", "coordinator", "agent-us-east"):
        perms = permissions_for(user, DEFAULT_REGIONS)
        assert perms is not None
        assert perms.subscribe_allow[0] == f"_INBOX.{user}.>"
        assert not perms.publish_deny and not perms.subscribe_deny  # allow lists only
        everything = perms.publish_allow + perms.subscribe_allow
        assert not any(s in ("_INBOX.>", "$JS.>", "$JS.API.>", ">") for s in everything)
        assert not any(s.startswith("_INBOX.") for s in perms.publish_allow)
    client = permissions_for("client", ["us-east"])
    assert client is not None
    assert not any("CCTF_VOTES" in s or s.startswith("$JS.ACK") for s in client.publish_allow)
    assert all(kind is not StreamKind.VOTES for _, kind in GRANTS[Role.CLIENT])
    assert permissions_for("admin", DEFAULT_REGIONS) is None


def test_account_layout_pins_each_region_to_its_own_services() -> None:
    accounts = {a.name: a for a in accounts_for(DEFAULT_REGIONS)}
    assert [n for n, a in accounts.items() if a.jetstream] == [ACCOUNT_NAME]
    assert account_of("admin") == account_of("coordinator") == ACCOUNT_NAME
    assert account_of("sys") == "SYS"
    for region in DEFAULT_REGIONS:
        name = account_of(f"agent-{region}")
        assert name == "AGENT_" + region.upper().replace("-", "_")
        imports = accounts[name].imports
        # services only (their replies are rewritten to _R_.), from CCTF, its own region only
        assert {(i.kind, i.account) for i in imports} == {(ExportKind.SERVICE, ACCOUNT_NAME)}
        assert {i.subject for i in imports} == {
            f"cctf.v1.vote.{region}.>",
            f"cctf.v1.evidence.{region}.>",
            f"cctf.v1.ca.issue.{region}.>",  # certificate requests (cctf.ca.service)
            f"cctf.v1.ca.join.{region}.>",  # first certificates over a join credential
        }
        assert not accounts[name].exports
    exports = accounts[ACCOUNT_NAME].exports
    # every export is restricted to exactly the one account that imports it
    for exp in exports:
        assert len(exp.accounts) == 1
        assert any(i.subject == exp.subject for i in accounts[exp.accounts[0]].imports)
    assert len({a for e in exports for a in e.accounts}) == len(DEFAULT_REGIONS) + 1


def _matches(pattern: str, subject: str) -> bool:
    pt, st_ = pattern.split("."), subject.split(".")
    for i, tok in enumerate(pt):
        if tok == ">":
            return len(st_) > i
        if i >= len(st_) or (tok != "*" and tok != st_[i]):
            return False
    return len(pt) == len(st_)


def test_the_client_account_imports_only_its_grants_and_its_inbox() -> None:
    accounts = {a.name: a for a in accounts_for(["us-east", "eu-west"])}
    assert account_of("client") == CLIENT_ACCOUNT_NAME
    clients = accounts[CLIENT_ACCOUNT_NAME]
    assert not clients.jetstream and not clients.exports
    services = {i.subject for i in clients.imports if i.kind is ExportKind.SERVICE}
    streams = {i.subject for i in clients.imports if i.kind is ExportKind.STREAM}
    # one-way (stream) imports: the deliveries to its own inbox and the live log heads
    # (self-authenticating signed notes, design D3); everything else a service
    # and the live verdicts (D1)
    assert (
        streams
        == {"_INBOX.client.>", "cctf.v1.head.>", *CLIENT_LIVE_SUBJECTS}
        == {
            "_INBOX.client.>",
            "cctf.v1.head.>",
            "cctf.v1.verdict.>",
        }
    )
    # ... and the log API (request-reply on cctf.v1.logapi.>, a subject no stream holds)
    assert services == set(granted_subjects(Role.CLIENT, ["us-east", "eu-west"])) | {
        LOG_API_SUBJECTS
    }
    held = [
        *votes_stream_config("us-east").subjects,
        *verdict_stream_config("us-east").subjects,
        *control_stream_config().subjects,
        *log_stream_config().subjects,
    ]
    assert not any(_matches(p, "cctf.v1.logapi.c1.head") for p in held)
    services.discard(LOG_API_SUBJECTS)
    assert not any("CCTF_VOTES" in s or s.startswith("cctf.v1.") for s in services)
    # its API calls are reached under its own prefix (its account's $JS.API is the server's)
    for imp in clients.imports:
        if imp.subject.startswith("$JS.API."):
            assert imp.to == CLIENT_JS_API_PREFIX + imp.subject.removeprefix("$JS.API")
        else:
            assert imp.to == ""
    assert js_api_prefix("client") == CLIENT_JS_API_PREFIX
    assert js_api_prefix("coordinator") == js_api_prefix("nobody") == "$JS.API"
    perms = permissions_for("client", ["us-east", "eu-west"])
    assert perms is not None
    assert not any(s.startswith("$JS.API") for s in perms.publish_allow)
    assert {imp.to or imp.subject for imp in clients.imports if imp.kind is ExportKind.SERVICE} | {
        "cctf.v1.gossip.>"
    } == set(perms.publish_allow)  # gossip stays inside CLIENTS
    assert perms.subscribe_allow == (
        "_INBOX.client.>",
        "cctf.v1.head.>",
        "cctf.v1.gossip.>",
        "cctf.v1.verdict.>",  # the live path (D1)
    )
