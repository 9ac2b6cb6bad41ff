"""Trust configuration: which key ids belong to which agent or coordinator, in which region.

File format (JSON)::

    {"version": 1,
     "keys": [{"kid": "k…", "role": "agent", "principal": "agent-us-east", "region": "us-east",
               "suite": "hybrid-ed25519-ml-dsa-65", "ed25519": "<b64>", "ml-dsa-65": "<b64>"}, …]}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cctf.crypto.errors import KeyError_, KeyFileError
from cctf.crypto.keys import PublicKeySet, read_json
from cctf.ids import IdError as SubjectError
from cctf.ids import check_id
from cctf.util.files import write_secret_json


class Role(StrEnum):
    AGENT = "agent"
    COORDINATOR = "coordinator"
    OPERATOR = "operator"  # signs safe-mode commands (cctf.bus_schemas.control)


@dataclass(frozen=True)
class TrustEntry:
    role: Role
    principal: str
    region: str
    keys: PublicKeySet

    @property
    def kid(self) -> str:
        return self.keys.kid

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "principal": self.principal,
            "region": self.region,
            **self.keys.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> TrustEntry:
        if not isinstance(obj, dict):
            raise KeyFileError("trust entry must be an object")
        try:
            role = Role(str(obj.get("role")))
        except ValueError:
            raise KeyFileError(f"trust entry has unknown role {obj.get('role')!r}") from None
        try:
            principal = check_id(str(obj.get("principal")), "principal")
            region = check_id(str(obj.get("region")), "region")
        except SubjectError as exc:
            raise KeyFileError(str(exc)) from None
        return cls(role, principal, region, PublicKeySet.from_json(obj))


class TrustConfig:
    """An immutable map key id → :class:`TrustEntry`."""

    def __init__(self, entries: Iterable[TrustEntry] = ()) -> None:
        self._by_kid: dict[str, TrustEntry] = {}
        for entry in entries:
            if entry.kid in self._by_kid:
                raise KeyFileError(f"duplicate key id {entry.kid}")
            self._by_kid[entry.kid] = entry

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self) -> Iterator[TrustEntry]:
        return iter(self._by_kid.values())

    def get(self, kid: str, role: Role) -> TrustEntry:
        """The entry for ``kid`` in ``role``; raises :class:`KeyError_` if unknown or another role."""
        entry = self._by_kid.get(kid)
        if entry is None:
            raise KeyError_(f"unknown key id {kid!r}")
        if entry.role is not role:
            raise KeyError_(f"key {kid} belongs to a {entry.role.value}, not a {role.value}")
        return entry

    def with_entries(self, entries: Iterable[TrustEntry]) -> TrustConfig:
        return TrustConfig([*self._by_kid.values(), *entries])

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "keys": [e.to_json() for e in self._by_kid.values()]}

    @classmethod
    def from_json(cls, obj: Any) -> TrustConfig:
        if not isinstance(obj, dict) or obj.get("version") != 1:
            raise KeyFileError("trust config must be an object with version 1")
        keys = obj.get("keys")
        if not isinstance(keys, list):
            raise KeyFileError("trust config needs a 'keys' list")
        return cls(TrustEntry.from_json(k) for k in keys)

    @classmethod
    def load(cls, path: Path) -> TrustConfig:
        return cls.from_json(read_json(path, "trust config"))

    def save(self, path: Path) -> None:
        write_secret_json(path, self.to_json())
