"""The trust negotiator (design decision 2, pure): a workload's decision from its three paths.

Each path -- ``dns`` (the DNS verdict of its name), ``mtls`` (the quorum's mtls identity verdict, and a
presented chain validated locally), ``oidc`` (a presented token validated under the quorum-verified
JWKS) -- is in one :class:`PathState`: ``holds``, ``fails`` or ``unavailable``. A :class:`Policy` is a
*monotone* predicate over the set of holding paths, built from small composable objects (like
sigstore-python's verification policies)::

    AllOf(AtLeast(2), Requires(Path.MTLS))      # "2 of 3, mTLS required"
    AnyOf(Requires(Path.MTLS), AtLeast(3))

:func:`negotiate` evaluates it twice: on the paths that hold now (pessimistic) and on those that hold
or are unavailable (optimistic):

1. the policy holds pessimistically -> ``trusted``;
2. it fails even optimistically -> ``refused`` (no path coming back can make it hold);
3. otherwise -> ``unavailable`` (it could hold if unavailable paths came back).

Monotonicity makes this sound: turning a path from ``holds`` to ``fails`` can only move the outcome
from ``trusted`` towards ``refused``, never the other way (tests/unit/test_identity_negotiator.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from cctf.identity.targets import PolicySpec, WorkloadTarget

__all__ = [
    "DEFAULT_POLICY",
    "AllOf",
    "AnyOf",
    "AtLeast",
    "Negotiated",
    "Outcome",
    "Path",
    "PathResult",
    "PathState",
    "Policy",
    "Requires",
    "configured_paths",
    "negotiate",
    "policy_from_spec",
    "stricter",
]


class Path(StrEnum):
    DNS = "dns"
    MTLS = "mtls"
    OIDC = "oidc"


ALL_PATHS: Final = (Path.DNS, Path.MTLS, Path.OIDC)


class PathState(StrEnum):
    HOLDS = "holds"
    FAILS = "fails"
    UNAVAILABLE = "unavailable"


class Outcome(StrEnum):
    TRUSTED = "trusted"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class PathResult:
    """One path's state and why (a reason code such as ``wrong_spiffe_id``, ``no_token``, ...)."""

    state: PathState
    reason: str = ""

    @classmethod
    def holds(cls, reason: str = "") -> PathResult:
        return cls(PathState.HOLDS, reason)

    @classmethod
    def fails(cls, reason: str) -> PathResult:
        """A failing path; ``reason`` is typically an ``IdentityError``'s ``reason`` value."""
        return cls(PathState.FAILS, reason)

    @classmethod
    def unavailable(cls, reason: str) -> PathResult:
        return cls(PathState.UNAVAILABLE, reason)


class Policy(Protocol):
    """A monotone predicate over the set of holding paths: if it holds for a set, it holds for
    every superset."""

    def unmet(self, holding: frozenset[Path]) -> str | None:
        """``None`` when the policy holds for ``holding``, else a one-line reason."""
        ...


@dataclass(frozen=True, slots=True)
class AtLeast:
    """At least ``k`` of the three paths hold (1 <= k <= 3)."""

    k: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= len(ALL_PATHS):
            raise ValueError(f"AtLeast: k must be 1..{len(ALL_PATHS)}, not {self.k}")

    def unmet(self, holding: frozenset[Path]) -> str | None:
        if len(holding) >= self.k:
            return None
        return f"{len(holding)} of {len(ALL_PATHS)} paths hold, at least {self.k} required"

    def __str__(self) -> str:
        return f"at least {self.k} of {len(ALL_PATHS)}"


@dataclass(frozen=True, slots=True)
class Requires:
    """The given path holds."""

    path: Path

    def unmet(self, holding: frozenset[Path]) -> str | None:
        return None if self.path in holding else f"{self.path.value} is required"

    def __str__(self) -> str:
        return f"{self.path.value} required"


@dataclass(frozen=True, slots=True, init=False)
class AllOf:
    """Every child policy holds (at least one child)."""

    policies: tuple[Policy, ...]

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            raise ValueError("AllOf: at least one policy")
        object.__setattr__(self, "policies", tuple(policies))

    def unmet(self, holding: frozenset[Path]) -> str | None:
        for p in self.policies:
            why = p.unmet(holding)
            if why is not None:
                return why
        return None

    def __str__(self) -> str:
        return " and ".join(str(p) for p in self.policies)


