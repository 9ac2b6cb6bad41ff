"""The agents' DNS adapter against real servers on loopback (tests/support/dnstestservers.py), and the pure
canonical form (with hypothesis)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dnstestservers import (
    Behaviour,
    BlackHoleServer,
    DohServer,
    DoqServer,
    DotServer,
    HttpMode,
    Mode,
    Pki,
    PlainDnsServer,
    closed_port,
    make_pki,
    server_tls_context,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cctf.agents import dnsquery
from cctf.agents.canonical import (
    CanonicalError,
    Observation,
    Transport,
    VoteStatus,
    canonical_answer,
    ede_codes,
    min_ttl,
    observation_from_response,
    parse_qtype,
)
from cctf.agents.dnsquery import DEFAULT_PORTS, ResolverSpec, prepare, query
from cctf.agents.roundquery import query_all
from cctf.agents.transports import doh_url
from cctf.bus_schemas import messages
from cctf.util.deadline import hard_deadline

LOOP = "127.0.0.1"
SLACK = 0.5  # allowed lateness over a deadline
ALIAS_A = (
    "alias.demo.test. CNAME www.demo.test.",
    "www.demo.test. A 192.0.2.10",
    "www.demo.test. A 192.0.2.11",
)
WWW_A = ALIAS_A[1:]


# --------------------------------------------------------------------------------------------------
# Fixtures: one behaviour shared by every server of a test


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
async def plain(behaviour: Behaviour) -> AsyncIterator[PlainDnsServer]:
    server = await PlainDnsServer(behaviour).start()
    yield server
    await server.close()


@pytest.fixture
async def dot(behaviour: Behaviour, pki: Pki) -> AsyncIterator[DotServer]:
    server = await DotServer(behaviour, pki).start()
    yield server
    await server.close()


@pytest.fixture
async def doh(behaviour: Behaviour, pki: Pki) -> AsyncIterator[DohServer]:
    server = await DohServer(behaviour, pki).start()
    yield server
    await server.close()


@pytest.fixture
async def doh1(behaviour: Behaviour, pki: Pki) -> AsyncIterator[DohServer]:
    server = await DohServer(behaviour, pki, http2=False).start()
    yield server
    await server.close()


@pytest.fixture
async def doq(behaviour: Behaviour, pki: Pki) -> AsyncIterator[DoqServer]:
    server = await DoqServer(behaviour, pki).start()
    yield server
    await server.close()


@pytest.fixture
async def specs(
    plain: PlainDnsServer, dot: DotServer, doh: DohServer, doh1: DohServer, doq: DoqServer, pki: Pki
) -> dict[str, ResolverSpec]:
    """One resolver per transport, all answering from the test's behaviour."""
    ca = pki.ca_file
    return {
        "udp": ResolverSpec("udp", LOOP, plain.port, Transport.UDP),
        "tcp": ResolverSpec("tcp", LOOP, plain.port, Transport.TCP),
        "dot": ResolverSpec("dot", LOOP, dot.port, Transport.DOT, ca_file=ca),
        "doh": ResolverSpec(
            "doh", LOOP, doh.port, Transport.DOH, tls_hostname="dns.test", ca_file=ca
        ),
        "doh1": ResolverSpec("doh1", LOOP, doh1.port, Transport.DOH, ca_file=ca),
        "doq": ResolverSpec(
            "doq", LOOP, doq.port, Transport.DOQ, tls_hostname="dns.test", ca_file=ca
        ),
    }


ALL = ["udp", "tcp", "dot", "doh", "doh1", "doq"]


async def timed(
    spec: ResolverSpec, qname: str, qtype: str, deadline: float = 2.0
) -> tuple[Observation, float]:
    start = time.monotonic()
    obs = await query(spec, qname, qtype, deadline_s=deadline)
    return obs, time.monotonic() - start


# --------------------------------------------------------------------------------------------------
# Every transport answers


@pytest.mark.parametrize("which", ALL)
async def test_each_transport_answers(which: str, specs: dict[str, ResolverSpec]) -> None:
    spec = specs[which]
    obs, _ = await timed(spec, "Alias.Demo.Test", "a")
    assert obs.status == VoteStatus.ANSWER, obs.detail
    assert obs.resolver_id == which
    assert obs.transport == spec.transport
    assert obs.rcode == 0
    assert obs.answer == ALIAS_A
    assert obs.ttl == 300
    assert obs.detail == ""
    assert obs.latency_ms > 0
    assert obs.ede == ()
    assert obs.ad is False


async def test_doh_negotiates_http2_and_sends_tls_hostname(
    specs: dict[str, ResolverSpec], doh: DohServer, doh1: DohServer
) -> None:
    assert (await query(specs["doh"], "www.demo.test", "A", deadline_s=2)).answer == WWW_A
    assert doh.protocols == ["h2"]
    assert doh.hosts == [f"dns.test:{doh.port}"]  # :authority is the TLS name, not the IP
    assert (await query(specs["doh1"], "www.demo.test", "A", deadline_s=2)).answer == WWW_A
    assert doh1.protocols == ["http/1.1"]
    assert doh1.hosts == [f"{LOOP}:{doh1.port}"]


