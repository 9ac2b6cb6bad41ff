"""The agents' pipelined TCP path (cctf.agents.tcppipe, through cctf.agents.roundquery.query_all)
against real servers on loopback: the general path's observations over one connection per round;
an unchanged answer reuses its observation; answers in any order; stray frames ignored; a lost
connection reopened for the unanswered queries; refused and silent servers end in error and
timeout by the deadline; mixed UDP and TCP resolvers keep the names-major order; DoT over one TLS
connection per round."""

from __future__ import annotations

import asyncio
import socket
import time

import dns.edns
import dns.message
import pytest
from dnstestservers import DotServer, Pki
from test_dnsquery import behaviour, dot, pki  # the DoT server fixtures
from test_udpfast import NAMES, _same  # the same names, equal but for the latency

from cctf.agents.canonical import Transport, VoteStatus
from cctf.agents.dnsquery import ResolverSpec, query
from cctf.agents.dnssec import TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.roundquery import query_all
from cctf.agents.tcppipe import exchange_all
from cctf.agents.udpfast import AnswerMemo
from cctf.bus_schemas.messages import DnssecState
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.signing import signed_demo_zone

__all__ = ["behaviour", "dot", "pki"]


async def test_one_connection_per_round_gives_the_general_paths_observations() -> None:
    signed = signed_demo_zone()
    async with FaultyDnsServer(signed.zone, signed=signed) as server:
        spec = ResolverSpec(id="r1", address="127.0.0.1", port=server.port, transport=Transport.TCP)
        anchors = TrustAnchors.parse(signed.trust_anchors)
        plain = await query_all([spec], NAMES, deadline_s=3, dnssec=ChainValidator(anchors))
        memo = AnswerMemo()
        validator = ChainValidator(anchors)
        before = server.stats.tcp_connections
        fast = await query_all([spec], NAMES, deadline_s=3, dnssec=validator, memo=memo)
        assert _same(fast, plain)  # the same observations as one connection per query
        assert {(o.status, o.dnssec) for o in fast} == {(VoteStatus.ANSWER, DnssecState.SECURE)}
        assert memo.hits == 0 and memo.misses == len(NAMES)
        # one pipelined connection for the answers (the validator's chain fetches are its own)
        chain_fetches = server.stats.tcp_connections - before - 1
        before = server.stats.tcp_connections
        again = await query_all([spec], NAMES, deadline_s=3, dnssec=validator, memo=memo)
        assert server.stats.tcp_connections - before == 1  # warm: one connection, nothing else
        assert chain_fetches >= 0
        assert memo.hits == len(NAMES) and _same(again, fast)  # unchanged bytes: reused
        server.set_faults(Faults(poison="203.0.113.66"))  # not signed by the zone: validated again
        poisoned = await query_all([spec], NAMES, deadline_s=3, dnssec=validator, memo=memo)
        assert memo.hits == len(NAMES)
        assert all(o.answer[0].endswith(" 203.0.113.66") for o in poisoned)
        assert {o.dnssec for o in poisoned} == {DnssecState.BOGUS}


async def test_mixed_udp_and_tcp_resolvers_keep_the_names_major_order() -> None:
    signed = signed_demo_zone()
    async with FaultyDnsServer(signed.zone, signed=signed) as server:
        specs = [
            ResolverSpec(id=f"r{j}", address="127.0.0.1", port=server.port, transport=t)
            for j, t in enumerate((Transport.UDP, Transport.TCP, Transport.UDP, Transport.TCP))
        ]
        anchors = TrustAnchors.parse(signed.trust_anchors)
        out = await query_all(
            specs, NAMES, deadline_s=3, dnssec=ChainValidator(anchors), memo=AnswerMemo()
        )
        assert len(out) == len(NAMES) * len(specs)
        for i, (qname, _t) in enumerate(NAMES):
            row = out[i * len(specs) : (i + 1) * len(specs)]
            assert [(o.resolver_id, o.transport) for o in row] == [
                (s.id, s.transport) for s in specs
            ]
            assert {o.status for o in row} == {VoteStatus.ANSWER}
            assert len({o.answer for o in row}) == 1, qname


def _queries(count: int) -> list[bytes]:
    return [dns.message.make_query(f"n{i}.demo.test.", "A").to_wire() for i in range(count)]


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


async def _read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        length = int.from_bytes(await reader.readexactly(2), "big")
        out.append(await reader.readexactly(length))
    return out


def _answer(query: bytes) -> bytes:
    return dns.message.make_response(dns.message.from_wire(query)).to_wire()


