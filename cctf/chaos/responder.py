"""The pure DNS logic of the fault-injecting server: one zone, its faults, one answer per query.

``ZoneResponder.respond`` / ``handle`` are synchronous and never raise, so they can be fuzzed; the
asyncio adapter (``cctf.chaos.dnsserver``) only moves bytes, frames TCP and applies delays.

Scope: one zone, class IN, no wildcard expansion, no zone transfers (AXFR/IXFR are REFUSED).
Delegations inside the zone produce referrals; in-zone CNAME chains are followed. A signed zone
(RRSIG/NSEC records, e.g. from :mod:`cctf.chaos.signing`) is served with its signatures and denial
proofs to queries with the DO bit, and with the DNSSEC faults (:mod:`cctf.chaos.dnssecserve`).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from cctf.chaos.dnssecserve import ZoneSignatures
from cctf.chaos.faults import Faults
from cctf.chaos.signing import SignedZone

__all__ = [
    "DEFAULT_UDP_PAYLOAD",
    "MAX_QUERY_BYTES",
    "MAX_TCP_RESPONSE",
    "MIN_UDP_PAYLOAD",
    "Outcome",
    "ZoneResponder",
]

log = logging.getLogger(__name__)

DEFAULT_UDP_PAYLOAD = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)
MIN_UDP_PAYLOAD = 512
MAX_TCP_RESPONSE = 65535
MAX_QUERY_BYTES = 4096  # queries are small; anything larger is dropped unread
MAX_CNAME_CHAIN = 8
POISON_DEFAULT_TTL = 300

_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_NO_FAULTS = Faults()
_MEMO_ENTRIES = 100_000  # memoised fault-free answers (cleared when full)
_META_QTYPES = frozenset({dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY})
_XFR_QTYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``ZoneResponder.respond`` decided.

    ``response`` is the wire response or ``None`` (nothing is sent); ``applied`` names what shaped
    the response (fault names such as ``poison``/``ttl``/``servfail``, or ``formerr``/``notimp``/
    ``out-of-zone``; empty for a normal answer); ``drop_reason`` says why nothing is sent."""

    response: bytes | None
    applied: frozenset[str] = frozenset()
    drop_reason: str | None = None
    truncated: bool = False


def _drop(reason: str) -> Outcome:
    return Outcome(None, frozenset(), reason)


def _header_only(wire: bytes, rcode: int) -> bytes:
    """A bare response header (no sections) echoing the id, opcode and RD of ``wire``."""
    qid, flags = struct.unpack_from("!HH", wire)
    out_flags = _QR | (flags & _OPCODE_MASK) | (flags & _RD) | (rcode & 0xF)
    return _HEADER.pack(qid, out_flags, 0, 0, 0, 0)


def _absolute_rdata(rd: dns.rdata.Rdata, origin: dns.name.Name) -> dns.rdata.Rdata:
    """Make every name inside ``rd`` absolute (zones loaded with relativize=True hold relative
    names), by a wire round trip."""
    wire = rd.to_wire(origin=origin)
    assert wire is not None
    return dns.rdata.from_wire(rd.rdclass, rd.rdtype, wire, 0, len(wire))