async def test_dot_verifies_the_tls_hostname(dot: DotServer, pki: Pki) -> None:
    good = ResolverSpec(
        "good", LOOP, dot.port, Transport.DOT, tls_hostname="DNS.test.", ca_file=pki.ca_file
    )
    assert good.tls_hostname == "dns.test"
    assert (await query(good, "www.demo.test", "A", deadline_s=2)).status == VoteStatus.ANSWER
    bad = ResolverSpec(
        "bad", LOOP, dot.port, Transport.DOT, tls_hostname="wrong.test", ca_file=pki.ca_file
    )
    obs = await query(bad, "www.demo.test", "A", deadline_s=2)
    assert obs.status == VoteStatus.ERROR
    assert "certificate" in obs.detail


async def test_doq_returns_without_waiting_for_the_quic_close(
    specs: dict[str, ResolverSpec],
) -> None:
    # dnspython's quic() alone spends the draining period (3 PTO, >= 75 ms: max_ack_delay is 25 ms)
    # closing the connection before it returns.
    elapsed = []
    for _ in range(3):
        obs, took = await timed(specs["doq"], "www.demo.test", "A")
        assert obs.status == VoteStatus.ANSWER
        elapsed.append(took)
    assert min(elapsed) < 0.06


async def test_udp_over_ipv6(behaviour: Behaviour) -> None:
    server = await PlainDnsServer(behaviour, host="::1").start()
    try:
        spec = ResolverSpec("v6", "::1", server.port, Transport.UDP)
        obs = await query(spec, "www.demo.test", "AAAA", deadline_s=2)
        assert obs.status == VoteStatus.ANSWER, obs.detail
        assert obs.answer == ("www.demo.test. AAAA 2001:db8::10",)
    finally:
        await server.close()


