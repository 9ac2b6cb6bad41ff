"""cctf.agents.dnssec: own validation of real signed responses (the chaos server's pure responder on
zones signed by cctf.chaos.signing), every fault a reason, and the vote's state from resolver signals."""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.agents.canonical import Observation
from cctf.agents.dnssec import (
    DNSSEC_EDE_CODES,
    Fetch,
    NeedRecords,
    Reason,
    TrustAnchors,
    Validation,
    validate,
    vote_state,
)
from cctf.bus_schemas.messages import DnssecState, Transport, VoteStatus
from cctf.chaos.faults import Faults
from cctf.chaos.responder import ZoneResponder
from cctf.chaos.signing import (
    SignedZone,
    sign,
    signed_demo_zone,
    signed_parent_and_child,
    signed_parent_and_unsigned_child,
)
from cctf.chaos.zone import demo_zone
from cctf.errors import ConfigError

SIGNED = signed_demo_zone()
CHILD_ONLY = ZoneResponder(SIGNED.zone, signed=SIGNED)
PARENT, CHILD = signed_parent_and_child()
PARENT_R = ZoneResponder(PARENT.zone, signed=PARENT)
CHILD_R = ZoneResponder(CHILD.zone, signed=CHILD)
WWW = dns.name.from_text("www.demo.test.")
A = dns.rdatatype.A
NO_FAULTS = Faults()

Route = Callable[[dns.name.Name, dns.rdatatype.RdataType], tuple[ZoneResponder, Faults]]


def ask(r: ZoneResponder, faults: Faults, name: dns.name.Name, rdtype: int) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    wire = r.handle(query.to_wire(), faults, udp=False)
    assert wire is not None
    return dns.message.from_wire(wire)


def run(
    route: Route,
    anchors: TrustAnchors,
    name: str = "www.demo.test.",
    rdtype: str = "A",
    *,
    now_s: float | None = None,
    response: dns.message.Message | None = None,
) -> Validation:
    """Validate like the agent does: fetch what validate() asks for, through the same 'resolver'."""
    qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
    if response is None:
        response = ask(*route(qname, qtype), qname, qtype)
    fetched: dict[Fetch, dns.message.Message | None] = {}
    now = time.time() if now_s is None else now_s
    for _ in range(8):
        out = validate(qname, qtype, response, anchors, fetched, now)
        if isinstance(out, Validation):
            return out
        assert out.fetches and not set(out.fetches) & set(fetched)  # always progress
        for fetch in out.fetches:
            fetched[fetch] = ask(*route(*fetch), *fetch)
    raise AssertionError("validation did not end")


def single(faults: Faults = NO_FAULTS) -> Route:
    return lambda name, rdtype: (CHILD_ONLY, faults)


def chain(parent: Faults = NO_FAULTS, child: Faults = NO_FAULTS) -> Route:
    def route(name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> tuple[ZoneResponder, Faults]:
        if rdtype == dns.rdatatype.DS or name == PARENT.origin:
            return PARENT_R, parent
        return CHILD_R, child

    return route


def anchors_of(signed: SignedZone) -> TrustAnchors:
    return TrustAnchors.parse([signed.trust_anchor])


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("www.demo.test.", "A"),
        ("www.demo.test.", "AAAA"),
        ("nope.demo.test.", "A"),
        ("www.demo.test.", "MX"),
        ("demo.test.", "TXT"),
        ("big.demo.test.", "TXT"),
    ],
)
def test_signed_answers_are_secure(name: str, rdtype: str) -> None:
    assert run(single(), anchors_of(SIGNED), name, rdtype).state is DnssecState.SECURE
    assert run(chain(), anchors_of(PARENT), name, rdtype).state is DnssecState.SECURE


