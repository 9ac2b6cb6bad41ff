"""The agents' UDP fast path (cctf.agents.udpfast) against a real DNS server on loopback: the same
observations as the general path; an unchanged answer reuses its observation (DNSSEC state
included), a changed one is parsed and validated again; a spoofed datagram is ignored; the memo
never outlives the answer's TTL or an RRSIG."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import dns.message
import dns.name
import dns.rdatatype
import pytest

from cctf.agents import udpfast
from cctf.agents.canonical import Observation, Transport, VoteStatus, observation_from_response
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.dnssec import TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.roundquery import query_all
from cctf.agents.udpfast import MAX_MEMO_S, AnswerMemo, UdpChannel, exchange
from cctf.bus_schemas.messages import DnssecState
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.signing import signed_demo_zone
from cctf.chaos.zone import DEMO_NAMES

NAMES = [(n, "A") for n in DEMO_NAMES]


def _same(a: list[Observation], b: list[Observation]) -> bool:
    """Equal but for the latency."""
    return [dataclasses.replace(o, latency_ms=0.0) for o in a] == [
        dataclasses.replace(o, latency_ms=0.0) for o in b
    ]


async def test_memo_reuses_unchanged_answers_and_revalidates_changed_ones() -> None:
    signed = signed_demo_zone()
    async with FaultyDnsServer(signed.zone, signed=signed) as server:
        spec = ResolverSpec(id="r1", address="127.0.0.1", port=server.port, transport=Transport.UDP)
        anchors = TrustAnchors.parse(signed.trust_anchors)
        memo = AnswerMemo()
        plain = await query_all([spec], NAMES, deadline_s=3, dnssec=ChainValidator(anchors))
        fast = await query_all(
            [spec], NAMES, deadline_s=3, dnssec=ChainValidator(anchors), memo=memo
        )
        assert memo.hits == 0 and memo.misses == len(NAMES)
        assert _same(fast, plain)  # the same observations as the general path
        assert {(o.status, o.dnssec) for o in fast} == {(VoteStatus.ANSWER, DnssecState.SECURE)}
        again = await query_all(
            [spec], NAMES, deadline_s=3, dnssec=ChainValidator(anchors), memo=memo
        )
        assert memo.hits == len(NAMES) and _same(again, fast)  # unchanged bytes: reused
        # a forged answer (not signed by the zone): different bytes, parsed and validated again
        server.set_faults(Faults(poison="203.0.113.66"))
        poisoned = await query_all(
            [spec], NAMES, deadline_s=3, dnssec=ChainValidator(anchors), memo=memo
        )
        assert memo.hits == len(NAMES)  # no new hit
        assert all(o.answer[0].endswith(" 203.0.113.66") for o in poisoned)
        assert {o.dnssec for o in poisoned} == {DnssecState.BOGUS}


def test_memo_entry_never_outlives_ttl_or_signature() -> None:
    memo = AnswerMemo()
    question = (dns.name.from_text("www.demo.test."), dns.rdatatype.A, True)
    signed = signed_demo_zone()

    q = dns.message.make_query("www.demo.test.", "A", want_dnssec=True)
    r = dns.message.from_wire(
        FaultyDnsServer(signed.zone, signed=signed).responder.handle(q.to_wire()) or b""
    )

    obs = observation_from_response("r1", Transport.UDP, question[0], question[1], r, 1.0)
    data = r.to_wire()
    sig_exp = min(float(s.expiration) for rr in r.answer if rr.rdtype == 46 for s in rr)
    now = sig_exp - 10  # 10 s before the RRSIG expires
    memo.store("r1", question, data, obs, r, now)
    assert memo.lookup("r1", question, data, now + 9) is obs
    assert memo.lookup("r1", question, data, now + 10) is None  # the signature expired
    memo.store("r1", question, data, obs, r, 0.0)  # far from the signature's end: TTL bounds it
    assert memo.lookup("r1", question, data, min(obs.ttl, MAX_MEMO_S) - 0.5) is obs
    assert memo.lookup("r1", question, data, min(obs.ttl, MAX_MEMO_S)) is None
    assert memo.lookup("r2", question, data, 1.0) is None  # per resolver


async def test_exchange_ignores_a_datagram_that_does_not_answer_the_query() -> None:
    loop = asyncio.get_running_loop()
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.setblocking(False)
    port = srv.getsockname()[1]
    q = dns.message.make_query("www.demo.test.", "A")

    async def server() -> None:
        data, addr = await loop.sock_recvfrom(srv, 4096)
        r = dns.message.make_response(dns.message.from_wire(data))
        wrong_id = bytes([data[0] ^ 1, data[1]]) + r.to_wire()[2:]
        await loop.sock_sendto(srv, wrong_id, addr)  # spoof-like: ignored
        other = dns.message.make_response(dns.message.make_query("api.demo.test.", "A"))
        await loop.sock_sendto(srv, data[:2] + other.to_wire()[2:], addr)  # wrong question
        await loop.sock_sendto(srv, r.to_wire(), addr)  # the answer

    task = asyncio.create_task(server())
    try:
        got = await exchange("127.0.0.1", port, q.to_wire(), 2.0, 1.0)
        assert dns.message.from_wire(got).question == q.question
    finally:
        await task
        srv.close()


async def test_a_channel_asks_one_query_after_another_and_ignores_late_answers() -> None:
    """UdpChannel (one socket per query worker and round): the late answer to a query that timed
    out arrives while the next query is asked on the same socket and is ignored; the next
    query's own answer is returned; after close the socket is gone."""
    loop = asyncio.get_running_loop()
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.setblocking(False)
    port = srv.getsockname()[1]
    q1 = dns.message.make_query("www.demo.test.", "A")
    q2 = dns.message.make_query("api.demo.test.", "A")
    first = asyncio.Event()

    async def server() -> None:
        data1, addr = await loop.sock_recvfrom(srv, 4096)  # q1: not answered in time
        first.set()
        data2, addr2 = await loop.sock_recvfrom(srv, 4096)  # q2 on the same socket
        assert addr2 == addr
        late = dns.message.make_response(dns.message.from_wire(data1)).to_wire()
        await loop.sock_sendto(srv, late, addr)  # q1's answer, now late: ignored
        # q1's answer with q2's id (a question mismatch): ignored too
        await loop.sock_sendto(srv, data2[:2] + late[2:], addr)
        answer = dns.message.make_response(dns.message.from_wire(data2)).to_wire()
        await loop.sock_sendto(srv, answer, addr)

    task = asyncio.create_task(server())
    channel = UdpChannel("127.0.0.1", port)
    try:
        with pytest.raises(TimeoutError):
            await channel.ask(q1.to_wire(), 0.2, 1.0)
        assert first.is_set()
        got = await channel.ask(q2.to_wire(), 2.0, 1.0)
        assert dns.message.from_wire(got).question == q2.question
    finally:
        channel.close()
        await task
        srv.close()


