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

import asyncio
import math
import time
from collections.abc import Sequence
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
from cctf.agents.transports import UDP_RETRY_S, prepare, send, tls_context
from cctf.agents.udpfast import AnswerMemo, UdpChannel, exchange
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import Transport
from cctf.util.deadline import CANCEL_GRACE_S, abandon, hard_deadline

if TYPE_CHECKING:
    from cctf.agents.dnssecfetch import ChainValidator

__all__ = [
    "DEFAULT_PORTS",
    "EDNS_PAYLOAD",
    "TLS_TRANSPORTS",
    "ResolverSpec",
    "prepare",
    "query",
    "query_all",
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


_VALIDATING: set[asyncio.Future[Observation]] = (
    set()
)  # shielded validations (one per query at most)


def _retry_s(limit_s: float) -> float:
    """Resend a UDP query unanswered for a third of its time (at least 100 ms, at most
    ``UDP_RETRY_S``): with a sub-second round, a 1 s resend would never happen, and one datagram
    lost in a burst would be a timeout."""
    return max(0.1, min(UDP_RETRY_S, limit_s / 3))


async def _query_udp_memo(
    spec: ResolverSpec,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    *,
    deadline_s: float,
    want_dnssec: bool,
    memo: AnswerMemo,
    dnssec: ChainValidator | None,
    end: float,
    hard: bool = True,
    question: str | None = None,
    channels: dict[str, UdpChannel] | None = None,
) -> Observation:
    """:func:`query` (and the DNSSEC annotation) over UDP through :mod:`cctf.agents.udpfast`: an
    unchanged answer reuses last round's observation; a truncated one takes the general path.
    ``question``: the memo key of ``(name, rdtype, want_dnssec)`` (:func:`_parse`); ``channels``:
    the calling worker's sockets by resolver id (made on first use; one closed after a socket error
    is replaced on the next query)."""
    if question is None:
        question = _question_key(name, rdtype, want_dnssec)
    template = memo.query_wire(question, lambda: _make_query(name, rdtype, want_dnssec, False))
    start = time.perf_counter()
    try:
        inner = deadline_s - min(_INNER_MARGIN_S, deadline_s * 0.1)
        if channels is None:
            ask = exchange(spec.address, spec.port, template, inner, _retry_s(inner))
        else:
            channel = channels.get(spec.id)
            if channel is None:
                channel = channels[spec.id] = UdpChannel(spec.address, spec.port)
            ask = channel.ask(template, inner, _retry_s(inner))
        # exchange() ends by its own timer; the hard deadline (a task) is for the general path
        data = await (hard_deadline(ask, deadline_s) if hard else ask)
    except Exception as exc:
        if channels is not None and isinstance(exc, OSError) and spec.id in channels:
            channels.pop(spec.id).close()  # ICMP refused or a socket error: a new one next time
        status, detail = classify(exc, deadline_s)
        latency = (time.perf_counter() - start) * 1000.0
        return Observation.failure(spec.id, spec.transport, status, detail, latency)
    latency = (time.perf_counter() - start) * 1000.0
    now = time.time()
    hit = memo.lookup(spec.id, question, data, now)
    if hit is not None:
        return hit.with_latency(latency)
    try:
        response = dns.message.from_wire(data)
    except Exception as exc:
        status, detail = classify(exc, deadline_s)
        return Observation.failure(spec.id, spec.transport, status, detail, latency)
    loop = asyncio.get_running_loop()
    if response.flags & dns.flags.TC:  # the general path retries over TCP
        obs = await query(spec, name, rdtype, deadline_s=end - loop.time(), want_dnssec=want_dnssec)
        return obs if dnssec is None else await dnssec.annotate(spec, name, rdtype, obs, end)
    try:
        obs = observation_from_response(spec.id, spec.transport, name, rdtype, response, latency)
    except Exception as exc:  # defensive, as in query()
        detail = f"unclassifiable response ({type(exc).__name__})"
        return Observation.failure(spec.id, spec.transport, VoteStatus.ERROR, detail, latency)
    if dnssec is None:
        memo.store(spec.id, question, data, obs, response, now)
        return obs

    async def validate_and_store() -> Observation:
        assert dnssec is not None
        out = await dnssec.annotate(spec, name, rdtype, obs, end)
        memo.store(spec.id, question, data, out, response, now)
        return out

    # Shielded: when the round's deadline abandons this query, the validation of the answer that
    # did arrive still completes and fills the memo, so the next round hits it (under load a cold
    # round could otherwise never finish one validation in time, and never warm up).
    job = asyncio.ensure_future(validate_and_store())
    _VALIDATING.add(job)
    job.add_done_callback(_VALIDATING.discard)
    return await asyncio.shield(job)


async def query_all(
    specs: Sequence[ResolverSpec],
    names: Sequence[tuple[str, str]],
    *,
    deadline_s: float,
    concurrency: int = 256,
    want_dnssec: bool = True,
    dnssec: ChainValidator | None = None,
    memo: AnswerMemo | None = None,
) -> list[Observation]:
    """Query every ``(qname, qtype)`` of *names* through every resolver of *specs*, at most
    *concurrency* at a time, all within one deadline.

    With *dnssec*, each observation's DNSSEC state is set by it (own validation fetching chain
    records through the same resolver, within the same deadline; resolver AD / EDE).

    With *memo* (kept by the agent across rounds), UDP queries take the fast path of
    :mod:`cctf.agents.udpfast`: an answer whose bytes did not change reuses its observation.

    Returns ``len(names) * len(specs)`` observations, names-major: the observation for ``names[i]``
    through ``specs[j]`` is at index ``i * len(specs) + j``. Returns within ``deadline_s`` plus a few
    tens of milliseconds even if servers hang; a query that could not start before the deadline (the
    concurrency bound) is a ``timeout``. Raises ``ValueError`` (before any I/O) for configuration
    mistakes: invalid names or types, duplicate resolver ids, unreadable CA files, a non-positive
    deadline or concurrency, or more than ``MAX_VOTES_PER_ROUND`` queries.
    """
    _check_deadline(deadline_s)
    if deadline_s <= 0:
        raise ValueError("deadline_s must be positive")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    prepare(specs)
    parsed = (
        _parse(names, want_dnssec)
        if memo is None
        else memo.plan(names, want_dnssec, lambda: _parse(names, want_dnssec))
    )
    if len(parsed) * len(specs) > L.MAX_VOTES_PER_ROUND:
        raise ValueError(
            f"{len(parsed)} names x {len(specs)} resolvers exceeds {L.MAX_VOTES_PER_ROUND} queries"
        )
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    gate = asyncio.Semaphore(concurrency)

    async def one(
        spec: ResolverSpec, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, question: str
    ) -> Observation:
        try:
            await asyncio.wait_for(gate.acquire(), timeout=max(end - loop.time(), 0.0))
        except TimeoutError:
            detail = "not started before the deadline (concurrency bound)"
            return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, detail)
        try:
            remaining = end - loop.time()
            if remaining < _MIN_START_S:
                detail = "not started before the deadline (concurrency bound)"
                return Observation.failure(spec.id, spec.transport, VoteStatus.TIMEOUT, detail)
            if memo is not None and spec.transport is Transport.UDP:
                return await _query_udp_memo(
                    spec,
                    name,
                    rdtype,
                    deadline_s=remaining,
                    want_dnssec=want_dnssec,
                    memo=memo,
                    dnssec=dnssec,
                    end=end,
                    question=question,
                )
            obs = await query(spec, name, rdtype, deadline_s=remaining, want_dnssec=want_dnssec)
            if dnssec is not None:
                obs = await dnssec.annotate(spec, name, rdtype, obs, end)
            return obs
        finally:
            gate.release()

    jobs = [(spec, name, rdtype, question) for name, rdtype, question in parsed for spec in specs]
    if not jobs:
        return []
    if memo is not None and all(spec.transport is Transport.UDP for spec in specs):
        return await _pooled(jobs, len(specs), deadline_s, concurrency, want_dnssec, dnssec, memo)
    tasks: list[asyncio.Task[Observation]] = []
    if dnssec is not None and len(parsed) > 1:
        # one name per resolver first: its validation fetches the chain records (DNSKEY, DS) once,
        # into the validator's TTL cache, before thousands of answers all wait for that one fetch
        # (under load the stampede missed the deadline together and nothing was ever validated)
        first = [asyncio.ensure_future(one(*job)) for job in jobs[: len(specs)]]
        await asyncio.wait(first, timeout=deadline_s / 2)
        tasks = first
    tasks += [asyncio.ensure_future(one(*job)) for job in jobs[len(tasks) :]]
    try:
        await asyncio.wait(tasks, timeout=deadline_s + 4 * CANCEL_GRACE_S)
    finally:
        for task in tasks:
            if not task.done():
                abandon(task)
    results: list[Observation] = []
    for (spec, _name, _rdtype, _question), task in zip(jobs, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            results.append(task.result())
        else:
            status = VoteStatus.TIMEOUT if not task.done() or task.cancelled() else VoteStatus.ERROR
            detail = (
                "did not finish by the deadline"
                if status == VoteStatus.TIMEOUT
                else "internal error"
            )
            results.append(Observation.failure(spec.id, spec.transport, status, detail))
    return results


Job = tuple[ResolverSpec, dns.name.Name, dns.rdatatype.RdataType, str]
Parsed = list[tuple[dns.name.Name, dns.rdatatype.RdataType, str]]


def _question_key(name: dns.name.Name, rdtype: dns.rdatatype.RdataType, want_dnssec: bool) -> str:
    """The memo key of a question: its name (lower case), type number and DO bit, as one string."""
    return f"{name.to_text().lower()}/{int(rdtype)}/{int(want_dnssec)}"


def _parse(names: Sequence[tuple[str, str]], want_dnssec: bool) -> Parsed:
    """Every ``(qname, qtype)`` parsed (``ValueError`` for an invalid one), with its memo key."""
    out: Parsed = []
    for n, t in names:
        name, rdtype = parse_qname(n), parse_qtype(t)
        out.append((name, rdtype, _question_key(name, rdtype, want_dnssec)))
    return out


async def _pooled(
    jobs: list[Job],
    probes: int,
    deadline_s: float,
    concurrency: int,
    want_dnssec: bool,
    dnssec: ChainValidator | None,
    memo: AnswerMemo,
) -> list[Observation]:
    """:func:`query_all` for UDP resolvers with a memo: ``concurrency`` workers take the queries in
    order (no task, semaphore or timer per query beyond the exchange's own), under one deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    results: list[Observation | None] = [None] * len(jobs)
    late = "not started before the deadline (concurrency bound)"
    position = 0

    async def worker(limit: int) -> None:
        nonlocal position
        channels: dict[str, UdpChannel] = {}  # this worker's sockets, one per resolver
        try:
            while position < limit:
                i = position
                position += 1
                spec, name, rdtype, question = jobs[i]
                remaining = end - loop.time()
                if remaining < _MIN_START_S:
                    results[i] = Observation.failure(
                        spec.id, spec.transport, VoteStatus.TIMEOUT, late
                    )
                    continue
                results[i] = await _query_udp_memo(
                    spec,
                    name,
                    rdtype,
                    deadline_s=remaining,
                    want_dnssec=want_dnssec,
                    memo=memo,
                    dnssec=dnssec,
                    end=end,
                    hard=False,
                    question=question,
                    channels=channels,
                )
        finally:
            for channel in channels.values():
                channel.close()

    workers: list[asyncio.Task[None]] = []
    try:
        if dnssec is not None and len(jobs) > probes:  # chain records first (see query_all)
            first = [asyncio.ensure_future(worker(probes)) for _ in range(probes)]
            workers += first
            await asyncio.wait(first, timeout=deadline_s / 2)
        n = max(1, min(concurrency, len(jobs) - position))
        workers += [asyncio.ensure_future(worker(len(jobs))) for _ in range(n)]
        await asyncio.wait(workers, timeout=max(0.0, end - loop.time()) + 4 * CANCEL_GRACE_S)
    finally:
        for task in workers:
            if not task.done():
                abandon(task)
    out: list[Observation] = []
    for (spec, _name, _rdtype, _question), obs in zip(jobs, results, strict=True):
        out.append(
            obs
            if obs is not None
            else Observation.failure(
                spec.id, spec.transport, VoteStatus.TIMEOUT, "did not finish by the deadline"
            )
        )
    return out
