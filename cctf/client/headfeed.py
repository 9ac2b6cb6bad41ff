"""``HeadFeed``: keeps a subscriber's :class:`~cctf.client.heads.HeadCache` fed from the bus (a thin
adapter; the checks are the cache's, pure).

* Live: a core subscription on ``cctf.v1.head.<region>.>`` per region read (design D3: a head is
  published, as raw signed-note bytes, BEFORE the verdicts of its batch and on the same
  connection, so it normally arrives first).
* Catch-up: when a verdict names a head the cache lacks (envelope step 7 says ``head_unknown``),
  :meth:`HeadFeed.fetch` reads the last message of the exact head subject
  ``cctf.v1.head.<region>.<coordinator>.<size>`` from stream ``CCTF_HEADS_<REGION>`` by direct get
  (``<coordinator>``: the principal of the verdict's kid in the trust config).
* Catch-up waits a little (:data:`FETCH_WAITS_S`): the head may still be in the live
  subscription's queue or not yet stored; a head that could not be fetched is not asked for again
  for :data:`FETCH_MISS_S`.
* Gossip: every :data:`GOSSIP_INTERVAL_S` the newest verified head of each log, if it changed, is
  published (core only, the raw note) on ``cctf.v1.gossip.<region>`` of each region watched; the
  gossip of EVERY region (``cctf.v1.gossip.>``) is checked like any head (a validly signed head
  that forks or is inconsistent with the ones seen here raises the split-view alarm), so a
  coordinator showing one region another log than the others is caught in any region.
* Consistency: an optional :class:`ConsistencySource` (the log API, ``cctf log serve``) is asked
  for the proofs the cache lists as pending (:meth:`HeadCache.pending`), a bounded number per
  interval.

A bad head (unverifiable note, wrong subject) is counted by reason in :attr:`HeadFeed.rejected`,
logged, and dropped: a head is only ever used once its note verified. Nothing here raises for a
message from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from cctf.bus.connect import Connection
from cctf.bus.reader import ReadError, last_message
from cctf.bus.streams import heads_stream_name
from cctf.bus_schemas.envelope import Reason, Rejected, tlog_head_of
from cctf.bus_schemas.heads import head_filter, head_subject, parse_head_subject
from cctf.client.heads import HeadCache, HeadError, SplitView, VerifiedHead
from cctf.crypto.errors import KeyError_
from cctf.crypto.trust import Role, TrustConfig
from cctf.ids import IdError, check_id
from cctf.telemetry import get_logger, meter
from cctf.util.deadline import stop_task

if TYPE_CHECKING:  # the client owns a feed; verify_fetching calls back into it
    from cctf.client.sdk import TrustClient
    from cctf.client.verify import CheckedVerdict

__all__ = [
    "GOSSIP_INTERVAL_S",
    "ConsistencySource",
    "HeadFeed",
    "gossip_subject",
    "verify_fetching",
]

GOSSIP_PREFIX: Final = "cctf.v1.gossip"
GOSSIP_FILTER: Final = GOSSIP_PREFIX + ".>"
#: Waits before each direct get of a head a verdict names and the cache lacks (the head may be on
#: its way: its live copy in another subscription's queue, its stored copy not yet acknowledged).
FETCH_WAITS_S: Final = (0.0, 0.05, 0.2)
#: How long a head that could not be fetched is not asked for again, and how many are remembered.
FETCH_MISS_S: Final = 1.0
FETCH_MISSES: Final = 1024
#: How often the newest verified heads are gossiped and pending consistency proofs asked for.
GOSSIP_INTERVAL_S: Final = 1.0
#: Consistency proofs asked for per interval (the rest wait for the next one), and how often a
#: proof the log API refuses is asked for before its head is no longer tracked.
PROOFS_PER_INTERVAL: Final = 16
PROOF_TRIES: Final = 3
#: Pending-message bound of the core subscriptions (beyond it the server drops: a dropped head is
#: fetched by direct get when a verdict needs it).
PENDING_MSGS: Final = 8192
PENDING_BYTES: Final = 64 * 1024 * 1024

_log = get_logger("cctf.client.heads")


def gossip_subject(region: str) -> str:
    """``cctf.v1.gossip.<region>``: where subscribers gossip the heads they verified."""
    return f"{GOSSIP_PREFIX}.{check_id(region, 'region')}"


class ConsistencySource(Protocol):
    """Where consistency proofs come from (the log API of ``cctf log serve``)."""

    async def consistency(self, coordinator: str, size1: int, size2: int) -> Sequence[bytes]: ...


class HeadFeed:
    """Live heads, direct get of missing ones, gossip and consistency checks for one client."""

    def __init__(
        self,
        nc: Connection,
        trust: TrustConfig,
        *,
        request_timeout: float = 2.0,
        gossip: bool = True,
        gossip_interval_s: float = GOSSIP_INTERVAL_S,
        consistency: ConsistencySource | None = None,
    ) -> None:
        self.nc = nc
        self.cache = HeadCache(trust, on_split_view=self._split_view)
        self.gossip = gossip
        self.consistency = consistency
        #: Heads refused, by reason (``HeadError.reason``, ``fetch_error``).
        self.rejected: Counter[str] = Counter()
        #: Heads verified from each source (``live``, ``fetch``, ``gossip``).
        self.added: Counter[str] = Counter()
        self._timeout = request_timeout
        #: Consistency proofs that could not be obtained (each try counted; logged once per outage).
        self.consistency_unavailable = 0
        self._consistency_ok = True
        self._interval = gossip_interval_s
        m = meter("cctf.client")
        self._m_split_view = m.create_counter(
            "cctf_client_split_view_total",
            description="split views seen: two signed heads of one log that cannot both be true",
        )
        self._m_rejected = m.create_counter(
            "cctf_client_heads_rejected", description="log heads that failed verification"
        )
        self._regions: dict[str, list[Any]] = {}
        self._gossiped: dict[str, int] = {}  # kid -> size last gossiped
        self._misses: dict[tuple[str, int], float] = {}  # (kid, size) -> monotonic time of a miss
        self._gossip_watched = False
        self._proof_failures: dict[tuple[str, int, int], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._starting: dict[str, asyncio.Lock] = {}
        self._closed = False

    # ---- subscriptions

    async def watch(self, region: str) -> None:
        """Subscribe to ``region``'s heads once (and, with the first region, to the gossip of
        every region: a coordinator showing one region another head than the others is caught by
        a subscriber of any region); idempotent. Raises ``ReadError`` when the bus refuses."""
        region = check_id(region, "region")
        if region in self._regions or self._closed:
            return
        lock = self._starting.setdefault(region, asyncio.Lock())
        async with lock:
            if region in self._regions:
                return
            subs: list[Any] = []
            try:
                subs.append(await self._subscribe(head_filter(region), self._on_head_msg))
                if not self._gossip_watched:
                    self._gossip_watched = True
                    subs.append(await self._subscribe(GOSSIP_FILTER, self._on_gossip_msg))
                await self.nc.flush(timeout=max(1, round(self._timeout)))
            except Exception as exc:
                self._gossip_watched = bool(self._regions)
                for sub in subs:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                raise ReadError(f"cannot subscribe to the heads of {region}: {exc}") from exc
            self._regions[region] = subs
        if self._task is None and (self.gossip or self.consistency is not None):
            self._task = asyncio.create_task(self._tick_loop(), name="cctf-head-gossip")

    async def watch_quietly(self, region: str) -> None:
        """:meth:`watch`, a refusal logged instead of raised (heads are then only fetched when a
        verdict names one)."""
        try:
            await self.watch(region)
        except ReadError as exc:
            _log.warning("heads_unavailable", region=region, error=str(exc))

    async def _subscribe(self, subject: str, handler: Callable[[Any], Any]) -> Any:
        return await self.nc.subscribe(
            subject, cb=handler, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES
        )

    async def close(self) -> None:
        self._closed = True
        await stop_task(self._task, 2.0, what="head feed")
        self._task = None
        regions, self._regions = self._regions, {}
        if self.nc.is_closed:
            return
        for subs in regions.values():
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # ---- messages

    async def _on_head_msg(self, msg: Any) -> None:
        try:
            hs = parse_head_subject(msg.subject)
        except IdError as exc:
            self._refuse("bad_subject", msg.subject, str(exc))
            return
        self.add(msg.data, "live", coordinator=hs.coordinator, size=hs.size)

    async def _on_gossip_msg(self, msg: Any) -> None:
        self.add(msg.data, "gossip")

    def add(
        self, note: bytes, source: str, *, coordinator: str | None = None, size: int | None = None
    ) -> VerifiedHead | None:
        """Hand one head to the cache; count and log a refusal (never raises)."""
        try:
            head = self.cache.add_note(note, coordinator=coordinator, size=size)
        except HeadError as exc:
            self._refuse(exc.reason, source, exc.detail)
            return None
        except Exception as exc:  # a bug, not input: never let one message end a subscription
            self._refuse("internal_error", source, repr(exc))
            return None
        if head is not None:
            self.added[source] += 1
        return head

    def _refuse(self, reason: str, where: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._m_rejected.add(1, {"reason": reason})
        _log.warning("head_rejected", reason=reason, source=where, detail=detail)

    def _split_view(self, view: SplitView) -> None:
        """The alarm: metric and one log line (the exception is on demand, from the cache)."""
        self._m_split_view.add(1, {"kind": view.kind, "coordinator": view.coordinator})
        _log.error(
            "split_view", kind=view.kind, coordinator=view.coordinator, detail=view.describe()
        )

    # ---- catch-up

    async def fetch_for(self, data: bytes, region: str) -> bool:
        """Fetch the head a ``"tlog"`` envelope names, when the cache lacks it. ``True`` when the
        cache knows it afterwards."""
        named = tlog_head_of(data)
        if named is None:
            return False
        kid, size = named
        missed = self._misses.get((kid, size))
        if missed is not None and time.monotonic() - missed < FETCH_MISS_S:
            return False  # asked a moment ago: not there (a verdict naming no published head)
        for wait in FETCH_WAITS_S:
            await asyncio.sleep(wait)  # also lets a queued live copy of the head be handled
            errors = self.rejected["fetch_error"]
            if await self.fetch(kid, size, region=region):
                self._misses.pop((kid, size), None)
                return True
            if self.rejected["fetch_error"] != errors:
                break  # the bus did not answer (already waited out the request timeout)
        self._misses[(kid, size)] = time.monotonic()
        while len(self._misses) > FETCH_MISSES:
            del self._misses[next(iter(self._misses))]
        return False

    async def fetch(self, kid: str, size: int, *, region: str) -> bool:
        if self.cache.verified_root(kid, size) is not None:
            return True
        try:
            coordinator = self.cache.trust.get(kid, Role.COORDINATOR).principal
            subject = head_subject(region, coordinator, size)
        except (KeyError_, IdError):
            return False  # step 7 reports head_unknown; nothing to fetch
        try:
            raw = await last_message(
                self.nc, heads_stream_name(region), subject, request_timeout_s=self._timeout
            )
        except ReadError as exc:
            self._refuse("fetch_error", subject, str(exc))
            return False
        if raw is None:
            return False
        self.add(raw, "fetch", coordinator=coordinator, size=size)
        return self.cache.verified_root(kid, size) is not None

    # ---- gossip and consistency

    async def _tick_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus went away for a moment: try again next tick
                _log.info("head_gossip_failed", error=repr(exc))

    async def tick(self) -> None:
        """One round of gossip and consistency checks (also called by the loop)."""
        if self.gossip and self.nc.is_connected:
            for kid, head in self.cache.newest().items():
                if self._gossiped.get(kid) == head.size:
                    continue
                self._gossiped[kid] = head.size
                for region in list(self._regions):
                    await self.nc.publish(gossip_subject(region), head.note)
        if self.consistency is not None:
            for kid, size1, size2 in self.cache.pending(limit=PROOFS_PER_INTERVAL):
                anchor = self.cache.anchor(kid)
                if anchor is None:
                    continue
                try:
                    proof = await self.consistency.consistency(anchor.coordinator, size1, size2)
                except Exception as exc:  # no log API (yet), a timeout, a refusal, a bad reply
                    self.consistency_unavailable += 1
                    if self._consistency_ok:  # one log line per outage, not one per second
                        _log.warning("consistency_unavailable", log=kid, error=str(exc)[:300])
                    self._consistency_ok = False
                    if getattr(exc, "reason", "unavailable") == "unavailable":
                        break  # nobody answers: try again next tick
                    # answered, but not with a proof (e.g. a head the log does not hold): a few
                    # tries, then the head is no longer tracked (counted), never blocking the rest
                    key = (kid, size1, size2)
                    if len(self._proof_failures) >= 1024:
                        self._proof_failures.clear()
                    self._proof_failures[key] = self._proof_failures.get(key, 0) + 1
                    if self._proof_failures[key] >= PROOF_TRIES:
                        del self._proof_failures[key]
                        unchecked = size2 if size1 == anchor.size else size1
                        self.cache.drop_unchecked(kid, unchecked)
                    continue
                self._consistency_ok = True
                self._proof_failures.pop((kid, size1, size2), None)
                self.cache.add_consistency(kid, size1, size2, proof)


async def verify_fetching(
    client: TrustClient,
    region: str,
    data: bytes,
    subject: str,
    *,
    max_age_ms: int | None = None,
    cache: bool = True,
) -> CheckedVerdict:
    """``client._verify``; a batch-signed verdict naming a head not verified here yet gets its
    head fetched (direct get) and is verified again once. Raises :class:`Rejected`."""
    try:
        return client._verify(
            region, data, subject, max_age_ms=max_age_ms, cache=cache, quiet_head_unknown=True
        )
    except Rejected as exc:
        if exc.reason is not Reason.HEAD_UNKNOWN:
            raise
        if not await client.head_feed.fetch_for(data, region):
            client._count_rejected(exc.reason.value, region, subject, exc.detail)
            raise
    return client._verify(region, data, subject, max_age_ms=max_age_ms, cache=cache)
