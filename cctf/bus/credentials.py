"""Credentials files: client URLs and users, as written by ``cctf nats up`` (mode 0600).

Read through the one bounded reader (:func:`cctf.util.files.read_document`), so the same size cap
applies as to every other file, and any problem is one :class:`~cctf.errors.ConfigError` line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cctf.bus.accounts import NatsUser
from cctf.errors import ConfigError
from cctf.util.files import read_document

__all__ = ["Credentials", "load_credentials"]

_log = logging.getLogger(__name__)


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    password: str


class _File(msgspec.Struct, forbid_unknown_fields=True):
    urls: list[str]
    users: dict[str, _Entry]


@dataclass(frozen=True)
class Credentials:
    """What ``load_credentials`` returns: client URLs and users (name -> NatsUser)."""

    urls: list[str]
    users: dict[str, NatsUser]


def load_credentials(path: Path) -> Credentials:
    """Read a credentials file written by ``NatsFabric.write_credentials``."""
    path = Path(path)
    raw = read_document(path, "credentials file")
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o077:
        _log.warning("credentials file %s is accessible by others (mode %o)", path, mode)
    try:
        doc = msgspec.convert(raw, _File, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path} is not a credentials file ({exc})") from None
    users = {name: NatsUser(e.user, e.password) for name, e in doc.users.items()}
    return Credentials(urls=list(doc.urls), users=users)
