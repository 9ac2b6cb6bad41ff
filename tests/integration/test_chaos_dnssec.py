"""The chaos DNS server serving a dnspython-signed zone over real sockets, with its DNSSEC faults
switched through the control channel."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest
import pytest_asyncio

from cctf.agents.dnsquery import query
from cctf.agents.dnssec import Fetch, TrustAnchors, Validation, validate
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.spec import ResolverSpec
from cctf.bus_schemas.messages import DnssecState, Transport, VoteStatus
from cctf.chaos.control import ChaosControlClient, HostPort, read_token_file
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


async def test_cli_serve_sign_prints_the_trust_anchor(tmp_path: Path) -> None:
    """``cctf chaos serve --sign --dnssec expired``: the printed DS anchor validates the served
    zone once the fault is cleared over the control channel."""
    token_file = tmp_path / "serve.token"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cctf", "chaos", "serve", "--sign", "--dnssec", "expired",
        "--token-file", str(token_file),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines: dict[str, str] = {}
        while "faults" not in lines:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "serve exited early"
            key, _, value = line.strip().partition(" ")
            lines[key] = value
        assert lines["faults"] == "dnssec=expired"
        anchor = lines["trust-anchor"]
        assert anchor.startswith("demo.test. 3600 IN DS ")
        port = HostPort.parse(lines["dns"].split()[0]).port
        control = HostPort.parse(lines["control"]).port
        zone_anchor = TrustAnchors.parse([anchor])
        assert (await _validate_remote(port, zone_anchor)).state is DnssecState.BOGUS
        await ChaosControlClient(HOST, control, read_token_file(token_file)).clear()
        assert (await _validate_remote(port, zone_anchor)).state is DnssecState.SECURE
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0


async def _validate_remote(port: int, anchors: TrustAnchors) -> Validation:
    qname = dns.name.from_text("www.demo.test.")
    query = dns.message.make_query(qname, "A", want_dnssec=True)
    response = await dns.asyncquery.tcp(query, HOST, port=port, timeout=2.0)
    fetched: dict[Fetch, dns.message.Message | None] = {}
    for _ in range(4):
        out = validate(qname, dns.rdatatype.A, response, anchors, fetched, time.time())
        if isinstance(out, Validation):
            return out
        for owner, rdtype in out.fetches:
            q = dns.message.make_query(owner, rdtype, want_dnssec=True)
            fetched[(owner, rdtype)] = await dns.asyncquery.tcp(q, HOST, port=port, timeout=2)
    raise AssertionError("no end")


async def test_a_chain_not_fetched_in_time_is_a_timeout_not_an_answer(
    signed: tuple[FaultyDnsServer, SignedZone],
) -> None:
    srv, zone = signed
    spec = ResolverSpec("r1", HOST, srv.port, Transport.UDP)
    validator = ChainValidator(TrustAnchors.parse([zone.trust_anchor]))
    qname = dns.name.from_text("www.demo.test.")
    obs = await query(spec, qname, "A", deadline_s=2.0)
    assert obs.status is VoteStatus.ANSWER and obs.response is not None
    loop = asyncio.get_running_loop()
    late = await validator.annotate(spec, qname, dns.rdatatype.A, obs, loop.time())
    assert (late.status, late.dnssec, late.answer) == (
        VoteStatus.TIMEOUT,
        DnssecState.INDETERMINATE,
        (),
    )
    assert "dnssec chain not fetched in time" in late.detail
    on_time = await validator.annotate(spec, qname, dns.rdatatype.A, obs, loop.time() + 2.0)
    assert (on_time.status, on_time.dnssec) == (VoteStatus.ANSWER, DnssecState.SECURE)
