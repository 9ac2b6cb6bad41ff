"""Shared pieces of the chaos DNS server tests: the server fixture and plain dnspython queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.message
import pytest_asyncio

from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.zone import demo_zone

HOST = "127.0.0.1"
FORGED = "203.0.113.66"


@pytest_asyncio.fixture(name="server")
async def server_fixture() -> AsyncIterator[FaultyDnsServer]:
    """``server``: a fault-injecting server on the demo zone, with its control channel (import
    ``server_fixture`` into a test module to use it)."""
    srv = FaultyDnsServer(demo_zone(), control=True, tcp_idle_timeout=0.5)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def udp(
    srv: FaultyDnsServer, name: str, rdtype: str = "A", *, timeout: float = 2.0, **kw: Any
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    return await dns.asyncquery.udp(query, HOST, port=srv.port, timeout=timeout)


async def tcp(
    srv: FaultyDnsServer, name: str, rdtype: str = "A", *, timeout: float = 2.0, **kw: Any
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    return await dns.asyncquery.tcp(query, HOST, port=srv.port, timeout=timeout)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)
