"""DNSSEC records in the fault-injecting server's responses, and the DNSSEC faults (pure).

:class:`ZoneSignatures` indexes the RRSIG and NSEC records of a signed zone (any zone holding them:
one signed by :mod:`cctf.chaos.signing`, or a pre-signed zone file) and, for a query with the DO bit
(RFC 3225), adds to a response built by :class:`~cctf.chaos.responder.ZoneResponder`:

* the RRSIG RRset of every RRset in the answer and authority sections (RFC 4035 §3.1.1);
* in a negative answer, the NSEC records that prove it (RFC 4035 §3.1.3): NODATA — the NSEC at the
  name (or, for an empty non-terminal, the NSEC covering it); NXDOMAIN — the NSEC covering the name
  and the NSEC covering the wildcard at its closest encloser;
* in a referral, the DS RRset of the delegation and its RRSIG, or the NSEC at the delegation point
  proving there is none (RFC 4035 §3.1.4).

Then it applies ``Faults.dnssec`` (see :class:`~cctf.chaos.faults.Faults`). ``expired`` and
``wrong-ds`` need the variants a :class:`~cctf.chaos.signing.SignedZone` precomputes; without them
(a pre-signed zone file) those two faults are not applied (and not reported as applied).
"""

from __future__ import annotations

import bisect
import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset
import dns.zone

from cctf.chaos.faults import Faults
from cctf.chaos.signing import SignedZone

__all__ = ["ZoneSignatures"]

_RRSIG = dns.rdatatype.RRSIG
_NSEC = dns.rdatatype.NSEC
_DS = dns.rdatatype.DS
_TAMPERED_TYPES = frozenset({dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT})

RRsetKey = tuple[dns.name.Name, dns.rdatatype.RdataType]


def _tamper_rdata(rd: dns.rdata.Rdata) -> dns.rdata.Rdata:
    """The same record with its data changed (so its RRSIG no longer verifies)."""
    if rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        addr = ipaddress.ip_address(rd.to_text())
        changed = addr + 1 if int(addr) < int(addr.max_prefixlen * "1", 2) else addr - 1
        return dns.rdata.from_text(rd.rdclass, rd.rdtype, str(changed))
    return dns.rdata.from_text(rd.rdclass, rd.rdtype, rd.to_text() + ' "tampered"')


def _tamper(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, [_tamper_rdata(rd) for rd in rrset])