@pytest.mark.parametrize("which", ["udp", "dot"])
async def test_query_has_edns_do_ad_and_padding(
    which: str, specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    await query(specs[which], "www.demo.test", "A", deadline_s=2)
    await query(specs[which], "www.demo.test", "A", deadline_s=2, want_dnssec=False)
    with_do, without_do = behaviour.queries
    for q in (with_do, without_do):
        assert q.edns == 0
        assert q.payload == dnsquery.EDNS_PAYLOAD
        assert q.flags & dns.flags.RD
        assert q.flags & dns.flags.AD
    assert with_do.ednsflags & dns.flags.DO
    assert not without_do.ednsflags & dns.flags.DO
    padded = any(opt.otype == dns.edns.OptionType.PADDING for opt in with_do.options)
    assert padded == (which == "dot")  # only encrypted transports pad
    if padded:
        assert len(with_do.to_wire()) % 128 == 0


# --------------------------------------------------------------------------------------------------
# Rcodes, flags, EDE


@pytest.mark.parametrize("which", ALL)
async def test_nxdomain_is_a_definite_answer(which: str, specs: dict[str, ResolverSpec]) -> None:
    obs, _ = await timed(specs[which], "nope.demo.test", "A")
    assert (obs.status, obs.rcode, obs.answer, obs.ttl) == (VoteStatus.ANSWER, 3, (), 0)


async def test_nxdomain_keeps_the_cname_chain(specs: dict[str, ResolverSpec]) -> None:
    obs = await query(specs["tcp"], "dangling.demo.test", "A", deadline_s=2)
    assert obs.status == VoteStatus.ANSWER
    assert obs.rcode == dns.rcode.NXDOMAIN
    assert obs.answer == ("dangling.demo.test. CNAME gone.demo.test.",)


async def test_nodata_is_an_empty_answer(specs: dict[str, ResolverSpec]) -> None:
    obs = await query(specs["udp"], "www.demo.test", "MX", deadline_s=2)
    assert (obs.status, obs.rcode, obs.answer) == (VoteStatus.ANSWER, 0, ())


@pytest.mark.parametrize(
    ("mode", "status", "rcode", "detail"),
    [
        (Mode.SERVFAIL, VoteStatus.SERVFAIL, 2, "SERVFAIL"),
        (Mode.REFUSED, VoteStatus.ERROR, 5, "REFUSED"),
        (Mode.FORMERR, VoteStatus.ERROR, 1, "FORMERR"),
        (Mode.NXDOMAIN, VoteStatus.ANSWER, 3, ""),
    ],
)
@pytest.mark.parametrize("which", ["udp", "tcp", "doh", "doq"])
async def test_rcodes(
    which: str,
    mode: Mode,
    status: VoteStatus,
    rcode: int,
    detail: str,
    specs: dict[str, ResolverSpec],
    behaviour: Behaviour,
) -> None:
    behaviour.mode = mode
    obs, _ = await timed(specs[which], "www.demo.test", "A")
    assert (obs.status, obs.rcode, obs.answer, obs.detail) == (status, rcode, (), detail)


async def test_ede_codes_and_ad_flag(specs: dict[str, ResolverSpec], behaviour: Behaviour) -> None:
    behaviour.mode = Mode.SERVFAIL
    behaviour.ede = [18, 6, 6]
    obs = await query(specs["dot"], "www.demo.test", "A", deadline_s=2)
    assert obs.status == VoteStatus.SERVFAIL
    assert obs.ede == (6, 18)
    behaviour.mode = Mode.ANSWER
    behaviour.ede = []
    behaviour.ad = True
    obs = await query(specs["udp"], "www.demo.test", "A", deadline_s=2)
    assert (obs.status, obs.ad, obs.ede) == (VoteStatus.ANSWER, True, ())
    behaviour.ad = False
    assert (await query(specs["udp"], "www.demo.test", "A", deadline_s=2)).ad is False


# --------------------------------------------------------------------------------------------------
# Misbehaving servers


@pytest.mark.parametrize("which", ALL)
async def test_silence_is_a_timeout_on_time(
    which: str, specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.mode = Mode.SILENT
    obs, elapsed = await timed(specs[which], "www.demo.test", "A", deadline=0.3)
    assert obs.status == VoteStatus.TIMEOUT
    assert obs.detail == "timeout after 300 ms"
    assert 0.25 <= elapsed < 0.3 + SLACK
    assert obs.rcode == 0 and obs.answer == ()


@pytest.mark.parametrize("transport", [Transport.DOT, Transport.DOH])
@pytest.mark.parametrize("tls_completes", [False, True])
async def test_black_hole_tls_server_is_a_timeout_on_time(
    transport: Transport, tls_completes: bool, pki: Pki
) -> None:
    ctx = server_tls_context(pki, ["dot", "h2", "http/1.1"]) if tls_completes else None
    server = await BlackHoleServer(ctx).start()
    try:
        spec = ResolverSpec("hole", LOOP, server.port, transport, ca_file=pki.ca_file)
        obs, elapsed = await timed(spec, "www.demo.test", "A", deadline=0.3)
        assert obs.status == VoteStatus.TIMEOUT
        assert elapsed < 0.3 + SLACK
    finally:
        await server.close()


async def test_doq_to_a_silent_udp_port_is_a_timeout_on_time(pki: Pki) -> None:
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(LOOP, 0))
    try:
        port = sink.get_extra_info("sockname")[1]
        spec = ResolverSpec("sink", LOOP, port, Transport.DOQ, ca_file=pki.ca_file)
        obs, elapsed = await timed(spec, "www.demo.test", "A", deadline=0.3)
        assert obs.status == VoteStatus.TIMEOUT
        assert elapsed < 0.3 + SLACK
    finally:
        sink.close()


@pytest.mark.parametrize("transport", list(Transport))
async def test_connection_refused_is_a_quick_error(transport: Transport, pki: Pki) -> None:
    port = await closed_port()
    ca = pki.ca_file if transport in dnsquery.TLS_TRANSPORTS else None
    spec = ResolverSpec("closed", LOOP, port, transport, ca_file=ca)
    obs, elapsed = await timed(spec, "www.demo.test", "A", deadline=3.0)
    assert obs.status == VoteStatus.ERROR, obs.detail
    assert elapsed < 1.0
    if transport != Transport.DOQ:  # dnspython's QUIC layer swallows the ICMP error's type
        assert obs.detail == "connection refused"


@pytest.mark.parametrize("which", ["dot", "doh", "doq"])
async def test_untrusted_certificate_is_an_error(
    which: str, specs: dict[str, ResolverSpec], pki: Pki
) -> None:
    good = specs[which]
    spec = ResolverSpec(
        "untrusted",
        LOOP,
        good.port,
        good.transport,
        tls_hostname=good.tls_hostname,
        ca_file=pki.other_ca_file,
    )
    obs, elapsed = await timed(spec, "www.demo.test", "A")
    assert obs.status == VoteStatus.ERROR
    assert elapsed < 1.0
    if which != "doq":
        assert obs.detail.startswith("TLS certificate verification failed")


@pytest.mark.parametrize("which", ["dot", "doh", "doq"])
async def test_verify_tls_false_accepts_an_untrusted_certificate(
    which: str, specs: dict[str, ResolverSpec]
) -> None:
    good = specs[which]
    spec = ResolverSpec("insecure", LOOP, good.port, good.transport, verify_tls=False)
    assert (await query(spec, "www.demo.test", "A", deadline_s=2)).answer == WWW_A


@pytest.mark.parametrize("mode", [Mode.WRONG_ID, Mode.WRONG_QUESTION, Mode.GARBAGE])
async def test_mismatched_or_malformed_response(
    mode: Mode, specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.mode = mode
    # Over a stream it is an error at once ...
    for which in ("tcp", "dot", "doh"):
        obs, elapsed = await timed(specs[which], "www.demo.test", "A")
        assert obs.status == VoteStatus.ERROR, which
        assert elapsed < 1.0
    # ... over UDP it may be a spoof, so it is ignored and the query times out.
    obs, elapsed = await timed(specs["udp"], "www.demo.test", "A", deadline=0.3)
    assert obs.status == VoteStatus.TIMEOUT
    assert elapsed < 0.3 + SLACK


async def test_udp_ignores_a_forged_reply_before_the_real_one(
    specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.mode = Mode.SPOOF_FIRST
    obs = await query(specs["udp"], "www.demo.test", "A", deadline_s=2)
    assert (obs.status, obs.answer) == (VoteStatus.ANSWER, WWW_A)


async def test_truncated_udp_answer_is_retried_over_tcp(
    specs: dict[str, ResolverSpec], behaviour: Behaviour, plain: PlainDnsServer
) -> None:
    behaviour.mode = Mode.TRUNCATE_UDP
    obs = await query(specs["udp"], "www.demo.test", "A", deadline_s=2)
    assert (obs.status, obs.transport, obs.answer) == (VoteStatus.ANSWER, Transport.UDP, WWW_A)
    assert plain.connections == 1


@pytest.mark.parametrize(
    ("mode", "detail"), [(Mode.EXTRA_UNRELATED, "unrelated"), (Mode.MANY_RECORDS, "64")]
)
async def test_unacceptable_answer_is_an_error(
    mode: Mode, detail: str, specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.mode = mode
    for which in ("udp", "doh"):
        obs = await query(specs[which], "www.demo.test", "A", deadline_s=2)
        assert obs.status == VoteStatus.ERROR
        assert detail in obs.detail
        assert obs.answer == ()


async def test_doh_body_cap_without_content_length(
    specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.http = HttpMode.HUGE_UNDECLARED
    obs, elapsed = await timed(specs["doh1"], "www.demo.test", "A")
    assert (obs.status, obs.detail) == (VoteStatus.ERROR, "DoH response body too large")
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("http", "detail"),
    [
        (HttpMode.STATUS_500, "HTTP status 500"),
        (HttpMode.HUGE_BODY, "too large"),
        (HttpMode.GZIP, "encoding"),
    ],
)
@pytest.mark.parametrize("which", ["doh", "doh1"])
async def test_doh_http_failures(
    which: str, http: HttpMode, detail: str, specs: dict[str, ResolverSpec], behaviour: Behaviour
) -> None:
    behaviour.http = http
    obs, elapsed = await timed(specs[which], "www.demo.test", "A")
    assert obs.status == VoteStatus.ERROR
    assert detail in obs.detail
    assert elapsed < 1.0


async def test_doh_url_path(doh: DohServer, pki: Pki) -> None:
    wrong = ResolverSpec("p", LOOP, doh.port, Transport.DOH, ca_file=pki.ca_file, url_path="/other")
    obs = await query(wrong, "www.demo.test", "A", deadline_s=2)
    assert (obs.status, obs.detail) == (VoteStatus.ERROR, "HTTP status 404")


# --------------------------------------------------------------------------------------------------
# Deadlines


async def test_hard_deadline_does_not_wait_for_a_stubborn_cleanup() -> None:
    async def stubborn() -> int:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(2)  # a clean-up that outlives the cancellation (e.g. a TLS close)
        return 1

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await hard_deadline(stubborn(), 0.1)
    assert time.monotonic() - start < 0.1 + SLACK


async def test_zero_deadline_is_an_immediate_timeout(specs: dict[str, ResolverSpec]) -> None:
    obs = await query(specs["udp"], "www.demo.test", "A", deadline_s=0)
    assert obs.status == VoteStatus.TIMEOUT


async def test_query_all_returns_on_time_with_a_hanging_resolver(
    specs: dict[str, ResolverSpec], pki: Pki
) -> None:
    hole = await BlackHoleServer(server_tls_context(pki, ["dot"])).start()
    silent = await PlainDnsServer(Behaviour(mode=Mode.SILENT)).start()
    try:
        mix = [
            specs["udp"],
            specs["dot"],
            ResolverSpec("hole", LOOP, hole.port, Transport.DOT, ca_file=pki.ca_file),
            specs["doh"],
            ResolverSpec("silent", LOOP, silent.port, Transport.TCP),
            ResolverSpec("closed", LOOP, await closed_port(), Transport.TCP),
            specs["doq"],
        ]
        names = [("www.demo.test", "A"), ("nope.demo.test", "AAAA")]
        start = time.monotonic()
        results = await query_all(mix, names, deadline_s=0.6)
        elapsed = time.monotonic() - start
        assert elapsed < 0.6 + SLACK
        assert len(results) == len(names) * len(mix)
        # names-major order
        assert [o.resolver_id for o in results] == [s.id for s in mix] * 2
        expected = {
            "udp": VoteStatus.ANSWER,
            "dot": VoteStatus.ANSWER,
            "hole": VoteStatus.TIMEOUT,
            "doh": VoteStatus.ANSWER,
            "silent": VoteStatus.TIMEOUT,
            "closed": VoteStatus.ERROR,
            "doq": VoteStatus.ANSWER,
        }
        assert {o.resolver_id: o.status for o in results[: len(mix)]} == expected
        assert {o.resolver_id: o.status for o in results[len(mix) :]} == expected
        answers = [o for o in results if o.status == VoteStatus.ANSWER]
        assert {o.answer for o in answers[:4]} == {WWW_A}
        assert {(o.rcode, o.answer) for o in answers[4:]} == {(3, ())}
    finally:
        await hole.close()
        await silent.close()


async def test_query_all_concurrency_bound_still_meets_the_deadline() -> None:
    silent = await PlainDnsServer(Behaviour(mode=Mode.SILENT)).start()
    try:
        spec = ResolverSpec("silent", LOOP, silent.port, Transport.UDP)
        names = [(f"n{i}.demo.test", "A") for i in range(5)]
        start = time.monotonic()
        results = await query_all([spec], names, deadline_s=0.3, concurrency=1)
        assert time.monotonic() - start < 0.3 + SLACK
        assert all(o.status == VoteStatus.TIMEOUT for o in results)
        # the first query holds the only slot for (almost) the whole deadline
        assert sum("not started" in o.detail for o in results) >= 3
    finally:
        await silent.close()


async def test_query_all_many_queries_concurrently(specs: dict[str, ResolverSpec]) -> None:
    names = [(f"www{i}.demo.test", "A") for i in range(40)] + [("www.demo.test", "A")]
    start = time.monotonic()
    results = await query_all([specs["udp"], specs["tcp"]], names, deadline_s=3, concurrency=16)
    assert time.monotonic() - start < 3
    assert [o.status for o in results] == [VoteStatus.ANSWER] * len(results)
    assert results[-1].answer == results[-2].answer == WWW_A


async def test_query_all_config_errors(specs: dict[str, ResolverSpec], tmp_path: Path) -> None:
    udp = specs["udp"]
    with pytest.raises(ValueError, match="duplicate resolver id"):
        await query_all([udp, udp], [("a.test", "A")], deadline_s=1)
    with pytest.raises(ValueError, match="invalid query name"):
        await query_all([udp], [("a..test", "A")], deadline_s=1)
    with pytest.raises(ValueError, match="invalid query type"):
        await query_all([udp], [("a.test", "BOGUS")], deadline_s=1)
    with pytest.raises(ValueError, match="cannot be queried"):
        await query_all([udp], [("a.test", "ANY")], deadline_s=1)
    with pytest.raises(ValueError, match="deadline_s"):
        await query_all([udp], [("a.test", "A")], deadline_s=0)
    with pytest.raises(ValueError, match="deadline_s"):
        await query_all([udp], [("a.test", "A")], deadline_s=float("nan"))
    with pytest.raises(ValueError, match="concurrency"):
        await query_all([udp], [("a.test", "A")], deadline_s=1, concurrency=0)
    with pytest.raises(ValueError, match="exceeds"):
        await query_all(
            [udp, specs["tcp"]], [(f"n{i}.test", "A") for i in range(131_073)], deadline_s=1
        )
    missing = ResolverSpec("x", LOOP, 853, Transport.DOT, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="cannot load ca_file"):
        prepare([missing])
    with pytest.raises(ValueError, match="cannot load ca_file"):
        await query(missing, "a.test", "A", deadline_s=1)
    assert await query_all([udp], [], deadline_s=1) == []


# --------------------------------------------------------------------------------------------------
# ResolverSpec


def test_spec_from_dict_defaults_and_round_trip() -> None:
    for transport, port in DEFAULT_PORTS.items():
        spec = ResolverSpec.from_dict(
            {"id": "r1", "address": "192.0.2.1", "transport": transport.value}
        )
        assert spec.port == port
        assert spec.transport is transport
        assert ResolverSpec.from_dict(spec.to_dict()) == spec
    spec = ResolverSpec.from_dict(
        {
            "id": "doh-1",
            "address": "2001:db8::1",
            "port": 8443,
            "transport": "DoH",
            "tls_hostname": "Dns.Example.",
            "url_path": "/q",
            "ca_file": "/etc/ca.pem",
        }
    )
    assert (spec.transport, spec.tls_hostname, spec.url_path) == (
        Transport.DOH,
        "dns.example",
        "/q",
    )
    assert doh_url(spec) == "https://[2001:db8::1]:8443/q"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"id": "Bad"}, "must match"),
        ({"id": "a" * 33}, "must match"),
        ({"id": 7}, "id must be of type str"),
        ({"address": "dns.google"}, "not an IPv4 or IPv6 literal"),
        ({"address": 1}, "address must be of type str"),
        ({"address": "fe80::1%eth0"}, "scoped IPv6"),
        ({"port": 0}, "1..65535"),
        ({"port": 70000}, "1..65535"),
        ({"port": True}, "port must be of type int"),
        ({"port": "53"}, "port must be of type int"),
        ({"transport": "http"}, "is not one of"),
        ({"tls_hostname": "dns.test"}, "tls_hostname only applies"),
        ({"ca_file": "/ca.pem"}, "ca_file only applies"),
        ({"verify_tls": False}, "verify_tls only applies"),
        ({"verify_tls": "no"}, "verify_tls must be of type bool"),
        ({"url_path": "/x"}, "url_path only applies to doh"),
        ({"url_path": "x"}, "absolute URL path"),
        ({"colour": "blue"}, "unknown key"),
    ],
)
def test_spec_validation_udp(patch: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"id": "r1", "address": "192.0.2.1", "transport": "udp"}
    data.update(patch)
    with pytest.raises(ValueError, match=message):
        ResolverSpec.from_dict(data)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"tls_hostname": "bad_host!"}, "not a host name"),
        ({"ca_file": "/ca.pem", "verify_tls": False}, "verify_tls is false"),
        ({"url_path": "/dns-query?x=1"}, "absolute URL path"),
        ({"url_path": "/" + "a" * 300}, "absolute URL path"),
    ],
)
def test_spec_validation_doh(patch: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"id": "r1", "address": "192.0.2.1", "transport": "doh"}
    data.update(patch)
    with pytest.raises(ValueError, match=message):
        ResolverSpec.from_dict(data)


