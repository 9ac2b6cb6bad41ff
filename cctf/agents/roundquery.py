"""The round's queries: every ``(qname, qtype)`` through every resolver under one deadline
(:func:`query_all`, the DNS adapter of the agent loop), on the transports' bulk paths where they
apply.

* UDP resolvers, with the agent's :class:`~cctf.agents.udpfast.AnswerMemo`: a pool of workers, each
  with one connected socket per resolver (:mod:`cctf.agents.udpfast`);
* TCP and DoT resolvers, with the memo: one pipelined connection per resolver carries all of the
  round's queries (:mod:`cctf.agents.tcppipe`, RFC 7766 §6.2.1.1, RFC 7858 §3.4);
* anything else: one :func:`cctf.agents.dnsquery.query` per question and resolver, at most
  ``concurrency`` at a time.

On the bulk paths an answer whose bytes did not change since the last round reuses its observation
(DNSSEC state included); a new one is parsed, classified and validated as on the general path.
"""

from __future__ import annotations

import asyncio
import functools
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
from cctf.agents.spec import ResolverSpec
from cctf.agents.tcppipe import exchange_all
from cctf.agents.transports import UDP_RETRY_S, prepare, server_hostname, tls_context
from cctf.agents.udpfast import AnswerMemo, UdpChannel, exchange
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import Transport
from cctf.util.deadline import CANCEL_GRACE_S, abandon, hard_deadline

if TYPE_CHECKING:
    from cctf.agents.dnssecfetch import ChainValidator

from cctf.agents.dnsquery import (
    _INNER_MARGIN_S,
    _MIN_START_S,
    _check_deadline,
    _make_query,
    query,
)

__all__ = ["query_all"]

#: Transports whose round goes over one pipelined connection per resolver (with a memo).
_PIPELINED: Final = frozenset({Transport.TCP, Transport.DOT})

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
    return await _observe(
        spec,
        name,
        rdtype,
        question,
        data,
        latency,
        deadline_s=deadline_s,
        want_dnssec=want_dnssec,
        memo=memo,
        dnssec=dnssec,
        end=end,
    )


async def _observe(
    spec: ResolverSpec,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    question: str,
    data: bytes,
    latency: float,
    *,
    deadline_s: float,
    want_dnssec: bool,
    memo: AnswerMemo,
    dnssec: ChainValidator | None,
    end: float,
    looked_up: bool = False,
) -> Observation:
    """The observation of one answer's bytes (the memo's when they are unchanged; else parsed,
    classified and, with ``dnssec``, validated, then memoised): the UDP and the pipelined TCP paths.
    A truncated UDP answer takes the general path (TCP). ``looked_up``: the caller found no memo
    entry already."""
    now = time.time()
    hit = None if looked_up else memo.lookup(spec.id, question, data, now)
    if hit is not None:
        return hit.with_latency(latency)
    try:
        response = dns.message.from_wire(data)
    except Exception as exc:
        status, detail = classify(exc, deadline_s)
        return Observation.failure(spec.id, spec.transport, status, detail, latency)
    loop = asyncio.get_running_loop()
    if response.flags & dns.flags.TC and spec.transport is Transport.UDP:
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
    if memo is not None and any(spec.transport in _PIPELINED for spec in specs):
        tcp = [spec for spec in specs if spec.transport in _PIPELINED]
        rest = [spec for spec in specs if spec.transport not in _PIPELINED]
        piped = _piped(tcp, parsed, deadline_s, want_dnssec, dnssec, memo)
        if not rest:
            return await piped
        others = query_all(
            rest,
            names,
            deadline_s=deadline_s,
            concurrency=concurrency,
            want_dnssec=want_dnssec,
            dnssec=dnssec,
            memo=memo,
        )
        by_tcp, by_rest = await asyncio.gather(piped, others)
        merged: list[Observation] = []
        for i in range(len(parsed)):
            from_tcp = iter(by_tcp[i * len(tcp) : (i + 1) * len(tcp)])
            from_rest = iter(by_rest[i * len(rest) : (i + 1) * len(rest)])
            merged += [
                next(from_tcp) if spec.transport in _PIPELINED else next(from_rest)
                for spec in specs
            ]
        return merged
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


