"""The batch-sign stage of the coordinator (``signing: batch``): collects verdicts into batches,
seals each batch with ONE signed log head (:class:`~cctf.coordinator.pipeline.batchsign.BatchLog`,
in a worker thread), publishes the head, appends the batch to the durable log, and hands each
verdict its ``"tlog"`` envelope.

Order per batch (D2-D4, wire-protocol.md §3.2.1)::

    close (batch_max verdicts, or batch_window_ms after the previous batch closed: at once after
      a quiet spell; while APPENDS_AHEAD appends are unacknowledged, only once full, an append
      finished, or log_wait_ms passed: group commit)
      -> sign (entries, tree, ONE signed head: BatchLog.sign; a very large batch is sealed whole
         in a worker thread)
      -> publish the head on every verdict region (same connection, written before any verdict)
      -> append the LogBatch record (in order after the previous batch's append); meanwhile the
         release task makes the batch's proofs and envelopes (BatchLog.envelopes)
      -> release the envelopes once the append is acked, or after log_wait_ms at most
         (then counted as published_before_logged; the append keeps retrying until acked)

Batches are sealed one at a time (the tree is not thread-safe) while earlier batches are still being
published. A fenced log (another writer) or a seal failure fails closed: ``on_fatal`` is called (the
service stops) and the verdicts waiting are refused (:class:`BatchClosed`).

Metrics (:mod:`cctf.coordinator.batchmetrics`): ``cctf_batches_total``, ``cctf_batch_verdicts``
(histogram of verdicts per batch), ``cctf_log_published_before_logged_total``,
``cctf_log_batches_held_total``, ``cctf_head_publish_failures_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Final

from cctf import telemetry
from cctf.bus.publisher import Publisher, PublishOutcome
from cctf.bus_schemas.heads import head_msg_id, head_subject
from cctf.clock import Clock
from cctf.coordinator.batchmetrics import metrics
from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.pipeline.batchsign import BatchItem, BatchLog, SealedBatch, SignedBatch
from cctf.crypto.keys import SigningKey
from cctf.errors import CctfError
from cctf.translog.merkle import MerkleTree
from cctf.util.deadline import stop_task, stop_tasks

__all__ = ["BatchClosed", "BatchSigner", "BatchStats", "LogAppend", "batch_stage"]

_log = telemetry.get_logger("cctf.coordinator")

#: Bytes of log entries in one batch (a record must stay under ~1 MiB with its checkpoint).
MAX_BATCH_ENTRY_BYTES: Final = 900 * 1024
_ENTRY_OVERHEAD: Final = 160  # entry bytes beyond the payload (domain, subjects, ids, nonce)
#: Batches up to this size are sealed on the event loop (about 1 ms of signing plus ~15 µs per
#: verdict); larger ones in a worker thread so the loop keeps publishing.
INLINE_SEAL_MAX: Final = 4096
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 2.0

#: Turns of the event loop the release of an inline batch gives its log append before computing the
#: batch's proofs and envelopes: the append task hands the record to the connection in the first,
#: its flusher writes it in the second (nats-py 2.16), so the server stores it meanwhile.
_APPEND_TURNS: Final = 2

#: Group commit: while this many appends are unacknowledged (one being stored, one sealed behind
#: it), the next batch is not closed before it is full, an append finishes, or ``log_wait_ms``
#: after it could have closed. A log that falls behind gets fewer, larger records (and fewer heads
#: and signatures) instead of an ever longer queue of small ones; a stalled log (a stream-leader
#: election) still holds no verdict longer than ``log_wait_ms`` in all.
APPENDS_AHEAD: Final = 2

#: Append one signed batch to the durable log; raises on failure (a fencing error is fatal:
#: :data:`fatal_errors`).
LogAppend = Callable[[SignedBatch], Awaitable[None]]


class BatchClosed(CctfError):
    """The batch stage stopped (service stopping, or failed closed): the verdict is not sealed."""


@dataclass
class BatchStats:
    batches: int = 0
    verdicts: int = 0
    heads_published: int = 0  # head messages sent (core subscribers had them), stored or not
    head_publish_failures: int = 0  # head messages no stream stored before their TTL
    appends: int = 0
    append_retries: int = 0
    published_before_logged: int = 0
    largest_batch: int = 0
    held_for_log: int = 0  # batch closes that waited for an append (APPENDS_AHEAD)


class _Part:
    """One :meth:`BatchSigner.submit` call: ONE future for its envelopes (in item order), set
    once every item's batch is released (a part may span batches)."""

    __slots__ = ("envelopes", "future", "left")

    def __init__(self, future: asyncio.Future[list[bytes]], n: int) -> None:
        self.future = future
        self.envelopes: list[bytes] = [b""] * n
        self.left = n

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