def test_spec_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="is not one of"):
        ResolverSpec("r", LOOP, 53, "carrier-pigeon")  # type: ignore[arg-type]
    assert ResolverSpec("r", LOOP, 53, "tcp").transport is Transport.TCP  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing required key"):
        ResolverSpec.from_dict({"id": "r", "transport": "udp"})


# --------------------------------------------------------------------------------------------------
# Canonical form (pure)


def _response(
    qname: str, qtype: str, rrsets: list[dns.rrset.RRset], rcode: int = 0
) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, use_edns=0)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    r.answer.extend(rrsets)
    return r


def test_canonical_format_examples() -> None:
    r = _response(
        "Mail.Demo.Test.",
        "MX",
        [
            dns.rrset.from_text(
                "MAIL.demo.test.", 60, "IN", "MX", "20 B.Demo.Test.", "10 a.demo.test."
            ),
            dns.rrset.from_text(
                "mail.demo.test.",
                60,
                "IN",
                "RRSIG",
                "MX 13 3 60 20300101000000 20000101000000 1 demo.test. AAAA",
            ),
        ],
    )
    assert canonical_answer(r, "mail.demo.test", "MX") == (
        "mail.demo.test. MX 10 a.demo.test.",
        "mail.demo.test. MX 20 b.demo.test.",
    )
    txt = _response(
        "t.test.", "TXT", [dns.rrset.from_text("t.test.", 1, "IN", "TXT", '"Case Kept" "x\\"y"')]
    )
    assert canonical_answer(txt, "t.test", "TXT") == ('t.test. TXT "Case Kept" "x\\"y"',)
    six = _response(
        "v6.test.", "AAAA", [dns.rrset.from_text("v6.test.", 1, "IN", "AAAA", "2001:DB8:0:0::1")]
    )
    assert canonical_answer(six, "v6.test.", "AAAA") == ("v6.test. AAAA 2001:db8::1",)
    unknown = _response(
        "u.test.", "TYPE65534", [dns.rrset.from_text("u.test.", 1, "IN", "TYPE65534", "\\# 2 abcd")]
    )
    assert canonical_answer(unknown, "u.test.", "TYPE65534") == ("u.test. TYPE65534 \\# 2 abcd",)