def test_a_dnskey_anchor_works_as_well_as_a_ds() -> None:
    anchors = TrustAnchors.parse([SIGNED.dnskey_anchor])
    assert run(single(), anchors).state is DnssecState.SECURE


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", Reason.BAD_SIGNATURE),
        ("expired", Reason.EXPIRED_RRSIG),
        ("no-rrsig", Reason.MISSING_RRSIG),
    ],
)
def test_zone_faults_are_bogus_with_their_reason(fault: str, reason: Reason) -> None:
    got = run(single(Faults(dnssec=fault)), anchors_of(SIGNED))
    assert (got.state, got.reason) == (DnssecState.BOGUS, reason)
    got = run(chain(child=Faults(dnssec=fault)), anchors_of(PARENT))
    assert (got.state, got.reason) == (DnssecState.BOGUS, reason)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("wrong-ds", Reason.DS_MISMATCH), ("missing-ds", Reason.MISSING_DS)],
)
def test_parent_ds_faults_are_bogus(fault: str, reason: Reason) -> None:
    got = run(chain(parent=Faults(dnssec=fault)), anchors_of(PARENT))
    assert (got.state, got.reason) == (DnssecState.BOGUS, reason)


def test_a_wrong_trust_anchor_is_bogus_and_no_anchor_is_indeterminate() -> None:
    other = signed_demo_zone()
    got = run(single(), anchors_of(other))
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.DS_MISMATCH)
    got = run(single(), TrustAnchors())
    assert (got.state, got.reason) == (DnssecState.INDETERMINATE, Reason.NO_TRUST_ANCHOR)
    # an anchor for another zone does not cover the name
    got = run(single(), TrustAnchors.parse(["example. 3600 IN DS " + SIGNED.ds[0].to_text()]))
    assert got.state is DnssecState.INDETERMINATE


def test_signatures_outside_their_window_are_bogus() -> None:
    late = time.time() + 40 * 86_400  # after the 30-day validity
    got = run(single(), anchors_of(SIGNED), now_s=late)
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.EXPIRED_RRSIG)
    early = time.time() - 2 * 86_400
    got = run(single(), anchors_of(SIGNED), now_s=early)
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.RRSIG_NOT_YET_VALID)


def test_a_poisoned_answer_is_bogus() -> None:
    got = run(single(Faults(poison="203.0.113.66")), anchors_of(SIGNED))
    assert got.state is DnssecState.BOGUS


def test_a_chain_record_that_cannot_be_fetched_is_bogus() -> None:
    response = ask(CHILD_ONLY, Faults(), WWW, A)
    anchors = anchors_of(SIGNED)
    first = validate(WWW, A, response, anchors, {}, time.time())
    assert isinstance(first, NeedRecords)
    got = validate(WWW, A, response, anchors, dict.fromkeys(first.fetches), time.time())
    assert isinstance(got, Validation)
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.CHAIN_UNAVAILABLE)


def test_a_denial_without_nsec_is_bogus() -> None:
    response = ask(CHILD_ONLY, Faults(), dns.name.from_text("nope.demo.test."), A)
    response.authority = [
        rr
        for rr in response.authority
        if rr.rdtype == dns.rdatatype.SOA or rr.covers == dns.rdatatype.SOA
    ]
    got = run(single(), anchors_of(SIGNED), "nope.demo.test.", response=response)
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.UNPROVEN_DENIAL)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_any_other_address_under_the_real_signature_is_bogus(address: int) -> None:
    response = ask(CHILD_ONLY, Faults(), WWW, A)
    real = response.answer[0]
    forged = dns.rdata.from_text(
        dns.rdataclass.IN, A, str(__import__("ipaddress").IPv4Address(address))
    )
    if forged in real:
        return
    response.answer[0] = dns.rrset.from_rdata_list(WWW, real.ttl, [forged])
    assert run(single(), anchors_of(SIGNED), response=response).state is DnssecState.BOGUS


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_flipped_signature_byte_is_bogus(data: st.DataObject) -> None:
    response = ask(CHILD_ONLY, Faults(), WWW, A)
    sigs = response.answer[1]
    rrsig = sigs[0]
    raw = bytearray(rrsig.signature)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    bad = rrsig.replace(signature=bytes(raw))
    response.answer[1] = dns.rrset.from_rdata_list(sigs.name, sigs.ttl, [bad])
    assert run(single(), anchors_of(SIGNED), response=response).state is DnssecState.BOGUS


@pytest.mark.parametrize(
    "line",
    ["", "demo.test.", "demo.test. 3600 IN A 192.0.2.1", "demo.test. IN DS nonsense", "x" * 5000],
)
def test_bad_trust_anchor_lines_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError, match=r"trust_anchors\[0\]"):
        TrustAnchors.parse([line])


