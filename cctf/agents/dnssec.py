"""DNSSEC validation of one response up to a configured trust anchor, and the vote's DNSSEC state
(pure: no I/O; time is passed in).

**Own validation.** :func:`validate` checks the RRSIGs of a response's answer RRsets (or, for a
negative answer, of its SOA and NSEC records) with ``dns.dnssec`` against the zone's DNSKEY RRset,
which must itself be signed by a key that a DS of the parent zone (or the trust anchor) names, up to a
trust anchor of :class:`TrustAnchors` (DS or DNSKEY records per zone, from the agent file). It needs
the DNSKEY and DS responses of the zones on the way; it does not fetch them: it returns
:class:`NeedRecords` naming what is missing, the caller (:mod:`cctf.agents.dnssecfetch`) asks the
same resolver for it and calls again. States (RFC 4035 §4.3):

* ``secure`` — every signature on the way verifies, within its validity window, up to an anchor;
* ``bogus`` — a trust anchor covers the name and any step fails (the reason code says which:
  :class:`Reason`); a chain record that could not be fetched is ``chain_unavailable`` (the agent's
  adapter then reports the query as a timeout: "could not check" never counts as an answer);
* ``insecure`` — the data is unsigned and a zone cut between the anchor and the name is proven to
  be an unsigned delegation: the DS query for it is answered without DS and with the parent's NSEC
  at that name (NS bit set, neither DS nor SOA), that NSEC validated up to the anchor (RFC 4035
  §5.2; ``insecure_delegation``). Without such a proof unsigned data is ``bogus`` (stripping
  signatures is not a downgrade), as is a signed zone whose parent publishes no DS (``missing_ds``);
* ``indeterminate`` — no trust anchor covers the name (own validation says nothing).

Negative answers: NODATA needs the NSEC at the name (without the type or CNAME in its bitmap) or an
NSEC covering an empty non-terminal; NXDOMAIN needs an NSEC covering the name and one covering the
wildcard at the closest encloser, which no NSEC may own (RFC 4035 §5.4). Wildcard-synthesised
positive answers and NSEC3 are not supported (``bogus``: ``unproven_denial`` / ``bad_signature``;
no NSEC3 insecure-delegation proof either).

**Resolver signals.** :func:`vote_state` combines own validation with the AD bit and Extended DNS Error
codes of the resolver: own validation decides whenever a trust anchor covers the name; otherwise AD
from a resolver reached over an authenticated transport (DoT, DoH, DoQ) — or a resolver the agent file
lists as validating, also over plain DNS to a loopback address (RFC 4035 §4.9.3) — gives ``secure``; a
SERVFAIL with a DNSSEC EDE code (6–12, RFC 8914) from such a resolver gives ``bogus``; a listed
validating resolver answering without AD gives ``insecure``; anything else ``indeterminate``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.NSEC
import dns.rrset
import dns.tokenizer

from cctf.agents.canonical import Observation
from cctf.agents.spec import TLS_TRANSPORTS
from cctf.agents.trustanchors import MAX_ANCHORS, TrustAnchors
from cctf.bus_schemas.messages import DnssecState, Transport, VoteStatus

__all__ = [
    "DNSSEC_EDE_CODES",
    "MAX_ANCHORS",
    "MAX_CHAIN_DEPTH",
    "Fetch",
    "NeedRecords",
    "Reason",
    "TrustAnchors",
    "Validation",
    "validate",
    "vote_state",
]

#: RFC 8914 codes that mean a DNSSEC validation failure (bogus): 6 DNSSEC Bogus, 7 Signature
#: Expired, 8 Signature Not Yet Valid, 9 DNSKEY Missing, 10 RRSIGs Missing, 11 No Zone Key Bit Set,
#: 12 NSEC Missing.
DNSSEC_EDE_CODES: Final = frozenset(range(6, 13))
#: Zone cuts followed from the signer up to an anchor.
MAX_CHAIN_DEPTH: Final = 8

_RRSIG = dns.rdatatype.RRSIG
_DNSKEY = dns.rdatatype.DNSKEY
_DS = dns.rdatatype.DS
_NSEC = dns.rdatatype.NSEC

#: A record set the validator needs: ``(owner, type)`` (DNSKEY of a zone, DS of a zone).
Fetch = tuple[dns.name.Name, dns.rdatatype.RdataType]


class Reason(enum.StrEnum):
    """Why a validation ended in its state (a reason code; the detail text says more)."""

    SECURE = "secure"
    NO_TRUST_ANCHOR = "no_trust_anchor"
    NOT_AN_ANSWER = "not_an_answer"
    MISSING_RRSIG = "missing_rrsig"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED_RRSIG = "expired_rrsig"
    RRSIG_NOT_YET_VALID = "rrsig_not_yet_valid"
    MISSING_DS = "missing_ds"
    DS_MISMATCH = "ds_mismatch"
    NO_DNSKEY = "no_dnskey"
    WRONG_SIGNER = "wrong_signer"
    UNPROVEN_DENIAL = "unproven_denial"
    CHAIN_UNAVAILABLE = "chain_unavailable"
    CHAIN_TOO_LONG = "chain_too_long"
    VALIDATION_ERROR = "validation_error"
    INSECURE_DELEGATION = "insecure_delegation"
    RESOLVER_AD = "resolver_ad"
    RESOLVER_EDE = "resolver_ede"
    RESOLVER_NO_AD = "resolver_no_ad"
    UNTRUSTED_RESOLVER = "untrusted_resolver"


@dataclasses.dataclass(frozen=True, slots=True)
class Validation:
    state: DnssecState
    reason: Reason
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class NeedRecords:
    """:func:`validate` needs these responses (from the same resolver) before it can decide."""

    fetches: tuple[Fetch, ...]


def _bogus(reason: Reason, detail: str) -> Validation:
    return Validation(DnssecState.BOGUS, reason, detail[:200])


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _find(
    section: list[dns.rrset.RRset],
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    covers: dns.rdatatype.RdataType = dns.rdatatype.NONE,
) -> dns.rrset.RRset | None:
    for rrset in section:
        if (
            rrset.name == name
            and rrset.rdtype == rdtype
            and rrset.covers == covers
            and rrset.rdclass == dns.rdataclass.IN
        ):
            return rrset
    return None


def _check_sig(
    rrset: dns.rrset.RRset,
    sigs: dns.rrset.RRset,
    signer: dns.name.Name,
    keys: dns.rdataset.Rdataset | dns.rrset.RRset,
    now_s: float,
) -> Validation | None:
    """``None`` when a signature by ``signer`` over ``rrset`` verifies with ``keys`` at ``now_s``,
    else the bogus reason (expired / not yet valid are told apart from a bad signature)."""
    by_signer = [s for s in sigs if s.signer == signer]
    if not by_signer:
        return _bogus(Reason.WRONG_SIGNER, f"no RRSIG by {signer} over {rrset.name} {rrset.rdtype}")
    current = [s for s in by_signer if s.inception <= now_s <= s.expiration]
    what = f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
    if not current:
        if all(s.expiration < now_s for s in by_signer):
            return _bogus(Reason.EXPIRED_RRSIG, f"every RRSIG over {what} has expired")
        return _bogus(Reason.RRSIG_NOT_YET_VALID, f"no RRSIG over {what} is valid yet")
    sigset = dns.rrset.from_rdata_list(sigs.name, sigs.ttl, current)
    try:
        dns.dnssec.validate(rrset, sigset, {signer: keys}, now=now_s)
    except dns.exception.ValidationFailure as exc:
        return _bogus(Reason.BAD_SIGNATURE, f"{what}: {exc}")
    except Exception as exc:  # an unsupported algorithm or a malformed key from the network
        return _bogus(Reason.BAD_SIGNATURE, f"{what}: {type(exc).__name__}")
    return None


class _Chain:
    """One validation's walk up the zone cuts (memoised per zone)."""

    def __init__(
        self,
        anchors: TrustAnchors,
        anchor: dns.name.Name,
        fetched: Mapping[Fetch, dns.message.Message | None],
        now_s: float,
    ) -> None:
        self.anchors = anchors
        self.anchor = anchor
        self.fetched = fetched
        self.now = now_s
        self.keys: dict[dns.name.Name, dns.rrset.RRset | Validation | NeedRecords] = {}

    def zone_keys(
        self, zone: dns.name.Name, depth: int = 0
    ) -> dns.rrset.RRset | Validation | NeedRecords:
        """The trusted DNSKEY RRset of ``zone``, or why there is none."""
        if zone not in self.keys:
            self.keys[zone] = self._zone_keys(zone, depth)
        return self.keys[zone]

    def _zone_keys(
        self, zone: dns.name.Name, depth: int
    ) -> dns.rrset.RRset | Validation | NeedRecords:
        if depth > MAX_CHAIN_DEPTH:
            return _bogus(Reason.CHAIN_TOO_LONG, f"more than {MAX_CHAIN_DEPTH} zone cuts")
        if not zone.is_subdomain(self.anchor):
            return _bogus(Reason.WRONG_SIGNER, f"signer {zone} is outside anchor {self.anchor}")
        need: list[Fetch] = []
        if (zone, _DNSKEY) not in self.fetched:
            need.append((zone, _DNSKEY))
        if zone != self.anchor and (zone, _DS) not in self.fetched:
            need.append((zone, _DS))
        if need:
            return NeedRecords(tuple(need))
        msg = self.fetched[(zone, _DNSKEY)]
        if msg is None:
            return _bogus(
                Reason.CHAIN_UNAVAILABLE, f"the DNSKEY RRset of {zone} could not be fetched"
            )
        dnskeys = _find(msg.answer, zone, _DNSKEY)
        if dnskeys is None or len(dnskeys) == 0:
            return _bogus(Reason.NO_DNSKEY, f"no DNSKEY RRset for {zone}")
        key_sigs = _find(msg.answer, zone, _RRSIG, _DNSKEY)
        if key_sigs is None:
            return _bogus(Reason.MISSING_RRSIG, f"the DNSKEY RRset of {zone} is not signed")
        if zone == self.anchor:
            sep = self._anchored(zone, dnskeys)
        else:
            ds_or_reason = self._parent_ds(zone, depth)
            if not isinstance(ds_or_reason, dns.rrset.RRset):
                return ds_or_reason
            sep = [k for k in dnskeys if any(_ds_matches(zone, k, ds) for ds in ds_or_reason)]
        if not sep:
            return _bogus(Reason.DS_MISMATCH, f"no DNSKEY of {zone} matches its DS / trust anchor")
        sep_set = dns.rrset.from_rdata_list(zone, dnskeys.ttl, sep)
        failed = _check_sig(dnskeys, key_sigs, zone, sep_set, self.now)
        return failed if failed is not None else dnskeys

    def _anchored(
        self, zone: dns.name.Name, dnskeys: dns.rrset.RRset
    ) -> list[dns.rdtypes.ANY.DNSKEY.DNSKEY]:
        trusted = set(self.anchors.dnskeys.get(zone, ()))
        out = [k for k in dnskeys if k in trusted]
        for ds in self.anchors.ds.get(zone, ()):
            out += [k for k in dnskeys if _ds_matches(zone, k, ds) and k not in out]
        return out

    def _parent_ds(
        self, zone: dns.name.Name, depth: int
    ) -> dns.rrset.RRset | Validation | NeedRecords:
        msg = self.fetched[(zone, _DS)]
        if msg is None:
            return _bogus(Reason.CHAIN_UNAVAILABLE, f"the DS RRset of {zone} could not be fetched")
        ds = _find(msg.answer, zone, _DS)
        if ds is None or len(ds) == 0:
            return _bogus(
                Reason.MISSING_DS, f"no DS for {zone} (insecure delegations are not evaluated)"
            )
        sigs = _find(msg.answer, zone, _RRSIG, _DS)
        if sigs is None or len(sigs) == 0:
            return _bogus(Reason.MISSING_RRSIG, f"the DS RRset of {zone} is not signed")
        signer = sigs[0].signer
        if not (zone.is_subdomain(signer) and zone != signer):
            return _bogus(Reason.WRONG_SIGNER, f"the DS of {zone} is signed by {signer}")
        keys = self.zone_keys(signer, depth + 1)
        if not isinstance(keys, dns.rrset.RRset):
            return keys
        failed = _check_sig(ds, sigs, signer, keys, self.now)
        return failed if failed is not None else ds

    def rrset(
        self, rrset: dns.rrset.RRset, section: list[dns.rrset.RRset]
    ) -> Validation | NeedRecords | None:
        """``None`` when ``rrset`` (found in ``section``) verifies up to the anchor."""
        sigs = _find(section, rrset.name, _RRSIG, rrset.rdtype)
        what = f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
        if sigs is None or len(sigs) == 0:
            return _bogus(Reason.MISSING_RRSIG, f"no RRSIG over {what}")
        signers = {s.signer for s in sigs if rrset.name.is_subdomain(s.signer)}
        signer = next((s for s in sorted(signers, key=len, reverse=True)), None)
        if signer is None:
            return _bogus(Reason.WRONG_SIGNER, f"the RRSIG over {what} names a foreign signer")
        keys = self.zone_keys(signer)
        if not isinstance(keys, dns.rrset.RRset):
            return keys
        return _check_sig(rrset, sigs, signer, keys, self.now)

    def insecure(self, name: dns.name.Name) -> Validation | NeedRecords | None:
        """An ``insecure`` result when a zone cut between the anchor and ``name`` is proven
        unsigned: the DS query for it is answered with no DS and the parent's NSEC at that name,
        validated up to the anchor, with the NS bit and neither DS nor SOA (RFC 4035 §5.2). ``None``
        when there is no such proof (the unsigned data then stays bogus)."""
        cands: list[dns.name.Name] = []
        n = name
        while n != self.anchor and n.is_subdomain(self.anchor):
            cands.append(n)
            n = n.parent()
        if not cands or len(cands) > MAX_CHAIN_DEPTH:
            return None
        cands.reverse()  # from the anchor down
        need = tuple((c, _DS) for c in cands if (c, _DS) not in self.fetched)
        if need:
            return NeedRecords(need)
        for cut in cands:
            msg = self.fetched[(cut, _DS)]
            if msg is None:
                return _bogus(
                    Reason.CHAIN_UNAVAILABLE, f"the DS RRset of {cut} could not be fetched"
                )
            if _find(msg.answer, cut, _DS) is not None:
                continue  # a signed delegation: look further down
            nsec = _find(msg.authority, cut, _NSEC)
            if nsec is None or len(nsec) != 1:
                continue
            rd = nsec[0]
            assert isinstance(rd, dns.rdtypes.ANY.NSEC.NSEC)
            types = {t for window, bitmap in rd.windows for t in _types(window, bitmap)}
            if dns.rdatatype.NS not in types or _DS in types or dns.rdatatype.SOA in types:
                continue
            proof = self.rrset(nsec, msg.authority)
            if isinstance(proof, NeedRecords):
                return proof
            if proof is not None:
                return None  # a forged or broken proof proves nothing
            return Validation(
                DnssecState.INSECURE, Reason.INSECURE_DELEGATION, f"{cut} is delegated unsigned"
            )
        return None


