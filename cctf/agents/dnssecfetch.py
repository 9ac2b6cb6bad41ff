"""The agent's DNSSEC step for one observation (DNS adapter around the pure :mod:`cctf.agents.dnssec`).

:class:`ChainValidator` sets :attr:`Observation.dnssec` for each query of a round: when a trust anchor
covers the name and the resolver answered, it validates the response, fetching the DNSKEY and DS
records the validation asks for **through the same resolver** (same transport, DO bit) within the
round's query deadline; then it combines the result with the resolver's AD bit / EDE codes
(:func:`cctf.agents.dnssec.vote_state`).

Fetched chain records are cached per resolver for their TTL, at most :data:`MAX_CACHE_S` (so a key
roll is seen within minutes) and at most :data:`MAX_CACHE_ENTRIES` entries; concurrent queries of a
round that need the same record share one fetch. Failed fetches are not cached: the validation that
needed one ends ``chain_unavailable``, and the observation becomes a ``timeout`` (the vote is
unavailable, as if the query had not finished: unchecked data never counts as an answer, and a slow
round is not turned into a dispute).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Final

import dns.message
import dns.name
import dns.rdatatype

from cctf.agents.canonical import Observation, VoteStatus
from cctf.agents.dnsquery import query
from cctf.agents.dnssec import (
    Fetch,
    NeedRecords,
    Reason,
    TrustAnchors,
    Validation,
    validate,
    vote_state,
)
from cctf.agents.spec import ResolverSpec
from cctf.bus_schemas.messages import DnssecState

__all__ = ["MAX_CACHE_ENTRIES", "MAX_CACHE_S", "ChainValidator"]

#: Longest time a fetched DNSKEY/DS response is reused.
MAX_CACHE_S: Final = 300.0
#: Most cached chain responses (over all resolvers).
MAX_CACHE_ENTRIES: Final = 4096
#: Validation passes per observation (each may fetch records of one more zone cut).
_MAX_PASSES: Final = 10
#: A chain fetch does not start with less time than this left.
_MIN_FETCH_S: Final = 0.005

_Key = tuple[str, dns.name.Name, dns.rdatatype.RdataType]


def _ttl(message: dns.message.Message) -> float:
    ttls = [rr.ttl for rr in message.answer]
    return float(min(ttls, default=0))


class ChainValidator:
    """The DNSSEC state of observations (see the module docstring)."""

    def __init__(
        self,
        anchors: TrustAnchors | None = None,
        validating: Iterable[str] = (),
        *,
        now_s: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.anchors = anchors if anchors is not None else TrustAnchors()
        self.validating = frozenset(validating)
        self._now = now_s
        self._mono = monotonic
        self._cache: dict[_Key, tuple[dns.message.Message, float]] = {}
        self._inflight: dict[_Key, asyncio.Future[dns.message.Message | None]] = {}
        self.fetches = 0
        """Chain responses fetched from resolvers (cache misses), for tests and metrics."""

    # -- the cache ------------------------------------------------------------------------------

    def _cached(self, key: _Key) -> dns.message.Message | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        message, until = hit
        if self._mono() >= until:
            del self._cache[key]
            return None
        return message

    def _store(self, key: _Key, message: dns.message.Message) -> None:
        life = min(MAX_CACHE_S, _ttl(message))
        if life <= 0:
            return
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            now = self._mono()
            for k in [k for k, (_, until) in self._cache.items() if until <= now]:
                del self._cache[k]
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (message, self._mono() + life)

    async def _fetch(
        self, spec: ResolverSpec, fetch: Fetch, end: float
    ) -> dns.message.Message | None:
        key = (spec.id, *fetch)
        cached = self._cached(key)
        if cached is not None:
            return cached
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dns.message.Message | None] = loop.create_future()
        self._inflight[key] = future
        result: dns.message.Message | None = None
        try:
            remaining = end - loop.time()
            if remaining >= _MIN_FETCH_S:
                self.fetches += 1
                obs = await query(spec, fetch[0], fetch[1], deadline_s=remaining)
                if obs.status is VoteStatus.ANSWER and obs.response is not None:
                    result = obs.response
                    self._store(key, result)
        finally:
            del self._inflight[key]
            if not future.done():
                future.set_result(result)
        return result

    # -- one observation ------------------------------------------------------------------------

    async def own(
        self,
        spec: ResolverSpec,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        response: dns.message.Message,
        end: float,
    ) -> Validation:
        """Own validation of ``response``, fetching chain records until ``end`` (loop time)."""
        fetched: dict[Fetch, dns.message.Message | None] = {}
        for _ in range(_MAX_PASSES):
            out = validate(qname, rdtype, response, self.anchors, fetched, self._now())
            if not isinstance(out, NeedRecords):
                return out
            results = await asyncio.gather(*(self._fetch(spec, f, end) for f in out.fetches))
            fetched.update(zip(out.fetches, results, strict=True))
        return Validation(
            DnssecState.BOGUS, Reason.CHAIN_TOO_LONG, f"more than {_MAX_PASSES} chain passes"
        )

    async def annotate(
        self,
        spec: ResolverSpec,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        obs: Observation,
        end: float,
    ) -> Observation:
        """``obs`` with its DNSSEC state set (and, when not secure, the reason in ``detail`` if it
        had none)."""
        own: Validation | None = None
        if (
            obs.status is VoteStatus.ANSWER
            and obs.response is not None
            and self.anchors.covering(qname) is not None
        ):
            try:
                own = await self.own(spec, qname, rdtype, obs.response, end)
            except Exception as exc:  # a validator bug must not turn the answer into a crash
                detail = f"{type(exc).__name__}"
                own = Validation(DnssecState.BOGUS, Reason.VALIDATION_ERROR, detail)
        if own is not None and own.reason is Reason.CHAIN_UNAVAILABLE:
            # the chain could not be fetched in time: like a query that did not finish, the vote is
            # unavailable (never an answer, which would let unchecked data count; never bogus,
            # which would turn a slow round into a dispute)
            return Observation.failure(
                obs.resolver_id,
                obs.transport,
                VoteStatus.TIMEOUT,
                f"dnssec chain not fetched in time ({own.detail})",
                obs.latency_ms,
            )
        result = vote_state(
            obs,
            own,
            transport=spec.transport,
            address=spec.address,
            validating=spec.id in self.validating,
        )
        if result.state is obs.dnssec:
            return obs  # nothing to change (the common case without anchors)
        detail = obs.detail
        if not detail and result.state is DnssecState.BOGUS:
            detail = f"dnssec {result.reason.value}: {result.detail}"[:200]
        return dataclasses.replace(obs, dnssec=result.state, detail=detail)