class ZoneSignatures:
    """The RRSIG/NSEC index of one signed zone (see the module docstring)."""

    def __init__(self, zone: dns.zone.Zone, signed: SignedZone | None = None) -> None:
        if zone.origin is None:
            raise ValueError("the zone has no origin")
        self.origin: dns.name.Name = zone.origin
        self._sigs: dict[RRsetKey, dns.rrset.RRset] = {}
        self._nsec: dict[dns.name.Name, dns.rrset.RRset] = {}
        self._ds: dict[dns.name.Name, dns.rrset.RRset] = {}
        for name, node in zone.nodes.items():
            owner = name if name.is_absolute() else name.derelativize(self.origin)
            for rds in node.rdatasets:
                if rds.rdtype == _RRSIG and len(rds):
                    self._sigs[(owner, rds.covers)] = dns.rrset.from_rdata_list(
                        owner, rds.ttl, list(rds)
                    )
                elif rds.rdtype == _NSEC and len(rds):
                    self._nsec[owner] = dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
                elif rds.rdtype == _DS and len(rds) and owner != self.origin:
                    self._ds[owner] = dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
        self._nsec_owners = sorted(self._nsec)
        self._expired = dict(signed.expired_rrsigs) if signed is not None else {}
        self._wrong_ds = dict(signed.wrong_ds) if signed is not None else {}

    @property
    def signed(self) -> bool:
        """Whether the zone holds any signatures (an unsigned zone is served as before)."""
        return bool(self._sigs)

    # -- lookups ------------------------------------------------------------------------------

    def _covering(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        """The NSEC whose owner is the greatest owner at or before ``name`` (canonical order)."""
        owners = self._nsec_owners
        i = bisect.bisect_right(owners, name) - 1
        return self._nsec[owners[i]] if owners and i >= 0 else None

    def _sig(self, key: RRsetKey, faults: Faults, applied: set[str]) -> dns.rrset.RRset | None:
        if faults.dnssec == "no-rrsig":
            applied.add("dnssec-no-rrsig")
            return None
        if faults.dnssec == "expired" and key in self._expired:
            applied.add("dnssec-expired")
            return self._expired[key]
        return self._sigs.get(key)

    # -- decoration -----------------------------------------------------------------------------

    def decorate(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: dns.rdatatype.RdataType,
        faults: Faults,
        applied: set[str],
        exists: set[dns.name.Name] | frozenset[dns.name.Name],
    ) -> None:
        """Add signatures and proofs to ``response`` (built for ``qname``/``qtype``), then apply
        ``faults.dnssec``. ``exists`` holds the zone's names that exist (nodes and empty
        non-terminals), for the closest encloser of an NXDOMAIN."""
        fault = faults.dnssec
        answer: list[dns.rrset.RRset] = []
        for rrset in response.answer:
            if rrset.rdtype == _DS and fault == "missing-ds":
                applied.add("dnssec-missing-ds")
                continue
            if rrset.rdtype == _DS and fault == "wrong-ds" and rrset.name in self._wrong_ds:
                applied.add("dnssec-wrong-ds")
                fake, fake_sig = self._wrong_ds[rrset.name]
                answer.extend((fake, fake_sig))
                continue
            sig = self._sig((rrset.name, rrset.rdtype), faults, applied)
            if fault == "tampered" and rrset.rdtype in _TAMPERED_TYPES:
                applied.add("dnssec-tampered")
                rrset = _tamper(rrset)
            answer.append(rrset)
            if sig is not None:
                answer.append(sig)
        response.answer = answer
        referral = not response.flags & dns.flags.AA and any(
            rr.rdtype == dns.rdatatype.NS for rr in response.authority
        )
        authority: list[dns.rrset.RRset] = []
        for rrset in response.authority:
            authority.append(rrset)
            if referral and rrset.rdtype == dns.rdatatype.NS:
                self._delegation(rrset.name, authority, faults, applied)
                continue
            sig = self._sig((rrset.name, rrset.rdtype), faults, applied)
            if sig is not None:
                authority.append(sig)
        if not referral and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            data = [rr for rr in response.answer if rr.rdtype != _RRSIG]
            denied = data[-1][0].target if data and data[-1].rdtype == dns.rdatatype.CNAME else None
            if not data or denied is not None:
                name = denied if denied is not None else qname
                nxdomain = response.rcode() == dns.rcode.NXDOMAIN
                if name.is_subdomain(self.origin):
                    self._denial(name, nxdomain, exists, authority, faults, applied)
        response.authority = authority

    def _delegation(
        self,
        cut: dns.name.Name,
        authority: list[dns.rrset.RRset],
        faults: Faults,
        applied: set[str],
    ) -> None:
        ds_sig = self._sigs.get((cut, _DS))
        if ds_sig is None and cut not in self._wrong_ds:  # unsigned delegation: NSEC proves no DS
            nsec = self._nsec.get(cut)
            if nsec is not None:
                authority.append(nsec)
                sig = self._sig((cut, _NSEC), faults, applied)
                if sig is not None:
                    authority.append(sig)
            return
        if faults.dnssec == "missing-ds":
            applied.add("dnssec-missing-ds")
            return
        if faults.dnssec == "wrong-ds" and cut in self._wrong_ds:
            applied.add("dnssec-wrong-ds")
            fake, fake_sig = self._wrong_ds[cut]
            authority.append(fake)
            authority.append(fake_sig)
            return
        ds = self._ds.get(cut)
        if ds is not None:
            authority.append(ds)
            sig = self._sig((cut, _DS), faults, applied)
            if sig is not None:
                authority.append(sig)

    def _denial(
        self,
        name: dns.name.Name,
        nxdomain: bool,
        exists: set[dns.name.Name] | frozenset[dns.name.Name],
        authority: list[dns.rrset.RRset],
        faults: Faults,
        applied: set[str],
    ) -> None:
        proofs: list[dns.rrset.RRset] = []
        if not nxdomain:
            nsec = self._nsec.get(name) or self._covering(name)
            if nsec is not None:
                proofs.append(nsec)
        else:
            covering = self._covering(name)
            if covering is not None:
                proofs.append(covering)
            encloser = name
            while encloser != self.origin and encloser not in exists:
                encloser = encloser.parent()
            wildcard = self._covering(dns.name.Name((b"*", *encloser.labels)))
            if wildcard is not None and all(wildcard.name != p.name for p in proofs):
                proofs.append(wildcard)
        for nsec in proofs:
            authority.append(nsec)
            sig = self._sig((nsec.name, _NSEC), faults, applied)
            if sig is not None:
                authority.append(sig)