def _ds_matches(zone: dns.name.Name, key: dns.rdata.Rdata, ds: dns.rdtypes.ANY.DS.DS) -> bool:
    if not isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY) or key.flags & 0x0100 == 0:
        return False  # not a zone key
    try:
        return bool(dns.dnssec.make_ds(zone, key, ds.digest_type) == ds)
    except Exception:  # an unsupported digest type
        return False


def _covers(owner: dns.name.Name, nxt: dns.name.Name, name: dns.name.Name) -> bool:
    """Whether the NSEC ``owner`` -> ``nxt`` covers ``name`` (canonical order; the last NSEC of the
    chain points back to the apex)."""
    return bool(owner < name and (name < nxt or nxt <= owner))


def _nxdomain_proven(name: dns.name.Name, nsecs: list[tuple[dns.name.Name, dns.name.Name]]) -> bool:
    """RFC 4035 §5.4: an NSEC covers ``name``, and an NSEC covers the wildcard at the closest
    encloser (which no NSEC may own: the wildcard would exist and synthesise the name)."""
    covering = next(((o, n) for o, n in nsecs if _covers(o, n, name)), None)
    if covering is None or len(name) < 2:
        return False
    encloser = name.parent()
    while len(encloser) > 1 and not any(x.is_subdomain(encloser) for x in covering):
        encloser = encloser.parent()
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if any(o == wildcard for o, _ in nsecs):
        return False
    return any(_covers(o, n, wildcard) for o, n in nsecs)


