"""The shared ``nats`` config block (agents and coordinators)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctf.bus.settings import NatsSettings, NatsSettingsError


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
