"""The coordinator service: a thin NATS adapter around the pure verifier, tally and verdict builder.

Data path::

    CCTF_VOTES --(durable pull consumer, batches)--> BallotVerifier.verify   (rejected: ack, count, log)
        --> TallyBook.add per vote --> Decision --> build_verdict --> seal per region
        --> JetStream publish (Nats-Msg-Id = "<coordinator>-<seq>-<region>", retried) --> ack ballots

A periodic deadline task expires rounds whose deadline ``(r + 1) * round_ms + grace`` has passed (on the
injected clock) and publishes the resulting decisions the same way.

Acknowledgement rule: a verified ballot is acknowledged once the verdict of *every* key it
contributed a counted vote to has been published (or expired unpublished). Until then it stays
unacknowledged, so if this process dies, the server redelivers it and a successor re-tallies the
round: nothing acknowledged is lost. Rejected messages are acknowledged at once (redelivery could not
change the outcome). A redelivery of a ballot still held (same stream sequence, same bytes) is not
verified again (it would look like a replay); the newer delivery just replaces the held one.

The service never raises on input: every per-message failure is caught, acknowledged, counted and
logged. NATS failures (disconnects, server restarts, leader changes) are retried with bounded backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cctf import telemetry
from cctf.bus_schemas.envelope import Rejected, TimePolicy
from cctf.bus_schemas.messages import ResolverVote, Verdict, VoteStatus, encode, vote_digest
from cctf.bus_schemas.subjects import SubjectError, normalize_name
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.coordinator.metrics import instruments
from cctf.coordinator.replay import ReplayCache
from cctf.coordinator.tally import AddResult, Decision, QuorumRule, TallyBook, TallyKey, VoteInput
from cctf.coordinator.verdicts import SequenceClock, VerdictError, build_verdict, seal_verdict
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import SigningKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from cctf.coordinator.config import CoordinatorConfig

__all__ = ["VOTES_STREAM", "VOTES_SUBJECTS", "Coordinator", "CoordinatorError", "CoordinatorStats"]

VOTES_STREAM: Final = "CCTF_VOTES"
VOTES_SUBJECTS: Final = "cctf.v1.vote.>"
#: Rejection reason for an unexpected exception while handling one message (a bug, never input).
INTERNAL_REASON: Final = "internal"
_MAX_DETAIL: Final = 300
_LOGS_PER_SECOND: Final = 20
_PUBLISH_CHUNK = 32  # verdicts signed before the first of them is published

_log = telemetry.get_logger("cctf.coordinator")


class CoordinatorError(RuntimeError):
    """The coordinator cannot run (e.g. its NATS connection closed for good)."""


@dataclass(frozen=True)
class CoordinatorStats:
    """A snapshot of one coordinator's counters (the metrics are process-wide; these are not)."""

    ballots_accepted: int
    votes_accepted: int
    votes_ignored: dict[str, int]
    rejected: dict[str, int]
    equivocations: int
    verdicts: dict[str, int]
    verdict_messages: int
    publish_retries: int
    verdicts_dropped: int
    held_ballots: int
    open_keys: int
    live_tallies: int
    pending_verdicts: int


class _Held:
    """A verified ballot waiting for the verdicts of the keys it was counted in."""

    __slots__ = ("msg", "remaining", "seq")

    def __init__(self, msg: Msg, seq: int | None) -> None:
        self.msg = msg
        self.seq = seq
        self.remaining = 0


class _KeyState:
    """The adapter's side of one open tally: the counted votes and the ballots waiting on it."""

    __slots__ = ("last_vote", "votes", "waiters")

    def __init__(self) -> None:
        self.votes: dict[str, ResolverVote] = {}
        self.waiters: list[_Held] = []
        self.last_vote = 0.0


@dataclass
class _Job:
    key: TallyKey
    decision: Decision
    state: _KeyState
    verdict: Verdict
    payload: bytes
    sealed: list[tuple[str, str, bytes]] = field(default_factory=list)  # (region, subject, data)


