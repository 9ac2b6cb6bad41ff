"""The ``nats`` block of agent and coordinator configs: where to connect and as whom.

Two forms::

    {"credentials": "creds.json", "user": "agent-us-east"}          # file from `cctf nats up`
    {"urls": ["nats://host:4222"], "user": "...", "password": "..."}

With ``credentials``, ``urls`` may still be given to override the file's. The credentials file is read
by :func:`cctf.devfabric.nats.load_credentials` only when :meth:`NatsSettings.resolved` is called, so a
config can be validated before the fabric exists. Passwords stay out of ``repr`` and are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from cctf.bus.accounts import NatsUser
from cctf.bus.credentials import load_credentials

_KEYS: Final = frozenset({"credentials", "urls", "user", "password"})
_URL_SCHEMES: Final = ("nats://", "tls://", "ws://", "wss://")


class NatsSettingsError(ValueError):
    """The ``nats`` block is invalid or its credentials file cannot be used."""


@dataclass(frozen=True)
class NatsSettings:
    user: str
    urls: tuple[str, ...] = ()
    password: str | None = field(default=None, repr=False)
    credentials: Path | None = None

    @classmethod
    def from_json(cls, obj: Any, base: Path | None = None) -> NatsSettings:
        """Validate a parsed ``nats`` block; relative paths are anchored at ``base``."""
        if not isinstance(obj, Mapping):
            raise NatsSettingsError(
                'nats: required, an object {"credentials", "user"} or {"urls", "user", "password"}'
            )
        unknown = sorted(str(k) for k in obj if k not in _KEYS)
        if unknown:
            raise NatsSettingsError(f"nats: unknown key(s) {', '.join(unknown)}")
        user = obj.get("user")
        if not isinstance(user, str) or not user:
            raise NatsSettingsError("nats.user: required, a non-empty string")
        urls = _urls(obj["urls"]) if "urls" in obj else ()
        if "credentials" in obj:
            if "password" in obj:
                raise NatsSettingsError("nats: give either credentials or password, not both")
            raw = obj["credentials"]
            if not isinstance(raw, str) or not raw:
                raise NatsSettingsError("nats.credentials: must be a file path")
            path = Path(raw).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            return cls(user=user, urls=urls, credentials=path)
        if not urls:
            raise NatsSettingsError("nats.urls: required (or use nats.credentials)")
        password = obj.get("password")
        if not isinstance(password, str) or not password:
            raise NatsSettingsError("nats.password: required (or use nats.credentials)")
        return cls(user=user, urls=urls, password=password)

    def resolved(self) -> NatsSettings:
        """These settings with the credentials file read: ``urls`` and ``password`` filled in."""
        if self.credentials is None:
            return self
        path = self.credentials
        try:
            creds = load_credentials(path)
        except OSError as exc:
            raise NatsSettingsError(
                f"nats.credentials: cannot read {path}: {exc.strerror or exc}"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NatsSettingsError(f"nats.credentials: {path} is not a credentials file") from None
        entry = creds.users.get(self.user)
        if entry is None:
            raise NatsSettingsError(f"nats.credentials: {path} has no password for {self.user!r}")
        if entry.name != self.user:
            raise NatsSettingsError(f"nats.credentials: {path} maps {self.user!r} to another user")
        urls = self.urls or _urls(creds.urls)
        return replace(self, urls=urls, password=entry.password, credentials=None)

    def resolve(self) -> tuple[list[str], str, str]:
        """``(urls, user, password)``, reading the credentials file when one is configured."""
        done = self.resolved()
        assert done.password is not None
        return list(done.urls), done.user, done.password

    def nats_user(self) -> NatsUser:
        _, user, password = self.resolve()
        return NatsUser(user, password)


def _urls(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(u, str) and u for u in raw):
        raise NatsSettingsError("nats.urls: must be a non-empty list of URLs")
    for url in raw:
        if not url.startswith(_URL_SCHEMES) or any(c.isspace() for c in url):
            raise NatsSettingsError(
                f"nats.urls: {url!r} is not a server URL ({', '.join(_URL_SCHEMES)}host:port)"
            )
        if "@" in url:
            raise NatsSettingsError("nats.urls: put the user and password in nats.user/password")
    return tuple(raw)
