"""Outbox: decided keys -> verdicts (decide) -> envelopes (sign, in worker threads) -> the bus
(publish, bounded retry), settling each key once its verdict is out or given up.

Signing dominates (about 1 ms per hybrid signature): verdicts are signed in chunks of 32 and each chunk
is published while the next is signed, so the first verdicts of a large batch go out early. With batch
signing (``batcher``, ``cctf.coordinator.batcher``) DNS verdicts are handed to the batch stage
instead, in parts of ``batch_max`` all queued at once (one signed log head per part, the same
``"tlog"`` envelope on every verdict region): the stage seals the next part while the previous one is
appended and published, and each part is published as soon as it is released; identity verdicts
keep their own signatures.

The live path never waits on a stream leader (design D1): :meth:`Outbox.run` returns as soon as every
verdict's first copy went out to every region (core subscribers have it then); the stream's
acknowledgement is awaited in the background (:attr:`Outbox.storing`: ONE task per published chunk,
:meth:`cctf.bus.publisher.Publisher.publish_many`, one acknowledgement collector for all its
messages, not a task, future and timer per verdict), with retries of the same bytes and message id,
and only then is each key settled (its ballots acknowledged). So a stream
without a leader delays the durable copy and the acknowledgement of ballots, never the next verdict.
A verdict that cannot be built or sealed is settled at once as ``unpublishable``; one that cannot be
stored before it expires is settled as ``expired`` (counted in ``verdicts_dropped`` when it never went
out at all, in ``verdicts_unstored`` when core subscribers had it but the stream never stored it):
no key ever holds ballots for good.

Counting follows the same order as delivery: a verdict is counted (``stats().verdicts``, the metric)
as soon as every region's first copy went out (``on_sent``), so a subscriber that received it never
finds the count behind it; ``verdict_messages`` counts stored messages (stream acknowledgements).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from cctf import telemetry
from cctf.bus.publisher import STORED, Outgoing, Publisher, PublishOutcome, PublishResult
from cctf.bus_schemas.messages import MessageType, Verdict, encode
from cctf.coordinator.batcher import BatchClosed, BatchSigner
from cctf.coordinator.counters import Counters
from cctf.coordinator.pipeline.batchsign import BatchItem
from cctf.coordinator.pipeline.identity import IssueRefused
from cctf.coordinator.pipeline.sign import Sealed, Signer, SignError
from cctf.coordinator.pipeline.tallies import AnyKey, AnyVerdict, Deciders
from cctf.coordinator.tally import Decision
from cctf.coordinator.verdicts import VerdictError

__all__ = ["UNPUBLISHABLE", "Outbox"]

_PUBLISH_CHUNK: Final = 32  # verdicts signed before the first of them is published
_MAX_DETAIL: Final = 300
UNPUBLISHABLE: Final = "unpublishable"
_UNSET: Final = "\x00unset"  # no expected stream looked up yet for a region

_log = telemetry.get_logger("cctf.coordinator")


@dataclass
class _Job:
    key: AnyKey
    verdict: AnyVerdict
    payload: bytes
    sealed: list[Sealed] | None = None


@dataclass
class _Ticket:
    """One part's verdicts queued in the batch stage (:meth:`Outbox._submit`)."""

    dns: list[tuple[_Job, list[tuple[str, str, str]]]] = field(default_factory=list)
    others: list[_Job] = field(default_factory=list)
    future: asyncio.Future[list[bytes]] | None = None  # the envelopes of ``dns``
    closed: bool = False  # the batch stage refused it (stopping)

    def cancel(self) -> None:
        """Never collected (stopping): the batch stage skips these (a refusal already set is
        retrieved, so it is not reported as lost)."""
        fut = self.future
        if fut is None:
            return
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()


