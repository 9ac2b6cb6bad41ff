"""The coordinator service: lifecycle, loops and wiring of the pure stages to the bus adapters.

Data path (each arrow a stage of ``cctf.coordinator.pipeline``; see ``docs/architecture.md``)::

    core subscription per vote region (live copy) --> live (LiveIngest) --+
    RegionConsumer per vote region --fetch--> ingest (FairQueues) --take--+-> Intake: duplicates
      (DuplicateIndex: the other copy of a message is settled as the first) --> verify (VerifyStage)
      --> tally (Tallies: TallyBook | IdentityStage) --> Outbox: decide (Deciders: Decider |
      IdentityStage) --> sign (Signer, worker threads)
      --> Publisher (sent at once; stored with Nats-Msg-Id, retried in the background)
      --> acks (AckLedger): ack / term(reason) / +WPI

Configured by ONE :class:`~cctf.coordinator.config.CoordinatorConfig`. The service never raises on
input: every delivery reaches a final state (ack, or term with a counted reason) in bounded time.
NATS failures are retried with bounded backoff; a closed connection stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.consumer import Delivery
from cctf.bus.publisher import Publisher
from cctf.bus.streams import verdict_stream_of
from cctf.bus_schemas.envelope import TimePolicy
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.coordinator.batcher import batch_stage
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.control import SafeModeControl
from cctf.coordinator.counters import Counters, LogLimiter
from cctf.coordinator.deadlines import Deadlines
from cctf.coordinator.durablelog import CoordinatorLog
from cctf.coordinator.fetching import region_fetchers
from cctf.coordinator.intake import STOP_LEFT_BYTES, Intake, Token, turn_parts
from cctf.coordinator.livepath import LivePath
from cctf.coordinator.lkggate import LkgGate
from cctf.coordinator.metrics import watch_queues
from cctf.coordinator.outbox import Outbox
from cctf.coordinator.overload import Scheduler
from cctf.coordinator.pipeline.acks import AckLedger
from cctf.coordinator.pipeline.certgate import CertGate
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.identity import IdentitySet, identity_stage
from cctf.coordinator.pipeline.ingest import FairQueues
from cctf.coordinator.pipeline.live import LiveCopy
from cctf.coordinator.pipeline.recent import RecentKeys
from cctf.coordinator.pipeline.sign import Signer
from cctf.coordinator.pipeline.tallies import AnyKey, Deciders, Tallies
from cctf.coordinator.pipeline.verify import VerifyStage
from cctf.coordinator.replay import ReplayCache
from cctf.coordinator.stats import CoordinatorError, CoordinatorStats, counted_stats, vote_regions
from cctf.coordinator.tally import Decision
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import SequenceClock
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import SigningKey
from cctf.crypto.trust import Role, TrustConfig
from cctf.errors import CctfError
from cctf.util.deadline import stop_tasks

__all__ = ["Coordinator", "CoordinatorError", "CoordinatorStats", "vote_regions"]

_MAX_DETAIL: Final = 300

_log = telemetry.get_logger("cctf.coordinator")


class Coordinator:
    """Verifies ballots of every vote region, tallies them and publishes signed verdicts."""

    def __init__(
        self,
        config: CoordinatorConfig,
        conn: Connection,
        *,
        key: SigningKey | None = None,
        trust: TrustConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] = time.monotonic,
        time_policy: TimePolicy | None = None,
        owns_conn: bool = False,
    ) -> None:
        self.config = c = config
        self.coordinator = config.coordinator
        self._key = key if key is not None else config.load_key()
        trust = trust if trust is not None else config.load_trust()
        self._conn = conn
        self._clock = clock
        self._monotonic = monotonic
        self._owns_conn = owns_conn
        self.regions = vote_regions(config, trust)
        self.certs = CertGate(c.ca, trust, conn) if c.ca is not None else None
        verifier = BallotVerifier(
            trust=trust,
            clock=clock,
            policy=c.policy,
            rounds=RoundPolicy(round_ms=c.round_ms, max_round_lag=c.max_round_lag),
            times=time_policy or TimePolicy(),
            replay=ReplayCache(capacity=c.replay_capacity),
            certs=self.certs.registry if self.certs is not None else None,
        )
        identity_set = IdentitySet(c.identity) if c.identity is not None else None
        self._verify = VerifyStage(verifier, c.name_set, identity_set)
        self._queues: FairQueues[Delivery] = FairQueues(
            self.regions, limit=c.queue_limit, batch=c.fetch_batch
        )
        seq = SequenceClock(clock)  # one sequence for DNS and identity verdicts
        identity = identity_stage(c, clock, seq)
        # refusable: any voter may send a DNSSEC-bogus (refused) vote, so early UNAVAILABLE is exact
        dns = TallyBook(c.quorum, c.electorate, max_open=c.max_open_tallies, refusable=True)
        recent = RecentKeys.for_config(c.lkg, c.round_ms) if c.lkg.enabled else None  # LKG
        self._tallies = Tallies(dns, identity, recent)
        self._ledger: AckLedger[Token, AnyKey] = AckLedger(
            max_deliver=c.max_deliver,
            refresh_ms=max(1, c.ack_wait_ms // 3),
            hold_limit_ms=c.hold_limit_ms,
        )
        self._handles: dict[Token, Delivery] = {}
        agents = c.agent_ids
        per_region = {
            r: sum(e.role is Role.AGENT and e.region == r and e.principal in agents for e in trust)
            for r in self.regions
        }
        self._last_vote: dict[AnyKey, float] = {}
        self._counts = Counters()
        self._limiter = LogLimiter(20, monotonic)
        self._intake = Intake(
            verify=self._verify,
            tallies=self._tallies,
            ledger=self._ledger,
            verdict_ttl_ms=c.verdict_ttl_ms,
            counts=self._counts,
            handles=self._handles,
            last_vote=self._last_vote,
            log=self._log_limited,
        )
        self._executor = ThreadPoolExecutor(c.signing_workers, thread_name_prefix="cctf-sign")
        self._tasks: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()
        self._room = asyncio.Event()  # set while pending verdicts are below the bound
        self._room.set()
        self._space = asyncio.Event()  # pulsed when the queues were served
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._live = LivePath(
            conn,
            self.regions,
            {r: c.region_rate_for(n) for r, n in per_region.items()},
            queue_limit=c.queue_limit,
            batch=c.fetch_batch,
            monotonic=monotonic,
            stopping=self._stopping,
            on_work=self._work.set,
        )
        self._started = False
        self._failure: BaseException | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self.safe_mode = SafeModeControl(
            config=c.safe_mode,
            coordinator=c.coordinator,
            regions=c.publish_regions,
            agent_regions={e.principal: e.region for e in trust if e.role is Role.AGENT},
            conn=conn,
            key=self._key,
            trust=trust,
            suite_policy=c.policy,
            clock=clock,
            time_policy=time_policy,
            refresh_ms=c.safe_mode_refresh_ms,
            publish_timeout_s=c.publish_timeout_ms / 1000,
            per_coordinator=c.per_coordinator_subjects,
        )
        self._lkg = (
            LkgGate(
                c.lkg,
                c.coordinator,
                self._key,
                log=self._log_limited,
                on_episode=self.safe_mode.lkg,  # the policy stage's lkg_use rule
            )
            if c.lkg.enabled
            else None
        )
        publisher = Publisher(
            conn,
            clock,
            timeout_s=c.publish_timeout_ms / 1000,
            max_backoff_s=c.max_backoff_ms / 1000,
        )
        self.batcher = batch_stage(  # signing: batch (one signed log head per batch)
            c, self._key, publisher, self._executor, self._stopping, clock, on_fatal=self._fail
        )
        self.durable_log = CoordinatorLog(conn, c.coordinator, self._key)
        self._outbox = Outbox(
            decider=Deciders(
                Decider(c.quorum, c.coordinator, c.verdict_ttl_ms, clock, seq), identity
            ),
            signer=Signer(self._key, c.publish_regions, per_coordinator=c.per_coordinator_subjects),
            publisher=publisher,
            counts=self._counts,
            executor=self._executor,
            workers=c.signing_workers,
            stopping=self._stopping,
            settle=self._settle_key,
            latency=self._latency_ms,
            log=self._log_limited,
            lkg=self._lkg.apply if self._lkg is not None else None,
            batcher=self.batcher,
            expected_stream=verdict_stream_of,
        )
        self._scheduler = Scheduler(  # D6: newest rounds first, old undecided rounds shed
            outbox=self._outbox,
            counts=self._counts,
            release=self._release,
            log=self._log_limited,
            room=self._room,
            stopping=self._stopping,
            coordinator=c.coordinator,
            round_ms=c.round_ms,
            grace_ms=c.round_grace_ms,
            shed_after=c.shed_after_rounds,
            chunk=c.schedule_chunk,
            max_pending=c.max_pending_verdicts,
        )
        self._output_first_s = c.output_first_ms / 1000.0
        self._deadlines = Deadlines(
            config=c,
            clock=clock,
            monotonic=monotonic,
            tallies=self._tallies,
            lkg=self._lkg,
            scheduler=self._scheduler,
            safe_mode=self.safe_mode,
            counts=self._counts,
            ledger=self._ledger,
            handles=self._handles,
            schedule=self._schedule,
            term=self._term,
            log=self._log_limited,
            stopping=self._stopping,
        )
        self._fetchers = region_fetchers(
            conn,
            c,
            {r: c.region_rate_for(n) for r, n in per_region.items()},
            queues=self._queues,
            counts=self._counts,
            monotonic=monotonic,
            stopping=self._stopping,
            space=self._space,
            work=self._work,
            term=self._term,
            log=self._log_limited,
            fail=self._fail,
        )
        self._consumers = [f.consumer for f in self._fetchers]

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create (if missing) and bind every region's durable consumer, then start the loops."""
        if self._started:
            raise CoordinatorError("coordinator already started")
        if self.certs is not None:  # follow the CA log before counting any ballot
            await self.certs.start()
        try:
            for consumer in self._consumers:
                await consumer.bind()
        except CctfError as exc:
            raise CoordinatorError(str(exc)) from exc
        if self.config.live:  # the live copy of every ballot: core, no stream leader needed
            try:
                await self._live.start()
            except Exception as exc:
                raise CoordinatorError(f"cannot subscribe to the live ballots: {exc!r}") from exc
        if self._lkg is not None:  # bind the LKG bucket, read the state back, start its writer
            try:
                await self._lkg.start(self._conn, self._stopping)
            except CctfError as exc:
                raise CoordinatorError(f"LKG state: {exc}") from exc
        if self.batcher is not None:  # D4: resume the durable log before the first batch
            try:
                await self.durable_log.attach(self.batcher)
            except CctfError as exc:
                raise CoordinatorError(f"log {self.coordinator}: {exc}") from exc
        watch_queues(self)  # cctf_coordinator_queue_depth, once fully set up
        try:  # the stored safe-mode scopes (read back complete, or fail closed)
            await self.safe_mode.start()
        except CctfError as exc:
            raise CoordinatorError(f"safe-mode state: {exc}") from exc
        self._started = True
        if self.batcher is not None:
            self.batcher.start()
        name = self.coordinator
        self._tasks = [
            asyncio.create_task(f.run(), name=f"cctf-fetch-{name}-{f.consumer.spec.region}")
            for f in self._fetchers
        ]
        self._tasks.append(asyncio.create_task(self._process_loop(), name=f"cctf-process-{name}"))
        self._tasks.append(asyncio.create_task(self._deadlines.run(), name=f"cctf-deadline-{name}"))
        self._tasks += [  # sign-and-publish workers: signing of one overlaps publishing of another
            asyncio.create_task(self._scheduler.worker(), name=f"cctf-outbox-{name}-{i}")
            for i in range(self.config.signing_workers + 2)  # mostly waiting on acks
        ]
        c = self.config
        _log.info(
            "coordinator_started",
            coordinator=name,
            kid=self._key.kid,
            durable=c.durable_prefix,
            vote_regions=list(self.regions),
            verdict_regions=list(c.publish_regions),
            k=c.rule.k,
            n=c.rule.n,
            names=len(c.names),
            round_ms=c.round_ms,
        )

    async def stop(self) -> None:
        """Stop fetching, finish or abandon in-flight publishes (bounded), nak what is held or
        queued so a successor gets it promptly. The durable consumers are kept."""
        if self._stopping.is_set():
            await self._stopped.wait()
            return
        self._stopping.set()
        await self._live.stop()
        await self.safe_mode.stop()
        if self.certs is not None:
            await self.certs.stop()
        for event in (self._room, self._work, self._space):
            event.set()
        self._scheduler.wake()
        fetch_wait = self.config.fetch_timeout_ms / 1000 + 1.0
        for task in self._tasks:
            if task.get_name().startswith("cctf-fetch"):
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), fetch_wait)
            task.cancel()
        await stop_tasks(self._tasks, 2.0, what="coordinator")
        waiting = self._scheduler.tasks | self._outbox.storing
        if waiting:
            _done, pending = await asyncio.wait(list(waiting), timeout=1.0)
            await stop_tasks(pending, 1.0, what="coordinator store")
        if self.batcher is not None:  # refuse what is queued, drain the log appends (bounded)
            await self.batcher.stop()
            self.durable_log.close()
        if self._lkg is not None:  # its last flush of the LKG state (bounded)
            await self._lkg.stop()
        self._scheduler.drain()  # their ballots are held: nak'd below for a successor
        leftovers = [d for _r, d in self._queues.drain()]
        leftovers += [self._handles[t] for t in self._ledger.drain() if t in self._handles]
        self._handles.clear()
        if not self._conn.is_closed and self._conn.is_connected:
            for d in leftovers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(d.nak(), 0.5)
        with contextlib.suppress(Exception):  # bounded: the server may be gone
            await asyncio.wait_for(
                asyncio.gather(*(c.close() for c in self._consumers), return_exceptions=True), 1.0
            )
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_conn and not self._conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.drain(), 2.0)
            with contextlib.suppress(Exception):
                await self._conn.close()
        _log.info("coordinator_stopped", coordinator=self.coordinator)
        self._stopped.set()

    async def run_until_stopped(self) -> None:
        """Start if needed and wait until :meth:`stop` (raises if the service failed for good)."""
        if not self._started:
            await self.start()
        await self._stopping.wait()
        await self._stopped.wait()
        if self._failure is not None:
            raise CoordinatorError(f"coordinator failed: {self._failure}") from self._failure

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            _log.error("coordinator_failed", coordinator=self.coordinator, error=str(exc))
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    def stats(self) -> CoordinatorStats:
        lkg = self._lkg
        return counted_stats(
            self._counts,
            held_ballots=self._ledger.held,
            open_keys=self._ledger.open_keys,
            live_tallies=self._tallies.live,
            pending_verdicts=self._scheduler.pending,
            queued=len(self._queues),
            **(lkg.stats() if lkg is not None else {}),
            scheduled=self._scheduler.queued,
            live_dropped=self._live.dropped,
            live_suspensions=self._live.suspensions,
            storing_verdicts=len(self._outbox.storing),
        )

    def queue_depths(self) -> dict[str, int]:
        """Work waiting now, by queue (``cctf_coordinator_queue_depth``)."""
        sch, live = self._scheduler, len(self._live.ingest)
        return dict(live=live, durable=len(self._queues), held_ballots=self._ledger.held,
                    pending_verdicts=sch.pending, scheduled=sch.queued,
                    storing_verdicts=self._outbox.storing_verdicts)  # fmt: skip

    async def num_ack_pending(self) -> int:
        """The sum of the consumers' ``num_ack_pending`` (asks the server)."""
        return sum([await c.num_ack_pending() for c in self._consumers])

    # ---- ingest -----------------------------------------------------------------------------

    async def _process_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._room.is_set():
                await self._room.wait()
                continue
            turn: list[tuple[str, Delivery | LiveCopy]] = [
                *self._live.take(),  # the live copies first: they are the fast path
                *self._queues.take(),
            ]
            self._space.set()
            if not turn:
                self._work.clear()
                await self._work.wait()
                continue
            for part in turn_parts(turn):
                stop: int | None = STOP_LEFT_BYTES  # the first decision of a part goes out first
                while part:
                    decided, used = 0, len(part)
                    try:
                        decided, used = await self._process(part, stop)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug, never input: keep serving
                        _log.exception("batch_failed", coordinator=self.coordinator)
                    part, stop = part[max(used, 1) :], None
                    if decided and self._output_first_s > 0:  # output first (bounded): their
                        with contextlib.suppress(TimeoutError):  # verdicts go out before the rest
                            await asyncio.wait_for(
                                self._scheduler.idle.wait(), self._output_first_s
                            )
                    await asyncio.sleep(0)  # fetchers and the decided keys' output stages run

    async def _process(
        self, turn: list[tuple[str, Delivery | LiveCopy]], stop_if_left: int | None
    ) -> tuple[int, int]:
        """One call of the intake over ``turn``: (keys decided, messages processed)."""
        out = self._intake.turn(
            turn, self._monotonic(), self._clock.now_ms(), stop_if_left=stop_if_left
        )
        if out.decided:
            self._schedule(out.decided)
        for d, reason in out.to_term:  # counted with their refusals, before any await
            self._counts.term(reason, d.region)
        for d in out.to_ack:
            await self._ack(d)
        for d, reason in out.to_term:
            await self._term(d, reason, counted=True)
        return len(out.decided), out.used

    async def _ack(self, d: Delivery) -> None:
        try:
            await d.ack()
            self._counts.acked += 1
        except Exception as exc:  # the server redelivers; a held redelivery is handled
            self._log_limited("ack_failed", error=repr(exc)[:_MAX_DETAIL])

    async def _term(self, d: Delivery, reason: str, *, counted: bool = False) -> None:
        if not counted:
            self._counts.term(reason, d.region)
        try:
            await d.term(reason)
        except Exception as exc:
            self._log_limited("term_failed", error=repr(exc)[:_MAX_DETAIL])

    def _log_limited(self, event: str, **fields: object) -> None:
        ok, suppressed = self._limiter.allow(event)
        if ok:
            _log.warning(event.split(":")[0], suppressed=suppressed, **fields)

    # ---- deadlines and held ballots (cctf.coordinator.deadlines) -----------------------------

    def due_round(self, now_ms: int) -> int:
        """The highest round whose deadline ``(r + 1) * round_ms + grace`` is ``<= now_ms``."""
        return self._deadlines.due_round(now_ms)

    def expire_due(self) -> int:
        """Finalize every round whose deadline has passed; schedule their verdicts."""
        return self._deadlines.expire_due()

    # ---- verdicts -----------------------------------------------------------------------------

    def _schedule(self, decided: list[tuple[AnyKey, Decision]]) -> None:
        # the policy stage: detectors, safe-mode holds (identity evidence feeds identity drift)
        self._scheduler.schedule(self.safe_mode.apply(decided, self._tallies.identity))

    async def _settle_key(self, key: AnyKey) -> None:
        """The verdict of ``key`` is out or given up: acknowledge the ballots no longer waiting."""
        await self._release(key)

    async def _release(self, key: AnyKey) -> int:
        """:meth:`_settle_key`, returning how many ballots were acknowledged."""
        self._last_vote.pop(key, None)
        acked = 0
        for token in self._ledger.settle(key):
            d = self._handles.pop(token, None)
            if d is not None:
                await self._ack(d)
                acked += 1
        return acked

    def _latency_ms(self, key: AnyKey) -> float | None:
        last = self._last_vote.get(key)
        return (self._monotonic() - last) * 1000.0 if last is not None else None
