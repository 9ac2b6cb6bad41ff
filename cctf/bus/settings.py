"""The ``nats`` block of agent and coordinator configs: where to connect and as whom.

Three forms::

    {"credentials": "creds.json", "user": "agent-us-east"}          # file from `cctf nats up`
    {"urls": ["nats://host:4222"], "user": "...", "password": "..."}
    {"urls": ["tls://host:4222"], "user": "agent-us-east.a1",        # certificate (verify_and_map)
     "tls": {"ca": "server-ca.pem", "cert": "a1.cert.pem", "key": "a1.tls-key.pem"}}

With ``tls`` the server maps the certificate to the user (:mod:`cctf.bus.tlsauth`): no password;
``user`` is the inbox name (``agent-<region>.<agent>`` for an agent, else the role's user name).

:class:`NatsSettings` is a :class:`~cctf.config.ConfigStruct`, so a component config embeds it as a
field (``nats: NatsSettings``) and ``cctf.config.load_config`` validates it with the same one-line
errors (``... nats.urls: required (or use nats.credentials) - at `$.nats```). A relative
``credentials`` path is anchored at the config file's directory by :meth:`NatsSettings.anchored`.
With ``credentials``, ``urls`` may still be given to override the file's. The credentials file is read
(bounded, :func:`cctf.bus.credentials.load_credentials`) only when :meth:`NatsSettings.resolved` is
called, so a config can be validated before the fabric exists. Passwords stay out of ``repr`` and are
never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec

from cctf.bus.accounts import NatsUser
from cctf.bus.credentials import load_credentials
from cctf.bus.tls import ClientTls
from cctf.config import ConfigStruct, convert_config
from cctf.errors import ConfigError

__all__ = ["NatsSettings", "NatsSettingsError", "NatsTlsSettings"]

_URL_SCHEMES: Final = ("nats://", "tls://", "ws://", "wss://")


class NatsSettingsError(ConfigError):
    """The ``nats`` block is invalid or its credentials file cannot be used."""


class NatsTlsSettings(ConfigStruct, kw_only=True, frozen=True):
    """The ``nats.tls`` block: the CA file the server's certificate must chain to, and this
    component's certificate (leaf then chain) and key (paths anchored at the config's directory)."""

    ca: str
    cert: str
    key: str


class NatsSettings(ConfigStruct, kw_only=True, frozen=True):
    """Where to connect and as whom (``password``, ``credentials`` or ``tls``: exactly one)."""

    user: str
    urls: tuple[str, ...] = ()
    password: str | None = None
    credentials: str | None = None
    tls: NatsTlsSettings | None = None

    def __post_init__(self) -> None:
        if not self.user:
            raise ValueError("nats.user: required, a non-empty string")
        _check_urls(self.urls)
        if self.tls is not None:
            if self.password is not None or self.credentials is not None:
                raise ValueError("nats: a tls certificate is the credential (no password)")
            if not self.urls:
                raise ValueError("nats.urls: required with nats.tls")
            if not (self.tls.ca and self.tls.cert and self.tls.key):
                raise ValueError("nats.tls: ca, cert and key must be file paths")
            return
        if self.credentials is not None:
            if self.password is not None:
                raise ValueError("nats: give either credentials or password, not both")
            if not self.credentials:
                raise ValueError("nats.credentials: must be a file path")
            return
        if not self.urls:
            raise ValueError("nats.urls: required (or use nats.credentials)")
        if not self.password:
            raise ValueError("nats.password: required (or use nats.credentials)")

    def __repr__(self) -> str:
        hidden = "None" if self.password is None else "'***'"
        return (
            f"NatsSettings(user={self.user!r}, urls={self.urls!r}, password={hidden}, "
            f"credentials={self.credentials!r}, tls={self.tls!r})"
        )

    __str__ = __repr__

    @property
    def credentials_path(self) -> Path | None:
        return None if self.credentials is None else Path(self.credentials)

    @classmethod
    def from_json(cls, obj: Any, base: Path | None = None) -> NatsSettings:
        """Validate a parsed ``nats`` block; relative paths are anchored at ``base``."""
        if not isinstance(obj, dict):
            raise NatsSettingsError(
                'nats: required, an object {"credentials", "user"}, {"urls", "user", "password"}'
                ' or {"urls", "user", "tls"}'
            )
        if isinstance(obj.get("urls"), str):
            obj = {**obj, "urls": [obj["urls"]]}
        try:
            settings = msgspec.convert(obj, cls, strict=True)
        except msgspec.ValidationError as exc:
            text = " ".join(str(exc).split())
            missing = "Object missing required field `"
            if text.startswith(missing):
                field = text.removeprefix(missing).split("`", 1)[0]
                text = f"nats.{field}: required"
            elif text.startswith("Object contains unknown field"):
                text = "nats: unknown key " + text.removeprefix("Object contains unknown field ")
            elif text.endswith(" - at `$`"):
                text = text.removesuffix(" - at `$`")
            if not text.startswith("nats"):
                text = f"nats: {text}"
            raise NatsSettingsError(text) from None
        return settings if base is None else settings.anchored(base)

    @classmethod
    def convert(cls, obj: Any, where: str) -> NatsSettings:
        """``obj`` as settings, errors as ``NatsSettingsError("<where>: ...")`` (one line)."""
        try:
            return convert_config(obj, cls, where)
        except ConfigError as exc:
            raise NatsSettingsError(str(exc)) from None

    def anchored(self, base: Path) -> NatsSettings:
        """These settings with relative ``credentials`` / ``tls`` paths made relative to ``base``."""
        if self.tls is not None:

            def at(p: str) -> str:
                q = Path(p).expanduser()
                return str(q if q.is_absolute() else base / q)

            t = self.tls
            return msgspec.structs.replace(
                self, tls=NatsTlsSettings(ca=at(t.ca), cert=at(t.cert), key=at(t.key))
            )
        path = self.credentials_path
        if path is None:
            return self
        path = path.expanduser()
        if not path.is_absolute():
            path = base / path
        return msgspec.structs.replace(self, credentials=str(path))

    def resolved(self) -> NatsSettings:
        """These settings with the credentials file read: ``urls`` and ``password`` filled in."""
        path = self.credentials_path
        if path is None:
            return self
        try:
            creds = load_credentials(path)
        except ConfigError as exc:
            raise NatsSettingsError(f"nats.credentials: {exc}") from None
        entry = creds.users.get(self.user)
        if entry is None:
            raise NatsSettingsError(f"nats.credentials: {path} has no password for {self.user!r}")
        if entry.name != self.user:
            raise NatsSettingsError(f"nats.credentials: {path} maps {self.user!r} to another user")
        urls = self.urls or tuple(creds.urls)
        try:
            return NatsSettings(user=self.user, urls=urls, password=entry.password)
        except ValueError as exc:
            raise NatsSettingsError(f"nats.credentials: {path}: {exc}") from None

    def client_tls(self) -> ClientTls | None:
        """The TLS context of the ``tls`` form (files read now; ``ConfigError`` if unusable)."""
        if self.tls is None:
            return None
        t = self.tls
        return ClientTls(ca=Path(t.ca), cert=Path(t.cert), key=Path(t.key))

    def resolve(self) -> tuple[list[str], str, str]:
        """``(urls, user, password)``, reading the credentials file when one is configured
        (password ``""`` for the ``tls`` form: the certificate is the credential)."""
        if self.tls is not None:
            return list(self.urls), self.user, ""
        done = self.resolved()
        assert done.password is not None
        return list(done.urls), done.user, done.password

    def nats_user(self) -> NatsUser:
        _, user, password = self.resolve()
        return NatsUser(user, password)


def _check_urls(urls: tuple[str, ...]) -> None:
    for url in urls:
        if not url or not url.startswith(_URL_SCHEMES) or any(c.isspace() for c in url):
            raise ValueError(
                f"nats.urls: {url!r} is not a server URL ({', '.join(_URL_SCHEMES)}host:port)"
            )
        if "@" in url:
            raise ValueError("nats.urls: put the user and password in nats.user/password")
