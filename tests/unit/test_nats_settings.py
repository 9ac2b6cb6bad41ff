"""The shared ``nats`` config block (agents and coordinators)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctf.bus.settings import NatsSettings, NatsSettingsError
from cctf.errors import ConfigError


def write_creds(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "urls": ["nats://127.0.0.1:1"],
                "users": {"client": {"user": "client", "password": "pw-1"}},
            }
        )
    )
    return path


def test_credentials_file_is_read_lazily_and_relative_to_base(tmp_path: Path) -> None:
    s = NatsSettings.from_json({"credentials": "creds.json", "user": "client"}, tmp_path)
    assert s.credentials_path == tmp_path / "creds.json" and s.password is None
    with pytest.raises(NatsSettingsError, match="cannot read"):
        s.resolved()
    write_creds(tmp_path / "creds.json")
    assert s.resolve() == (["nats://127.0.0.1:1"], "client", "pw-1")
    assert "pw-1" not in repr(s.resolved())


def test_urls_override_the_credentials_file(tmp_path: Path) -> None:
    write_creds(tmp_path / "c.json")
    s = NatsSettings.from_json(
        {"credentials": "c.json", "user": "client", "urls": ["tls://h:4222"]}, tmp_path
    )
    assert s.resolve() == (["tls://h:4222"], "client", "pw-1")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("x", "required, an object"),
        ({"user": "u", "extra": 1}, "unknown key"),
        ({"urls": ["nats://h:1"], "password": "p"}, "nats.user"),
        ({"user": "u"}, "nats.urls"),
        ({"user": "u", "urls": ["nats://h:1"]}, "nats.password"),
        ({"user": "u", "urls": ["http://h:1"], "password": "p"}, "not a server URL"),
        ({"user": "u", "urls": ["nats://a:b@h:1"], "password": "p"}, "put the user"),
        ({"user": "u", "credentials": "c.json", "password": "p"}, "not both"),
    ],
)
def test_invalid_blocks_are_refused_clearly(obj: object, message: str) -> None:
    with pytest.raises(NatsSettingsError, match=message):
        NatsSettings.from_json(obj)


def test_unknown_user_or_garbage_credentials_file(tmp_path: Path) -> None:
    creds = write_creds(tmp_path / "c.json")
    with pytest.raises(NatsSettingsError, match="no password for 'admin'"):
        NatsSettings(user="admin", credentials=str(creds)).resolved()
    creds.write_text("[1, 2]")
    with pytest.raises(NatsSettingsError, match="not a credentials file"):
        NatsSettings(user="client", credentials=str(creds)).resolved()


def test_embedded_in_a_config_struct_with_one_line_errors(tmp_path: Path) -> None:
    from cctf.config import ConfigStruct, convert_config
    from cctf.errors import ConfigError

    class Cfg(ConfigStruct, kw_only=True):
        nats: NatsSettings

    ok = convert_config({"nats": {"user": "u", "credentials": "c.json"}}, Cfg, "agent config")
    assert ok.nats.anchored(tmp_path).credentials_path == tmp_path / "c.json"
    with pytest.raises(ConfigError, match=r"nats\.urls: required .* at `\$\.nats`"):
        convert_config({"nats": {"user": "u"}}, Cfg, "agent config")
    with pytest.raises(ConfigError, match=r"unknown field `pw`"):
        convert_config({"nats": {"user": "u", "pw": "x"}}, Cfg, "agent config")
    secret = convert_config(
        {"nats": {"user": "u", "urls": ["nats://h:1"], "password": "s3"}}, Cfg, "x"
    )
    assert "s3" not in repr(secret) and "s3" not in str(secret)


def test_tls_form_is_the_only_credential_and_paths_are_anchored(tmp_path: Path) -> None:
    tls = {"ca": "ca.pem", "cert": "a1.cert.pem", "key": "/abs/a1.key.pem"}
    s = NatsSettings.from_json(
        {"urls": ["tls://127.0.0.1:4222"], "user": "agent-us-east.a1", "tls": tls}, tmp_path
    )
    assert s.tls is not None
    assert (s.tls.ca, s.tls.cert, s.tls.key) == (
        str(tmp_path / "ca.pem"),
        str(tmp_path / "a1.cert.pem"),
        "/abs/a1.key.pem",
    )
    assert s.resolve() == (["tls://127.0.0.1:4222"], "agent-us-east.a1", "")
    assert s.nats_user().password == ""  # the certificate is the credential: no user name is sent
    for extra in ({"password": "pw"}, {"credentials": "c.json"}):
        with pytest.raises(NatsSettingsError, match="no password"):
            NatsSettings.from_json({"urls": ["tls://h:1"], "user": "u", "tls": tls, **extra})
    with pytest.raises(NatsSettingsError, match="urls: required"):
        NatsSettings.from_json({"user": "u", "tls": tls})
    with pytest.raises(NatsSettingsError):
        NatsSettings.from_json({"urls": ["tls://h:1"], "user": "u", "tls": {"ca": "x"}})
    with pytest.raises(ConfigError, match="cannot be used"):
        s.client_tls()  # the files do not exist: one line, before any connection
    assert NatsSettings(user="u", urls=("nats://h:1",), password="p").client_tls() is None