def test_canonical_accepts_dname_chains_and_refuses_strays() -> None:
    chain = [
        dns.rrset.from_text("old.test.", 60, "IN", "DNAME", "new.test."),
        dns.rrset.from_text("www.old.test.", 60, "IN", "CNAME", "www.new.test."),
        dns.rrset.from_text("www.new.test.", 60, "IN", "A", "192.0.2.1"),
    ]
    assert canonical_answer(_response("www.old.test.", "A", chain), "www.old.test.", "A") == (
        "old.test. DNAME new.test.",
        "www.new.test. A 192.0.2.1",
        "www.old.test. CNAME www.new.test.",
    )
    stray_type = [dns.rrset.from_text("a.test.", 60, "IN", "AAAA", "::1")]
    with pytest.raises(CanonicalError, match="unexpected AAAA"):
        canonical_answer(_response("a.test.", "A", stray_type), "a.test.", "A")
    stray_dname = [dns.rrset.from_text("other.test.", 60, "IN", "DNAME", "x.test.")]
    with pytest.raises(CanonicalError, match="unrelated DNAME"):
        canonical_answer(_response("a.test.", "A", stray_dname), "a.test.", "A")
    # x.a -> x.b.a, x.c.a -> x.b.b.a, x.c.b.a, ...: exponential, must stop early
    loop = [
        dns.rrset.from_text("a.test.", 60, "IN", "DNAME", "b.a.test."),
        dns.rrset.from_text("a.test.", 60, "IN", "DNAME", "c.a.test."),
    ]
    with pytest.raises(CanonicalError, match="alias chain too long"):
        canonical_answer(_response("x.a.test.", "A", loop), "x.a.test.", "A")
    chaos = [dns.rrset.from_text("a.test.", 60, "CH", "A", "a.test. 1")]
    with pytest.raises(CanonicalError, match="class"):
        canonical_answer(_response("a.test.", "A", chaos), "a.test.", "A")


