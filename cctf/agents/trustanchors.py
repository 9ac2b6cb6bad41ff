"""DNSSEC trust anchors of an agent: DS and/or DNSKEY records per zone, parsed from zone-file lines
of the agent file (``dnssec: {trust_anchors: [...]}``); used by :mod:`cctf.agents.dnssec` (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Final

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset

from cctf.errors import ConfigError

__all__ = ["MAX_ANCHORS", "TrustAnchors"]

#: Trust anchor records an agent file may configure.
MAX_ANCHORS: Final = 64


@dataclasses.dataclass(frozen=True)
class TrustAnchors:
    """Trust anchors per zone: DS records and/or DNSKEY records (zone-file lines)."""

    ds: Mapping[dns.name.Name, tuple[dns.rdtypes.ANY.DS.DS, ...]] = dataclasses.field(
        default_factory=dict
    )
    dnskeys: Mapping[dns.name.Name, tuple[dns.rdtypes.ANY.DNSKEY.DNSKEY, ...]] = dataclasses.field(
        default_factory=dict
    )

    @classmethod
    def parse(cls, lines: Iterable[str]) -> TrustAnchors:
        """From zone-file lines ``<zone> [ttl] [IN] DS|DNSKEY <rdata>`` (e.g. a
        :attr:`cctf.chaos.signing.SignedZone.trust_anchor`). Raises :class:`ConfigError` naming the
        bad entry."""
        ds: dict[dns.name.Name, list[dns.rdtypes.ANY.DS.DS]] = {}
        keys: dict[dns.name.Name, list[dns.rdtypes.ANY.DNSKEY.DNSKEY]] = {}
        items = list(lines)
        if len(items) > MAX_ANCHORS:
            raise ConfigError(f"dnssec.trust_anchors: more than {MAX_ANCHORS} entries")
        for i, line in enumerate(items):
            where = f"dnssec.trust_anchors[{i}]"
            if not isinstance(line, str) or not line.strip() or len(line) > 4096:
                raise ConfigError(f"{where}: expected a DS or DNSKEY record line")
            try:
                rrset = _parse_anchor(line)
            except (dns.exception.DNSException, ValueError) as exc:
                raise ConfigError(f"{where}: not a DS or DNSKEY record: {exc}") from None
            for rd in rrset:
                if isinstance(rd, dns.rdtypes.ANY.DS.DS):
                    ds.setdefault(rrset.name, []).append(rd)
                elif isinstance(rd, dns.rdtypes.ANY.DNSKEY.DNSKEY):
                    keys.setdefault(rrset.name, []).append(rd)
        return cls({n: tuple(v) for n, v in ds.items()}, {n: tuple(v) for n, v in keys.items()})

    @property
    def zones(self) -> frozenset[dns.name.Name]:
        return frozenset(self.ds) | frozenset(self.dnskeys)

    def covering(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest anchored zone at or above ``name``, or ``None``."""
        if not self.ds and not self.dnskeys:
            return None
        while True:
            if name in self.ds or name in self.dnskeys:
                return name
            if len(name) <= 1:
                return None
            name = name.parent()


def _parse_anchor(line: str) -> dns.rrset.RRset:
    tok = line.split()
    if len(tok) < 3:
        raise ValueError("too short")
    name = dns.name.from_text(tok[0])
    rest = tok[1:]
    ttl = 0
    if rest and rest[0].isdigit():
        ttl = int(rest[0])
        rest = rest[1:]
    if rest and rest[0].upper() == "IN":
        rest = rest[1:]
    if len(rest) < 2 or rest[0].upper() not in ("DS", "DNSKEY"):
        raise ValueError("the type must be DS or DNSKEY")
    rdtype = dns.rdatatype.from_text(rest[0].upper())
    rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, " ".join(rest[1:]))
    return dns.rrset.from_rdata_list(name, ttl, [rd])
