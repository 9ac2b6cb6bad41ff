"""The fault-injecting DNS server: real sockets on 127.0.0.1, queried with dnspython."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from chaosclient import FORGED, HOST, addresses, server_fixture, tcp, udp  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import FaultError, Faults
from cctf.chaos.responder import ZoneResponder
from cctf.chaos.zone import DEMO_NAMES, demo_zone, load_zone_file

FORGED6 = "2001:db8:bad::66"


# -- zone -------------------------------------------------------------------------------------


def test_demo_zone_shape() -> None:
    zone = demo_zone()
    assert len(DEMO_NAMES) >= 8
    assert all(name.endswith(".demo.test.") for name in DEMO_NAMES)
    for name in DEMO_NAMES:
        assert zone.get_rdataset(name, "A") is not None, name
    assert zone.get_rdataset("demo.test.", "SOA") is not None
    assert zone.get_rdataset("demo.test.", "NS") is not None
    assert sum(zone.get_rdataset(n, "AAAA") is not None for n in DEMO_NAMES) >= 3
    other = demo_zone("other.example.")
    assert other.get_rdataset("www.other.example.", "A") is not None


def test_load_zone_file(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text(
        "$TTL 60\n@ IN SOA ns hostmaster 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.1\n"
        "host IN A 192.0.2.2\n"
    )
    zone = load_zone_file(path, "file.test.")
    assert zone.get_rdataset("host.file.test.", "A") is not None
    bad = tmp_path / "bad.zone"
    bad.write_text("@ IN A not-an-address\n")
    with pytest.raises(ValueError, match="invalid zone file"):
        load_zone_file(bad, "file.test.")
    with pytest.raises(ValueError, match="cannot read zone file"):
        load_zone_file(tmp_path / "missing.zone", "file.test.")


# -- normal answers ---------------------------------------------------------------------------


async def test_answers_every_demo_name(server: FaultyDnsServer) -> None:
    zone = demo_zone()
    for name in DEMO_NAMES:
        response = await udp(server, name, "A")
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        expected = sorted(rd.to_text() for rd in zone.get_rdataset(name, "A"))
        assert addresses(response) == expected
    response = await udp(server, "www.demo.test.", "AAAA")
    assert addresses(response) == ["2001:db8::10"]


async def test_tcp_on_the_same_port(server: FaultyDnsServer) -> None:
    response = await tcp(server, "api.demo.test.", "A")
    assert response.flags & dns.flags.AA
    assert addresses(response) == ["192.0.2.20"]
    assert server.stats.tcp == 1


async def test_nxdomain_with_soa(server: FaultyDnsServer) -> None:
    response = await udp(server, "nope.demo.test.", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    assert response.authority[0].ttl == 60  # min(SOA TTL, SOA minimum)


async def test_nodata_with_soa(server: FaultyDnsServer) -> None:
    response = await udp(server, "www.demo.test.", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.answer
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_refused_outside_the_zone(server: FaultyDnsServer) -> None:
    response = await udp(server, "www.example.com.", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    response = await udp(server, "www.demo.test.", "AXFR")
    assert response.rcode() == dns.rcode.REFUSED


async def test_edns_is_echoed_and_bounded(server: FaultyDnsServer) -> None:
    plain = await udp(server, "www.demo.test.")
    assert plain.edns == -1
    with_edns = await udp(server, "www.demo.test.", use_edns=0, payload=4096, want_dnssec=True)
    assert with_edns.edns == 0
    assert with_edns.payload == 1232
    assert with_edns.ednsflags & dns.flags.DO
    query = dns.message.make_query("www.demo.test.", "A", use_edns=1)
    response = await dns.asyncquery.udp(query, HOST, port=server.port, timeout=2)
    assert response.rcode() == dns.rcode.BADVERS


async def test_big_answer_truncated_over_udp_then_full_over_tcp(server: FaultyDnsServer) -> None:
    for kw in ({}, {"use_edns": 0, "payload": 4096}):
        response = await udp(server, "big.demo.test.", "TXT", **kw)
        assert response.flags & dns.flags.TC
        assert not response.answer
    full = await tcp(server, "big.demo.test.", "TXT")
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == 12
    assert server.stats.truncated == 2


async def test_edns_payload_decides_truncation() -> None:
    # about 600 bytes of answer: too big for plain DNS (512), fits a 1232-byte EDNS payload
    text = "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.1\n" + "".join(
        f'mid IN TXT "{i:02d}{"y" * 100}"\n' for i in range(5)
    )
    zone = dns.zone.from_text(text, origin="mid.test.")
    async with FaultyDnsServer(zone) as srv:
        small = await udp(srv, "mid.mid.test.", "TXT")
        assert small.flags & dns.flags.TC
        large = await udp(srv, "mid.mid.test.", "TXT", use_edns=0, payload=1232)
        assert not large.flags & dns.flags.TC
        assert len(large.answer[0]) == 5


async def test_cname_ent_and_delegation() -> None:
    text = """$TTL 60