#: An item queued in the stage: the item, its part, its position in the part.
_Queued = tuple[BatchItem, _Part, int]


@dataclass
class _Pending:
    items: list[_Queued] = field(default_factory=list)
    entry_bytes: int = 0


class BatchSigner:
    def __init__(
        self,
        log: BatchLog,
        *,
        coordinator: str,
        regions: Sequence[str],
        publisher: Publisher,
        executor: Executor,
        stopping: asyncio.Event,
        window_ms: int = 5,
        batch_max: int = 1024,
        log_wait_ms: int = 300,
        head_ttl_ms: int = 30_000,
        append: LogAppend | None = None,
        fatal_errors: tuple[type[BaseException], ...] = (),
        on_fatal: Callable[[BaseException], None] | None = None,
        now_ms: Callable[[], int],
    ) -> None:
        self._log = log
        self._coordinator = coordinator
        self._regions = tuple(regions)
        self._publisher = publisher
        self._executor = executor
        self._stopping = stopping
        self._window_s = window_ms / 1000
        self._max = batch_max
        self._log_wait_s = log_wait_ms / 1000
        self._head_ttl_ms = head_ttl_ms
        self._append = append
        self._fatal_errors = fatal_errors
        self._on_fatal = on_fatal
        self._now_ms = now_ms
        self._pending = _Pending()
        self._kick = asyncio.Event()
        self._full = asyncio.Event()
        self._appending = 0  # appends spawned, not finished
        self._wake = asyncio.Event()  # an append finished, or the pending batch is full
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_append: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None
        self._last_close = -1e9  # loop time of the last batch closed
        self._proving = 0  # inline batches whose envelopes are being made (reading the tree)
        self._proved = asyncio.Event()
        self.stats = BatchStats()
        self._m = metrics()

    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    def attach_log(
        self,
        tree: MerkleTree,
        append: LogAppend,
        fatal_errors: tuple[type[BaseException], ...],
    ) -> None:
        """Resume the durable log before the first batch (``cctf.coordinator.durablelog``): the
        tree re-derived from the stored records, the append of each sealed batch, the append
        errors that fail the stage closed (fenced, full, too large)."""
        if self._task is not None or self._log.size:
            raise RuntimeError("the durable log is attached before the first batch")
        self._log.tree = tree
        self._append = append
        self._fatal_errors = fatal_errors

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"cctf-batch-{self._coordinator}"
            )

    @property
    def batch_max(self) -> int:
        return self._max

    async def seal(self, items: Sequence[BatchItem]) -> list[bytes]:
        """The ``"tlog"`` envelope of every item, once its batch is sealed, its head published and
        its append acked (or ``log_wait_ms`` passed). Raises :class:`BatchClosed` when stopping."""
        return await self.collect(self.submit(items))

    def submit(self, items: Sequence[BatchItem]) -> asyncio.Future[list[bytes]]:
        """Queue ``items`` in order after everything queued before (so parts queued at once are
        sealed one after the other while earlier batches are appended and published); their
        envelopes, in order, are the result of the returned future (:meth:`collect`; cancel it to
        withdraw the items not sealed yet). Raises :class:`BatchClosed` when stopping."""
        if self._closed is not None or self._stopping.is_set():
            raise BatchClosed("the batch stage is stopped")
        self.start()
        part = _Part(asyncio.get_running_loop().create_future(), len(items))
        if not items:
            part.future.set_result([])
            return part.future
        pending = self._pending
        pending.items += [(item, part, i) for i, item in enumerate(items)]
        pending.entry_bytes += sum(len(item.payload) for item in items) + _ENTRY_OVERHEAD * len(
            items
        )
        self._kick.set()
        if len(pending.items) >= self._max or pending.entry_bytes >= MAX_BATCH_ENTRY_BYTES:
            self._full.set()
            self._wake.set()
        return part.future

    async def collect(self, future: asyncio.Future[list[bytes]]) -> list[bytes]:
        """The envelopes of a :meth:`submit`, in order (raises :class:`BatchClosed`)."""
        return await future

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Refuse what is still queued, let the appends in flight finish (bounded)."""
        self._close(BatchClosed("the coordinator is stopping"))
        await stop_task(self._task, 1.0, what="batcher")
        if self._tasks:
            _done, left = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            await stop_tasks(left, 1.0, what="batcher append")

    def _close(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        for _item, part, _i in self._pending.items:
            part.fail(BatchClosed(str(exc)))
        self._pending = _Pending()

    def _fatal(self, exc: BaseException) -> None:
        _log.error("batch_stage_failed", coordinator=self._coordinator, error=str(exc)[:300])
        self._close(exc)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    # ---- the batch loop --------------------------------------------------------------------

    def _take(self) -> list[_Queued]:
        pending = self._pending
        taken: list[_Queued] = []
        size = 0
        rest = 0
        for i, queued in enumerate(pending.items):
            cost = len(queued[0].payload) + _ENTRY_OVERHEAD
            if len(taken) >= self._max or (taken and size + cost > MAX_BATCH_ENTRY_BYTES):
                rest = i
                break
            taken.append(queued)
            size += cost
        else:
            rest = len(pending.items)
        left = pending.items[rest:]
        self._pending = _Pending(left, sum(len(q[0].payload) + _ENTRY_OVERHEAD for q in left))
        if not left:
            self._full.clear()
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._closed is None:
            if not self._pending.items:
                self._kick.clear()
                await self._kick.wait()
                continue
            # the window runs from the previous batch's close: a decision after a quiet spell is
            # sealed at once, a steady flow still closes at most one batch per window
            wait_s = self._window_s - (loop.time() - self._last_close)
            if not self._full.is_set() and wait_s > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait_s)
            ready = loop.time()  # from here a verdict waits log_wait_ms at most, in all
            if self._appending >= APPENDS_AHEAD and not self._full.is_set():
                self.stats.held_for_log += 1
                self._m.held_for_log.add(1)
                await self._hold_for_log(ready + self._log_wait_s)
            self._last_close = loop.time()
            batch = [q for q in self._take() if not q[1].future.cancelled()]
            if not batch:
                continue
            envelopes: tuple[bytes, ...] | None = None
            try:
                items = [q[0] for q in batch]
                if len(items) <= INLINE_SEAL_MAX:  # cheaper than a thread hop (the GIL is held)
                    signed = self._log.sign(items)  # the envelopes while the append is on its way
                else:  # the tree is not thread-safe: no inline batch's proofs are being read
                    while self._proving:
                        await self._proved.wait()
                    sealed = await loop.run_in_executor(self._executor, self._log.seal, items)
                    signed, envelopes = self._signed(sealed, items), sealed.envelopes
            except asyncio.CancelledError:
                for _it, part, _i in batch:
                    part.fail(BatchClosed("stopping"))
                raise
            except Exception as exc:  # the tree may be appended: fail closed
                for _it, part, _i in batch:
                    part.fail(BatchClosed(f"seal failed: {exc}"))
                self._fatal(exc)
                return
            s = self.stats
            self._m.batches.add(1)
            self._m.batch_verdicts.record(len(batch))
            s.batches += 1
            s.verdicts += len(batch)
            s.largest_batch = max(s.largest_batch, len(batch))
            self._publish_heads(signed)
            await asyncio.sleep(0)  # the head publishes are written before any verdict
            append = self._spawn(self._append_in_order(signed, self._last_append))
            self._appending += 1
            append.add_done_callback(self._appended)
            self._last_append = append
            self._spawn(self._release(signed, envelopes, batch, append, ready))

    async def _hold_for_log(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while self._appending >= APPENDS_AHEAD and not self._full.is_set():
            left = until - loop.time()
            if left <= 0 or self._closed is not None:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _appended(self, _task: asyncio.Task[None]) -> None:
        self._appending -= 1
        self._wake.set()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _signed(sealed: SealedBatch, items: list[BatchItem]) -> SignedBatch:
        return SignedBatch(
            sealed.origin,
            sealed.first_index,
            sealed.size,
            sealed.root,
            sealed.checkpoint,
            sealed.entries,
            tuple(items),
            (),
            (),
        )

    def _publish_heads(self, sealed: SignedBatch) -> None:
        data = sealed.checkpoint.encode("utf-8")
        msg_id = head_msg_id(self._coordinator, sealed.size)
        until = self._now_ms() + self._head_ttl_ms
        for region in self._regions:
            subject = head_subject(region, self._coordinator, sealed.size)
            self._spawn(self._publish_head(subject, data, msg_id, until))

    async def _publish_head(self, subject: str, data: bytes, msg_id: str, until: int) -> None:
        first_out = False

        def sent(went_out: bool) -> None:
            # counted once it went out (core subscribers have it), not once stored: a subscriber
            # that saw the head never finds the count behind it
            nonlocal first_out
            first_out = went_out
            if went_out:
                self.stats.heads_published += 1

        result = await self._publisher.publish(
            subject, data, msg_id, until, self._stopping, on_sent=sent
        )
        if result.sent and not first_out:  # the first attempt failed, a retry got it out
            self.stats.heads_published += 1
        if result.outcome is not PublishOutcome.PUBLISHED:
            self.stats.head_publish_failures += 1
            self._m.head_publish_failures.add(1)
            _log.warning("head_publish_failed", subject=subject, error=result.last_error[:300])

    async def _append_in_order(
        self, sealed: SignedBatch, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        if self._append is None:
            return
        delay = _RETRY_FIRST_S
        while True:
            try:
                await self._append(sealed)
            except asyncio.CancelledError:
                raise
            except self._fatal_errors as exc:
                self._fatal(exc)
                raise
            except Exception as exc:  # the stream has no leader, a timeout: retried until acked
                self.stats.append_retries += 1
                _log.warning("log_append_retry", size=sealed.size, error=repr(exc)[:300])
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                self.stats.appends += 1
                return

    async def _release(
        self,
        signed: SignedBatch,
        envelopes: tuple[bytes, ...] | None,
        batch: list[_Queued],
        append: asyncio.Task[None],
        started: float,
    ) -> None:
        if envelopes is None:  # an inline batch: its proofs and envelopes during the append
            self._proving += 1
            self._proved.clear()
            try:
                for _ in range(_APPEND_TURNS):
                    await asyncio.sleep(0)
                envelopes = self._log.envelopes(signed)
            except Exception as exc:  # a bug (the batch is signed and appended): fail closed
                for _it, part, _i in batch:
                    part.fail(BatchClosed(f"seal failed: {exc}"))
                self._fatal(exc)
                return
            finally:
                self._proving -= 1
                if not self._proving:
                    self._proved.set()
        wait_s = max(0.0, self._log_wait_s - (asyncio.get_running_loop().time() - started))
        done, _ = await asyncio.wait({append}, timeout=wait_s)
        if append in done and append.exception() is not None and self._closed is not None:
            for _it, part, _i in batch:  # fenced: nothing of this batch is published
                part.fail(BatchClosed("the log refused the batch"))
            return
        if append not in done:
            self.stats.published_before_logged += len(batch)
            self._m.published_before_logged.add(len(batch))
        for (_it, part, i), data in zip(batch, envelopes, strict=True):
            if part.future.done():
                continue
            part.envelopes[i] = data
            part.left -= 1
            if not part.left:
                part.future.set_result(part.envelopes)


def batch_stage(
    config: CoordinatorConfig,
    key: SigningKey,
    publisher: Publisher,
    executor: Executor,
    stopping: asyncio.Event,
    clock: Clock,
    *,
    append: LogAppend | None = None,
    tree: MerkleTree | None = None,
    fatal_errors: tuple[type[BaseException], ...] = (),
    on_fatal: Callable[[BaseException], None] | None = None,
) -> BatchSigner | None:
    """The batch stage a coordinator config asks for (``None`` for ``signing: per_verdict``)."""
    if config.signing != "batch":
        return None
    return BatchSigner(
        BatchLog(key, tree),
        coordinator=config.coordinator,
        regions=config.publish_regions,
        publisher=publisher,
        executor=executor,
        stopping=stopping,
        window_ms=config.batch_window_ms,
        batch_max=config.batch_max,
        log_wait_ms=config.log_wait_ms,
        head_ttl_ms=config.verdict_ttl_ms,
        append=append,
        fatal_errors=fatal_errors,
        on_fatal=on_fatal,
        now_ms=clock.now_ms,
    )