def _denial_proven(
    name: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    nxdomain: bool,
    nsecs: list[dns.rrset.RRset],
) -> bool:
    pairs: list[tuple[dns.name.Name, dns.name.Name]] = []
    for rrset in nsecs:
        for rd in rrset:
            assert isinstance(rd, dns.rdtypes.ANY.NSEC.NSEC)
            pairs.append((rrset.name, rd.next))
            if nxdomain:
                continue
            types = {t for window, bitmap in rd.windows for t in _types(window, bitmap)}
            owner, nxt = rrset.name, rd.next
            if owner == name:
                if qtype not in types and dns.rdatatype.CNAME not in types:
                    return True
            elif _covers(owner, nxt, name) and nxt.is_subdomain(name):  # an empty non-terminal
                return True
    return nxdomain and _nxdomain_proven(name, pairs)


def _types(window: int, bitmap: bytes) -> Iterable[int]:
    for i, byte in enumerate(bitmap):
        for bit in range(8):
            if byte & (0x80 >> bit):
                yield window * 256 + i * 8 + bit


def validate(
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    response: dns.message.Message,
    anchors: TrustAnchors,
    fetched: Mapping[Fetch, dns.message.Message | None],
    now_s: float,
) -> Validation | NeedRecords:
    """Validate ``response`` (to ``qname``/``qtype``, NOERROR or NXDOMAIN) against ``anchors``.

    ``fetched`` maps each record set already asked for to its response (``None``: it could not be
    fetched). Returns the :class:`Validation`, or :class:`NeedRecords` to fetch and call again.
    """
    anchor = anchors.covering(qname)
    if anchor is None:
        return Validation(DnssecState.INDETERMINATE, Reason.NO_TRUST_ANCHOR)
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or response.flags & dns.flags.TC:
        return Validation(DnssecState.INDETERMINATE, Reason.NOT_AN_ANSWER)
    chain = _Chain(anchors, anchor, fetched, now_s)
    data = [rr for rr in response.answer if rr.rdtype != _RRSIG]
    needs: list[Fetch] = []
    insecure: list[Validation] = []

    def check(rrset: dns.rrset.RRset, section: list[dns.rrset.RRset]) -> Validation | None:
        """Add what ``rrset`` needs, or note it is provably unsigned; a failure to return."""
        result = chain.rrset(rrset, section)
        if isinstance(result, Validation) and result.reason is Reason.MISSING_RRSIG:
            proof = chain.insecure(rrset.name)
            result = result if proof is None else proof
        if isinstance(result, NeedRecords):
            needs.extend(f for f in result.fetches if f not in needs)
        elif result is not None and result.state is DnssecState.INSECURE:
            insecure.append(result)
        elif result is not None:
            return result
        return None

    for rrset in data:
        if not rrset.name.is_subdomain(anchor):
            return _bogus(Reason.WRONG_SIGNER, f"{rrset.name} is outside anchor {anchor}")
        failed = check(rrset, response.answer)
        if failed is not None:
            return failed
    last = data[-1] if data else None
    denied = None
    if last is None:
        denied = qname
    elif last.rdtype == dns.rdatatype.CNAME and qtype != dns.rdatatype.CNAME:
        denied = last[0].target
    if denied is not None and denied.is_subdomain(anchor):
        nsecs = [rr for rr in response.authority if rr.rdtype == _NSEC]
        before = len(insecure)
        for rrset in [rr for rr in response.authority if rr.rdtype in (_NSEC, dns.rdatatype.SOA)]:
            failed = check(rrset, response.authority)
            if failed is not None:
                return failed
        unsigned = len(insecure) > before  # the denial comes from a provably unsigned zone
        if (
            not needs
            and not unsigned
            and not _denial_proven(denied, qtype, rcode == dns.rcode.NXDOMAIN, nsecs)
        ):
            return _bogus(
                Reason.UNPROVEN_DENIAL, f"no NSEC proves that {denied} {qtype!s} is absent"
            )
    if needs:
        return NeedRecords(tuple(needs))
    if insecure:
        return insecure[0]
    return Validation(DnssecState.SECURE, Reason.SECURE)