def _obs(status: VoteStatus, *, ad: bool = False, ede: tuple[int, ...] = ()) -> Observation:
    return Observation(
        "r1",
        Transport.DOT,
        status,
        0 if status is VoteStatus.ANSWER else 2,
        (),
        0,
        ad,
        ede,
        1.0,
        "",
    )


def test_vote_state_from_resolver_signals() -> None:
    own_secure = Validation(DnssecState.SECURE, Reason.SECURE)
    own_bogus = Validation(DnssecState.BOGUS, Reason.BAD_SIGNATURE)
    answer_ad = _obs(VoteStatus.ANSWER, ad=True)
    answer = _obs(VoteStatus.ANSWER)
    servfail_ede = _obs(VoteStatus.SERVFAIL, ede=(7,))

    def state(
        obs: Observation,
        own: Validation | None,
        transport: Transport,
        address: str = "192.0.2.53",
        validating: bool = False,
    ) -> DnssecState:
        return vote_state(
            obs, own, transport=transport, address=address, validating=validating
        ).state

    # own validation decides whenever it has an anchor, whatever the resolver says
    assert state(answer, own_secure, Transport.UDP) is DnssecState.SECURE
    assert state(answer_ad, own_bogus, Transport.DOT) is DnssecState.BOGUS
    # AD / EDE count over authenticated transports only
    assert state(answer_ad, None, Transport.DOT) is DnssecState.SECURE
    assert state(answer_ad, None, Transport.DOH) is DnssecState.SECURE
    assert state(answer_ad, None, Transport.UDP) is DnssecState.INDETERMINATE
    assert state(answer_ad, None, Transport.TCP) is DnssecState.INDETERMINATE
    assert state(servfail_ede, None, Transport.DOQ) is DnssecState.BOGUS
    assert state(servfail_ede, None, Transport.UDP) is DnssecState.INDETERMINATE
    assert (
        state(_obs(VoteStatus.SERVFAIL, ede=(22,)), None, Transport.DOT)
        is DnssecState.INDETERMINATE
    )
    assert state(answer, None, Transport.DOT) is DnssecState.INDETERMINATE
    # a listed validating resolver: also on loopback over plain DNS, and no AD is insecure
    assert state(answer_ad, None, Transport.UDP, "127.0.0.1", True) is DnssecState.SECURE
    assert state(servfail_ede, None, Transport.UDP, "::1", True) is DnssecState.BOGUS
    assert state(answer, None, Transport.UDP, "127.0.0.1", True) is DnssecState.INSECURE
    assert state(answer_ad, None, Transport.UDP, "192.0.2.53", True) is DnssecState.INDETERMINATE
    assert state(_obs(VoteStatus.TIMEOUT), None, Transport.DOT) is DnssecState.INDETERMINATE
    assert frozenset({6, 7, 8, 9, 10, 11, 12}) == DNSSEC_EDE_CODES


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_responses_never_crash_and_are_never_secure_when_data_changed(
    data: st.DataObject,
) -> None:
    """Random byte edits of a signed response (and of the DNSKEY response it needs): validation
    always ends with a state (no exception), and an answer whose data or signatures changed is
    never secure."""
    anchors = anchors_of(SIGNED)
    good = ask(CHILD_ONLY, NO_FAULTS, WWW, A)
    keys = ask(CHILD_ONLY, NO_FAULTS, SIGNED.origin, dns.rdatatype.DNSKEY)
    target = data.draw(st.sampled_from(["answer", "dnskey"]))
    raw = bytearray((good if target == "answer" else keys).to_wire())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(12, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    try:
        mutated = dns.message.from_wire(bytes(raw))
    except Exception:
        return  # not a message: the agent would have classified it as an error
    response, dnskeys = (mutated, keys) if target == "answer" else (good, mutated)
    fetched: dict[Fetch, dns.message.Message | None] = {
        (SIGNED.origin, dns.rdatatype.DNSKEY): dnskeys
    }
    out = validate(WWW, A, response, anchors, fetched, time.time())
    assert isinstance(out, Validation | NeedRecords)
    if isinstance(out, Validation) and out.state is DnssecState.SECURE:
        # secure only if the signed data is still what was signed (TTLs are not signed)
        def signed_data(m: dns.message.Message) -> set[tuple[str, int, str]]:
            return {
                (rr.name.to_text(), rr.rdtype, rd.to_text())
                for rr in m.answer + m.authority
                if rr.rdtype != dns.rdatatype.RRSIG
                for rd in rr
            }

        assert signed_data(response) <= signed_data(good)


UNSIGNED_PARENT, UNSIGNED_CHILD = signed_parent_and_unsigned_child()
UNSIGNED_PARENT_R = ZoneResponder(UNSIGNED_PARENT.zone, signed=UNSIGNED_PARENT)
UNSIGNED_CHILD_R = ZoneResponder(UNSIGNED_CHILD)


def insecure_chain(parent: Faults = NO_FAULTS) -> Route:
    def route(name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> tuple[ZoneResponder, Faults]:
        if rdtype == dns.rdatatype.DS or name == UNSIGNED_PARENT.origin:
            return UNSIGNED_PARENT_R, parent
        return UNSIGNED_CHILD_R, NO_FAULTS

    return route


@pytest.mark.parametrize(("name", "rdtype"), [("www.demo.test.", "A"), ("nope.demo.test.", "A")])
def test_a_proven_unsigned_delegation_is_insecure(name: str, rdtype: str) -> None:
    got = run(insecure_chain(), anchors_of(UNSIGNED_PARENT), name, rdtype)
    assert (got.state, got.reason) == (DnssecState.INSECURE, Reason.INSECURE_DELEGATION)


@pytest.mark.parametrize("fault", ["no-rrsig", "expired"])
def test_an_insecure_proof_that_does_not_validate_is_bogus(fault: str) -> None:
    got = run(insecure_chain(Faults(dnssec=fault)), anchors_of(UNSIGNED_PARENT))
    assert got.state is DnssecState.BOGUS


def test_stripped_signatures_of_a_signed_zone_are_not_a_downgrade_to_insecure() -> None:
    # the parent has a DS for the child: no NSEC can say "unsigned", stripping stays bogus
    got = run(chain(child=Faults(dnssec="no-rrsig")), anchors_of(PARENT))
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.MISSING_RRSIG)
    got = run(single(Faults(dnssec="no-rrsig")), anchors_of(SIGNED))
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.MISSING_RRSIG)


