"""One DNS query through UDP / TCP / DoT / DoH / DoQ under a hard deadline (DNS adapter).

:func:`query` never raises for network, TLS or DNS problems: every failure becomes an
:class:`~cctf.agents.canonical.Observation` with status ``timeout``, ``servfail`` or ``error``. It raises
``ValueError`` only for configuration mistakes (bad name or type, unreadable CA file, bad deadline).

Deadlines are hard. dnspython's own timeouts can overshoot, and ``asyncio.wait_for`` waits, without
bound, for the cancelled operation to finish its clean-up (a QUIC close waits out the draining
period), so every DNS call runs in a task that is abandoned if it has not unwound shortly after
cancellation. The libraries' own timeouts are set a little earlier (10 %, at most 100 ms) so that they
normally fire first and clean up properly; the hard deadline is the backstop.

Transport notes:

* ``udp``: a *connected* UDP socket, so an ICMP port-unreachable surfaces at once as ``error``
  ("connection refused") and datagrams from other addresses are dropped by the kernel. A query
  unanswered for a second is sent again (a lost datagram), while time is left. Datagrams that
  do not parse or do not answer the query (wrong id or question) are ignored as possible spoofs, like a
  stub resolver does: a server that only sends such datagrams ends in ``timeout``. A truncated (TC)
  answer is retried over TCP.
* ``tcp``, ``dot``: one connection per query; a wrong id/question or a malformed message is ``error``.
  (A round's queries to a TCP or DoT resolver go over one pipelined connection instead:
  :mod:`cctf.agents.roundquery`, :mod:`cctf.agents.tcppipe`.)
* ``doh``: RFC 8484 POST over HTTP/2 or HTTP/1.1 (ALPN), one connection per query, no proxies, no
  redirects, no content encoding; the body is capped at 65535 bytes.
* ``doq``: RFC 9250 through dnspython/aioquic, one connection per query, closed in the background so
  the QUIC draining period (about 3 PTO) does not count against the deadline.

TLS (``dot``, ``doh``, ``doq``): the certificate is verified unless ``verify_tls`` is false, against
``ca_file`` when given (only that CA is trusted) or the system roots, and the name checked is
``tls_hostname`` when given, else the resolver's IP address (which must then be in the certificate's
subjectAltName). The connection always goes to ``address``: ``tls_hostname`` is never resolved.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Final

import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from cctf.agents.canonical import (
    Observation,
    VoteStatus,
    observation_from_response,
    parse_qname,
    parse_qtype,
)
from cctf.agents.dnsclassify import classify
from cctf.agents.spec import DEFAULT_PORTS, TLS_TRANSPORTS, ResolverSpec
from cctf.agents.transports import prepare, send, tls_context
from cctf.util.deadline import hard_deadline

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_PORTS",
    "EDNS_PAYLOAD",
    "TLS_TRANSPORTS",
    "ResolverSpec",
    "prepare",
    "query",
]

#: EDNS UDP payload size advertised in queries (DNS flag day 2020).
EDNS_PAYLOAD: Final = 1232
#: Queries over encrypted transports are padded to a multiple of this (RFC 8467).
_PAD_BLOCK: Final = 128
#: The libraries' own timeouts are set this much (at most) before the hard deadline, so they normally
#: fire first and clean up; the hard deadline is the backstop.
_INNER_MARGIN_S: Final = 0.1
#: query_all does not start a query with less time than this left.
_MIN_START_S: Final = 0.01


def _make_query(
    qname: dns.name.Name, qtype: dns.rdatatype.RdataType, want_dnssec: bool, pad: bool
) -> dns.message.QueryMessage:
    q = dns.message.make_query(
        qname,
        qtype,
        use_edns=0,
        want_dnssec=want_dnssec,
        payload=EDNS_PAYLOAD,
        pad=_PAD_BLOCK if pad else 0,
    )
    q.flags |= dns.flags.AD  # RFC 6840 5.7: ask for the AD bit
    return q


def _check_deadline(deadline_s: float) -> None:
    if (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, int | float)
        or not math.isfinite(deadline_s)
    ):
        raise ValueError(f"deadline_s must be a finite number of seconds, got {deadline_s!r}")


async def query(
    spec: ResolverSpec,
    qname: str | dns.name.Name,
    qtype: str | dns.rdatatype.RdataType,
    *,
    deadline_s: float,
    want_dnssec: bool = True,
) -> Observation:
    """Ask ``(qname, qtype, IN)`` of one resolver and classify what came back, within ``deadline_s``.

    The query has RD and AD set, EDNS0 with a 1232-byte payload, the DO bit when *want_dnssec*, and
    padding to 128 bytes on encrypted transports. Returns within ``deadline_s`` plus a few tens of
    milliseconds whatever the server does; a deadline ``<= 0`` gives an immediate ``timeout``.
    Raises ``ValueError`` only for configuration mistakes (invalid name, type, deadline, CA file).
    """
    if not isinstance(spec, ResolverSpec):
        raise ValueError(f"not a ResolverSpec: {spec!r}")
    name = parse_qname(qname)
    rdtype = parse_qtype(qtype)
    _check_deadline(deadline_s)
    ctx = tls_context(spec) if spec.transport in TLS_TRANSPORTS else None
    if deadline_s <= 0:
        return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, "no time left")
    q = _make_query(name, rdtype, want_dnssec, spec.transport in TLS_TRANSPORTS)
    start = time.perf_counter()
    try:
        inner = deadline_s - min(_INNER_MARGIN_S, deadline_s * 0.1)
        response = await hard_deadline(send(spec, q, inner, ctx), deadline_s)
    except Exception as exc:
        status, detail = classify(exc, deadline_s)
        latency = (time.perf_counter() - start) * 1000.0
        return Observation.failure(spec.id, spec.transport, status, detail, latency)
    latency = (time.perf_counter() - start) * 1000.0
    try:
        return observation_from_response(spec.id, spec.transport, name, rdtype, response, latency)
    except Exception as exc:  # defensive: a response dnspython parsed but we cannot classify
        detail = f"unclassifiable response ({type(exc).__name__})"
        return Observation.failure(spec.id, spec.transport, VoteStatus.ERROR, detail, latency)
