"""The chaos DNS server serving a dnspython-signed zone over real sockets, with its DNSSEC faults
switched through the control channel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest
import pytest_asyncio

from cctf.agents.dnssec import Fetch, TrustAnchors, Validation, validate
from cctf.bus_schemas.messages import DnssecState
from cctf.chaos.control import ChaosControlClient
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import DNSSEC_FAULTS, FaultError, Faults
from cctf.chaos.signing import SignedZone, signed_demo_zone

HOST = "127.0.0.1"


@pytest_asyncio.fixture(name="signed")
async def signed_fixture() -> AsyncIterator[tuple[FaultyDnsServer, SignedZone]]:
    zone = signed_demo_zone()
    srv = FaultyDnsServer(zone.zone, signed=zone, control=True, tcp_idle_timeout=0.5)
    await srv.start()
    try:
        yield srv, zone
    finally:
        await srv.stop()


async def _ask(
    srv: FaultyDnsServer, name: str | dns.name.Name, rdtype: int | str, *, do: bool = True
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=do)
    return await dns.asyncquery.tcp(query, HOST, port=srv.port, timeout=2.0)


async def _validate(
    srv: FaultyDnsServer, zone: SignedZone, name: str = "www.demo.test."
) -> Validation:
    qname = dns.name.from_text(name)
    response = await _ask(srv, qname, "A")
    anchors = TrustAnchors.parse([zone.trust_anchor])
    fetched: dict[Fetch, dns.message.Message | None] = {}
    for _ in range(4):
        out = validate(qname, dns.rdatatype.A, response, anchors, fetched, time.time())
        if isinstance(out, Validation):
            return out
        for owner, rdtype in out.fetches:
            fetched[(owner, rdtype)] = await _ask(srv, owner, rdtype)
    raise AssertionError("no end")


@pytest.mark.asyncio
async def test_signatures_only_with_the_do_bit(signed: tuple[FaultyDnsServer, SignedZone]) -> None:
    srv, zone = signed
    plain = await _ask(srv, "www.demo.test.", "A", do=False)
    assert [rr.rdtype for rr in plain.answer] == [dns.rdatatype.A]
    secured = await _ask(srv, "www.demo.test.", "A")
    assert [rr.rdtype for rr in secured.answer] == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    keys = await _ask(srv, "demo.test.", "DNSKEY")
    dnskeys = keys.find_rrset(keys.answer, zone.origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    dns.dnssec.validate(secured.answer[0], secured.answer[1], {zone.origin: dnskeys})
    assert (await _validate(srv, zone)).state is DnssecState.SECURE


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["tampered", "expired", "no-rrsig"])
async def test_faults_through_the_control_channel(
    signed: tuple[FaultyDnsServer, SignedZone], fault: str
) -> None:
    srv, zone = signed
    client = ChaosControlClient(HOST, srv.control_port, srv.control_token)
    assert (await client.set(Faults(dnssec=fault))).dnssec == fault
    got = await _validate(srv, zone)
    assert got.state is DnssecState.BOGUS, got
    stats = await client.stats()
    assert stats["stats"]["served"].get(f"dnssec-{fault}", 0) >= 1
    await client.clear()
    assert (await _validate(srv, zone)).state is DnssecState.SECURE


def test_dnssec_fault_values_are_checked() -> None:
    assert set(DNSSEC_FAULTS) == {"tampered", "expired", "no-rrsig", "wrong-ds", "missing-ds"}
    with pytest.raises(FaultError, match="dnssec must be one of"):
        Faults(dnssec="bogus")
    with pytest.raises(FaultError, match="dnssec must be one of"):
        Faults.from_dict({"dnssec": 1})
    assert Faults.from_dict({"dnssec": "expired", "ttl": 5}).describe() == "ttl=5,dnssec=expired"