def test_canonical_bounds() -> None:
    long_txt = '"' + "x" * 250 + '" "' + "y" * 250 + '"'
    r = _response("t.test.", "TXT", [dns.rrset.from_text("t.test.", 1, "IN", "TXT", long_txt)])
    with pytest.raises(CanonicalError, match="512"):
        canonical_answer(r, "t.test.", "TXT")
    addrs = [f"10.0.0.{i}" for i in range(64)]
    ok = _response("a.test.", "A", [dns.rrset.from_text_list("a.test.", 1, "IN", "A", addrs)])
    assert len(canonical_answer(ok, "a.test.", "A")) == 64
    too_many = _response(
        "a.test.", "A", [dns.rrset.from_text_list("a.test.", 1, "IN", "A", [*addrs, "10.0.1.0"])]
    )
    with pytest.raises(CanonicalError, match="64"):
        canonical_answer(too_many, "a.test.", "A")
    obs = observation_from_response("r", Transport.UDP, "a.test.", "A", too_many, 1.0)
    assert (obs.status, obs.answer) == (VoteStatus.ERROR, ())


def test_min_ttl_and_ede_codes() -> None:
    r = _response(
        "alias.test.",
        "A",
        [
            dns.rrset.from_text("alias.test.", 900, "IN", "CNAME", "a.test."),
            dns.rrset.from_text("a.test.", 30, "IN", "A", "192.0.2.1"),
        ],
    )
    assert min_ttl(r) == 30
    assert min_ttl(_response("a.test.", "A", [])) == 0
    r.answer[0].ttl = 2**31  # RFC 2181: MSB set means 0
    assert min_ttl(r) == 0
    assert ede_codes(r) == ()
    r.use_edns(
        0,
        options=[
            dns.edns.EDEOption(dns.edns.EDECode.make(c)) for c in (29, 3, 3, 1, 2, 4, 5, 6, 7, 8, 9)
        ],
    )
    assert ede_codes(r) == (1, 2, 3, 4, 5, 6, 7, 8)  # sorted, unique, at most 8


