"""The LKG stage wired into the coordinator: fresh verdict -> the verdict to publish, state written
through to the engine, one log line per episode start and end, metrics.

:meth:`LkgGate.apply` is synchronous (the pure :class:`~cctf.coordinator.pipeline.lkg.LkgStage`
plus building the attestation); it queues what to store. :meth:`LkgGate.run` writes the queue to the
KV bucket (latest operation per key wins, so the queue is bounded by the number of keys) and
:meth:`LkgGate.load` reads the coordinator's records back at start (each checked by
:func:`cctf.coordinator.lkgstate.open_record`; a bad one is skipped and logged, never attested).

An attestation is the basis verdict (answer, digest, DNSSEC state, voters, vote digests) re-issued
for the current round: ``round``, ``issued_ms``, ``seq`` of the fresh verdict, ``expires_ms`` from the
stage (at most the lifetime, never beyond ``basis_ms + cap``), ``basis_round``/``basis_ms`` of the
basis. Its outcome is TRUSTED: the client tells it apart by its basis (``Verdict.is_lkg``).

Metrics (Prometheus): ``cctf_lkg_verdicts_total`` (attestations issued), ``cctf_lkg_names`` (keys in
an LKG episode now, a gauge), ``cctf_lkg_episodes_total{event, reason}`` (``started``; ``ended`` with
``trusted``, ``disputed``, ``bogus``, ``disagreement``, ``cap``), ``cctf_lkg_store_errors_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from opentelemetry.metrics import Counter, UpDownCounter

from cctf import telemetry
from cctf.bus.connect import Connection, jetstream
from cctf.bus.kv import LKG_BUCKET, Bucket, KvError, ensure_bucket, lkg_bucket_spec
from cctf.bus_schemas.messages import Verdict, VoterState, encode
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.lkgstate import (
    MAC_LABEL,
    LkgStateError,
    open_record,
    record_key,
    seal_record,
)
from cctf.coordinator.pipeline.lkg import (
    Action,
    Basis,
    Event,
    EventKind,
    LkgKey,
    LkgStage,
    Round,
    Store,
)
from cctf.crypto.keys import SigningKey

__all__ = ["LkgGate", "LkgMetrics", "round_of"]

_log = telemetry.get_logger("cctf.coordinator")
_WRITE_CHUNK: Final = 64
_LOAD_ATTEMPTS: Final = 3  # start-up reads of the stored state, then fail closed
_LOAD_FIRST_S: Final = 0.2


@dataclass(frozen=True)
class LkgMetrics:
    verdicts: Counter
    names: UpDownCounter
    episodes: Counter
    store_errors: Counter


_lock = threading.Lock()
_metrics: LkgMetrics | None = None


def metrics() -> LkgMetrics:
    global _metrics
    with _lock:
        if _metrics is None:
            m = telemetry.meter("cctf.coordinator.lkg")
            _metrics = LkgMetrics(
                verdicts=m.create_counter(
                    "cctf_lkg_verdicts", description="LKG attestations issued"
                ),
                names=m.create_up_down_counter(
                    "cctf_lkg_names", description="Names (and qtypes) in an LKG episode now"
                ),
                episodes=m.create_counter(
                    "cctf_lkg_episodes", description="LKG episodes started and ended, by reason"
                ),
                store_errors=m.create_counter(
                    "cctf_lkg_store_errors", description="Failed LKG state writes and reads"
                ),
            )
        return _metrics


def round_of(v: Verdict) -> Round:
    """What the stage needs of a fresh verdict. A counted vote that joined no group (its voter
    ``disagree`` without a digest: DNSSEC bogus) makes the round bogus."""
    digests = tuple(r.answer_digest for r in v.voters if r.answer_digest)
    bogus = any(r.state is VoterState.DISAGREE and not r.answer_digest for r in v.voters)
    return Round(v.round, v.outcome, v.issued_ms, digests, bogus, v.answer_digest, v.dnssec.value)


class LkgGate:
    def __init__(
        self,
        config: LkgConfig,
        coordinator: str,
        key: SigningKey,
        *,
        log: Callable[..., None] | None = None,
        on_episode: Callable[[str, str, int, bool], None] | None = None,
    ) -> None:
        """``on_episode(qname, qtype, round, started)``: told when an LKG episode starts or ends
        (the policy stage's ``lkg_use`` rule)."""
        self.config = config
        self._on_episode = on_episode
        self.coordinator = coordinator
        self.stage: LkgStage[Verdict] = LkgStage(config.policy())
        self._secret = key.derive_secret(MAC_LABEL)
        self._log = log
        self._pending: dict[LkgKey, tuple[Store, Basis[Verdict] | None]] = {}
        self._wake = asyncio.Event()
        self._bucket: Bucket | None = None
        self._task: asyncio.Task[None] | None = None
        self._m = metrics()
        self.attested = 0
        self.store_errors = 0
        self.loaded = 0
        self.refused_records = 0

    @property
    def in_lkg(self) -> int:
        return self.stage.in_lkg

    @property
    def pending_writes(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, int]:
        """The coordinator stats' LKG fields."""
        return {
            "lkg_verdicts": self.attested,
            "lkg_names": self.in_lkg,
            "lkg_loaded": self.loaded,
            "lkg_store_errors": self.store_errors,
        }

    # ---- the stage ------------------------------------------------------------------------

    def apply(self, fresh: Verdict) -> Verdict:
        """The verdict to publish for ``fresh`` (itself, or an LKG attestation)."""
        key: LkgKey = (fresh.qname, fresh.qtype)
        step = self.stage.step(key, round_of(fresh), fresh)
        if step.store is Store.PUT:
            self._queue(key, Store.PUT, step.basis)
        elif step.store is Store.DELETE:
            self._queue(key, Store.DELETE, None)
        if step.event is not None:
            self._event(key, step.event)
        if step.action is Action.FRESH:
            return fresh
        assert step.basis is not None
        basis = step.basis.payload
        self.attested += 1
        self._m.verdicts.add(1)
        return msgspec.structs.replace(
            basis,
            round=fresh.round,
            issued_ms=fresh.issued_ms,
            expires_ms=step.expires_ms,
            seq=fresh.seq,
            basis_round=basis.round,
            basis_ms=basis.issued_ms,
        )

    def _event(self, key: LkgKey, ev: Event) -> None:
        qname, qtype = key
        if self._on_episode is not None:
            self._on_episode(qname, qtype, ev.round, ev.kind is EventKind.STARTED)
        if ev.kind is EventKind.STARTED:
            self._m.names.add(1)
            self._m.episodes.add(1, {"event": "started", "reason": ""})
            _log.warning(
                "lkg_started",
                qname=qname[:256],
                qtype=qtype,
                round=ev.round,
                basis_round=ev.basis_round,
                age_ms=ev.age_ms,
                cap_ms=self.stage.policy.cap_ms(key),
            )
        else:
            reason = ev.reason.value if ev.reason is not None else ""
            self._m.names.add(-1)
            self._m.episodes.add(1, {"event": "ended", "reason": reason})
            _log.warning(
                "lkg_ended",
                qname=qname[:256],
                qtype=qtype,
                round=ev.round,
                basis_round=ev.basis_round,
                age_ms=ev.age_ms,
                reason=reason,
                attestations=ev.rounds,
            )

    def _queue(self, key: LkgKey, op: Store, basis: Basis[Verdict] | None) -> None:
        if not self.config.store:
            return
        self._pending[key] = (op, basis)
        self._wake.set()

    # ---- the engine -----------------------------------------------------------------------

    async def load(self, bucket: Bucket) -> int:
        """Bind ``bucket`` for writes and read this coordinator's records back into the stage.
        The read is complete (``Bucket.items``: the stream leader's view); a failing read is
        retried (bounded, ``lkg_load_retry`` logged) and then raises ``KvError``: a coordinator
        never silently starts without the state it stored."""
        self._bucket = bucket
        delay = _LOAD_FIRST_S
        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            try:
                items = await bucket.items(self.coordinator, limit=self.config.max_keys)
                break
            except KvError as exc:
                self._store_error("lkg_load_failed", exc)
                if attempt == _LOAD_ATTEMPTS or "more than" in str(exc):
                    raise KvError(f"cannot read the LKG state back: {exc}") from None
                _log.warning("lkg_load_retry", attempt=attempt, error=str(exc)[:300])
                await asyncio.sleep(delay)
                delay *= 2
        good: list[tuple[LkgKey, Basis[Verdict]]] = []
        for kv_key, data in items:
            try:
                key, basis, verdict = open_record(self._secret, self.coordinator, kv_key, data)
            except LkgStateError as exc:
                self.refused_records += 1
                _log.warning("lkg_record_refused", key=kv_key[:300], error=str(exc)[:300])
                continue
            good.append(
                (key, Basis(basis.round, basis.basis_ms, basis.answer_digest, basis.tag, verdict))
            )
        self.loaded = self.stage.load(good)
        _log.info("lkg_state_loaded", records=self.loaded, refused=self.refused_records)
        return self.loaded

    async def start(self, conn: Connection, stopping: asyncio.Event) -> None:
        """Bind the LKG bucket (made at set-up; created here if the user may), read this
        coordinator's state back, start the writer. Without the bucket LKG works from memory
        only (logged: the state is then lost on a restart); a bucket that exists but cannot be
        read completely raises ``KvError`` (the coordinator does not start)."""
        if self.config.store:
            js = jetstream(conn)
            try:
                try:
                    bucket = await Bucket.bind(js, LKG_BUCKET)
                except KvError:
                    await ensure_bucket(js, lkg_bucket_spec(1), timeout_s=5.0)
                    bucket = await Bucket.bind(js, LKG_BUCKET)
            except KvError as exc:  # no bucket (and may not create it): memory only, logged
                self._store_error("lkg_store_unavailable", exc)
            else:
                await self.load(bucket)  # a bucket that cannot be read: raises (fail closed)
        self._task = asyncio.create_task(self.run(stopping), name=f"cctf-lkg-{self.coordinator}")

    async def stop(self) -> None:
        """Wait for the writer's last flush (it ends once ``stopping`` is set; bounded)."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, 3.0)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a bug: never keep the coordinator from stopping
            _log.error("lkg_writer_failed", error=repr(exc)[:300])

    async def run(self, stopping: asyncio.Event) -> None:
        """Write queued state until ``stopping``; then one last bounded flush."""
        while not stopping.is_set():
            if not self._pending:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            await self.flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), 2.0)

    async def flush(self) -> None:
        """Write everything queued now (in chunks); failures are counted and logged, and the
        state stays in memory (a later basis is written again)."""
        if self._bucket is None:
            self._pending.clear()
            return
        batch, self._pending = self._pending, {}
        ops = list(batch.items())
        for i in range(0, len(ops), _WRITE_CHUNK):
            await asyncio.gather(
                *(self._write(k, op, b) for k, (op, b) in ops[i : i + _WRITE_CHUNK])
            )

    async def _write(self, key: LkgKey, op: Store, basis: Basis[Verdict] | None) -> None:
        bucket = self._bucket
        assert bucket is not None
        try:
            kv_key = record_key(self.coordinator, key)
            if op is Store.DELETE:
                await bucket.delete(kv_key)
                return
            assert basis is not None
            stored = Basis(
                basis.round, basis.basis_ms, basis.answer_digest, basis.tag, encode(basis.payload)
            )
            cap = self.stage.policy.cap_ms(key)
            ttl_s = max(1, math.ceil(cap / 1000))  # useless after the cap: the engine drops it
            await bucket.put(kv_key, seal_record(self._secret, kv_key, stored), ttl_s=ttl_s)
        except KvError as exc:
            self._store_error("lkg_store_failed", exc)

    def _store_error(self, event: str, exc: Exception) -> None:
        self.store_errors += 1
        self._m.store_errors.add(1)
        if self._log is not None:
            self._log(event, error=str(exc)[:300])
        else:
            _log.warning(event, error=str(exc)[:300])