# --------------------------------------------------------------------------------------------------
# the vote's state
# --------------------------------------------------------------------------------------------------


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def vote_state(
    obs: Observation,
    own: Validation | None,
    *,
    transport: Transport,
    address: str,
    validating: bool,
) -> Validation:
    """The DNSSEC state of one resolver's observation (see the module docstring).

    ``own`` is :func:`validate`'s result when a trust anchor covers the name and the resolver
    answered (``None`` otherwise); ``validating`` says the agent file lists this resolver as a
    validating resolver."""
    if own is not None and own.state is not DnssecState.INDETERMINATE:
        return own
    trusted = transport in TLS_TRANSPORTS or (validating and _loopback(address))
    if not trusted:
        return Validation(DnssecState.INDETERMINATE, Reason.UNTRUSTED_RESOLVER)
    if obs.status is VoteStatus.SERVFAIL and DNSSEC_EDE_CODES.intersection(obs.ede):
        codes = ",".join(str(c) for c in obs.ede if c in DNSSEC_EDE_CODES)
        return _bogus(Reason.RESOLVER_EDE, f"SERVFAIL with EDE {codes}")
    if obs.status is VoteStatus.ANSWER:
        if obs.ad:
            return Validation(DnssecState.SECURE, Reason.RESOLVER_AD)
        if validating:
            return Validation(DnssecState.INSECURE, Reason.RESOLVER_NO_AD)
    return Validation(DnssecState.INDETERMINATE, Reason.RESOLVER_NO_AD)