class _BatchCounts:
    """Counters of one batch, flushed to the metrics once (no per-vote metric calls)."""

    __slots__ = ("ballots", "equivocations", "ignored", "rejected", "votes")

    def __init__(self) -> None:
        self.ballots = 0
        self.votes = 0
        self.equivocations = 0
        self.rejected: dict[str, int] = {}
        self.ignored: dict[str, int] = {}

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def ignore(self, result: str) -> None:
        self.ignored[result] = self.ignored.get(result, 0) + 1


class _LogLimiter:
    """At most ``rate`` log lines per second per event key; counts what it suppressed."""

    def __init__(self, rate: int, monotonic: Callable[[], float]) -> None:
        self._rate = rate
        self._monotonic = monotonic
        self._window: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, suppressed)

    def allow(self, key: str) -> tuple[bool, int]:
        """``(may log, suppressed since the last allowed line)``."""
        now = self._monotonic()
        start, logged, suppressed = self._window.get(key, (now, 0, 0))
        if now - start >= 1.0:
            start, logged = now, 0
        if logged < self._rate:
            self._window[key] = (start, logged + 1, 0)
            return True, suppressed
        self._window[key] = (start, logged, suppressed + 1)
        return False, 0


class Coordinator:
    """Verifies ballots from ``CCTF_VOTES``, tallies them and publishes signed verdicts."""

    def __init__(
        self,
        *,
        coordinator: str,
        key: SigningKey,
        trust: TrustConfig,
        rule: QuorumRule,
        electorate: Sequence[str],
        nc: Client,
        verdict_regions: Sequence[str],
        clock: Clock = SYSTEM_CLOCK,
        policy: SuitePolicy | None = None,
        round_ms: int = 1_000,
        round_grace_ms: int = 1_500,
        max_round_lag: int = 2,
        verdict_ttl_ms: int = 30_000,
        durable: str | None = None,
        max_open_tallies: int = 100_000,
        fetch_batch: int = 256,
        fetch_timeout_s: float = 0.25,
        max_ack_pending: int = 10_000,
        ack_wait_ms: int = 2_000,
        tick_s: float | None = None,
        max_pending_verdicts: int = 20_000,
        replay_capacity: int = 1_000_000,
        publish_timeout_s: float = 2.0,
        max_backoff_s: float = 2.0,
        signing_workers: int = 2,
        time_policy: TimePolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        owns_nc: bool = False,
        stream: str = VOTES_STREAM,
    ) -> None:
        if not verdict_regions:
            raise ValueError("at least one verdict region is needed")
        if round_ms <= 0 or round_grace_ms < 0:
            raise ValueError("round_ms must be positive and round_grace_ms non-negative")
        self.coordinator = coordinator
        self._key = key
        self._rule = rule
        self._nc = nc
        self._regions = tuple(verdict_regions)
        self._clock = clock
        self._round_ms = round_ms
        self._grace_ms = round_grace_ms
        self._ttl_ms = verdict_ttl_ms
        self._durable = durable or coordinator
        self._stream = stream
        self._fetch_batch = fetch_batch
        self._fetch_timeout = fetch_timeout_s
        self._max_ack_pending = max_ack_pending
        self._ack_wait_s = ack_wait_ms / 1000
        self._tick_s = tick_s if tick_s is not None else min(0.1, round_ms / 4000)
        self._max_pending_verdicts = max_pending_verdicts
        self._publish_timeout = publish_timeout_s
        self._max_backoff = max_backoff_s
        self._monotonic = monotonic
        self._owns_nc = owns_nc

        self._verifier = BallotVerifier(
            trust=trust,
            clock=clock,
            policy=policy or SuitePolicy(),
            rounds=RoundPolicy(round_ms=round_ms, max_round_lag=max_round_lag),
            times=time_policy or TimePolicy(),
            replay=ReplayCache(capacity=replay_capacity),
        )
        self._book = TallyBook(rule, electorate, max_open=max_open_tallies)
        self._seq = SequenceClock(clock)
        self._keys: dict[TallyKey, _KeyState] = {}
        self._held: dict[int, _Held] = {}
        self._qnames: dict[str, str] = {}  # raw qname -> normalized, cleared when large
        self._metrics = instruments()
        self._limiter = _LogLimiter(_LOGS_PER_SECOND, monotonic)
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, signing_workers), thread_name_prefix="cctf-sign"
        )
        self._signing_workers = max(1, signing_workers)

        self._js: Any = None
        self._psub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_tasks: set[asyncio.Task[None]] = set()
        self._pending_verdicts = 0
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False
        self._failure: BaseException | None = None
        self._stop_task: asyncio.Task[None] | None = None

        # per-instance counters (see stats())
        self._n_ballots = 0
        self._n_votes = 0
        self._n_ignored: dict[str, int] = {}
        self._n_rejected: dict[str, int] = {}
        self._n_equivocations = 0
        self._n_verdicts: dict[str, int] = {}
        self._n_verdict_msgs = 0
        self._n_retries = 0
        self._n_dropped = 0

    # ---- construction from a config file ------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: CoordinatorConfig,
        nc: Client,
        *,
        clock: Clock = SYSTEM_CLOCK,
        key: SigningKey | None = None,
        trust: TrustConfig | None = None,
        owns_nc: bool = False,
        **overrides: Any,
    ) -> Coordinator:
        """Build from a :class:`CoordinatorConfig` (key and trust are read from their files
        unless given)."""
        kwargs: dict[str, Any] = {
            "coordinator": config.coordinator,
            "key": key if key is not None else config.load_key(),
            "trust": trust if trust is not None else config.load_trust(),
            "rule": config.rule,
            "electorate": config.electorate,
            "nc": nc,
            "verdict_regions": config.verdict_regions,
            "clock": clock,
            "policy": config.policy,
            "round_ms": config.round_ms,
            "round_grace_ms": config.round_grace_ms,
            "max_round_lag": config.max_round_lag,
            "verdict_ttl_ms": config.verdict_ttl_ms,
            "durable": config.durable,
            "max_open_tallies": config.max_open_tallies,
            "fetch_batch": config.fetch_batch,
            "max_ack_pending": config.max_ack_pending,
            "ack_wait_ms": config.ack_wait_ms,
            "owns_nc": owns_nc,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create (if missing) and bind the durable consumer, then start the loops."""
        if self._started:
            raise CoordinatorError("coordinator already started")
        self._js = self._nc.jetstream()
        try:
            await self._bind_consumer()
        except Exception as exc:
            raise CoordinatorError(
                f"cannot bind durable consumer {self._durable!r} on stream {self._stream}: {exc!r}"
            ) from exc
        self._started = True
        self._tasks = [
            asyncio.create_task(
                self._fetch_loop(), name=f"cctf-coordinator-fetch-{self.coordinator}"
            ),
            asyncio.create_task(
                self._deadline_loop(), name=f"cctf-coordinator-deadline-{self.coordinator}"
            ),
        ]
        _log.info(
            "coordinator_started",
            coordinator=self.coordinator,
            kid=self._key.kid,
            durable=self._durable,
            k=self._rule.k,
            n=self._rule.n,
            verdict_regions=list(self._regions),
            round_ms=self._round_ms,
            round_grace_ms=self._grace_ms,
        )

    async def stop(self) -> None:
        """Stop fetching, finish or abandon in-flight publishes, release the subscription.

        Ballots still held (verdicts not published) are negatively acknowledged so the server
        redelivers them promptly (to a successor). The durable consumer is kept.
        """
        if self._stopping.is_set():
            await self._stopped.wait()
            return
        self._stopping.set()
        self._room.set()
        for task in self._tasks:
            if task.get_name().startswith("cctf-coordinator-fetch"):
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), self._fetch_timeout + 1.0)
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._publish_tasks:
            _done, pending = await asyncio.wait(list(self._publish_tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if not self._nc.is_closed:
            for held in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await held.msg.nak()
        self._held.clear()
        self._keys.clear()
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_nc and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
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

    def stats(self) -> CoordinatorStats:
        return CoordinatorStats(
            ballots_accepted=self._n_ballots,
            votes_accepted=self._n_votes,
            votes_ignored=dict(self._n_ignored),
            rejected=dict(self._n_rejected),
            equivocations=self._n_equivocations,
            verdicts=dict(self._n_verdicts),
            verdict_messages=self._n_verdict_msgs,
            publish_retries=self._n_retries,
            verdicts_dropped=self._n_dropped,
            held_ballots=len(self._held),
            open_keys=len(self._keys),
            live_tallies=self._book.live,
            pending_verdicts=self._pending_verdicts,
        )

    # ---- consumer -----------------------------------------------------------------------------

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._durable,
            description=f"CCTF coordinator {self.coordinator}",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait_s,
            max_ack_pending=self._max_ack_pending,
            filter_subject=VOTES_SUBJECTS,
            max_deliver=-1,
        )

    async def _bind_consumer(self) -> None:
        """Look the durable consumer up, create it if missing, and bind a pull subscription."""
        wanted = self._consumer_config()
        try:
            info = await self._js.consumer_info(self._stream, self._durable, timeout=2.0)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(self._stream, wanted)
            _log.info("consumer_created", stream=self._stream, durable=self._durable)
        else:
            have = info.config
            if (have.ack_wait, have.max_ack_pending) != (wanted.ack_wait, wanted.max_ack_pending):
                try:  # an update of the same durable: only these limits differ
                    await self._js.add_consumer(self._stream, wanted)
                    _log.info("consumer_updated", stream=self._stream, durable=self._durable)
                except nats.js.errors.APIError as exc:
                    _log.warning("consumer_update_failed", durable=self._durable, error=str(exc))
        old = self._psub
        self._psub = await self._js.pull_subscribe_bind(durable=self._durable, stream=self._stream)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._nc.is_closed:
                self._fail(CoordinatorError("the NATS connection is closed"))
                return
            if not self._room.is_set():
                await self._room.wait()
                continue
            try:
                msgs = await self._psub.fetch(self._fetch_batch, timeout=self._fetch_timeout)
            except TimeoutError:  # includes nats.errors.TimeoutError and FetchTimeoutError
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._log_limited(
                    "fetch_failed", "warning", error=repr(exc)[:_MAX_DETAIL], failures=failures
                )
                await self._sleep_or_stop(min(0.05 * 2 ** min(failures, 6), self._max_backoff))
                if failures >= 3 or isinstance(exc, nats.js.errors.NotFoundError):
                    try:
                        await self._bind_consumer()
                    except Exception as bind_exc:
                        self._log_limited(
                            "consumer_bind_failed", "warning", error=repr(bind_exc)[:_MAX_DETAIL]
                        )
                continue
            failures = 0
            try:
                await self._handle_batch(msgs)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep serving
                _log.exception("batch_failed", coordinator=self.coordinator)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            _log.error("coordinator_failed", coordinator=self.coordinator, error=str(exc))
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    # ---- per batch ----------------------------------------------------------------------------

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        arrival = self._monotonic()
        to_ack: list[Msg] = []
        decided: list[tuple[TallyKey, Decision, _KeyState]] = []
        counts = _BatchCounts()
        for msg in msgs:
            try:
                self._ingest(msg, arrival, to_ack, decided, counts)
            except Exception as exc:  # a bug, never input: count, log, ack, keep serving
                counts.reject(INTERNAL_REASON)
                _log.exception(
                    "vote_rejected",
                    reason=INTERNAL_REASON,
                    subject=msg.subject,
                    detail=repr(exc)[:_MAX_DETAIL],
                )
                to_ack.append(msg)
        self._flush_counts(counts)
        if decided:
            self._schedule(decided)
        for msg in to_ack:
            await self._ack(msg)

    def _ingest(
        self,
        msg: Msg,
        arrival: float,
        to_ack: list[Msg],
        decided: list[tuple[TallyKey, Decision, _KeyState]],
        counts: _BatchCounts,
    ) -> None:
        seq: int | None
        try:
            seq = int(msg.metadata.sequence.stream)
        except Exception:
            seq = None
        if seq is not None:
            held = self._held.get(seq)
            if held is not None and held.msg.data == msg.data:
                held.msg = msg  # a redelivery of a ballot still waiting for its verdicts
                return
        subject = msg.subject
        try:
            ballot = self._verifier.verify(msg.data, subject)
        except Rejected as rej:
            counts.reject(rej.reason.value)
            self._log_rejected(rej.reason.value, subject, rej.detail, len(msg.data))
            to_ack.append(msg)
            return
        counts.ballots += 1
        held = _Held(msg, seq)
        round_ = ballot.round
        book = self._book
        keys = self._keys
        for vote in ballot.votes:
            qname = self._qname(vote.qname)
            if qname is None:
                counts.ignore("bad_qname")
                continue
            digest = vote.answer_digest if vote.status is VoteStatus.ANSWER else None
            voter = vote.voter
            result, decision = book.add(
                qname, vote.qtype, round_, VoteInput(voter, digest, vote_digest(vote))
            )
            if result is AddResult.COUNTED:
                counts.votes += 1
                key = TallyKey(qname, vote.qtype, round_)
                state = keys.get(key)
                if state is None:
                    state = keys[key] = _KeyState()
                state.votes[voter] = vote
                state.last_vote = arrival
                if not state.waiters or state.waiters[-1] is not held:
                    state.waiters.append(held)
                    held.remaining += 1
                if decision is not None:
                    del keys[key]
                    decided.append((key, decision, state))
            elif result is AddResult.EQUIVOCATION:
                counts.equivocations += 1
                self._log_limited(
                    "equivocation",
                    "warning",
                    voter=voter,
                    qname=qname,
                    qtype=vote.qtype,
                    round=round_,
                    subject=subject,
                )
            else:
                counts.ignore(result.value)
                if result is AddResult.OVERLOADED:
                    self._log_limited("tally_overloaded", "warning", live=book.live)
        if held.remaining == 0:
            to_ack.append(msg)
        elif seq is not None:
            self._held[seq] = held
        else:  # not a JetStream message (cannot happen with a pull consumer): nothing to ack
            pass

    def _qname(self, raw: str) -> str | None:
        cache = self._qnames
        name = cache.get(raw)
        if name is None:
            try:
                name = normalize_name(raw)
            except SubjectError:
                return None
            if len(cache) >= 65_536:
                cache.clear()
            cache[raw] = name
        return name

    def _log_rejected(self, reason: str, subject: str, detail: str, size: int) -> None:
        ok, suppressed = self._limiter.allow("vote_rejected:" + reason)
        if ok:
            _log.warning(
                "vote_rejected",
                reason=reason,
                subject=subject[:256],
                detail=detail[:_MAX_DETAIL],
                bytes=size,
                suppressed=suppressed,
            )

    def _log_limited(self, event: str, level: str, **fields: Any) -> None:
        ok, suppressed = self._limiter.allow(event)
        if ok:
            getattr(_log, level)(event, suppressed=suppressed, **fields)

    def _flush_counts(self, counts: _BatchCounts) -> None:
        m = self._metrics
        if counts.ballots:
            self._n_ballots += counts.ballots
            m.ballots_accepted.add(counts.ballots)
        if counts.votes:
            self._n_votes += counts.votes
            m.votes_accepted.add(counts.votes)
        if counts.equivocations:
            self._n_equivocations += counts.equivocations
            m.equivocations.add(counts.equivocations)
        for reason, n in counts.rejected.items():
            self._n_rejected[reason] = self._n_rejected.get(reason, 0) + n
            m.rejected(reason, n)
        for result, n in counts.ignored.items():
            self._n_ignored[result] = self._n_ignored.get(result, 0) + n
            m.votes_ignored.add(n, {"result": result})

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except Exception as exc:  # the server redelivers; a held redelivery is handled
            self._log_limited("ack_failed", "warning", error=repr(exc)[:_MAX_DETAIL])

    # ---- deadlines ----------------------------------------------------------------------------

    def due_round(self, now_ms: int) -> int:
        """The highest round whose deadline ``(r + 1) * round_ms + grace`` is ``<= now_ms``."""
        return (now_ms - self._grace_ms) // self._round_ms - 1

    async def _deadline_loop(self) -> None:
        refresh_every = self._ack_wait_s / 3
        next_refresh = self._monotonic() + refresh_every
        while not self._stopping.is_set():
            try:
                self.expire_due()
                if self._monotonic() >= next_refresh:
                    next_refresh = self._monotonic() + refresh_every
                    await self._refresh_held()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep serving
                _log.exception("deadline_failed", coordinator=self.coordinator)
            await self._sleep_or_stop(self._tick_s)

    async def _refresh_held(self) -> None:
        """Tell the server that held ballots are still being worked on (``+WPI``), so ``ack_wait``
        can stay short: a delivery lost with a dead connection comes back after ``ack_wait``."""
        for held in list(self._held.values()):
            try:
                await held.msg.in_progress()
            except Exception as exc:
                self._log_limited("in_progress_failed", "warning", error=repr(exc)[:_MAX_DETAIL])
                return

    def expire_due(self) -> int:
        """Finalize every round whose deadline has passed; schedule their verdicts. Returns how
        many decisions it scheduled."""
        up_to = self.due_round(self._clock.now_ms())
        if up_to <= self._book.expired_through:
            return 0
        decided: list[tuple[TallyKey, Decision, _KeyState]] = []
        for key, decision in self._book.expire(up_to):
            state = self._keys.pop(key, None)
            decided.append((key, decision, state if state is not None else _KeyState()))
        if decided:
            self._schedule(decided)
        return len(decided)

    # ---- verdicts -----------------------------------------------------------------------------

    def _schedule(self, decided: list[tuple[TallyKey, Decision, _KeyState]]) -> None:
        self._pending_verdicts += len(decided)
        if self._pending_verdicts >= self._max_pending_verdicts:
            self._room.clear()
        task = asyncio.get_running_loop().create_task(self._publish_decisions(decided))
        self._publish_tasks.add(task)
        task.add_done_callback(self._publish_tasks.discard)

    def _settled(self, n: int) -> None:
        self._pending_verdicts -= n
        if self._pending_verdicts < self._max_pending_verdicts:
            self._room.set()

    async def _publish_decisions(self, decided: list[tuple[TallyKey, Decision, _KeyState]]) -> None:
        try:
            now = self._clock.now_ms()
            jobs: list[_Job] = []
            for key, decision, state in decided:
                try:
                    verdict = build_verdict(
                        decision,
                        key,
                        state.votes,
                        self._rule,
                        self.coordinator,
                        now,
                        self._ttl_ms,
                        self._seq.next(),
                    )
                except VerdictError as exc:  # a bug: do not hold the ballots forever
                    _log.error("verdict_build_failed", key=list(key), error=str(exc))
                    await self._release(state)
                    continue
                jobs.append(_Job(key, decision, state, verdict, encode(verdict)))
            # Sign and publish in chunks, so the first verdicts of a large batch go out while the
            # rest are still being signed (signing dominates: ~0.8 ms per hybrid signature).
            publishing: list[tuple[list[_Job], asyncio.Future[list[bool | None]]]] = []
            for start in range(0, len(jobs), _PUBLISH_CHUNK):
                part = jobs[start : start + _PUBLISH_CHUNK]
                if not await self._sign(part):
                    break  # stopping
                publishing.append((part, asyncio.gather(*(self._publish_job(job) for job in part))))
            for part, pending in publishing:
                results = await pending
                for job, ok in zip(part, results, strict=True):
                    if ok is not None:  # None: stopping, leave the ballots for redelivery
                        await self._release(job.state)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: keep serving
            _log.exception("publish_failed", coordinator=self.coordinator)
        finally:
            self._settled(len(decided))

    def _seal_chunk(self, chunk: list[tuple[_Job, str]]) -> list[tuple[str, bytes]]:
        return [seal_verdict(self._key, job.verdict, region, job.payload) for job, region in chunk]

    async def _sign(self, jobs: list[_Job]) -> bool:
        """Seal every verdict once per verdict region, in worker threads for larger batches
        (the signature code releases the GIL for part of its work)."""
        work = [(job, region) for job in jobs for region in self._regions]
        if len(work) <= 2:
            sealed = self._seal_chunk(work)
        else:
            loop = asyncio.get_running_loop()
            size = math.ceil(len(work) / self._signing_workers)
            chunks = [work[i : i + size] for i in range(0, len(work), size)]
            try:
                parts = await asyncio.gather(
                    *(loop.run_in_executor(self._executor, self._seal_chunk, c) for c in chunks)
                )
            except RuntimeError:  # executor shut down: stopping
                return False
            sealed = [item for part in parts for item in part]
        for (job, region), (subject, data) in zip(work, sealed, strict=True):
            job.sealed.append((region, subject, data))
        return True

    async def _publish_job(self, job: _Job) -> bool | None:
        """Publish one verdict to every region: True published, False expired first, None
        stopping."""
        verdict = job.verdict
        results = await asyncio.gather(
            *(
                self._publish_one(
                    subject, data, f"{self.coordinator}-{verdict.seq}-{region}", verdict.expires_ms
                )
                for region, subject, data in job.sealed
            )
        )
        if any(r is None for r in results):
            return None
        if all(results):
            outcome = verdict.outcome.value
            self._n_verdicts[outcome] = self._n_verdicts.get(outcome, 0) + 1
            self._metrics.verdicts.add(1, {"outcome": outcome})
            if job.state.last_vote:
                latency = (self._monotonic() - job.state.last_vote) * 1000.0
                self._metrics.decision_latency.record(max(0.0, latency))
            _log.debug(
                "verdict_published",
                qname=verdict.qname,
                qtype=verdict.qtype,
                round=verdict.round,
                outcome=outcome,
                seq=verdict.seq,
                early=verdict.decided_early,
            )
            return True
        self._n_dropped += 1
        self._metrics.verdicts_dropped.add(1)
        _log.error(
            "verdict_dropped",
            qname=verdict.qname,
            qtype=verdict.qtype,
            round=verdict.round,
            seq=verdict.seq,
            detail="expired before it could be published",
        )
        return False

    async def _publish_one(
        self, subject: str, data: bytes, msg_id: str, expires_ms: int
    ) -> bool | None:
        delay = 0.05
        while True:
            try:
                await self._js.publish(
                    subject, data, timeout=self._publish_timeout, headers={"Nats-Msg-Id": msg_id}
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._n_retries += 1
                self._metrics.publish_retries.add(1)
                self._log_limited(
                    "verdict_publish_failed",
                    "warning",
                    subject=subject,
                    error=repr(exc)[:_MAX_DETAIL],
                )
            else:
                self._n_verdict_msgs += 1
                return True
            if self._stopping.is_set():
                return None
            if self._clock.now_ms() >= expires_ms:
                return False
            await self._sleep_or_stop(delay)
            delay = min(delay * 2, self._max_backoff)

    async def _release(self, state: _KeyState) -> None:
        """The verdict of one key is out: acknowledge every ballot that no longer waits."""
        for held in state.waiters:
            held.remaining -= 1
            if held.remaining == 0:
                if held.seq is not None and self._held.get(held.seq) is held:
                    del self._held[held.seq]
                await self._ack(held.msg)
        state.waiters.clear()