@ IN SOA ns hm 1 2 3 4 5
@ IN NS ns
ns IN A 192.0.2.1
alias IN CNAME target
target IN A 192.0.2.7
leaf.branch IN A 192.0.2.8
sub IN NS ns.sub
ns.sub IN A 192.0.2.9
"""
    zone = dns.zone.from_text(text, origin="x.test.")  # relativized names are handled too
    async with FaultyDnsServer(zone) as srv:
        response = await udp(srv, "alias.x.test.", "A")
        assert [rr.rdtype for rr in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        assert response.answer[1][0].to_text() == "192.0.2.7"
        ent = await udp(srv, "branch.x.test.", "A")
        assert ent.rcode() == dns.rcode.NOERROR and not ent.answer  # empty non-terminal
        referral = await udp(srv, "www.sub.x.test.", "A")
        assert referral.rcode() == dns.rcode.NOERROR
        assert not referral.flags & dns.flags.AA
        assert referral.authority[0].rdtype == dns.rdatatype.NS
        assert referral.additional[0][0].to_text() == "192.0.2.9"


# -- faults -----------------------------------------------------------------------------------


async def test_blackhole_never_answers(server: FaultyDnsServer) -> None:
    server.set_faults(Faults(blackhole=True))
    with pytest.raises(dns.exception.Timeout):
        await udp(server, "www.demo.test.", timeout=0.3)
    with pytest.raises(dns.exception.Timeout):
        await tcp(server, "www.demo.test.", timeout=0.3)
    assert server.stats.dropped["blackhole"] == 2
    assert server.stats.answered == 0


async def test_servfail_and_refused(server: FaultyDnsServer) -> None:
    server.set_faults(Faults(servfail=True))
    response = await udp(server, "www.demo.test.")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert not response.answer
    server.set_faults(Faults(refused=True))
    response = await tcp(server, "www.demo.test.")
    assert response.rcode() == dns.rcode.REFUSED
    assert server.stats.served == {"servfail": 1, "refused": 1}


async def test_poison_forges_in_zone_answers(server: FaultyDnsServer) -> None:
    server.set_faults(Faults(poison=FORGED))
    response = await udp(server, "www.demo.test.", "A")
    assert response.flags & dns.flags.AA
    assert addresses(response) == [FORGED]
    assert response.answer[0].ttl == 300  # the real TTL is kept
    forged_new = await udp(server, "doesnotexist.demo.test.", "A")
    assert addresses(forged_new) == [FORGED]
    real6 = await udp(server, "www.demo.test.", "AAAA")
    assert addresses(real6) == ["2001:db8::10"]  # no poison6: AAAA untouched
    outside = await udp(server, "www.example.com.", "A")
    assert outside.rcode() == dns.rcode.REFUSED

    server.set_faults(Faults(poison=FORGED, poison6=FORGED6, ttl=7))
    response = await tcp(server, "api.demo.test.", "A")
    assert addresses(response) == [FORGED]
    assert response.answer[0].ttl == 7
    response = await udp(server, "api.demo.test.", "AAAA")
    assert addresses(response) == [FORGED6]
    assert server.stats.served["poison"] == 4
    assert server.stats.served["ttl"] == 2


async def test_ttl_override_applies_to_every_answer_rr(server: FaultyDnsServer) -> None:
    server.set_faults(Faults(ttl=0))
    response = await tcp(server, "big.demo.test.", "TXT")
    assert response.answer and all(rr.ttl == 0 for rr in response.answer)
    response = await tcp(server, "demo.test.", "ANY")
    assert len(response.answer) >= 4
    assert {rr.ttl for rr in response.answer} == {0}


async def test_delay_does_not_block_other_queries(server: FaultyDnsServer) -> None:
    server.set_faults(Faults(delay_ms=400))
    start = time.monotonic()
    results = await asyncio.gather(
        *(udp(server, name) for name in DEMO_NAMES),
        *(tcp(server, name) for name in DEMO_NAMES[:4]),
    )
    elapsed = time.monotonic() - start
    assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in results)
    assert 0.4 <= elapsed < 1.5, elapsed  # concurrent, not 14 x 0.4 s
    assert server.stats.served["delay"] == len(results)


async def test_delayed_tcp_pipelined_answers_all_arrive() -> None:
    async with FaultyDnsServer(demo_zone(), faults=Faults(delay_ms=200)) as srv:
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        ids = []
        for name in DEMO_NAMES[:5]:
            query = dns.message.make_query(name, "A")
            ids.append(query.id)
            wire = query.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        start = time.monotonic()
        got = []
        for _ in ids:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
            got.append(dns.message.from_wire(await reader.readexactly(length)).id)
        assert sorted(got) == sorted(ids)
        assert time.monotonic() - start < 0.8
        writer.close()


async def test_faults_switch_at_run_time(server: FaultyDnsServer) -> None:
    assert (await udp(server, "db.demo.test.")).rcode() == dns.rcode.NOERROR
    server.set_faults(Faults(servfail=True))
    assert (await udp(server, "db.demo.test.")).rcode() == dns.rcode.SERVFAIL
    server.set_faults(Faults(poison=FORGED))
    assert addresses(await udp(server, "db.demo.test.")) == [FORGED]
    server.clear_faults()
    assert addresses(await udp(server, "db.demo.test.")) == ["198.51.100.40"]
    assert server.faults == Faults()


def test_fault_validation() -> None:
    with pytest.raises(FaultError, match="exclude each other"):
        Faults(blackhole=True, servfail=True)
    with pytest.raises(FaultError, match="exclude each other"):
        Faults(refused=True, poison=FORGED)
    with pytest.raises(FaultError, match="IPv4"):
        Faults(poison="2001:db8::1")
    with pytest.raises(FaultError, match="IPv6"):
        Faults(poison6="192.0.2.1")
    with pytest.raises(FaultError, match="ttl"):
        Faults(ttl=-1)
    with pytest.raises(FaultError, match="delay_ms"):
        Faults(delay_ms=10**9)
    with pytest.raises(FaultError, match="unknown fault field"):
        Faults.from_dict({"poisson": FORGED})
    with pytest.raises(FaultError, match="ttl"):
        Faults.from_dict({"ttl": True})
    faults = Faults(poison=FORGED, ttl=5, delay_ms=10)
    assert Faults.from_dict(faults.to_dict()) == faults
    assert faults.describe() == f"poison={FORGED},ttl=5,delay_ms=10"
    assert Faults().describe() == "none"


# -- robustness -------------------------------------------------------------------------------


def _raw_udp(port: int, payload: bytes, timeout: float = 0.2) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (HOST, port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


async def test_garbage_over_udp_does_not_crash(server: FaultyDnsServer) -> None:
    valid = dns.message.make_query("www.demo.test.", "A").to_wire()
    as_response = bytearray(valid)
    as_response[2] |= 0x80
    cases = [
        b"",
        b"\x00",
        b"\xff" * 11,
        b"\x12\x34\x01\x00" + b"\xff" * 60,  # qdcount 65535: FORMERR
        valid[:15],  # header says one question, the question is cut
        bytes(as_response),  # a response: never answered
        b"\x00" * 5000,  # oversized
    ]
    replies = [await asyncio.to_thread(_raw_udp, server.port, case) for case in cases]
    formerr = dns.message.from_wire(replies[4] or b"")
    assert formerr.rcode() == dns.rcode.FORMERR
    assert formerr.id == struct.unpack("!H", valid[:2])[0]
    assert replies[0] is None and replies[1] is None and replies[5] is None
    assert replies[6] is None
    for reply in replies:
        if reply is not None:
            dns.message.from_wire(reply)
    assert addresses(await udp(server, "www.demo.test.")) == ["192.0.2.10"]
    assert server.stats.dropped["not-a-query"] == 1


def test_handle_header_only_cases() -> None:
    responder = ZoneResponder(demo_zone())
    query = dns.message.make_query("www.demo.test.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    notify = responder.handle(query.to_wire())
    assert notify is not None
    assert dns.message.from_wire(notify).rcode() == dns.rcode.NOTIMP
    no_question = struct.pack("!HHHHHH", 7, 0x0100, 0, 0, 0, 0)
    reply = responder.handle(no_question)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    chaos_class = dns.message.make_query("version.bind.", "TXT", rdclass="CH")
    reply = responder.handle(chaos_class.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.REFUSED
    assert responder.handle(b"\x00" * 11) is None
    assert responder.handle(query.to_wire(), Faults(blackhole=True)) is None


async def test_garbage_and_half_open_tcp_do_not_crash(server: FaultyDnsServer) -> None:
    # garbage frame: answered with FORMERR, connection stays usable
    reader, writer = await asyncio.open_connection(HOST, server.port)
    junk = b"\x12\x34\x01\x00" + b"\xff" * 20
    writer.write(struct.pack("!H", len(junk)) + junk)
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
    assert dns.message.from_wire(await reader.readexactly(length)).rcode() == dns.rcode.FORMERR
    writer.close()
    # oversized length prefix: connection closed
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(struct.pack("!H", 60000))
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    # half-open: one byte of a length prefix, then silence
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"\x00")
    await writer.drain()
    assert addresses(await udp(server, "www.demo.test.")) == ["192.0.2.10"]
    assert addresses(await tcp(server, "www.demo.test.")) == ["192.0.2.10"]
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the idle timeout
    writer.close()
    assert server.stats.tcp_idle_closed >= 1
    assert addresses(await tcp(server, "vpn.demo.test.")) == ["198.51.100.70"]


async def test_tcp_connection_limit() -> None:
    async with FaultyDnsServer(demo_zone(), max_tcp_connections=2) as srv:
        held = [await asyncio.open_connection(HOST, srv.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert srv.stats.tcp_rejected == 1
        for _, w in held:
            w.close()
        await asyncio.sleep(0.05)
        assert addresses(await tcp(srv, "www.demo.test.")) == ["192.0.2.10"]


async def test_port_zero_binds_udp_and_tcp_to_one_port() -> None:
    servers = [FaultyDnsServer(demo_zone()) for _ in range(3)]
    for srv in servers:
        await srv.start()
    try:
        assert len({srv.port for srv in servers}) == 3
        for srv in servers:
            assert (await udp(srv, "www.demo.test.")).answer
            assert (await tcp(srv, "www.demo.test.")).answer
        taken = FaultyDnsServer(demo_zone(), port=servers[0].port)
        with pytest.raises(OSError):
            await taken.start()
    finally:
        for srv in servers:
            await srv.stop()


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="IP address"):
        FaultyDnsServer(demo_zone(), host="localhost")
    with pytest.raises(ValueError, match="port"):
        FaultyDnsServer(demo_zone(), port=70000)
    with pytest.raises(RuntimeError, match="not started"):
        _ = FaultyDnsServer(demo_zone()).port


# -- fuzzing handle() -------------------------------------------------------------------------

_RESPONDER = ZoneResponder(demo_zone())

fault_sets = st.sampled_from(
    [
        Faults(),
        Faults(servfail=True),
        Faults(refused=True),
        Faults(blackhole=True),
        Faults(poison=FORGED, poison6=FORGED6, ttl=1),
        Faults(ttl=0, delay_ms=5),
    ]
)


def _check(wire: bytes, faults: Faults, udp_mode: bool) -> bytes | None:
    outcome = _RESPONDER.respond(wire, faults, udp=udp_mode)
    # the last-resort handler in respond() must never be needed
    assert "internal-error" not in outcome.applied
    assert outcome.drop_reason != "internal-error"
    out = _RESPONDER.handle(wire, faults, udp=udp_mode)
    assert (out is None) == (outcome.response is None)
    if out is None:
        return None
    assert outcome.response is not None  # RRs are shuffled per response: compare parsed forms
    assert dns.message.from_wire(out) == dns.message.from_wire(outcome.response)
    assert len(out) <= (1232 if udp_mode else 65535)
    message = dns.message.from_wire(out)
    assert message.flags & dns.flags.QR
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=st.binary(max_size=600), faults=fault_sets, udp_mode=st.booleans())
def test_fuzz_handle_arbitrary_bytes(wire: bytes, faults: Faults, udp_mode: bool) -> None:
    _check(wire, faults, udp_mode)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qid=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0x07FF),  # QR clear, opcode QUERY: the header checks pass
    counts=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    body=st.binary(max_size=300),
    faults=fault_sets,
    udp_mode=st.booleans(),
)
def test_fuzz_handle_plausible_header_random_body(
    qid: int,
    flags: int,
    counts: tuple[int, int, int],
    body: bytes,
    faults: Faults,
    udp_mode: bool,
) -> None:
    wire = struct.pack("!HHHHHH", qid, flags, 1, *counts) + body
    out = _check(wire, faults, udp_mode)
    if out is not None:
        assert struct.unpack("!H", out[:2])[0] == qid


_names = st.sampled_from([*DEMO_NAMES, "big.demo.test.", "demo.test.", "x.y.demo.test.", "a.b."])
_types = st.sampled_from(["A", "AAAA", "TXT", "MX", "NS", "SOA", "ANY", "CNAME", "TYPE65280"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_names,
    rdtype=_types,
    edns=st.sampled_from([-1, 0, 1]),
    payload=st.integers(0, 65535),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 200),
    extra=st.binary(max_size=40),
    faults=fault_sets,
    udp_mode=st.booleans(),
)
def test_fuzz_handle_mutated_queries(
    name: str,
    rdtype: str,
    edns: int,
    payload: int,
    edits: list[tuple[int, int]],
    cut: int,
    extra: bytes,
    faults: Faults,
    udp_mode: bool,
) -> None:
    query = dns.message.make_query(name, rdtype, use_edns=edns, payload=max(payload, 512))
    wire = bytearray(query.to_wire())
    if not edits and not cut and not extra:
        out = _check(bytes(wire), faults, udp_mode)
        if not faults.blackhole:
            assert out is not None  # a valid query is always answered
    for position, value in edits:
        if position < len(wire):
            wire[position] = value
    if cut:
        del wire[len(wire) - min(cut, len(wire)) :]
    wire += extra
    _check(bytes(wire), faults, udp_mode)
