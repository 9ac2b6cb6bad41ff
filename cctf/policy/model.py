"""The policy engine's data: what it observes, the alarms it raises, the scopes of safe mode."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "Alarm",
    "DecisionObs",
    "IdentityObs",
    "LkgEvent",
    "Rule",
    "Scope",
    "VoterObs",
]


class Rule(enum.StrEnum):
    """What raised an alarm (also the metric label)."""

    DISAGREEMENT = "disagreement"  # per (name, qtype): share of voters off the plurality answer
    REGION_DISAGREEMENT = "region_disagreement"  # per region: share of its voters off it
    FLAPPING = "flapping"  # per resolver: status changes in its recent window
    TTL_MISMATCH = "ttl_mismatch"  # per (name, qtype): log2 spread of the agreeing voters' TTLs
    ANSWER_CHANGE = "answer_change"  # per (name, qtype): a TRUSTED answer changed
    LKG_USE = "lkg_use"  # per (name, qtype): an LKG verdict was served
    IDENTITY_DRIFT = "identity_drift"  # per workload: leaf key changed without a rotation
    OPERATOR = "operator"  # not a detector: the operator's command


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """Where safe mode applies: a whole region (``name == ""``) or one name in a region.

    ``name`` is a normalised DNS name (absolute) or a workload SPIFFE ID. The coordinator decides one
    verdict per name for every region, so a name is in safe mode when any scope covers it: a region
    scope covers every name (see ``docs/policy.md``)."""

    region: str
    name: str = ""

    @property
    def is_region(self) -> bool:
        return not self.name

    def covers(self, name: str) -> bool:
        return not self.name or self.name == name

    def __str__(self) -> str:
        return f"{self.region}/{self.name or '*'}"


class VoterObs(NamedTuple):
    """One electorate voter in a decision: its region, its answer digest (``None``: no answer) and
    the TTL of its answer (``None``: unknown). Immutable (a named tuple: built per voter and
    decision on the hot path, ~3x cheaper than a frozen dataclass)."""

    voter: str
    region: str
    digest: bytes | None
    ttl: int | None = None


class DecisionObs(NamedTuple):
    """A tally decision for one ``(qname, qtype, round)``: ``trusted`` with the winning ``digest``,
    or not (``digest`` then ``None``). Immutable (a named tuple, as :class:`VoterObs`)."""

    qname: str
    qtype: str
    round: int
    trusted: bool
    digest: bytes | None
    voters: tuple[VoterObs, ...]


@dataclass(frozen=True, slots=True)
class LkgEvent:
    """From the LKG stage: in ``round`` an LKG verdict was (``active``) or was no longer served."""

    qname: str
    qtype: str
    round: int
    active: bool


@dataclass(frozen=True, slots=True)
class IdentityObs:
    """From the identity tally: the quorum's leaf key digest of a workload's SVID in ``round``.

    ``not_before_ms`` of that leaf (0: unknown). A rotation is a new key on a leaf issued later than
    the previous one; a new key with a leaf not newer than the previous is *drift*."""

    workload: str
    round: int
    key_digest: bytes
    not_before_ms: int = 0


def _num(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return f"{x:.4g}"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One detector firing. ``scopes``: where it asks for safe mode."""

    rule: Rule
    series: str
    round: int
    value: float
    mean: float
    std: float
    z: float
    threshold: float
    scopes: tuple[Scope, ...]
    detail: str = ""

    @property
    def why(self) -> str:
        """One line: rule, series, value, baseline, z and threshold (and the detail, if any)."""
        line = (
            f"{self.rule.value} on {self.series} round {self.round}: value {_num(self.value)}, "
            f"baseline {_num(self.mean)}±{_num(self.std)}, z {_num(self.z)} >= {_num(self.threshold)}"
        )
        return f"{line} ({self.detail})" if self.detail else line