async def _piped(
    specs: Sequence[ResolverSpec],
    parsed: Parsed,
    deadline_s: float,
    want_dnssec: bool,
    dnssec: ChainValidator | None,
    memo: AnswerMemo,
) -> list[Observation]:
    """:func:`query_all` for TCP and DoT resolvers with a memo: the round's queries to one resolver
    on one pipelined connection (:mod:`cctf.agents.tcppipe`; DoT queries padded as on the general
    path), each answer then observed as over UDP (the memo's observation when unchanged, else
    parsed, classified and validated)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    inner = deadline_s - min(_INNER_MARGIN_S, deadline_s * 0.1)
    templates: dict[bool, list[bytes]] = {}  # padded (DoT, RFC 8467) or not (TCP)
    for pad in {spec.transport is Transport.DOT for spec in specs}:
        templates[pad] = [
            memo.query_wire(
                (q, "pad") if pad else q,
                functools.partial(_make_query, name, rdtype, want_dnssec, pad),
            )
            for name, rdtype, q in parsed
        ]
    start = time.perf_counter()
    answers = await asyncio.gather(
        *(
            exchange_all(
                spec.address,
                spec.port,
                templates[spec.transport is Transport.DOT],
                inner,
                tls=(tls_context(spec), server_hostname(spec))
                if spec.transport is Transport.DOT
                else None,
            )
            for spec in specs
        )
    )
    width = len(specs)
    out: list[Observation | None] = [None] * (len(parsed) * width)
    slow: list[tuple[int, int]] = []  # (index in out, spec): answers to parse and validate
    now = time.time()
    for j, (spec, (results, _stats)) in enumerate(zip(specs, answers, strict=True)):
        for i, ((_name, _rdtype, question), result) in enumerate(zip(parsed, results, strict=True)):
            k = i * width + j
            if isinstance(result, BaseException):
                status, detail = classify(result, deadline_s)
                latency = (time.perf_counter() - start) * 1000.0
                out[k] = Observation.failure(spec.id, spec.transport, status, detail, latency)
                continue
            hit = memo.lookup(spec.id, question, result[0], now)
            if hit is None:
                slow.append((k, j))
            else:
                out[k] = hit.with_latency((result[1] - start) * 1000.0)
    if slow:

        def observe(k: int, j: int) -> asyncio.Task[Observation]:
            name, rdtype, question = parsed[k // width]
            data, at = answers[j][0][k // width]  # type: ignore[misc]  # answered (not an error)
            return asyncio.create_task(
                _observe(
                    specs[j],
                    name,
                    rdtype,
                    question,
                    data,
                    (at - start) * 1000.0,
                    deadline_s=end - loop.time(),
                    want_dnssec=want_dnssec,
                    memo=memo,
                    dnssec=dnssec,
                    end=end,
                    looked_up=True,
                )
            )

        tasks: list[asyncio.Task[Observation]] = []
        if dnssec is not None and len(slow) > width:  # chain records first (see query_all)
            tasks = [observe(*slow[0])]
            await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()) / 2)
        tasks += [observe(k, j) for k, j in slow[len(tasks) :]]
        await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()) + 4 * CANCEL_GRACE_S)
        for (k, j), task in zip(slow, tasks, strict=True):
            if task.done() and not task.cancelled() and task.exception() is None:
                out[k] = task.result()
            else:
                abandon(task)
                detail = "not validated by the deadline"
                out[k] = Observation.failure(
                    specs[j].id, specs[j].transport, VoteStatus.TIMEOUT, detail
                )
    return [obs for obs in out if obs is not None]
