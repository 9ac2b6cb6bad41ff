"""The demo zone served by the chaos DNS servers, and zone-file loading."""

from __future__ import annotations

import os

import dns.exception
import dns.name
import dns.zone

from cctf.errors import ConfigError
from cctf.util.files import read_bounded

DEMO_ORIGIN = "demo.test."

# label -> IPv4 (documentation ranges, RFC 5737)
_DEMO_A: dict[str, str] = {
    "www": "192.0.2.10",
    "api": "192.0.2.20",
    "auth": "192.0.2.30",
    "db": "198.51.100.40",
    "cache": "198.51.100.50",
    "mail": "192.0.2.60",
    "vpn": "198.51.100.70",
    "cdn": "192.0.2.80",
    "ns1": "192.0.2.253",
    "ns2": "198.51.100.253",
}
# label -> IPv6 (documentation range, RFC 3849)
_DEMO_AAAA: dict[str, str] = {
    "www": "2001:db8::10",
    "api": "2001:db8::20",
    "mail": "2001:db8::60",
    "cdn": "2001:db8::80",
    "ns1": "2001:db8::253",
}
# "big" carries enough TXT data (about 2.6 KB) to overflow any UDP answer, forcing TC and a TCP retry.
BIG_LABEL = "big"
_BIG_TXT_COUNT = 12
_BIG_TXT_LEN = 200

# Largest zone file ``load_zone_file`` accepts.
MAX_ZONE_FILE_BYTES = 4 * 1024 * 1024


def _fqdn(label: str, origin: str) -> str:
    return f"{label}.{origin}"


DEMO_NAMES: tuple[str, ...] = tuple(_fqdn(label, DEMO_ORIGIN) for label in _DEMO_A)
"""Every name of the default demo zone that has an A record (absolute, trailing dot)."""


def demo_names(origin: str = DEMO_ORIGIN) -> tuple[str, ...]:
    """The A-record names of ``demo_zone(origin)``."""
    origin = _absolute_origin(origin)
    return tuple(_fqdn(label, origin) for label in _DEMO_A)


def demo_zone(origin: str = DEMO_ORIGIN) -> dns.zone.Zone:
    """Build the demo zone: SOA, two NS, A records for ``DEMO_NAMES``, some AAAA, an MX and
    ``big.<origin>`` (many TXT strings, larger than any UDP answer)."""
    origin = _absolute_origin(origin)
    lines = [
        f"$ORIGIN {origin}",
        "$TTL 300",
        "@ 3600 IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 60",
        "@ 3600 IN NS ns1",
        "@ 3600 IN NS ns2",
        "@ IN MX 10 mail",
        '@ IN TXT "cctf demo zone"',
    ]
    lines += [f"{label} IN A {addr}" for label, addr in _DEMO_A.items()]
    lines += [f"{label} IN AAAA {addr}" for label, addr in _DEMO_AAAA.items()]
    for i in range(_BIG_TXT_COUNT):
        chunk = (f"{i:02d}-" + "x" * _BIG_TXT_LEN)[:_BIG_TXT_LEN]
        lines.append(f'{BIG_LABEL} IN TXT "{chunk}"')
    return dns.zone.from_text("\n".join(lines) + "\n", origin=origin, relativize=False)


def load_zone_file(path: str | os.PathLike[str], origin: str) -> dns.zone.Zone:
    """Load a master-format zone file. Raises :class:`ConfigError` (a ``ValueError``) with a
    readable message on any problem (missing file, too large, syntax error, no SOA/NS at the
    origin)."""
    origin = _absolute_origin(origin)
    data = read_bounded(path, "zone file", MAX_ZONE_FILE_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read zone file {os.fspath(path)!r}: {exc}") from None
    try:
        return dns.zone.from_text(text, origin=origin, relativize=False, filename=os.fspath(path))
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(f"invalid zone file {os.fspath(path)!r}: {exc}") from None


def _absolute_origin(origin: str) -> str:
    try:
        name = dns.name.from_text(origin)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"invalid zone origin {origin!r}: {exc}") from None
    if name == dns.name.root:
        raise ConfigError("the zone origin cannot be the root")
    return name.to_text()
