"""Fault settings and counters for the fault-injecting DNS server.

Pure: no I/O. ``Faults`` is immutable; the server swaps the whole value atomically, so a query always
sees one consistent set of faults.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cctf.errors import CctfError

MAX_TTL = 2**31 - 1
MAX_DELAY_MS = 60_000

#: DNSSEC faults (a signed zone only; see ``cctf.chaos.signing``), the values of ``Faults.dnssec``.
DNSSEC_FAULTS = ("tampered", "expired", "no-rrsig", "wrong-ds", "missing-ds")

# Faults that decide the response code; at most one of them may be active at a time.
_EXCLUSIVE = ("blackhole", "servfail", "refused", "poison")


class FaultError(CctfError, ValueError):
    """An invalid fault setting."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What the server does wrong.

    * ``blackhole``: never answer anything (the client times out).
    * ``servfail``: answer every query with rcode SERVFAIL.
    * ``refused``: answer every query with rcode REFUSED.
    * ``poison``: answer A queries for in-zone names with this (forged) IPv4 address, AA set.
    * ``poison6``: the same for AAAA queries with a forged IPv6 address.
    * ``ttl``: override the TTL of every answer RR.
    * ``delay_ms``: send each response this many milliseconds late (other queries are not blocked).
    * ``dnssec`` (a signed zone, served to queries with the DO bit): ``tampered`` (A, AAAA and TXT
      answers altered, their original RRSIGs kept: a bad signature), ``expired`` (every RRSIG
      replaced by one whose validity ended a day ago), ``no-rrsig`` (signatures stripped),
      ``wrong-ds`` (DS RRsets at delegation points replaced by a DS of an unrelated key, correctly
      signed), ``missing-ds`` (DS RRsets left out of answers and referrals, with no NSEC proof).

    ``blackhole``, ``servfail``, ``refused`` and poisoning (``poison``/``poison6``) exclude each
    other; ``ttl`` and ``delay_ms`` combine with anything.
    """

    blackhole: bool = False
    servfail: bool = False
    refused: bool = False
    poison: str | None = None
    poison6: str | None = None
    ttl: int | None = None
    delay_ms: int = 0
    dnssec: str | None = None

    def __post_init__(self) -> None:
        for name in ("blackhole", "servfail", "refused"):
            if not isinstance(getattr(self, name), bool):
                raise FaultError(f"{name} must be true or false")
        if self.poison is not None:
            object.__setattr__(self, "poison", _parse_ip(self.poison, 4, "poison"))
        if self.poison6 is not None:
            object.__setattr__(self, "poison6", _parse_ip(self.poison6, 6, "poison6"))
        if self.ttl is not None and (
            isinstance(self.ttl, bool)
            or not isinstance(self.ttl, int)
            or not 0 <= self.ttl <= MAX_TTL
        ):
            raise FaultError(f"ttl must be an integer in 0..{MAX_TTL} or null")
        if (
            isinstance(self.delay_ms, bool)
            or not isinstance(self.delay_ms, int)
            or not 0 <= self.delay_ms <= MAX_DELAY_MS
        ):
            raise FaultError(f"delay_ms must be an integer in 0..{MAX_DELAY_MS}")
        if self.dnssec is not None and self.dnssec not in DNSSEC_FAULTS:
            raise FaultError(f"dnssec must be one of {', '.join(DNSSEC_FAULTS)} or null")
        active = [name for name in _EXCLUSIVE if self._mode_flag(name)]
        if len(active) > 1:
            raise FaultError(
                f"faults {' and '.join(active)} exclude each other "
                f"(at most one of {', '.join(_EXCLUSIVE)})"
            )

    def _mode_flag(self, name: str) -> bool:
        if name == "poison":
            return self.poisoning
        return bool(getattr(self, name))

    @property
    def poisoning(self) -> bool:
        return self.poison is not None or self.poison6 is not None

    @property
    def active(self) -> bool:
        return self != Faults()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build from a JSON object; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise FaultError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise FaultError(
                f"unknown fault field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        for key in ("poison", "poison6"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise FaultError(f"{key} must be an IP address string or null")
        value = data.get("dnssec")
        if value is not None and not isinstance(value, str):
            raise FaultError(f"dnssec must be one of {', '.join(DNSSEC_FAULTS)} or null")
        return cls(**{str(k): v for k, v in data.items()})

    def describe(self) -> str:
        """A short human form, e.g. ``poison=203.0.113.66,ttl=5`` or ``none``."""
        parts: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is True:
                parts.append(f.name)
            elif value not in (False, None, 0) or (f.name == "ttl" and value == 0):
                parts.append(f"{f.name}={value}")
        return ",".join(parts) if parts else "none"


def _parse_ip(value: str, version: int, name: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise FaultError(f"{name} must be an IPv{version} address, got {value!r}") from None
    if addr.version != version or getattr(addr, "scope_id", None):
        raise FaultError(f"{name} must be an IPv{version} address, got {value!r}")
    return str(addr)


@dataclass(slots=True)
class ServerStats:
    """Simple counters. ``served`` counts responses by the fault that shaped them (a response can
    count under several, e.g. ``poison`` and ``ttl``); ``dropped`` counts messages left unanswered,
    by reason."""

    received: int = 0
    udp: int = 0
    tcp: int = 0
    answered: int = 0
    truncated: int = 0
    tcp_connections: int = 0
    tcp_rejected: int = 0
    tcp_idle_closed: int = 0
    served: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def count_served(self, reasons: frozenset[str]) -> None:
        self.answered += 1
        for reason in reasons or frozenset({"normal"}):
            self.served[reason] = self.served.get(reason, 0) + 1

    def count_dropped(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "udp": self.udp,
            "tcp": self.tcp,
            "answered": self.answered,
            "truncated": self.truncated,
            "dropped_total": self.dropped_total,
            "tcp_connections": self.tcp_connections,
            "tcp_rejected": self.tcp_rejected,
            "tcp_idle_closed": self.tcp_idle_closed,
            "served": dict(sorted(self.served.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }
