"""DNSSEC-signed zones for the fault-injecting DNS server and the demo (dnspython ``dns.dnssec``).

:func:`sign` signs a zone with a fresh KSK and ZSK (ECDSA P-256 / SHA-256, algorithm 13, RFC 6605;
deterministic signatures, RFC 6979) and an NSEC chain, and precomputes what the server's DNSSEC faults
serve (:class:`~cctf.chaos.faults.Faults`, field ``dnssec``):

* ``expired``: every RRSIG of the zone signed again with a validity window that ended a day ago;
* ``wrong-ds``: at each delegation point with a DS RRset, a DS of an unrelated key, properly signed by
  this zone (so only the DS-to-DNSKEY match fails);
* ``tampered``, ``no-rrsig``, ``missing-ds`` need nothing precomputed (records changed or left out).

:func:`signed_demo_zone` is the helper for the demo (``cctf demo``) and tests::

    signed = signed_demo_zone()                  # the demo zone "demo.test.", signed now
    server = FaultyDnsServer(signed.zone, signed=signed)
    signed.trust_anchor                          # "demo.test. 3600 IN DS 41211 13 2 5c0e..."
    signed.trust_anchors                         # the same, as a list (one DS per KSK)

An agent configured with that DS as the trust anchor of ``demo.test.`` (agent file
``dnssec: {trust_anchors: ["demo.test. 3600 IN DS ..."]}``, see ``cctf.agents.dnssec``) validates
every answer of this server as ``secure``; the server's DNSSEC faults make them ``bogus``.
:func:`signed_parent_and_child` builds a signed parent (``test.``) delegating to a signed child
(``demo.test.``) with the child's DS, for chains of more than one zone (the ``wrong-ds`` and
``missing-ds`` faults are served by the parent).

Keys live only in memory (test and demo material, never written anywhere).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from cctf.chaos.zone import DEMO_ORIGIN, demo_zone

__all__ = [
    "ANCHOR_TTL",
    "DEFAULT_VALIDITY_S",
    "SignedZone",
    "ZoneKey",
    "sign",
    "signed_demo_zone",
    "signed_parent",
    "signed_parent_and_child",
    "signed_parent_and_unsigned_child",
]

#: Validity of the signatures made by :func:`sign`: from an hour ago to 30 days ahead.
DEFAULT_VALIDITY_S = 30 * 86_400
_BACKDATE_S = 3_600
#: TTL written in the trust-anchor text form.
ANCHOR_TTL = 3_600
_ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
_DS_DIGEST = dns.dnssectypes.DSDigest.SHA256

RRsetKey = tuple[dns.name.Name, dns.rdatatype.RdataType]


@dataclasses.dataclass(frozen=True)
class ZoneKey:
    """One signing key: its private half (memory only) and its DNSKEY record."""

    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY

    def __repr__(self) -> str:  # never show the private key
        return f"ZoneKey(key_tag={dns.dnssec.key_id(self.dnskey)}, flags={self.dnskey.flags})"

    @classmethod
    def generate(cls, *, ksk: bool) -> ZoneKey:
        private = ec.generate_private_key(ec.SECP256R1())
        flags = 257 if ksk else 256  # ZONE, plus SEP for a key-signing key
        dnskey = dns.dnssec.make_dnskey(private.public_key(), _ALGORITHM, flags=flags)
        return cls(private, dnskey)


@dataclasses.dataclass(frozen=True)
class SignedZone:
    """A signed zone and what the server's DNSSEC faults serve (see the module docstring)."""

    zone: dns.zone.Zone
    """The signed zone: DNSKEY RRset at the apex, RRSIGs, NSEC chain."""
    ksk: ZoneKey
    zsk: ZoneKey
    ds: tuple[dns.rdtypes.ANY.DS.DS, ...]
    """DS records (SHA-256) of the KSK: what the parent publishes, or a trust anchor."""
    expired_rrsigs: Mapping[RRsetKey, dns.rrset.RRset]
    """Per (owner, covered type): the RRSIG RRset signed with a validity window in the past."""
    wrong_ds: Mapping[dns.name.Name, tuple[dns.rrset.RRset, dns.rrset.RRset]]
    """Per delegation point with a DS: (a DS RRset of an unrelated key, its RRSIG RRset)."""

    @property
    def origin(self) -> dns.name.Name:
        assert self.zone.origin is not None
        return self.zone.origin

    @property
    def trust_anchors(self) -> list[str]:
        """The KSK's DS records in zone-file form, e.g. ``demo.test. 3600 IN DS 41211 13 2 5c0e…``:
        the trust anchor for this zone (an agent's ``dnssec.trust_anchors``, unbound's
        ``trust-anchor:``)."""
        return [f"{self.origin.to_text()} {ANCHOR_TTL} IN DS {ds.to_text()}" for ds in self.ds]

    @property
    def trust_anchor(self) -> str:
        """The first of :attr:`trust_anchors` (there is one KSK)."""
        return self.trust_anchors[0]

    @property
    def dnskey_anchor(self) -> str:
        """The KSK itself in zone-file form (a DNSKEY trust anchor, the alternative to the DS)."""
        return f"{self.origin.to_text()} {ANCHOR_TTL} IN DNSKEY {self.ksk.dnskey.to_text()}"


def _sign_rrsets(
    zone: dns.zone.Zone, ksk: ZoneKey, zsk: ZoneKey, inception: float, expiration: float
) -> dict[RRsetKey, dns.rrset.RRset]:
    """RRSIG RRsets over every signed RRset of an already signed ``zone``, with another validity
    window (the zone is not changed)."""
    origin = zone.origin
    assert origin is not None
    out: dict[RRsetKey, dns.rrset.RRset] = {}
    for name, node in zone.nodes.items():
        owner = name if name.is_absolute() else name.derelativize(origin)
        signed_types = {
            rds.covers for rds in node.rdatasets if rds.rdtype == dns.rdatatype.RRSIG and len(rds)
        }
        for rds in node.rdatasets:
            if rds.rdtype == dns.rdatatype.RRSIG or rds.rdtype not in signed_types:
                continue
            key = ksk if rds.rdtype == dns.rdatatype.DNSKEY else zsk
            rrset = dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
            sig = dns.dnssec.sign(
                rrset,
                key.private,
                origin,
                key.dnskey,
                inception=inception,
                expiration=expiration,
                origin=origin,
            )
            out[(owner, rds.rdtype)] = dns.rrset.from_rdata_list(owner, rds.ttl, [sig])
    return out


def sign(
    zone: dns.zone.Zone,
    *,
    now_s: float | None = None,
    validity_s: int = DEFAULT_VALIDITY_S,
    ksk: ZoneKey | None = None,
    zsk: ZoneKey | None = None,
) -> SignedZone:
    """Sign ``zone`` in place (DNSKEY RRset, RRSIGs from an hour before ``now_s`` to ``validity_s``
    after it, NSEC chain) with ``ksk``/``zsk`` (fresh keys by default). DS RRsets already in the
    zone (delegations to signed children) are signed too, and get a ``wrong-ds`` variant."""
    if zone.origin is None:
        raise ValueError("the zone has no origin")
    now = time.time() if now_s is None else now_s
    ksk = ksk or ZoneKey.generate(ksk=True)
    zsk = zsk or ZoneKey.generate(ksk=False)
    keys: list[tuple[Any, dns.rdtypes.ANY.DNSKEY.DNSKEY]] = [
        (ksk.private, ksk.dnskey),
        (zsk.private, zsk.dnskey),
    ]
    dns.dnssec.sign_zone(zone, keys=keys, inception=now - _BACKDATE_S, expiration=now + validity_s)
    origin = zone.origin
    expired = _sign_rrsets(zone, ksk, zsk, now - 30 * 86_400, now - 86_400)
    wrong: dict[dns.name.Name, tuple[dns.rrset.RRset, dns.rrset.RRset]] = {}
    stranger = ZoneKey.generate(ksk=True)
    for name, node in zone.nodes.items():
        owner = name if name.is_absolute() else name.derelativize(origin)
        ds = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.DS)
        if ds is None or owner == origin:
            continue
        fake = dns.rrset.from_rdata_list(
            owner, ds.ttl, [dns.dnssec.make_ds(owner, stranger.dnskey, _DS_DIGEST)]
        )
        sig = dns.dnssec.sign(
            fake,
            zsk.private,
            origin,
            zsk.dnskey,
            inception=now - _BACKDATE_S,
            expiration=now + validity_s,
            origin=origin,
        )
        wrong[owner] = (fake, dns.rrset.from_rdata_list(owner, ds.ttl, [sig]))
    ds_records = (dns.dnssec.make_ds(origin, ksk.dnskey, _DS_DIGEST),)
    return SignedZone(zone, ksk, zsk, ds_records, expired, wrong)


def signed_demo_zone(
    origin: str = DEMO_ORIGIN, *, now_s: float | None = None, validity_s: int = DEFAULT_VALIDITY_S
) -> SignedZone:
    """The demo zone (:func:`cctf.chaos.zone.demo_zone`) signed with fresh keys.

    Serve it with ``FaultyDnsServer(signed.zone, signed=signed)``; give agents
    ``signed.trust_anchor`` (a DS record in zone-file form) as the trust anchor of ``origin``.
    """
    return sign(demo_zone(origin), now_s=now_s, validity_s=validity_s)


def signed_parent(
    parent_origin: str,
    children: Mapping[str, Sequence[dns.rdtypes.ANY.DS.DS]],
    *,
    child_ns_address: str = "127.0.0.1",
    now_s: float | None = None,
) -> SignedZone:
    """A signed parent zone delegating each child (NS ``ns1.<child>`` with glue
    ``child_ns_address``) with the given DS records; a child without DS records is an insecure
    delegation (the parent's NSEC at it proves there is no DS)."""
    parent_name = dns.name.from_text(parent_origin)
    lines = [
        f"$ORIGIN {parent_name.to_text()}",
        "$TTL 300",
        "@ 3600 IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 60",
        "@ 3600 IN NS ns1",
        f"ns1 IN A {child_ns_address}",
    ]
    for child, ds in children.items():
        child_name = dns.name.from_text(child)
        if not child_name.is_subdomain(parent_name) or child_name == parent_name:
            raise ValueError(f"{child} is not below {parent_origin}")
        ns = f"ns1.{child_name.to_text()}"
        lines += [f"{child_name.to_text()} 3600 IN NS {ns}", f"{ns} 3600 IN A {child_ns_address}"]
        lines += [f"{child_name.to_text()} 3600 IN DS {rd.to_text()}" for rd in ds]
    zone = dns.zone.from_text("\n".join(lines) + "\n", origin=parent_name, relativize=False)
    return sign(zone, now_s=now_s)


def signed_parent_and_child(
    parent_origin: str = "test.",
    child_origin: str = DEMO_ORIGIN,
    *,
    child_ns_address: str = "127.0.0.1",
    now_s: float | None = None,
) -> tuple[SignedZone, SignedZone]:
    """A signed parent zone delegating ``child_origin`` (NS ``ns1.<child>`` with glue
    ``child_ns_address``, and the child's DS) and the signed demo zone as the child.

    The trust anchor is the parent's (``parent.trust_anchor``): a validator then follows the
    parent's DS to the child's DNSKEY, so the parent's ``wrong-ds`` / ``missing-ds`` faults break
    the chain.
    """
    child = signed_demo_zone(child_origin, now_s=now_s)
    parent = signed_parent(
        parent_origin, {child_origin: child.ds}, child_ns_address=child_ns_address, now_s=now_s
    )
    return parent, child


def signed_parent_and_unsigned_child(
    parent_origin: str = "test.",
    child_origin: str = DEMO_ORIGIN,
    *,
    child_ns_address: str = "127.0.0.1",
    now_s: float | None = None,
) -> tuple[SignedZone, dns.zone.Zone]:
    """A signed parent delegating ``child_origin`` without a DS (an insecure delegation: the
    parent's NSEC at the delegation point proves there is no DS) and the unsigned demo zone."""
    parent = signed_parent(
        parent_origin, {child_origin: ()}, child_ns_address=child_ns_address, now_s=now_s
    )
    return parent, demo_zone(child_origin)
