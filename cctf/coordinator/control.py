"""Safe mode in the running coordinator: the policy stage's bus side (thin adapter).

* :meth:`SafeModeControl.votes` and :meth:`SafeModeControl.apply` are called by the service on
  every verified DNS ballot and on every batch of decided keys (before decide/sign/publish): the
  pure :class:`~cctf.coordinator.pipeline.safemode.SafeModeStage` scores them and holds changed
  answers of names in safe mode.
* Every automatic decision is one log line (``policy_alarm``, ``safe_mode_entered``,
  ``safe_mode_left``, ``answer_held``, ``answer_released``, with its one-line ``why``) and a metric.
* Announcements are sealed and published in order by one task on ``cctf.v1.control.<region>``
  (``...<region>.<coordinator>`` with ``per_coordinator``; message id
  ``sm1.<region>.<coordinator>.<seq>``, so several coordinators never de-duplicate each other), a
  ``status`` of every region at start and every ``refresh_ms``.
* Operator commands are read from ``CCTF_CONTROL`` (``cctf.v1.operator.>``) through an ordered
  consumer, verified (:class:`~cctf.coordinator.operator.CommandVerifier`), applied and answered
  with an announcement; a refused one is counted and logged with its reason, and changes nothing.

Metrics (process-wide): ``cctf_policy_alarms_total{rule}``, ``cctf_safe_mode_transitions_total
{state,cause}``, ``cctf_safe_mode_scopes_active`` (up-down), ``cctf_answers_held_total``,
``cctf_operator_commands_total{result}`` (``accepted`` or the refusal reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.publisher import Publisher, PublishOutcome
from cctf.bus.reader import OrderedFeed, open_ordered_feed
from cctf.bus.streams import CONTROL_STREAM
from cctf.bus_schemas.control import SafeModeAnnouncement, SafeModeCause
from cctf.bus_schemas.envelope import Rejected, TimePolicy
from cctf.bus_schemas.messages import Outcome
from cctf.clock import Clock
from cctf.coordinator.operator import CommandVerifier
from cctf.coordinator.pipeline.identity import IdentityKey, IdentityStage
from cctf.coordinator.pipeline.safemode import SafeModeStage, StageResult, seal_announcement
from cctf.coordinator.policystore import PolicyStore
from cctf.coordinator.tally import Decision, TallyKey
from cctf.crypto.keys import SigningKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.policy.config import PolicyConfig
from cctf.util.deadline import stop_tasks

__all__ = ["SafeModeControl", "SafeModeStats"]

_log = telemetry.get_logger("cctf.coordinator.policy")
_QUEUE_LIMIT: Final = 10_000
_EVENTS = {
    "alarm": "policy_alarm",
}


@dataclass
class SafeModeStats:
    alarms: dict[str, int] = field(default_factory=dict)
    entered: int = 0
    left: int = 0
    held: int = 0
    released: int = 0
    announcements: int = 0
    commands: dict[str, int] = field(default_factory=dict)


class _Metrics:
    _lock = threading.Lock()
    _one: _Metrics | None = None

    def __init__(self) -> None:
        m = telemetry.meter("cctf.coordinator.policy")
        self.alarms = m.create_counter("cctf_policy_alarms", description="Alarms, by rule")
        self.transitions = m.create_counter(
            "cctf_safe_mode_transitions", description="Safe-mode scopes entered/left, by cause"
        )
        self.active = m.create_up_down_counter(
            "cctf_safe_mode_scopes_active", description="Safe-mode scopes active now"
        )
        self.held = m.create_counter(
            "cctf_answers_held", description="TRUSTED decisions held back by safe mode"
        )
        self.commands = m.create_counter(
            "cctf_operator_commands", description="Operator commands, by result"
        )

    @classmethod
    def get(cls) -> _Metrics:
        with cls._lock:
            if cls._one is None:
                cls._one = _Metrics()
            return cls._one


class SafeModeControl:
    def __init__(
        self,
        *,
        config: PolicyConfig,
        coordinator: str,
        regions: Sequence[str],
        agent_regions: Mapping[str, str],
        conn: Connection,
        key: SigningKey,
        trust: TrustConfig,
        suite_policy: SuitePolicy,
        clock: Clock,
        time_policy: TimePolicy | None = None,
        refresh_ms: int = 60_000,
        publish_timeout_s: float = 2.0,
        per_coordinator: bool = False,
        store: bool = True,
    ) -> None:
        """``per_coordinator``: announce on ``cctf.v1.control.<region>.<coordinator>`` (k-of-m);
        ``store``: keep the safe-mode scopes in the state bucket (:mod:`cctf.coordinator.policystore`)
        so they survive a restart."""
        self.store = PolicyStore(conn, coordinator, key) if store else None
        self._dirty = asyncio.Event()
        self.stage = SafeModeStage(config, regions, agent_regions, coordinator, clock)
        self._per_coordinator = per_coordinator
        self.stats = SafeModeStats()
        self._coordinator = coordinator
        self._conn = conn
        self._key = key
        self._clock = clock
        self._refresh_s = refresh_ms / 1000
        self._verifier = CommandVerifier(
            trust, regions, suite_policy, time_policy=time_policy or TimePolicy()
        )
        self._publisher = Publisher(conn, clock, timeout_s=publish_timeout_s)
        self._queue: asyncio.Queue[SafeModeAnnouncement] = asyncio.Queue(_QUEUE_LIMIT)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._feed: OrderedFeed | None = None
        self._metrics = _Metrics.get()

    # ---- the stage (called by the service, synchronous) ---------------------------------------

    def apply(
        self, decided: list[tuple[Any, Decision]], identity: IdentityStage | None = None
    ) -> list[tuple[Any, Decision]]:
        """Pass DNS decisions through the policy stage; TRUSTED ``mtls`` identity decisions feed
        the identity-drift rule (with the facts ``identity`` counted); other keys pass as they are."""
        dns: list[tuple[Any, Decision]] = []
        others = False
        for k, d in decided:
            if isinstance(k, TallyKey):
                dns.append((k, d))
                continue
            others = True
            if (
                identity is not None
                and isinstance(k, IdentityKey)
                and k.kind == "mtls"
                and d.outcome is Outcome.TRUSTED
                and d.answer_digest is not None
                and (facts := identity.facts(k, d.answer_digest)) is not None
            ):
                self._emit(
                    self.stage.identity(k.subject, k.round, facts.key_digest, facts.not_before_ms)
                )
        if not dns:
            return decided
        result = self.stage.apply(dns)
        self._emit(result)
        if not others:
            return result.decided  # every key a DNS key: judged in place
        if result.decided is dns:
            return decided  # nothing held
        judged: dict[TallyKey, Decision] = dict(result.decided)
        return [(k, judged.get(k, d) if isinstance(k, TallyKey) else d) for k, d in decided]

    def lkg(self, qname: str, qtype: str, round_: int, active: bool) -> None:
        """The LKG stage started (``active``) or ended an episode for ``(qname, qtype)``."""
        self._emit(self.stage.lkg(qname, qtype, round_, active))

    def tick(self, round_: int) -> None:
        self._emit(self.stage.tick(round_))

    def _emit(self, result: StageResult) -> None:
        s, m = self.stats, self._metrics
        for rec in result.records:
            if rec.event == "alarm":
                s.alarms[rec.label] = s.alarms.get(rec.label, 0) + 1
                m.alarms.add(1, {"rule": rec.label})
            elif rec.event == "safe_mode_entered":
                s.entered += 1
                m.transitions.add(1, {"state": "entered", "cause": rec.label})
                m.active.add(1)
            elif rec.event == "safe_mode_left":
                s.left += 1
                m.transitions.add(1, {"state": "left", "cause": rec.label})
                m.active.add(-1)
            elif rec.event == "answer_held":
                s.held += 1
                m.held.add(1)
            elif rec.event == "answer_released":
                s.released += 1
            _log.warning(
                _EVENTS.get(rec.event, rec.event), coordinator=self._coordinator, **rec.fields
            )
        if result.announcements:  # a transition (or an operator's answer): store the state
            self._dirty.set()
        for ann in result.announcements:
            try:
                self._queue.put_nowait(ann)
            except asyncio.QueueFull:  # bounded: the next status announcement carries the state
                _log.error("safe_mode_announcement_dropped", region=ann.region)

    # ---- bus side -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.store is not None:  # the stored scopes first: the start announcements list them
            restored = await self.store.load(self.stage.engine)
            self._metrics.active.add(restored)
        for ann in self.stage.status(SafeModeCause.START):
            self._queue.put_nowait(ann)
        # the operator feed is open before start returns (it delivers commands published from then
        # on: opened in the background, a command sent right after start could be missed)
        first: OrderedFeed | None = None
        try:
            first = await open_ordered_feed(
                self._conn, CONTROL_STREAM, "cctf.v1.operator.>", deliver="new"
            )
        except Exception as exc:  # the stream is missing, a permission: the loop retries
            _log.warning("operator_feed_failed", error=repr(exc)[:300])
        self._tasks = [
            asyncio.create_task(self._save_loop(), name="cctf-safemode-store"),
            asyncio.create_task(self._publish_loop(), name="cctf-safemode-publish"),
            asyncio.create_task(self._refresh_loop(), name="cctf-safemode-refresh"),
            asyncio.create_task(self._command_loop(first), name="cctf-safemode-commands"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        # bounded: a task that swallowed its cancel is cancelled again, never blocks the stop
        await stop_tasks(self._tasks, 3.0, what="safe mode")
        if self.store is not None and self._dirty.is_set():  # the last change (bounded)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.store.save(self.stage.engine, self._clock.now_ms()), 2.0
                )
        if self._feed is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._feed.close(), 1.0)

    async def _publish_loop(self) -> None:
        # the loop condition, not only the cancel, ends it: Python 3.11's wait_for (inside
        # nats-py's publish) can swallow a cancel that arrives as the ack does
        while not self._stopping.is_set():
            ann = await self._queue.get()
            try:
                subject, data = seal_announcement(
                    self._key, ann, per_coordinator=self._per_coordinator
                )
            except ValueError as exc:  # a bug: never wedge the loop
                _log.error("safe_mode_announcement_unsealable", error=str(exc)[:300])
                continue
            r = await self._publisher.publish(
                subject,
                data,
                f"sm1.{ann.region}.{ann.coordinator}.{ann.seq}",
                ann.expires_ms,
                self._stopping,
                expected_stream=CONTROL_STREAM,  # no other stream stores a copy of it
            )
            if r.outcome is PublishOutcome.PUBLISHED:
                self.stats.announcements += 1
            elif r.outcome is PublishOutcome.STOPPED:
                return
            else:
                _log.error("safe_mode_announcement_dropped", region=ann.region, error=r.last_error)

    async def _save_loop(self) -> None:
        """Write the scopes through after every change (and every refresh), latest wins."""
        while not self._stopping.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if self.store is not None:
                await self.store.save(self.stage.engine, self._clock.now_ms())

    async def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_s)
            if self._stopping.is_set():
                return
            for ann in self.stage.status(SafeModeCause.REFRESH):
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(ann)
            self._dirty.set()

    async def _command_loop(self, first: OrderedFeed | None = None) -> None:
        backoff = 0.2
        feed = first
        while not self._stopping.is_set():
            try:
                if feed is None:
                    feed = await open_ordered_feed(
                        self._conn, CONTROL_STREAM, "cctf.v1.operator.>", deliver="new"
                    )
                self._feed = feed
                backoff = 0.2
                async for msg in feed:
                    self.command(msg.data, msg.subject)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream is missing, a permission, a reconnect: retry
                _log.warning("operator_feed_failed", error=repr(exc)[:300])
            feed = None
            if self._conn.is_closed:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    def command(self, data: bytes, subject: str) -> bool:
        """Verify and apply one operator command; ``False`` when refused (counted, logged)."""
        try:
            cmd = self._verifier.verify(data, subject, self._clock.now_ms())
        except Rejected as rej:
            self._count_command(rej.reason.value)
            _log.warning(
                "operator_command_refused",
                reason=rej.reason.value,
                subject=subject[:256],
                detail=rej.detail[:300],
            )
            return False
        self._count_command("accepted")
        self._emit(self.stage.command(cmd))
        return True

    def _count_command(self, result: str) -> None:
        self.stats.commands[result] = self.stats.commands.get(result, 0) + 1
        self._metrics.commands.add(1, {"result": result})

    def active(self, region: str) -> list[str]:
        return [s.name for s in self.stage.engine.active_in(region)]
