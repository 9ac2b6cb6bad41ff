"""Canonical, comparable form of one DNS response (pure: no I/O, no clock).

Two resolvers "agree" when the canonical answers of their responses are equal, so this module defines
exactly what is compared. The format is part of the wire contract (``ResolverVote.answer`` and
``answer_digest``); :func:`canonical_answer` documents it byte for byte.

``Transport`` and ``VoteStatus`` are the wire enums of :mod:`cctf.bus_schemas.messages`, re-exported so
an :class:`Observation` can be turned into a ``ResolverVote`` without any mapping.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import dns.edns
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

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import DnssecState, Transport, VoteStatus

__all__ = [
    "MAX_ANSWER_ENTRIES",
    "MAX_ANSWER_ENTRY_CHARS",
    "MAX_DETAIL_CHARS",
    "MAX_EDE_CODES",
    "NO_RCODE",
    "CanonicalError",
    "Observation",
    "Transport",
    "VoteStatus",
    "canonical_answer",
    "ede_codes",
    "min_ttl",
    "observation_from_response",
    "parse_qname",
    "parse_qtype",
]

MAX_ANSWER_ENTRIES: Final = L.MAX_ANSWER_ENTRIES  # 64
MAX_ANSWER_ENTRY_CHARS: Final = L.MAX_ANSWER_ENTRY_CHARS  # 512
MAX_EDE_CODES: Final = L.MAX_EDE_CODES  # 8
#: ``Observation.detail`` is cut to this many characters.
MAX_DETAIL_CHARS: Final = 160
#: ``Observation.rcode`` when no DNS response was received (timeout, transport failure). The status, not
#: the rcode, tells a non-response apart: the wire schema only admits rcodes 0..4095.
NO_RCODE: Final = 0
#: Records examined before giving up on a response (bounds work on a hostile 64 KiB message).
_MAX_RAW_RECORDS: Final = 1024
#: Names an alias chain (CNAME/DNAME) may reach before the answer is refused (DNAME loops).
_MAX_CHAIN_NAMES: Final = 2 * L.MAX_ANSWER_ENTRIES
#: RFC 2181 section 8: a TTL with the most significant bit set is treated as zero.
_MAX_TTL: Final = 2**31 - 1
_NOT_QUERYABLE: Final = frozenset(
    {dns.rdatatype.RRSIG, dns.rdatatype.OPT, dns.rdatatype.NONE}
)  # plus every meta type, see parse_qtype


class CanonicalError(ValueError):
    """The response cannot be put in canonical form (too large, unrelated records, bad rdata)."""


def parse_qname(qname: dns.name.Name | str) -> dns.name.Name:
    """Parse a query name (absolute; a missing final dot is added). Raises ``ValueError``."""
    if isinstance(qname, dns.name.Name):
        if not qname.is_absolute():
            raise ValueError(f"query name {qname} is not absolute")
        return qname
    if not isinstance(qname, str) or not qname or len(qname) > L.MAX_QNAME_CHARS:
        raise ValueError(f"invalid query name {qname!r}")
    try:
        return dns.name.from_text(qname, origin=dns.name.root)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"invalid query name {qname!r}: {exc}") from None


def parse_qtype(qtype: dns.rdatatype.RdataType | str) -> dns.rdatatype.RdataType:
    """Parse a query type such as ``"A"`` or ``"TYPE65"``. Meta types, ANY, OPT and RRSIG are refused
    (RRSIGs are never part of a canonical answer). Raises ``ValueError``."""
    try:
        rdtype = dns.rdatatype.RdataType.make(qtype)
    except (dns.exception.DNSException, ValueError, TypeError):
        raise ValueError(f"invalid query type {qtype!r}") from None
    if rdtype in _NOT_QUERYABLE or dns.rdatatype.is_metatype(rdtype):
        raise ValueError(f"query type {dns.rdatatype.to_text(rdtype)} cannot be queried")
    return rdtype


def _entry(owner: dns.name.Name, rdata: dns.rdata.Rdata) -> str:
    canon_wire = rdata.to_digestable()
    canon = dns.rdata.from_wire(rdata.rdclass, rdata.rdtype, canon_wire, 0, len(canon_wire))
    return (
        f"{owner.canonicalize().to_text()} {dns.rdatatype.to_text(rdata.rdtype)} {canon.to_text()}"
    )


def _check_related(
    rrsets: list[dns.rrset.RRset], qname: dns.name.Name, qtype: dns.rdatatype.RdataType
) -> None:
    """Every non-RRSIG record must belong to the alias chain that starts at *qname*."""
    chain = {qname}
    changed = True
    while changed:  # fixpoint: each pass follows every alias record once
        changed = False
        for rrset in rrsets:
            for rd in rrset:
                reached: list[dns.name.Name] = []
                if rrset.rdtype == dns.rdatatype.CNAME and rrset.name in chain:
                    reached.append(rd.target)
                elif rrset.rdtype == dns.rdatatype.DNAME:
                    for n in list(chain):
                        if n.is_subdomain(rrset.name) and n != rrset.name:
                            try:
                                reached.append(n.relativize(rrset.name).derelativize(rd.target))
                            except dns.name.NameTooLong:
                                continue
                new = [n for n in reached if n not in chain]
                if new:
                    chain.update(new)
                    changed = True
                    if len(chain) > _MAX_CHAIN_NAMES:
                        raise CanonicalError("alias chain too long")
    for rrset in rrsets:
        if rrset.rdclass != dns.rdataclass.IN:
            raise CanonicalError("answer record of class other than IN")
        if rrset.rdtype == dns.rdatatype.DNAME:
            if any(n.is_subdomain(rrset.name) for n in chain):
                continue
            raise CanonicalError(f"unrelated DNAME record at {rrset.name} in answer")
        if rrset.name not in chain:
            raise CanonicalError(f"unrelated owner {rrset.name} in answer")
        if rrset.rdtype not in (qtype, dns.rdatatype.CNAME):
            raise CanonicalError(
                f"unexpected {dns.rdatatype.to_text(rrset.rdtype)} record in answer"
            )


def canonical_answer(
    response: dns.message.Message,
    qname: dns.name.Name | str,
    qtype: dns.rdatatype.RdataType | str,
) -> tuple[str, ...]:
    """The canonical answer of *response*: a sorted, de-duplicated tuple of strings.

    Exact format. For every resource record of the answer section whose type is not RRSIG, one string
    ``f"{owner} {type} {rdata}"`` (single ASCII spaces, no TTL, no class):

    * ``owner``: the owner name in RFC 4034 section 6.2 canonical form (ASCII letters lower-cased), in
      absolute presentation format with the trailing dot, as ``dns.name.Name.to_text()`` writes it
      (RFC 1035 escapes such as ``\\032``); e.g. ``www.demo.test.``;
    * ``type``: the type mnemonic of ``dns.rdatatype.to_text`` (``A``, ``AAAA``, ``CNAME``, or
      ``TYPE65534`` for a type without a mnemonic);
    * ``rdata``: the rdata in canonical wire form (``Rdata.to_digestable()``, which lower-cases the
      names embedded in the rdata types of RFC 4034 section 6.2) parsed back and written in
      presentation format by ``Rdata.to_text()`` with no origin, so names are absolute with a trailing
      dot (``192.0.2.10``, ``2001:db8::1``, ``www.demo.test.``, ``10 mx.demo.test.``,
      ``"v=spf1 -all"``).

    Examples: ``"www.demo.test. A 192.0.2.10"``, ``"alias.demo.test. CNAME www.demo.test."``.
    The CNAME/DNAME chain is included. Entries are de-duplicated and sorted by Python ``str`` order
    (Unicode code points; the strings are ASCII). The class is always IN.

    Not part of the form: TTLs (they differ between resolvers and over time), RRSIGs, the authority
    and additional sections, the header flags and the rcode (the vote digest adds the rcode itself).

    Raises :class:`CanonicalError` when the answer is not acceptable: more than 64 entries, an entry
    longer than 512 characters, a record of class other than IN, or a record unrelated to the question
    (an owner outside the alias chain from *qname*, or a type other than *qtype*, CNAME, DNAME and
    RRSIG), or an alias chain reaching more than 128 names (DNAME loops). Such a response is voted as
    ``error``.
    """
    name = parse_qname(qname)
    rdtype = parse_qtype(qtype)
    rrsets = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
    if sum(len(r) for r in rrsets) > _MAX_RAW_RECORDS:
        raise CanonicalError("too many records in answer")
    _check_related(rrsets, name, rdtype)
    entries: set[str] = set()
    for rrset in rrsets:
        for rd in rrset:
            try:
                entry = _entry(rrset.name, rd)
            except (dns.exception.DNSException, ValueError) as exc:
                raise CanonicalError(f"unrepresentable rdata: {type(exc).__name__}") from None
            if len(entry) > MAX_ANSWER_ENTRY_CHARS:
                raise CanonicalError(f"answer entry longer than {MAX_ANSWER_ENTRY_CHARS} chars")
            entries.add(entry)
            if len(entries) > MAX_ANSWER_ENTRIES:
                raise CanonicalError(f"more than {MAX_ANSWER_ENTRIES} answer entries")
    return tuple(sorted(entries))


def min_ttl(response: dns.message.Message) -> int:
    """Smallest TTL over all RRsets of the answer section (RRSIGs included), 0 when there are none.

    TTLs above 2**31 - 1 count as 0 (RFC 2181 section 8)."""
    ttls = [r.ttl if 0 <= r.ttl <= _MAX_TTL else 0 for r in response.answer]
    return min(ttls, default=0)


def ede_codes(response: dns.message.Message) -> tuple[int, ...]:
    """Extended DNS Error info codes (RFC 8914) of the response's OPT record: sorted, unique, at most
    8 (the smallest are kept)."""
    codes = {int(opt.code) for opt in response.options if isinstance(opt, dns.edns.EDEOption)}
    return tuple(sorted(codes)[:MAX_EDE_CODES])


def _short(text: str) -> str:
    clean = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return clean[:MAX_DETAIL_CHARS]


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one resolver said to one query, ready to become a ``ResolverVote``.

    ``answer`` and ``ttl`` are empty/0 unless ``status`` is ANSWER. ``rcode`` is the response's
    (extended) rcode, or :data:`NO_RCODE` (0) when no response was received. ``detail`` is a short
    human reason for a non-answer ("timeout after 800 ms", "REFUSED"), never secret material.
    """

    resolver_id: str
    transport: Transport
    status: VoteStatus
    rcode: int
    answer: tuple[str, ...]
    ttl: int
    ad: bool
    ede: tuple[int, ...]
    latency_ms: float
    detail: str
    dnssec: DnssecState = DnssecState.INDETERMINATE
    """The DNSSEC state the agent established for this response (see :mod:`cctf.agents.dnssec`)."""
    response: dns.message.Message | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    """The parsed response (answers and SERVFAILs of :func:`cctf.agents.dnsquery.query`), for the
    agent's DNSSEC validation; never put on the wire."""

    def with_latency(self, latency_ms: float) -> Observation:
        """This observation with another latency: ``dataclasses.replace`` without its cost (it runs
        ``__init__`` through keyword arguments; a memoised answer is reused thousands of times per
        round, see :mod:`cctf.agents.udpfast`)."""
        new = object.__new__(Observation)
        new.__dict__.update(self.__dict__)
        new.__dict__["latency_ms"] = latency_ms
        return new

    @classmethod
    def failure(
        cls,
        resolver_id: str,
        transport: Transport,
        status: VoteStatus,
        detail: str,
        latency_ms: float = 0.0,
    ) -> Observation:
        """An observation without any DNS response (timeout, transport or TLS failure)."""
        if status == VoteStatus.ANSWER:
            raise ValueError("a failure cannot have status answer")
        return cls(
            resolver_id=resolver_id,
            transport=transport,
            status=status,
            rcode=NO_RCODE,
            answer=(),
            ttl=0,
            ad=False,
            ede=(),
            latency_ms=max(0.0, latency_ms),
            detail=_short(detail),
        )