async def test_answers_in_any_order_and_stray_frames_ignored() -> None:
    templates = _queries(6)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await _read_frames(reader, len(templates))
        answers = [_answer(q) for q in got]
        known = {q[:2] for q in got}
        unknown = next(
            i.to_bytes(2, "big") for i in range(65536) if i.to_bytes(2, "big") not in known
        )
        stray = [
            unknown + answers[0][2:],  # an id that was never asked
            got[1][:2] + answers[2][2:],  # a known id with another question
            got[3],  # the query echoed: no QR bit
            b"\x00\x01\x02",  # shorter than a header
        ]
        stream = b"".join(_frame(m) for m in [*stray, *reversed(answers)])
        for i in range(0, len(stream), 7):  # in small pieces: frames split across reads
            writer.write(stream[i : i + 7])
            await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        results, stats = await exchange_all("127.0.0.1", port, templates, 3.0)
    assert stats.connections == 1 and stats.ignored == 4 and stats.frames == 10
    for template, result in zip(templates, results, strict=True):
        assert not isinstance(result, BaseException)
        answer = dns.message.from_wire(result[0])
        assert answer.question == dns.message.from_wire(template).question


async def test_a_lost_connection_is_reopened_for_the_unanswered_queries() -> None:
    templates = _queries(5)
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        first = len(connections) == 1
        got = await _read_frames(reader, 5 if first else 3)
        answers = [_answer(q) for q in got]
        writer.write(b"".join(_frame(a) for a in (answers[:2] if first else answers)))
        await writer.drain()
        writer.close()  # the first connection closes with three queries unanswered

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        results, stats = await exchange_all("127.0.0.1", port, templates, 3.0)
    assert stats.connections == 2
    assert all(not isinstance(r, BaseException) for r in results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_refused_server_is_an_error_for_every_query() -> None:
    spec = ResolverSpec(id="r1", address="127.0.0.1", port=_free_port(), transport=Transport.TCP)
    start = time.monotonic()
    out = await query_all([spec], NAMES, deadline_s=2, memo=AnswerMemo())
    assert time.monotonic() - start < 1.0
    assert {o.status for o in out} == {VoteStatus.ERROR}


async def test_a_silent_server_is_a_timeout_by_the_deadline() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads every query, answers none
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = ResolverSpec(id="r1", address="127.0.0.1", port=port, transport=Transport.TCP)
    async with server:
        start = time.monotonic()
        out = await query_all([spec], NAMES, deadline_s=0.5, memo=AnswerMemo())
        elapsed = time.monotonic() - start
    assert 0.3 < elapsed < 0.8
    assert {o.status for o in out} == {VoteStatus.TIMEOUT}


@pytest.mark.parametrize("count", [1, 17_000])
async def test_more_queries_than_one_connection_holds_use_more_connections(count: int) -> None:
    """Ids are unique within a connection: past MAX_PER_CONNECTION a second one is opened."""
    signed = signed_demo_zone()
    async with FaultyDnsServer(signed.zone, signed=signed) as server:
        templates = [dns.message.make_query("www.demo.test.", "A").to_wire()] * count
        results, stats = await exchange_all("127.0.0.1", server.port, templates, 20.0)
    assert stats.connections == (1 if count == 1 else 2)
    assert all(not isinstance(r, BaseException) for r in results)


BEHAVIOUR_NAMES = [
    ("www.demo.test.", "A"),
    ("alias.demo.test.", "A"),
    ("www.demo.test.", "AAAA"),
    ("mail.demo.test.", "MX"),
    ("txt.demo.test.", "TXT"),
]


async def test_dot_goes_over_one_tls_connection_per_round(dot: DotServer, pki: Pki) -> None:
    """DoT (RFC 7858 §3.4): the round's queries over one verified TLS connection, padded as on the
    general path, with the same observations; a certificate for another name is an error for
    every query."""
    spec = ResolverSpec(
        "dot", "127.0.0.1", dot.port, Transport.DOT, tls_hostname="dns.test", ca_file=pki.ca_file
    )
    plain = [await query(spec, n, t, deadline_s=2) for n, t in BEHAVIOUR_NAMES]
    assert {o.status for o in plain} == {VoteStatus.ANSWER}
    before = dot.connections
    fast = await query_all([spec], BEHAVIOUR_NAMES, deadline_s=3, memo=AnswerMemo())
    assert dot.connections - before == 1
    assert _same(fast, plain)
    assert dot.behaviour.queries[-1].edns >= 0 and any(
        o.otype == dns.edns.OptionType.PADDING for o in dot.behaviour.queries[-1].options
    )  # padded (RFC 8467), like the general path's DoT queries
    wrong = ResolverSpec(
        "bad", "127.0.0.1", dot.port, Transport.DOT, tls_hostname="wrong.test", ca_file=pki.ca_file
    )
    out = await query_all([wrong], BEHAVIOUR_NAMES, deadline_s=2, memo=AnswerMemo())
    assert {o.status for o in out} == {VoteStatus.ERROR}