@dataclass(frozen=True, slots=True, init=False)
class AnyOf:
    """At least one child policy holds (at least one child)."""

    policies: tuple[Policy, ...]

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            raise ValueError("AnyOf: at least one policy")
        object.__setattr__(self, "policies", tuple(policies))

    def unmet(self, holding: frozenset[Path]) -> str | None:
        whys = []
        for p in self.policies:
            why = p.unmet(holding)
            if why is None:
                return None
            whys.append(why)
        return "none of: " + "; ".join(whys)

    def __str__(self) -> str:
        return "(" + " or ".join(str(p) for p in self.policies) + ")"


#: The default policy: at least 2 of 3.
DEFAULT_POLICY: Final[Policy] = AtLeast(2)


def policy_from_spec(spec: PolicySpec) -> Policy:
    """The policy of a workload's ``policy: {at_least, require}``: ``AllOf(AtLeast(at_least),
    Requires(p) ...)``."""
    parts: list[Policy] = [AtLeast(spec.at_least)]
    parts.extend(Requires(Path(p)) for p in spec.require)
    return parts[0] if len(parts) == 1 else AllOf(*parts)


def configured_paths(target: WorkloadTarget) -> tuple[Path, ...]:
    """The paths a workload has evidence configured for: ``dns`` (``dns_name``), ``mtls``
    (``endpoint``), ``oidc`` (``issuer``)."""
    have = {
        Path.DNS: target.dns_name is not None,
        Path.MTLS: target.endpoint is not None,
        Path.OIDC: target.issuer is not None,
    }
    return tuple(p for p in ALL_PATHS if have[p])


def stricter(policy: Policy, configured: Iterable[Path]) -> Policy:
    """Safe mode's stricter path rules (docs/policy.md, *Effects* 2): ``policy`` and every
    ``configured`` path required. Still monotone; the same policy when nothing is configured."""
    required = [Requires(p) for p in ALL_PATHS if p in set(configured)]
    return AllOf(policy, *required) if required else policy


@dataclass(frozen=True, slots=True)
class Negotiated:
    """A workload decision: the outcome, every path's result (all three, in order dns, mtls,
    oidc) and a one-line reason."""

    outcome: Outcome
    paths: tuple[tuple[Path, PathResult], ...]
    reason: str

    def path(self, path: Path) -> PathResult:
        return dict(self.paths)[path]

    def as_dict(self) -> dict[str, object]:
        """The JSON form every presenter uses (gateway, CLI ``--json``, demo)::

        {"outcome": "trusted", "reason": "...",
         "paths": {"dns": {"state": "holds", "reason": ""}, "mtls": {...}, "oidc": {...}}}
        """
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "paths": {p.value: {"state": r.state.value, "reason": r.reason} for p, r in self.paths},
        }


_MISSING: Final = PathResult(PathState.UNAVAILABLE, "no_evidence")


def negotiate(policy: Policy, results: Mapping[Path, PathResult]) -> Negotiated:
    """Combine the paths' results under ``policy`` (module docstring). A path missing from
    ``results`` is ``unavailable`` with reason ``no_evidence``."""
    full = tuple((p, results.get(p, _MISSING)) for p in ALL_PATHS)
    holding = frozenset(p for p, r in full if r.state is PathState.HOLDS)
    maybe = holding | frozenset(p for p, r in full if r.state is PathState.UNAVAILABLE)

    def listed(state: PathState) -> str:
        return ", ".join(
            f"{p.value} {state.value}" + (f" ({r.reason})" if r.reason else "")
            for p, r in full
            if r.state is state
        )

    if policy.unmet(holding) is None:
        held = ", ".join(p.value for p, _ in full if p in holding)
        return Negotiated(Outcome.TRUSTED, full, f"{policy} holds: {held}")
    why = policy.unmet(maybe)
    if why is not None:
        fails = listed(PathState.FAILS)
        return Negotiated(Outcome.REFUSED, full, why + (f"; {fails}" if fails else ""))
    why = policy.unmet(holding) or ""
    return Negotiated(Outcome.UNAVAILABLE, full, f"{why}; {listed(PathState.UNAVAILABLE)}")
