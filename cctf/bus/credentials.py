"""Credentials files: client URLs and users, as written by ``cctf nats up`` (mode 0600)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cctf.bus.accounts import NatsUser

__all__ = ["Credentials", "load_credentials"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """What ``load_credentials`` returns: client URLs and users (name -> NatsUser)."""

    urls: list[str]
    users: dict[str, NatsUser]


def load_credentials(path: Path) -> Credentials:
    """Read a credentials file written by ``NatsFabric.write_credentials``."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        _log.warning("credentials file %s is accessible by others (mode %o)", path, mode)
    raw = json.loads(path.read_text())
    urls = [str(u) for u in raw["urls"]]
    users = {
        str(name): NatsUser(str(entry["user"]), str(entry["password"]))
        for name, entry in raw["users"].items()
    }
    return Credentials(urls=urls, users=users)