async def test_a_channel_resends_an_unanswered_query_and_its_timer_stops_after() -> None:
    """The loop's one ticker (udpfast._Ticker) resends a query unanswered for its retry interval
    (the same id and bytes), the answer to the resend is returned, and with nothing in flight the
    ticker's timer is gone."""
    loop = asyncio.get_running_loop()
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.setblocking(False)
    port = srv.getsockname()[1]
    q = dns.message.make_query("www.demo.test.", "A")

    async def server() -> list[bytes]:
        first, _addr = await loop.sock_recvfrom(srv, 4096)  # dropped: "lost"
        again, addr = await loop.sock_recvfrom(srv, 4096)  # the resend
        answer = dns.message.make_response(dns.message.from_wire(again)).to_wire()
        await loop.sock_sendto(srv, answer, addr)
        return [first, again]

    task = asyncio.create_task(server())
    channel = UdpChannel("127.0.0.1", port)
    try:
        start = loop.time()
        got = await channel.ask(q.to_wire(), 2.0, 0.1)
        assert 0.09 <= loop.time() - start < 1.0  # answered after one resend, not at the limit
        first, again = await task
        assert first == again and got[:2] == first[:2]  # same id and bytes
        assert dns.message.from_wire(got).question == q.question
        await asyncio.sleep(3 * udpfast.TICK_S)
        assert udpfast._ticker(loop)._handle is None  # nothing in flight: no timer
    finally:
        channel.close()
        srv.close()