class ZoneResponder:
    """Answers queries for one zone, applying ``Faults``. Pure and synchronous.

    The zone is indexed once at construction; later changes to the ``Zone`` object are not seen.
    """

    def __init__(
        self,
        zone: dns.zone.Zone,
        *,
        udp_payload: int = DEFAULT_UDP_PAYLOAD,
        max_query_bytes: int = MAX_QUERY_BYTES,
        signed: SignedZone | None = None,
    ) -> None:
        """``signed``: the :class:`~cctf.chaos.signing.SignedZone` that ``zone`` comes from, for
        the ``expired`` and ``wrong-ds`` DNSSEC faults (signatures in ``zone`` are served without
        it too)."""
        if zone.origin is None:
            raise ValueError("the zone has no origin")
        if not MIN_UDP_PAYLOAD <= udp_payload <= 65535:
            raise ValueError(f"udp_payload must be in {MIN_UDP_PAYLOAD}..65535")
        if not 12 <= max_query_bytes <= 65535:
            raise ValueError("max_query_bytes must be in 12..65535")
        self.origin: dns.name.Name = zone.origin
        self.udp_payload = udp_payload
        self.max_query_bytes = max_query_bytes
        self._rrsets: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        for name, node in zone.nodes.items():
            owner = name if name.is_absolute() else name.derelativize(self.origin)
            by_type: dict[dns.rdatatype.RdataType, dns.rrset.RRset] = {}
            for rdataset in node.rdatasets:
                if rdataset.covers != dns.rdatatype.NONE or len(rdataset) == 0:
                    continue  # signatures: served by self._dnssec
                rdatas = [_absolute_rdata(rd, self.origin) for rd in rdataset]
                by_type[rdataset.rdtype] = dns.rrset.from_rdata_list(owner, rdataset.ttl, rdatas)
            if by_type:
                self._rrsets[owner] = by_type
        apex = self._rrsets.get(self.origin, {})
        soa = apex.get(dns.rdatatype.SOA)
        if soa is None:
            raise ValueError(f"zone {self.origin} has no SOA at its origin")
        minimum = int(getattr(soa[0], "minimum", soa.ttl))
        self._negative_soa = dns.rrset.from_rdata_list(
            self.origin, min(soa.ttl, minimum), list(soa)
        )
        # empty non-terminals: names that exist only because something below them exists
        self._ents: set[dns.name.Name] = set()
        for owner in self._rrsets:
            parent = owner
            while parent != self.origin and len(parent) > len(self.origin):
                parent = parent.parent()
                if parent not in self._rrsets:
                    self._ents.add(parent)
        self._cuts = frozenset(
            owner
            for owner, by_type in self._rrsets.items()
            if owner != self.origin and dns.rdatatype.NS in by_type
        )
        self._exists = frozenset(self._rrsets) | frozenset(self._ents)
        sigs = ZoneSignatures(zone, signed)
        self._dnssec = sigs if sigs.signed else None
        self._memo: dict[tuple[bytes, bool], Outcome] = {}

    # -- public -----------------------------------------------------------------------------

    def handle(self, wire: bytes, faults: Faults = _NO_FAULTS, *, udp: bool = True) -> bytes | None:
        """The wire response to ``wire`` under ``faults``, or ``None`` to send nothing."""
        return self.respond(wire, faults, udp=udp).response

    def respond(self, wire: bytes, faults: Faults = _NO_FAULTS, *, udp: bool = True) -> Outcome:
        """Like ``handle`` but also reports what happened. Never raises.

        Without faults, an answer depends only on the query's bytes after its id (the zone is fixed
        at construction), so it is memoised (bounded) and served again with the new id: the load
        benchmark's thousands of queries per second cost one dictionary look-up each."""
        if faults != _NO_FAULTS or not 12 <= len(wire) <= self.max_query_bytes:
            return self._respond_safe(wire, faults, udp)
        key = (bytes(wire[2:]), udp)
        hit = self._memo.get(key)
        if hit is not None and hit.response is not None:
            return dataclasses.replace(hit, response=bytes(wire[:2]) + hit.response[2:])
        out = self._respond_safe(wire, faults, udp)
        if out.response is not None and len(out.response) >= 12 and out.response[:2] == wire[:2]:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = out
        return out

    def _respond_safe(self, wire: bytes, faults: Faults, udp: bool) -> Outcome:
        try:
            return self._respond(bytes(wire), faults, udp)
        except Exception:  # the contract is "never raises"; this is a bug if reached
            log.debug("chaos dns: internal error while answering", exc_info=True)
            try:
                if len(wire) >= 12 and not wire[2] & 0x80:
                    return Outcome(
                        _header_only(bytes(wire), dns.rcode.SERVFAIL), frozenset({"internal-error"})
                    )
            except Exception:
                log.debug("chaos dns: cannot build the fallback response", exc_info=True)
            return _drop("internal-error")

    # -- internals --------------------------------------------------------------------------

    def _respond(self, wire: bytes, faults: Faults, udp: bool) -> Outcome:
        if faults.blackhole:
            return _drop("blackhole")
        if len(wire) < 12:
            return _drop("malformed")
        if len(wire) > self.max_query_bytes:
            return _drop("oversized")
        _, flags, qdcount = struct.unpack_from("!HHH", wire)
        if flags & _QR:
            return _drop("not-a-query")  # never answer responses (no reflection loops)
        if (flags & _OPCODE_MASK) >> 11 != dns.opcode.QUERY:
            return Outcome(_header_only(wire, dns.rcode.NOTIMP), frozenset({"notimp"}))
        if qdcount != 1:
            return Outcome(_header_only(wire, dns.rcode.FORMERR), frozenset({"formerr"}))
        try:
            query = dns.message.from_wire(wire)
        except dns.message.UnknownTSIGKey:
            return Outcome(_header_only(wire, dns.rcode.REFUSED), frozenset({"tsig"}))
        except Exception:
            return Outcome(_header_only(wire, dns.rcode.FORMERR), frozenset({"formerr"}))
        if len(query.question) != 1:
            return Outcome(_header_only(wire, dns.rcode.FORMERR), frozenset({"formerr"}))

        response = dns.message.make_response(query, our_payload=self.udp_payload)
        if query.edns >= 0:
            response.ednsflags |= query.ednsflags & dns.flags.DO  # RFC 3225: copy DO
        applied: set[str] = set()
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            applied.add("badvers")
        elif qtype in _META_QTYPES:
            response.set_rcode(dns.rcode.FORMERR)
            applied.add("formerr")
        elif faults.refused:
            response.set_rcode(dns.rcode.REFUSED)
            applied.add("refused")
        elif faults.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            applied.add("servfail")
        elif (
            question.rdclass != dns.rdataclass.IN
            or qtype in _XFR_QTYPES
            or not qname.is_subdomain(self.origin)
        ):
            response.set_rcode(dns.rcode.REFUSED)
            applied.add("out-of-zone")
        else:
            self._answer(response, qname, qtype, faults, applied)
            if faults.ttl is not None and response.answer:
                response.answer = [
                    dns.rrset.from_rdata_list(rr.name, faults.ttl, list(rr))
                    for rr in response.answer
                ]
                applied.add("ttl")
            if self._dnssec is not None and query.ednsflags & dns.flags.DO:
                self._dnssec.decorate(response, qname, qtype, faults, applied, self._exists)
        return self._render(query, response, frozenset(applied), udp)

    def _answer(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: dns.rdatatype.RdataType,
        faults: Faults,
        applied: set[str],
    ) -> None:
        forged = {dns.rdatatype.A: faults.poison, dns.rdatatype.AAAA: faults.poison6}.get(qtype)
        if forged is not None:
            response.flags |= dns.flags.AA
            real = self._rrsets.get(qname, {}).get(qtype)
            ttl = real.ttl if real is not None else POISON_DEFAULT_TTL
            response.answer = [dns.rrset.from_text_list(qname, ttl, "IN", qtype, [forged])]
            applied.add("poison")
            return
        cut = self._find_cut(qname)
        if cut is not None and not (cut == qname and qtype == dns.rdatatype.DS):
            self._referral(response, cut)
            applied.add("referral")
            return
        response.flags |= dns.flags.AA
        name = qname
        for _ in range(MAX_CNAME_CHAIN + 1):
            node = self._rrsets.get(name)
            if node is None:
                if name not in self._ents:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority = [self._negative_soa]
                return
            if qtype == dns.rdatatype.ANY:
                response.answer.extend(node.values())
                return
            rrset = node.get(qtype)
            if rrset is not None:
                response.answer.append(rrset)
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None or qtype == dns.rdatatype.CNAME:
                response.authority = [self._negative_soa]  # NODATA
                return
            response.answer.append(cname)
            target: dns.name.Name = cname[0].target
            if not target.is_subdomain(self.origin) or self._find_cut(target) is not None:
                return  # the resolver chases it elsewhere
            name = target

    def _find_cut(self, name: dns.name.Name) -> dns.name.Name | None:
        """The topmost delegation point at or above ``name`` (strictly below the origin)."""
        if not self._cuts:
            return None
        found = None
        while len(name) > len(self.origin):
            if name in self._cuts:
                found = name
            name = name.parent()
        return found

    def _referral(self, response: dns.message.Message, cut: dns.name.Name) -> None:
        ns = self._rrsets[cut][dns.rdatatype.NS]
        response.authority = [ns]
        for rd in ns:
            target: dns.name.Name = rd.target
            if target.is_subdomain(cut):  # glue
                glue = self._rrsets.get(target, {})
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    if rdtype in glue:
                        response.additional.append(glue[rdtype])

    def _render(
        self,
        query: dns.message.Message,
        response: dns.message.Message,
        applied: frozenset[str],
        udp: bool,
    ) -> Outcome:
        if udp:
            client = query.payload if query.edns >= 0 else MIN_UDP_PAYLOAD
            limit = min(max(MIN_UDP_PAYLOAD, client), self.udp_payload)
        else:
            limit = MAX_TCP_RESPONSE
        try:
            return Outcome(response.to_wire(max_size=limit), applied)
        except dns.exception.TooBig:
            pass
        # Does not fit. Over UDP: the question only, with TC set, so the client retries over TCP.
        # Over TCP (more than 64 KiB of answer): SERVFAIL.
        response.answer = []
        response.authority = []
        response.additional = []
        if udp:
            response.flags |= dns.flags.TC
        else:
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL)
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            return _drop("too-big")
        return Outcome(wire, applied, truncated=udp)