def test_observation_from_response_checks_the_question() -> None:
    r = _response("a.test.", "A", [dns.rrset.from_text("a.test.", 60, "IN", "A", "192.0.2.1")])
    assert (
        observation_from_response("r", Transport.TCP, "A.TEST", "A", r, 1.0).status
        == VoteStatus.ANSWER
    )
    assert (
        observation_from_response("r", Transport.TCP, "b.test", "A", r, 1.0).status
        == VoteStatus.ERROR
    )
    assert (
        observation_from_response("r", Transport.TCP, "a.test", "AAAA", r, 1.0).status
        == VoteStatus.ERROR
    )
    r.flags |= dns.flags.TC
    assert (
        observation_from_response("r", Transport.TCP, "a.test", "A", r, 1.0).detail
        == "truncated response"
    )
    r.flags &= ~dns.flags.TC & ~dns.flags.QR
    assert (
        observation_from_response("r", Transport.TCP, "a.test", "A", r, 1.0).status
        == VoteStatus.ERROR
    )
    refused = _response("a.test.", "A", [], rcode=dns.rcode.REFUSED)
    refused.question = []  # allowed for REFUSED, as in dnspython's is_response()
    assert (
        observation_from_response("r", Transport.TCP, "a.test", "A", refused, 1.0).detail
        == "REFUSED"
    )
    empty_ok = _response("a.test.", "A", [])
    empty_ok.question = []
    assert (
        observation_from_response("r", Transport.TCP, "a.test", "A", empty_ok, 1.0).status
        == VoteStatus.ERROR
    )
    with pytest.raises(ValueError, match="cannot be queried"):
        observation_from_response("r", Transport.TCP, "a.test", "RRSIG", r, 1.0)


def test_observation_matches_the_wire_schema() -> None:
    """The enums are the wire enums, and an observation fits a ResolverVote as is."""
    assert Transport is messages.Transport and VoteStatus is messages.VoteStatus
    r = _response("a.test.", "A", [dns.rrset.from_text("a.test.", 60, "IN", "A", "192.0.2.1")])
    for obs in (
        observation_from_response("r", Transport.DOT, "a.test.", "A", r, 1.5),
        Observation.failure("r", Transport.DOT, VoteStatus.TIMEOUT, "timeout after 1 ms"),
    ):
        vote = messages.ResolverVote(
            agent="a",
            region="eu",
            round=1,
            qname="a.test.",
            qtype=dns.rdatatype.to_text(parse_qtype("a")),
            resolver_id=obs.resolver_id,
            transport=obs.transport,
            status=obs.status,
            rcode=obs.rcode,
            answer=tuple(obs.answer),
            answer_digest=b"",
            ttl=obs.ttl,
            ad=obs.ad,
            ede=tuple(obs.ede),
            observed_ms=0,
            dnssec=obs.dnssec,
        )
        assert messages.decode_ballot(
            messages.encode(
                messages.Ballot(agent="a", region="eu", round=1, issued_ms=0, votes=[vote])
            )
        ).votes == [vote]
    with pytest.raises(ValueError):
        Observation.failure("r", Transport.DOT, VoteStatus.ANSWER, "x")


# --------------------------------------------------------------------------------------------------
# Property tests

_labels = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
    min_size=1,
    max_size=12,
).filter(lambda s: not s.startswith("-") and not s.endswith("-"))
_rdata_a = st.tuples(st.just("A"), st.ip_addresses(v=4).map(str))
_rdata_txt = st.tuples(
    st.just("TXT"),
    st.text(alphabet='abcXYZ 019"\\;', max_size=20).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
)
_rdata_mx = st.tuples(
    st.just("MX"),
    st.tuples(st.integers(0, 65535), _labels).map(lambda t: f"{t[0]} {t[1]}.example."),
)


