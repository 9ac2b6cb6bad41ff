"""Outbox: decided keys -> verdicts (decide) -> envelopes (sign, in worker threads) -> the bus
(publish, bounded retry), settling each key once its verdict is out or given up.

Signing dominates (about 1 ms per hybrid signature): verdicts are signed in chunks of 32 and each chunk
is published while the next is signed, so the first verdicts of a large batch go out early. With batch
signing (``batcher``, ``cctf.coordinator.batcher``) DNS verdicts are handed to the batch stage all at
once instead (one signed log head per batch, the same ``"tlog"`` envelope on every verdict region);
identity verdicts keep their own signatures.

The live path never waits on a stream leader (design D1): :meth:`Outbox.run` returns as soon as every
verdict's first copy went out to every region (core subscribers have it then); the stream's
acknowledgement is awaited in the background (:attr:`Outbox.storing`), with retries of the same
bytes and message id, and only then is the key settled (its ballots acknowledged). So a stream
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
from dataclasses import dataclass
from typing import Final

from cctf import telemetry
from cctf.bus.publisher import Publisher, PublishOutcome, PublishResult
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

_log = telemetry.get_logger("cctf.coordinator")


@dataclass
class _Job:
    key: AnyKey
    verdict: AnyVerdict
    payload: bytes
    sealed: list[Sealed] | None = None


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
        #: Background tasks awaiting the stream acknowledgement of verdicts already sent.
        self.storing: set[asyncio.Task[None]] = set()

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
        chunk = _PUBLISH_CHUNK if self._batcher is None else max(1, len(jobs))
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            if not await self._sign(part):
                break  # stopping
            for job in part:
                if job.sealed is None:  # cannot be published: settle it now
                    self._counts.drop(UNPUBLISHABLE)
                    await self._settle(job.key)
            ready = [job for job in part if job.sealed is not None]
            sent = [asyncio.Event() for _ in ready]
            for job, event in zip(ready, sent, strict=True):
                task = asyncio.get_running_loop().create_task(self._publish_job(job, event))
                self.storing.add(task)
                task.add_done_callback(self.storing.discard)
            # the live path: the next chunk is signed once this one went out (not once stored)
            await asyncio.gather(*(e.wait() for e in sent))

    def _seal_chunk(self, jobs: list[_Job]) -> list[list[Sealed] | None]:
        out: list[list[Sealed] | None] = []
        for job in jobs:
            try:
                out.append(self._signer.seal(job.verdict, job.payload))
            except SignError as exc:
                self._log("verdict_unpublishable", error=str(exc)[:_MAX_DETAIL])
                out.append(None)
        return out

    async def _sign(self, jobs: list[_Job]) -> bool:
        """Seal every verdict for every verdict region, in worker threads for larger batches."""
        if self._batcher is not None:
            return await self._sign_batched(jobs, self._batcher)
        return await self._sign_each(jobs)

    async def _sign_batched(self, jobs: list[_Job], batcher: BatchSigner) -> bool:
        """DNS verdicts through the batch stage (one ``"tlog"`` envelope for all their regions),
        identity verdicts signed one by one."""
        dns: list[tuple[_Job, list[tuple[str, str, str]]]] = []
        others: list[_Job] = []
        for job in jobs:
            if not isinstance(job.verdict, Verdict):
                others.append(job)
                continue
            try:
                dns.append((job, self._signer.targets(job.verdict)))
            except SignError as exc:
                self._log("verdict_unpublishable", error=str(exc)[:_MAX_DETAIL])
        if others and not await self._sign_each(others):
            return False
        if not dns:
            return True
        items = [
            BatchItem(
                MessageType.VERDICT,
                tuple(subject for _r, subject, _m in targets),
                job.payload,
                job.verdict.issued_ms,
                job.verdict.expires_ms,
            )
            for job, targets in dns
        ]
        try:
            envelopes = await batcher.seal(items)
        except BatchClosed:
            return False
        for (job, targets), data in zip(dns, envelopes, strict=True):
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

    async def _publish_job(self, job: _Job, sent: asyncio.Event) -> None:
        """Publish one verdict to every region; ``sent`` is set once every region's first attempt
        was made. Settles the key once stored everywhere or given up (not when stopping:
        redelivery handles its ballots)."""
        verdict = job.verdict
        assert job.sealed is not None
        waiting = len(job.sealed)
        first_copies: list[bool] = []  # each region's first attempt: did its copy go out?
        latency: list[float | None] = []

        def one_sent(went_out: bool) -> None:
            nonlocal waiting
            waiting -= 1
            first_copies.append(went_out)
            if waiting == 0:  # every region's first attempt was made: the live path is done
                sent.set()
                latency.append(self._latency(job.key))
                if all(first_copies):  # core subscribers have it now: count it now, not once
                    # stored (stats never lag what a subscriber saw)
                    self._counts.verdict(verdict.outcome.value, latency[0])

        try:
            results = await asyncio.gather(
                *(
                    self._publisher.publish(
                        s.subject,
                        s.data,
                        s.msg_id,
                        verdict.expires_ms,
                        self._stopping,
                        on_sent=one_sent,
                        expected_stream=self._expected_stream(s.subject),
                    )
                    for s in job.sealed
                )
            )
        finally:
            sent.set()  # never leave run() waiting (given up, stopping, cancelled)
        if any(r.outcome is PublishOutcome.STOPPED for r in results):
            return  # stopping: redelivery handles its ballots
        try:
            counted = len(first_copies) == len(results) and all(first_copies)
            self._account(job, results, latency[0] if latency else None, counted=counted)
        finally:  # whatever the accounting does (a log sink gone), the key settles
            await self._settle(job.key)

    def _account(
        self, job: _Job, results: list[PublishResult], latency: float | None, *, counted: bool
    ) -> None:
        """Once every region's publish ended: retries, stored messages (``verdict_messages``),
        unstored or dropped verdicts. The verdict itself was counted when its first copies went
        out (``counted``); one whose first attempt failed somewhere is counted here if a retry
        got it out."""
        verdict = job.verdict
        n = self._counts
        for r in results:
            n.retries += r.failures
        n.verdict_messages += sum(r.outcome is PublishOutcome.PUBLISHED for r in results)
        went_out = all(r.sent for r in results)  # core subscribers had it (stored or not)
        if went_out and not counted:
            n.verdict(verdict.outcome.value, latency)
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