def _question_matches(
    response: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
) -> bool:
    if len(response.question) == 0:
        # As dnspython's is_response(): these rcodes may come with an empty question section.
        return response.rcode() in (
            dns.rcode.FORMERR,
            dns.rcode.SERVFAIL,
            dns.rcode.NOTIMP,
            dns.rcode.REFUSED,
        )
    if len(response.question) != 1:
        return False
    q = response.question[0]
    return q.name == qname and q.rdtype == qtype and q.rdclass == dns.rdataclass.IN


def observation_from_response(
    resolver_id: str,
    transport: Transport,
    qname: dns.name.Name | str,
    qtype: dns.rdatatype.RdataType | str,
    response: dns.message.Message,
    latency_ms: float,
) -> Observation:
    """Classify a parsed response to the query ``(qname, qtype, IN)``.

    NOERROR and NXDOMAIN give ANSWER (with the canonical answer, which may be empty), SERVFAIL gives
    SERVFAIL, and everything else gives ERROR: another rcode (REFUSED, FORMERR, NOTIMP, ...), a message
    without the QR flag or with an opcode other than QUERY, a question section that does not match
    (name compared case-insensitively), the TC flag, or an answer :func:`canonical_answer` refuses.
    Raises ``ValueError`` only for an invalid *qname*/*qtype* (a caller bug).
    """
    name = parse_qname(qname)
    rdtype = parse_qtype(qtype)
    rcode = int(response.rcode())
    ad = bool(response.flags & dns.flags.AD)
    ede = ede_codes(response)
    latency = max(0.0, float(latency_ms))

    def make(
        status: VoteStatus, detail: str, answer: tuple[str, ...] = (), ttl: int = 0
    ) -> Observation:
        return Observation(
            resolver_id=resolver_id,
            transport=transport,
            status=status,
            rcode=rcode,
            answer=answer,
            ttl=ttl,
            ad=ad,
            ede=ede,
            latency_ms=latency,
            detail=_short(detail),
            response=response if status in (VoteStatus.ANSWER, VoteStatus.SERVFAIL) else None,
        )

    if not response.flags & dns.flags.QR:
        return make(VoteStatus.ERROR, "not a response (QR flag clear)")
    if dns.opcode.from_flags(response.flags) != dns.opcode.QUERY:
        return make(VoteStatus.ERROR, "unexpected opcode")
    if not _question_matches(response, name, rdtype):
        return make(VoteStatus.ERROR, "response question does not match the query")
    if response.flags & dns.flags.TC:
        return make(VoteStatus.ERROR, "truncated response")
    if rcode == dns.rcode.SERVFAIL:
        return make(VoteStatus.SERVFAIL, "SERVFAIL")
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        try:
            text = dns.rcode.to_text(dns.rcode.Rcode(rcode))
        except ValueError:
            text = f"rcode {rcode}"
        return make(VoteStatus.ERROR, text)
    try:
        answer = canonical_answer(response, name, rdtype)
    except CanonicalError as exc:
        return make(VoteStatus.ERROR, f"bad answer: {exc}")
    return make(VoteStatus.ANSWER, "", answer, min_ttl(response))
