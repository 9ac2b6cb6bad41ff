"""``TrustClient``: the subscriber SDK (a thin NATS adapter over :class:`VerdictVerifier`).

Reading verdicts
    :meth:`TrustClient.check` fetches the latest verdict stored for ``(name, qtype)`` in the region's
    verdict stream by JetStream *direct get* (last message by subject), verifies it and returns it.
    :meth:`TrustClient.verdicts` streams verified verdicts from a core subscription on
    ``cctf.v1.verdict.<region>.>`` (the live copy: no wait on a stream leader) merged with an
    ephemeral ordered push consumer on the same subjects (catch-up), each message once
    (:class:`cctf.bus.live.MergedFeed`). The bus calls are :mod:`cctf.bus.reader`'s (this module does
    not import nats-py); they fit the ``client`` user's least-privilege permissions.

Current answers
    ``check`` and :meth:`TrustClient.cached` (the one-shot calls) refuse a verdict issued more than
    ``max_age_ms`` ago (default two rounds of ``round_ms``) as the current answer
    (:attr:`Reason.STALE`), so a replayed older verdict is not the current answer beyond that window.
    ``round_ms`` must be the deployment's: the verifier checks every verdict's round against its
    issue time (:func:`cctf.client.verify.check_times`).

Last-Known-Good
    During an outage (resolvers timing out, never a disagreement) the coordinator re-issues the
    last TRUSTED decision of a name as an *LKG attestation*: a TRUSTED verdict whose
    ``basis_round``/``basis_ms`` name the earlier round of its evidence (``Verdict.is_lkg``,
    ``Verdict.staleness_ms``), valid at most 30 s, never beyond its cap (default 15 min after the
    evidence). ``check`` and ``verdicts`` return them like any verdict unless the client was built
    with ``accept_lkg=False``: then they are refused (:attr:`Reason.LKG`, counted in
    :attr:`TrustClient.rejected`).

Failing closed
    Nothing unverified is ever returned. ``check`` raises :class:`NoVerdict` when the stream holds no
    verdict for the subject, :class:`VerdictRejected` (with the :class:`Reason`) when the stored
    verdict fails verification — an expired verdict is a rejection, never a stale answer — and
    :class:`FetchError` when the bus cannot be asked. ``verdicts`` never raises for a bad message: it
    skips it, counts it in :attr:`TrustClient.rejected` by reason, logs it and goes on.

Rollback
    One :class:`VerdictVerifier` per region is shared by ``check`` and every ``verdicts`` iterator of
    the client, so the client as a whole never accepts a verdict older than one it has accepted. An
    exact duplicate of the latest accepted message is accepted again (see :mod:`cctf.client.verify`):
    ``check`` returns it, and ``verdicts`` yields it (each stream message is delivered once per
    iterator, so a duplicate there means the same signed message is stored twice).

Cache
    The latest verified verdict per ``(region, qname, qtype)`` — from ``check`` and from every
    ``verdicts`` iterator — is kept in a bounded LRU (``cache_size`` keys). ``check(...,
    cached=True)`` answers from it without a round-trip while the cached verdict is still valid (the
    earlier of its envelope expiry and ``expires_ms``) and not older than ``max_age_ms``; by default
    ``check`` always asks the bus. When the bus answers with a verdict *older* than the cached one (a
    replica that lags behind, or a replay) — a rollback, or one older than the maximum age — ``check``
    returns the newer cached verdict if it is still valid and fresh, and otherwise raises
    :class:`VerdictRejected` (``rollback`` or ``stale``).

Cost
    Each verdict arrives twice (live and stored copy) and is verified once: about 0.06 ms of CPU per
    batch-signed verdict on a loaded 2-vCPU VM (``benchmarks/subscriber.py``). The cyclic GC is a
    good part of it once the verifier's and the cache's state are large: a process that reads
    thousands of verdicts per second may raise its thresholds as the coordinator does
    (``gc.freeze(); gc.set_threshold(20_000, 20, 100)``); the SDK leaves its host's GC alone.

Batch-signed verdicts (``"tlog"``)
    are checked against log heads verified once (:attr:`TrustClient.heads`), fed live, by direct
    get and by gossip, with the split-view alarm: :mod:`cctf.client.headfeed`.

k-of-m coordinators
    With ``coordinators=CoordinatorPolicy(k, of)`` (``cctf check --coordinators 2:c1,c2,c3``) the
    client reads the last verdict of each configured coordinator from its own subject
    (``...<qtype>.<coordinator>``, docs/wire-protocol.md §5.4), verifies each one fully, and returns a
    verdict only when ``k`` of them signed the same statement for the same round
    (:mod:`cctf.client.coordquorum`); otherwise ``check`` raises :class:`VerdictRejected` with
    :attr:`Reason.COORDINATOR_QUORUM` (counted in :attr:`TrustClient.rejected`). ``verdicts`` yields
    a key once, when its ``k``-th agreeing verdict arrives. Only combined verdicts are cached.

Streams
    Identity verdicts share the region's verdict stream (subjects ending in a lower-case identity
    kind); a DNS verdict stream passes over them without counting them (they could never verify as
    DNS verdicts; :meth:`TrustClient.identity_verdict` reads them). Each iterator owns one :class:`cctf.bus.reader.OrderedFeed` (an ephemeral ordered push consumer,
    memory storage, no acks, flow control, heartbeats, bounded client-side buffer:
    ``PENDING_MSGS_LIMIT`` / ``PENDING_BYTES_LIMIT``; an overrun is a gap the ordered consumer
    repairs by re-creating itself). Closing, cancelling or garbage-collecting the iterator
    unsubscribes; the server then removes the consumer (a client may not delete consumers). Caveat of
    nats-py: when an ordered consumer is re-created before its first message, it restarts at stream
    sequence 1, so a ``new`` iterator can then also see older stored verdicts; each one still passes
    the full verification (expiry, rollback) before it is yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from cctf.bus.accounts import NatsUser
from cctf.bus.connect import Connection, connect
from cctf.bus.reader import (
    DEFAULT_INACTIVE_THRESHOLD_S,
    DELIVER_POLICIES,
    Deliver,
    ReadError,
    last_message,
)
from cctf.bus.streams import verdict_stream_name
from cctf.bus_schemas.control import SafeModeAnnouncement
from cctf.bus_schemas.envelope import Rejected
from cctf.bus_schemas.evidence import IdentityKind, IdentityVerdict
from cctf.bus_schemas.messages import Verdict
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.errors import (
    FALL_BACK,
    FetchError,
    NoVerdict,
    TrustClientError,
    VerdictRejected,
)
from cctf.client.headfeed import ConsistencySource, HeadFeed, verify_fetching
from cctf.client.identity_reader import IdentityReader
from cctf.client.present import verdict_line, verdict_to_json
from cctf.client.quorumcheck import check_quorum
from cctf.client.safemode import SafeModeReader, SafeModeStatus
from cctf.client.stream import (
    PENDING_BYTES_LIMIT,
    PENDING_MSGS_LIMIT,
    VerdictStream,
    open_stream,
)
from cctf.client.verified import VerifiedState
from cctf.client.verify import (
    DEFAULT_CAPACITY,
    DEFAULT_MAX_LKG_STALENESS_MS,
    DEFAULT_ROUND_MS,
    VerdictTimes,
)
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id
from cctf.logmon.apiclient import LogApiClient
from cctf.telemetry import get_logger

if TYPE_CHECKING:  # cctf.client.identity builds on this module
    from cctf.client.identity import IdentityClient
    from cctf.identity.targets import IdentityTargets

__all__ = [
    "PENDING_BYTES_LIMIT",
    "PENDING_MSGS_LIMIT",
    "Deliver",
    "FetchError",
    "NoVerdict",
    "TrustClient",
    "TrustClientError",
    "VerdictRejected",
    "VerdictStream",
    "verdict_line",
    "verdict_to_json",
]

#: Seconds :meth:`TrustClient.close` waits for a drain before closing the connection outright.
CLOSE_DRAIN_S: Final = 1.0

_log = get_logger("cctf.client")


class TrustClient(VerifiedState):
    """Verified access to a region's verdicts. See the module docstring for the guarantees."""

    def __init__(
        self,
        nc: Connection,
        trust: TrustConfig,
        region: str,
        clock: Clock = SYSTEM_CLOCK,
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        *,
        cache_size: int = DEFAULT_CAPACITY,
        rollback_capacity: int = DEFAULT_CAPACITY,
        request_timeout: float = 2.0,
        owns_connection: bool = False,
        round_ms: int = DEFAULT_ROUND_MS,
        max_age_ms: int | None = None,
        feed_inactive_threshold_s: float = DEFAULT_INACTIVE_THRESHOLD_S,
        accept_lkg: bool = True,
        max_lkg_staleness_ms: int = DEFAULT_MAX_LKG_STALENESS_MS,
        coordinators: CoordinatorPolicy | None = None,
        gossip: bool = True,
        consistency: ConsistencySource | Literal["log_api"] | None = "log_api",
    ) -> None:
        """``round_ms``: the deployment's round length. ``max_age_ms``: the oldest verdict (by
        issue time) ``check`` and ``cached`` return as the current answer (default two rounds).
        ``feed_inactive_threshold_s``: how long the server keeps a closed stream's consumer.
        ``accept_lkg``: whether Last-Known-Good attestations (``Verdict.is_lkg``: TRUSTED from
        evidence of an earlier round, during an outage) are used; ``False`` refuses them
        (:attr:`Reason.LKG`). ``max_lkg_staleness_ms``: an attestation is refused once its
        evidence is older (the coordinator's default cap, 15 min; step 14e). ``gossip``: publish
        the heads verified here on ``cctf.v1.gossip.<region>`` (they are always checked when
        others gossip them). ``consistency``: where consistency proofs between the heads seen come
        from: by default the log API (``cctf log serve``, :class:`cctf.logmon.apiclient.
        LogApiClient`); ``None``: only forks (two heads of one size) are detected."""
        #: k-of-m coordinator policy (``None``: any one trusted coordinator's verdict is used).
        self.coordinators = coordinators
        self.accept_lkg = accept_lkg
        self.times = VerdictTimes(round_ms=round_ms, max_lkg_staleness_ms=max_lkg_staleness_ms)
        self.max_age_ms = self.times.default_max_age_ms() if max_age_ms is None else max_age_ms
        if self.max_age_ms < 0:
            raise ValueError("max_age_ms must not be negative")
        self.nc = nc
        self.region = check_id(region, "region")
        self._timeout = request_timeout
        self._inactive_s = feed_inactive_threshold_s
        self._streams: set[VerdictStream] = set()
        self._owns_connection = owns_connection
        self._error_logging = {"on": False}
        self._closed = False
        self._identity = IdentityReader(
            nc,
            trust,
            clock,
            policy,
            self.times,
            capacity=rollback_capacity,
            cache_size=cache_size,
            request_timeout=request_timeout,
            max_age_ms=self.max_age_ms,
            on_rejected=self._count_rejected,
            coordinators=lambda: self.coordinators,  # k-of-m for identity verdicts too
        )
        #: Verified log heads of batch-signed verdicts (:mod:`cctf.client.heads`), fed live, by
        #: direct get and by gossip (:mod:`cctf.client.headfeed`; split-view alarm).
        if consistency == "log_api":
            consistency = LogApiClient(nc, timeout_s=request_timeout)
        self.head_feed = HeadFeed(
            nc, trust, request_timeout=request_timeout, gossip=gossip, consistency=consistency
        )
        VerifiedState.__init__(
            self,
            trust,
            clock,
            policy,
            self.head_feed.cache,
            cache_size=cache_size,
            rollback_capacity=rollback_capacity,
        )

    # ---- construction and shutdown

    @classmethod
    async def connect(
        cls,
        urls: str | Sequence[str],
        user: str,
        password: str,
        trust: TrustConfig,
        region: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        request_timeout: float = 2.0,
        round_ms: int = DEFAULT_ROUND_MS,
        max_age_ms: int | None = None,
        log_errors: bool = True,
        initial_retries: int = 2,
        accept_lkg: bool = True,
        max_lkg_staleness_ms: int = DEFAULT_MAX_LKG_STALENESS_MS,
        coordinators: CoordinatorPolicy | None = None,
        **connect_options: Any,
    ) -> TrustClient:
        """Connect to NATS as ``user`` (:func:`cctf.bus.connect.connect`, which sets the user's
        inbox prefix) and return a client that closes the connection on :meth:`close`.
        The first connection tries each server ``1 + initial_retries`` times, then raises
        ``nats.errors.NoServersError``; once connected, the client reconnects without limit (the
        project's connect policy). ``connect_options`` go to nats-py's ``connect`` and override
        that policy. With ``log_errors`` the SDK logs connection errors (never the
        password); without, a failed connect is only the exception this raises (see also
        :meth:`log_connection_errors`)."""

        region = check_id(region, "region")  # before connecting: nothing to clean up

        logging = {"on": log_errors}

        async def error_cb(exc: Exception) -> None:
            if logging["on"]:
                _log.warning("nats_error", user=user, error=str(exc) or type(exc).__name__)

        nc = await connect(
            urls,
            NatsUser(user, password),
            name=f"cctf-client-{region}",
            initial_retries=initial_retries,
            error_cb=error_cb,
            **connect_options,
        )
        client = cls(
            nc,
            trust,
            region,
            clock,
            policy,
            request_timeout=request_timeout,
            owns_connection=True,
            round_ms=round_ms,
            max_age_ms=max_age_ms,
            accept_lkg=accept_lkg,
            max_lkg_staleness_ms=max_lkg_staleness_ms,
            coordinators=coordinators,
        )
        client._error_logging = logging
        return client

    def log_connection_errors(self, on: bool = True) -> None:
        """Switch the logging of connection errors of a :meth:`connect`-ed client on or off."""
        self._error_logging["on"] = on

    async def close(self) -> None:
        """Stop every open verdict stream; close the connection if :meth:`connect` opened it."""
        self._closed = True
        for stream in list(self._streams):
            await stream.aclose()
        await self.head_feed.close()
        self._flush_accepted()
        if self._owns_connection and not self.nc.is_closed:
            if self.nc.is_connected:  # a drain while reconnecting would wait for the server
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.drain(), CLOSE_DRAIN_S)
            if not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await self.nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- point look-ups

    def identity(self, targets: IdentityTargets, **options: Any) -> IdentityClient:
        """Workload and credential decisions over this client's verified verdicts:
        ``client.identity(targets).workload(spiffe_id, token=...)``, ``.validate_certificate(pem)``,
        ``.validate_token(jwt, audience)`` (:class:`cctf.client.identity.IdentityClient`;
        ``options``: its keyword arguments)."""
        from cctf.client.identity import IdentityClient

        return IdentityClient(self, targets, **options)

    async def identity_verdict(
        self,
        kind: IdentityKind | str,
        subject: str,
        region: str | None = None,
        *,
        cached: bool = False,
    ) -> IdentityVerdict:
        """The latest verified identity verdict for ``(kind, subject)`` (kind ``bundle``: a trust
        domain, ``jwks``: an issuer URL, ``mtls``: a workload's SPIFFE ID) in ``region`` (default:
        the client's). Fails closed like :meth:`check` (:class:`NoVerdict`,
        :class:`VerdictRejected`, :class:`FetchError`; a malformed kind or subject raises
        :class:`~cctf.bus_schemas.subjects.SubjectError`); see :mod:`cctf.client.identity_reader`.
        ``cached``: answer from the last verified one while it is valid and fresh."""
        region = self.region if region is None else check_id(region, "region")
        return await self._identity.verdict(kind, subject, region, cached=cached)

    @property
    def safe_modes(self) -> SafeModeReader:
        """The reader of signed safe-mode announcements (:mod:`cctf.client.safemode`)."""
        reader: SafeModeReader | None = getattr(self, "_safe_mode_reader", None)
        if reader is None:
            reader = SafeModeReader(
                self.nc,
                self.trust,
                self.clock,
                self.policy,
                request_timeout=self._timeout,
                coordinators=lambda: self.coordinators,  # k-of-m for safe mode too
            )
            self._safe_mode_reader = reader
        return reader

    async def safe_mode(self, region: str | None = None) -> SafeModeStatus:
        """The verified safe-mode state of ``region`` (default: the client's): its last signed
        announcement. Fails closed like :meth:`check`."""
        return await self.safe_modes.status(self.region if region is None else region)

    def safe_mode_updates(
        self, region: str | None = None, *, deliver: Deliver = "last_per_subject"
    ) -> AsyncIterator[SafeModeAnnouncement]:
        """Verified safe-mode announcements of ``region`` as they are published."""
        return self.safe_modes.watch(self.region if region is None else region, deliver=deliver)

    async def check(self, name: str, qtype: str = "A", *, cached: bool = False) -> Verdict:
        """The latest verified verdict for ``(name, qtype)`` in the client's region.

        A verdict issued more than ``max_age_ms`` ago is refused (:attr:`Reason.STALE`). Raises
        :class:`NoVerdict`, :class:`VerdictRejected` or :class:`FetchError`; a malformed
        ``name`` or ``qtype`` raises :class:`~cctf.bus_schemas.subjects.SubjectError`.
        """
        subject = verdict_subject(self.region, name, qtype)
        if cached and (hit := self.cached(name, qtype)) is not None:
            return hit
        await self.head_feed.watch_quietly(self.region)
        if self.coordinators is not None:
            return await check_quorum(self, name, qtype, self.coordinators)
        try:
            raw = await last_message(
                self.nc, verdict_stream_name(self.region), subject, request_timeout_s=self._timeout
            )
        except ReadError as exc:
            raise FetchError(str(exc)) from exc
        if raw is None:
            raise NoVerdict(subject)
        try:
            # Verified against the subject we asked for: the signature binds it, so a message
            # stored under another subject cannot be passed off as this one.
            checked = await verify_fetching(
                self, self.region, raw, subject, max_age_ms=self.max_age_ms
            )
            return checked.verdict
        except Rejected as exc:
            if exc.reason in FALL_BACK and (newer := self.cached(name, qtype)) is not None:
                return newer
            raise VerdictRejected(subject, exc) from exc

    # ---- streams

    async def stream(self, region: str | None = None, *, deliver: Deliver = "new") -> VerdictStream:
        """Open a verdict stream (the consumer exists when this returns). Close it with
        :meth:`VerdictStream.aclose` or ``async with``. Raises :class:`FetchError` when the bus
        refuses."""
        if self._closed:
            raise RuntimeError("TrustClient is closed")
        region = self.region if region is None else check_id(region, "region")
        if deliver not in DELIVER_POLICIES:
            raise ValueError(f"deliver must be one of {list(DELIVER_POLICIES)}, not {deliver!r}")
        await self.head_feed.watch_quietly(region)
        vs = await open_stream(self, region, deliver, inactive_threshold_s=self._inactive_s)
        self._streams.add(vs)
        return vs

    async def verdicts(
        self, region: str | None = None, *, deliver: Deliver = "new"
    ) -> AsyncGenerator[Verdict, None]:
        """Verified verdicts of ``region`` (default: the client's), in stream order.

        ``deliver``: ``new`` (published from now on), ``last_per_subject`` (the latest stored
        verdict of every subject, then new ones) or ``all`` (everything stored, then new ones).
        Messages that fail verification are skipped, counted in :attr:`rejected` and logged.
        The subscription is removed when the iterator is closed, cancelled or garbage-collected.
        """
        async with await self.stream(region, deliver=deliver) as vs:
            async for verdict in vs:
                yield verdict
