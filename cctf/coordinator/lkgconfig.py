"""The coordinator's ``lkg:`` block (Last-Known-Good attestations; see ``examples/coordinator.yaml``).

Every field has a default, so a config without ``lkg:`` issues LKG attestations with a 30 s lifetime
and a 15 min cap, stored in the engine (``CCTF_LKG``). ``names`` sets other caps for some names
(``qtype`` omitted: every qtype of the name). ``enabled: false`` turns LKG off (UNAVAILABLE stays
UNAVAILABLE); ``store: false`` keeps the state in memory only (it is then lost on a restart).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from cctf.bus_schemas.envelope import TimePolicy
from cctf.bus_schemas.subjects import SubjectError, normalize_name
from cctf.config import ConfigStruct
from cctf.coordinator.pipeline import lkg
from cctf.ids import IdError, check_qtype

__all__ = ["MAX_CAP_MS", "LkgConfig", "LkgNameCap"]

#: The longest cap a name may have: the bucket keeps no value longer (``cctf.bus.kv``).
MAX_CAP_MS: Final = 24 * 3_600_000
_MAX_LIFETIME: Final = TimePolicy().max_lifetime_ms

CapMs = Annotated[int, msgspec.Meta(ge=1_000, le=MAX_CAP_MS)]


class LkgNameCap(ConfigStruct, frozen=True, kw_only=True):
    name: str
    qtype: str = ""
    max_staleness_ms: CapMs

    def __post_init__(self) -> None:
        try:
            normalize_name(self.name)
            if self.qtype:
                check_qtype(self.qtype)
        except (SubjectError, IdError) as exc:
            raise ValueError(f"lkg.names: {exc}") from None


class LkgConfig(ConfigStruct, frozen=True, kw_only=True):
    enabled: bool = True
    lifetime_ms: Annotated[int, msgspec.Meta(ge=1_000, le=_MAX_LIFETIME)] = lkg.DEFAULT_LIFETIME_MS
    max_staleness_ms: CapMs = lkg.DEFAULT_MAX_STALENESS_MS
    names: list[LkgNameCap] = msgspec.field(default_factory=list)
    store: bool = True
    store_every_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = lkg.DEFAULT_STORE_EVERY_MS
    max_keys: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = lkg.DEFAULT_MAX_KEYS
    #: the silent-round rule (a round with no ballot at all) decides only keys voted on within
    #: this window (default: the default cap), at most ``silent_max_keys`` per round (most
    #: recently voted first; default: ``max_keys``, every basis)
    silent_window_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_CAP_MS)] = (
        lkg.DEFAULT_MAX_STALENESS_MS
    )
    silent_max_keys: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = lkg.DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        keys = [(normalize_name(c.name), c.qtype) for c in self.names]
        if len(set(keys)) != len(keys):
            raise ValueError("lkg.names lists a name (and qtype) twice")

    def policy(self) -> lkg.LkgPolicy:
        caps = {(normalize_name(c.name), c.qtype): c.max_staleness_ms for c in self.names}
        return lkg.LkgPolicy(
            lifetime_ms=self.lifetime_ms,
            max_staleness_ms=self.max_staleness_ms,
            caps=caps,
            store_every_ms=self.store_every_ms,
            max_keys=self.max_keys,
        )