class Outbox:
    def __init__(
        self,
        *,
        decider: Deciders,
        signer: Signer,
        publisher: Publisher,
        counts: Counters,
        executor: ThreadPoolExecutor,
        workers: int,
        stopping: asyncio.Event,
        settle: Callable[[AnyKey], Awaitable[None]],
        latency: Callable[[AnyKey], float | None],
        log: Callable[..., None],
        lkg: Callable[[Verdict], Verdict] | None = None,
        batcher: BatchSigner | None = None,
        expected_stream: Callable[[str], str | None] = lambda _subject: None,
    ) -> None:
        self._decider = decider
        self._signer = signer
        self._publisher = publisher
        self._counts = counts
        self._executor = executor
        self._workers = max(1, workers)
        self._stopping = stopping
        self._settle = settle
        self._latency = latency
        self._log = log
        self._lkg = lkg  # the LKG stage (cctf.coordinator.lkggate): fresh -> verdict to publish
        self._batcher = batcher
        self._expected_stream = expected_stream
        #: Background tasks (one per published chunk) awaiting the stream acknowledgement of
        #: verdicts already sent, and how many verdicts they hold.
        self.storing: set[asyncio.Task[None]] = set()
        self.storing_verdicts = 0

    async def run(self, decided: list[tuple[AnyKey, Decision]]) -> None:
        """Decide, sign and send ``decided``: returns once every verdict went out (or was given up);
        each key is settled in the background once its verdict is stored or given up (not those
        left unstored because the service is stopping: redelivery handles them)."""
        jobs: list[_Job] = []
        for key, decision in decided:
            try:
                verdict = self._decider.verdict(key, decision)
                if self._lkg is not None and isinstance(verdict, Verdict):
                    verdict = self._lkg(verdict)  # DNS verdicts only
            except IssueRefused as exc:  # a decision that must not be issued (bundle rollback)
                self._log("verdict_refused", key=list(key)[:3], error=str(exc)[:_MAX_DETAIL])
                self._counts.drop(exc.reason)
                await self._settle(key)
                continue
            except VerdictError as exc:  # a bug: never hold the ballots
                _log.error("verdict_build_failed", key=list(key), error=str(exc))
                self._counts.drop(UNPUBLISHABLE)
                await self._settle(key)
                continue
            jobs.append(_Job(key, verdict, encode(verdict)))
        batcher = self._batcher
        chunk = _PUBLISH_CHUNK if batcher is None else batcher.batch_max
        parts = [jobs[start : start + chunk] for start in range(0, len(jobs), chunk)]
        # batch signing: every part is queued at once (one batch each), so the batch stage seals
        # the next part while this one is appended and published (pipelined, in order)
        tickets = [self._submit(part, batcher) for part in parts] if batcher is not None else []
        try:
            await self._send_parts(parts, tickets)
        finally:  # stopped or cancelled half-way: the parts not collected are not sealed
            for ticket in tickets:
                ticket.cancel()

    async def _send_parts(self, parts: list[list[_Job]], tickets: list[_Ticket]) -> None:
        batcher = self._batcher
        for i, part in enumerate(parts):
            signed = (
                await self._collect(tickets[i], batcher)
                if batcher is not None
                else await self._sign_each(part)
            )
            if not signed:
                break  # stopping
            for job in part:
                if job.sealed is None:  # cannot be published: settle it now
                    self._counts.drop(UNPUBLISHABLE)
                    await self._settle(job.key)
            ready = [job for job in part if job.sealed is not None]
            if not ready:
                continue
            sent = asyncio.Event()
            task = asyncio.get_running_loop().create_task(self._publish_jobs(ready, sent))
            self.storing.add(task)
            self.storing_verdicts += len(ready)
            task.add_done_callback(self.storing.discard)
            # the live path: the next chunk is published (per verdict: signed) once this one went
            # out, not once stored
            await sent.wait()

    def _seal_chunk(self, jobs: list[_Job]) -> list[list[Sealed] | None]:
        out: list[list[Sealed] | None] = []
        for job in jobs:
            try:
                out.append(self._signer.seal(job.verdict, job.payload))
            except SignError as exc:
                self._log("verdict_unpublishable", error=str(exc)[:_MAX_DETAIL])
                out.append(None)
        return out

    def _submit(self, jobs: list[_Job], batcher: BatchSigner) -> _Ticket:
        """Queue the DNS verdicts of ``jobs`` in the batch stage (one ``"tlog"`` envelope for all
        their regions); identity verdicts are signed one by one (in :meth:`_collect`)."""
        ticket = _Ticket()
        for job in jobs:
            if not isinstance(job.verdict, Verdict):
                ticket.others.append(job)
                continue
            try:
                ticket.dns.append((job, self._signer.targets(job.verdict)))
            except SignError as exc:
                self._log("verdict_unpublishable", error=str(exc)[:_MAX_DETAIL])
        if ticket.dns:
            items = [
                BatchItem(
                    MessageType.VERDICT,
                    tuple(subject for _r, subject, _m in targets),
                    job.payload,
                    job.verdict.issued_ms,
                    job.verdict.expires_ms,
                )
                for job, targets in ticket.dns
            ]
            try:
                ticket.future = batcher.submit(items)
            except BatchClosed:
                ticket.closed = True
        return ticket

    async def _collect(self, ticket: _Ticket, batcher: BatchSigner) -> bool:
        """Wait for the envelopes of a :meth:`_submit` ticket; ``False`` when stopping."""
        if ticket.others and not await self._sign_each(ticket.others):
            ticket.cancel()
            return False
        if ticket.closed:
            return False
        if not ticket.dns or ticket.future is None:
            return True
        try:
            envelopes = await batcher.collect(ticket.future)
        except BatchClosed:
            return False
        for (job, targets), data in zip(ticket.dns, envelopes, strict=True):
            job.sealed = [
                Sealed(region, subject, data, msg_id) for region, subject, msg_id in targets
            ]
        return True

    async def _sign_each(self, jobs: list[_Job]) -> bool:
        if len(jobs) * len(self._signer.regions) <= 2:
            sealed = self._seal_chunk(jobs)
        else:
            loop = asyncio.get_running_loop()
            size = math.ceil(len(jobs) / self._workers)
            chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
            try:
                parts = await asyncio.gather(
                    *(loop.run_in_executor(self._executor, self._seal_chunk, c) for c in chunks)
                )
            except RuntimeError:  # executor shut down: stopping
                return False
            sealed = [item for part in parts for item in part]
        for job, s in zip(jobs, sealed, strict=True):
            job.sealed = s
        return True

    async def _publish_jobs(self, jobs: list[_Job], sent: asyncio.Event) -> None:
        """Publish every verdict of ``jobs`` to every region (ONE batch publish: one
        acknowledgement collector, not a task, future and timer per message); ``sent`` is set once
        every message's first attempt was made. Settles each key once stored everywhere or given
        up (not when stopping: redelivery handles its ballots)."""
        msgs: list[Outgoing] = []
        spans: list[tuple[_Job, int, int]] = []
        streams: dict[str, str | None] = {}  # the expected stream of each region (one per region)
        for job in jobs:
            assert job.sealed is not None
            until = job.verdict.expires_ms
            start = len(msgs)
            for s in job.sealed:
                stream = streams.get(s.region, _UNSET)
                if stream is _UNSET:
                    stream = streams[s.region] = self._expected_stream(s.subject)
                msgs.append(Outgoing(s.subject, s.data, s.msg_id, until, stream))
            spans.append((job, start, len(msgs)))
        counted = [False] * len(spans)

        def all_sent(went_out: list[bool]) -> None:
            # every message's first attempt was made: the live path is done. A verdict is counted
            # now (core subscribers have it), never later than a subscriber could see it.
            sent.set()
            everything = all(went_out)
            for j, (job, start, end) in enumerate(spans):
                if everything or all(went_out[start:end]):
                    counted[j] = True
                    self._counts.verdict(job.verdict.outcome.value, self._latency(job.key))

        try:
            results = await self._publisher.publish_many(msgs, self._stopping, on_sent=all_sent)
        finally:
            sent.set()  # never leave run() waiting (given up, stopping, cancelled)
            self.storing_verdicts -= len(jobs)
        if all(r is STORED for r in results):  # the usual case: stored at once, counted when sent
            self._counts.verdict_messages += len(results)
            for job, _start, _end in spans:
                await self._settle(job.key)
            return
        for j, (job, start, end) in enumerate(spans):
            part = results[start:end]
            if any(r.outcome is PublishOutcome.STOPPED for r in part):
                continue  # stopping: redelivery handles its ballots
            try:
                self._account(job, part, counted[j])
            finally:  # whatever the accounting does (a log sink gone), the key settles
                await self._settle(job.key)

    def _account(self, job: _Job, results: list[PublishResult], counted: bool) -> None:
        """Once every copy of ``job``'s verdict is stored or given up (``counted``: the verdict was
        counted when its first copies went out)."""
        verdict = job.verdict
        n = self._counts
        for r in results:
            n.retries += r.failures
        n.verdict_messages += sum(r.outcome is PublishOutcome.PUBLISHED for r in results)
        went_out = all(r.sent for r in results)  # core subscribers had it (stored or not)
        if went_out and not counted:  # went out on a retry only
            n.verdict(verdict.outcome.value, self._latency(job.key))
        if not all(r.outcome is PublishOutcome.PUBLISHED for r in results):
            if went_out:
                n.unstored += 1
            else:
                n.drop("expired")
            _log.error(
                "verdict_unstored" if went_out else "verdict_dropped",
                key=[str(part)[:256] for part in job.key],
                detail="expired before it could be " + ("stored" if went_out else "published"),
            )
        for r in results:
            if r.failures:
                self._log("verdict_publish_failed", error=r.last_error)