def _records(qtype: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    strategy = {"A": _rdata_a, "TXT": _rdata_txt, "MX": _rdata_mx}[qtype]
    return st.lists(strategy, min_size=0, max_size=12)


def _build(
    qname: str, qtype: str, records: list[tuple[str, str]], ttls: list[int], cname: bool
) -> dns.message.Message:
    rrsets: list[dns.rrset.RRset] = []
    owner = qname
    if cname:
        rrsets.append(
            dns.rrset.from_text(qname, ttls[0] if ttls else 1, "IN", "CNAME", "Target.Example.")
        )
        owner = "target.example."
    for i, (rdtype, text) in enumerate(records):
        # one RRset per record, each with its own TTL and owner case: order and TTL must not matter
        name = owner.upper() if i % 2 else owner
        rrsets.append(
            dns.rrset.from_text(name, ttls[i % len(ttls)] if ttls else 1, "IN", rdtype, text)
        )
    return _response(qname, qtype, rrsets)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qtype=st.sampled_from(["A", "TXT", "MX"]),
    data=st.data(),
    cname=st.booleans(),
    ttls=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_canonical_answer_is_order_ttl_and_duplicate_independent(
    qtype: str, data: st.DataObject, cname: bool, ttls: list[int], seed: int
) -> None:
    records = data.draw(_records(qtype))
    qname = "host.example."
    base = canonical_answer(_build(qname, qtype, records, [300], cname), qname, qtype)
    shuffled = list(records) * 2  # duplicates
    random.Random(seed).shuffle(shuffled)
    other = canonical_answer(_build(qname.upper(), qtype, shuffled, ttls, cname), qname, qtype)
    assert other == base
    assert list(base) == sorted(set(base))  # sorted and unique
    assert len(base) <= len(set(records)) + (1 if cname else 0)
    assert (len(base) > 0) == (bool(records) or cname)
    # idempotent: rebuilding a response from the canonical entries gives the same entries
    rebuilt = []
    for entry in base:
        owner, rdtype, rdata = entry.split(" ", 2)
        rebuilt.append(dns.rrset.from_text(owner, 5, "IN", rdtype, rdata))
    assert canonical_answer(_response(qname, qtype, rebuilt), qname, qtype) == base
    # and every entry is "owner TYPE rdata" with a lower-case absolute owner
    for entry in base:
        owner, rdtype, _ = entry.split(" ", 2)
        assert owner == owner.lower() and owner.endswith(".")
        assert rdtype in (qtype, "CNAME")


@settings(max_examples=200, deadline=None)
@given(
    rcode=st.integers(0, 4095),
    qr=st.booleans(),
    tc=st.booleans(),
    ad=st.booleans(),
    with_answer=st.booleans(),
    ede=st.lists(st.integers(0, 65535), max_size=12),
)
def test_observation_from_response_on_random_rcodes(
    rcode: int, qr: bool, tc: bool, ad: bool, with_answer: bool, ede: list[int]
) -> None:
    answer = [dns.rrset.from_text("a.test.", 60, "IN", "A", "192.0.2.1")] if with_answer else []
    r = _response("a.test.", "A", answer)
    r.use_edns(0, options=[dns.edns.EDEOption(dns.edns.EDECode.make(c)) for c in ede])
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    if not qr:
        r.flags &= ~dns.flags.QR
    if tc:
        r.flags |= dns.flags.TC
    if ad:
        r.flags |= dns.flags.AD
    wire = r.to_wire()
    parsed = dns.message.from_wire(wire)
    obs = observation_from_response("r", Transport.UDP, "a.test.", "A", parsed, 2.0)
    assert obs.rcode == rcode
    assert obs.ad == ad
    assert obs.ede == tuple(sorted(set(ede)))[:8]
    assert len(obs.detail) <= 160
    if not qr or tc:
        assert obs.status == VoteStatus.ERROR
    elif rcode in (0, 3):
        assert obs.status == VoteStatus.ANSWER
        assert obs.answer == (("a.test. A 192.0.2.1",) if with_answer else ())
        assert obs.ttl == (60 if with_answer else 0)
    elif rcode == 2:
        assert obs.status == VoteStatus.SERVFAIL
    else:
        assert obs.status == VoteStatus.ERROR
    if obs.status != VoteStatus.ANSWER:
        assert obs.answer == () and obs.ttl == 0


class _DropFirst(asyncio.DatagramProtocol):
    """A UDP server that ignores the first datagram of every query id, then answers."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: object) -> None:
        q = dns.message.from_wire(data)
        self.seen.append(q.id)
        if self.seen.count(q.id) == 1 or self.transport is None:
            return
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
        self.transport.sendto(r.to_wire(), addr)


async def test_udp_resends_a_lost_query_while_time_is_left() -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_DropFirst, local_addr=(LOOP, 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        spec = ResolverSpec("r1", LOOP, port, Transport.UDP)
        start = time.monotonic()
        obs = await query(spec, "lost.test", "A", deadline_s=3)
        assert obs.status == VoteStatus.ANSWER, obs.detail
        assert obs.answer == ("lost.test. A 192.0.2.7",)
        assert len(proto.seen) == 2 and proto.seen[0] == proto.seen[1]  # the same query, resent
        assert 0.9 < time.monotonic() - start < 3 + SLACK
        # without time for a resend, the lost datagram is a timeout
        obs = await query(spec, "lost2.test", "A", deadline_s=0.5)
        assert obs.status == VoteStatus.TIMEOUT
    finally:
        transport.close()