def test_an_nxdomain_under_an_existing_wildcard_is_not_proven() -> None:
    """RFC 4035 §5.4: the chaos server does not expand wildcards, so it answers NXDOMAIN for a name
    that "*.demo.test." would synthesise; the NSEC owned by the wildcard shows it exists: bogus.
    Without a wildcard the same kind of NXDOMAIN is secure (the wildcard NSEC covers "*")."""
    zone = demo_zone()
    zone.replace_rdataset("*.demo.test.", dns.rdataset.from_text("IN", "A", 300, "192.0.2.77"))
    signed = sign(zone)
    responder = ZoneResponder(signed.zone, signed=signed)
    got = run(lambda n, t: (responder, NO_FAULTS), anchors_of(signed), "nothere.demo.test.")
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.UNPROVEN_DENIAL)
    got = run(single(), anchors_of(SIGNED), "nothere.demo.test.")
    assert got.state is DnssecState.SECURE
    # and an NXDOMAIN whose wildcard proof (here: the apex NSEC, demo.test. -> api) was dropped
    response = ask(CHILD_ONLY, NO_FAULTS, dns.name.from_text("nothere.demo.test."), A)
    apex_nsec = (SIGNED.origin, dns.rdatatype.NSEC)
    before = len(response.authority)
    response.authority = [
        rr
        for rr in response.authority
        if (rr.name, rr.covers if rr.rdtype == dns.rdatatype.RRSIG else rr.rdtype) != apex_nsec
    ]
    assert len(response.authority) == before - 2  # the NSEC and its RRSIG
    got = run(single(), anchors_of(SIGNED), "nothere.demo.test.", response=response)
    assert (got.state, got.reason) == (DnssecState.BOGUS, Reason.UNPROVEN_DENIAL)
