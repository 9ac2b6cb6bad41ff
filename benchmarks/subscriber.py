#!/usr/bin/env python3
"""The subscriber alone: CPU per batch-signed verdict of a verifying ``TrustClient`` stream.

    .venv/bin/python benchmarks/subscriber.py [--quick] [--verdicts N] [--batch B] [--json]

A single-node JetStream (``NatsFabric``, the project's streams) and ONE verifying ``TrustClient``
stream (``deliver="new"``: the core live copy merged with the ordered JetStream feed, each verdict
verified once) in this process; the verdicts come from a CHILD process that publishes, as the
coordinator does, each batch's signed head first and then the batch's ``"tlog"`` verdicts (sealed
beforehand by the coordinator's own ``BatchLog``) with a ``Nats-Msg-Id`` each, so the stream stores
them and both copies arrive. Nothing but the subscriber runs in this process while it is measured,
so its CPU time (``time.process_time``) divided by the verified verdicts is the subscriber's CPU per
verdict: the steady figure of issue #9 (target ≤ 0.05 ms), independent of the coordinator and of the
machine's load. Also reported: the same for the pure verifier alone (no bus), and the ordered
consumer's and live subscription's drops.

Prints one JSON object on stdout (progress on stderr); ``run.py`` (``make bench``) runs it as
``subscriber``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from harness import COORDINATOR_ID, REGIONS, VERDICT_REGION, Progress, run_main, spawn

from cctf.bus.headers import MSG_ID
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.heads import head_subject
from cctf.bus_schemas.messages import (
    DnssecState,
    MessageType,
    Outcome,
    Verdict,
    VoterRecord,
    VoterState,
    answer_digest,
    encode,
)
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.heads import HeadCache
from cctf.client.sdk import TrustClient
from cctf.client.verify import VerdictVerifier
from cctf.clock import SYSTEM_CLOCK
from cctf.coordinator.cli import GC_THRESHOLDS
from cctf.coordinator.pipeline.batchsign import BatchItem, BatchLog
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric

LIFETIME_MS = 60_000


def _verdict(qname: str, now: int, seq: int) -> Verdict:
    """A TRUSTED 3-of-5 verdict shaped like the bench coordinator's (five agreeing voters, their
    vote digests, decided early)."""
    answer = ["192.0.2.1"]
    digest = answer_digest(0, answer)
    voters = [VoterRecord(f"agent-{r}/dns-{r}", VoterState.AGREE, digest) for r in REGIONS]
    return Verdict(
        qname=qname,
        qtype="A",
        round=now // 1000,
        outcome=Outcome.TRUSTED,
        rcode=0,
        answer=answer,
        answer_digest=digest,
        voters=voters,
        k=3,
        n=len(voters),
        vote_digests=[os.urandom(32) for _ in voters],
        decided_early=True,
        issued_ms=now,
        expires_ms=now + LIFETIME_MS,
        coordinator=COORDINATOR_ID,
        seq=now * 1000 + seq,
        dnssec=DnssecState.INSECURE,
        basis_round=now // 1000,
        basis_ms=now,
    )


def sealed_batches(
    key: SigningKey, count: int, batch: int
) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """``count`` verdicts in batches of ``batch``: ``[(signed head, [(subject, envelope)])]``."""
    log = BatchLog(key)
    out = []
    now = time.time_ns() // 1_000_000
    n = 0
    while n < count:
        items = []
        for _ in range(min(batch, count - n)):
            n += 1
            v = _verdict(f"s{n}.bench.test.", now, n)
            subject = verdict_subject(VERDICT_REGION, v.qname, "A")
            items.append(
                BatchItem(MessageType.VERDICT, (subject,), encode(v), v.issued_ms, v.expires_ms)
            )
        sb = log.seal(items)
        out.append(
            (
                sb.checkpoint.encode(),
                [(it.subjects[0], env) for it, env in zip(items, sb.envelopes, strict=True)],
            )
        )
    return out


async def _publish_child(path: Path) -> None:
    """The child: publish every batch (head first) as the coordinator does, paced per batch."""
    from cctf.bus.accounts import NatsUser
    from cctf.bus.connect import connect

    doc = msgspec.msgpack.decode(path.read_bytes())
    nc = await connect(doc["urls"], NatsUser(doc["user"], doc["password"]), name="bench-pub")
    js = nc.jetstream(publish_async_max_pending=1_000_000)
    acks = []
    for i, (head_subj, note, verdicts) in enumerate(doc["batches"]):
        await js.publish(head_subj, note)
        for subject, data in verdicts:
            acks.append(await js.publish_async(subject, data, headers={MSG_ID: f"b{i}.{subject}"}))
        await nc.flush()
        await asyncio.gather(*acks)
        acks.clear()
        await asyncio.sleep(doc["pause_s"])
    await nc.close()


def verifier_only(key: SigningKey, trust: TrustConfig, count: int, batch: int) -> float:
    """CPU µs per verdict of :meth:`VerdictVerifier.check` alone (no bus)."""
    batches = sealed_batches(key, count, batch)
    heads = HeadCache(trust)
    for note, _ in batches:
        heads.add_note(note)
    best = float("inf")
    for _ in range(3):
        v = VerdictVerifier(trust, SYSTEM_CLOCK, region=VERDICT_REGION, heads=heads)
        t = time.process_time()
        for _, items in batches:
            for subject, data in items:
                v.check(data, subject)
        best = min(best, (time.process_time() - t) / count * 1e6)
    return round(best, 2)


async def measure(
    progress: Progress,
    *,
    verdicts: int,
    batch: int,
    pause_s: float,
    transport_only: bool = False,
    profile: Path | None = None,
    gc_thresholds: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    key = SigningKey.generate(SuiteId.HYBRID)
    trust = TrustConfig([TrustEntry(Role.COORDINATOR, COORDINATOR_ID, VERDICT_REGION, key.public)])
    progress("verifier alone")
    alone_us = verifier_only(key, trust, min(verdicts, 5000), batch)
    progress(f"verifier alone: {alone_us} µs per verdict; sealing {verdicts} verdicts")
    batches = sealed_batches(key, verdicts, batch)
    tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-sub-"))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        stack.callback(gc.unfreeze)
        nats = await NatsFabric.astart(tmp / "nats", nodes=1, regions=REGIONS)
        stack.push_async_callback(nats.astop)
        admin = await nats.connect("admin", name="bench-admin", for_tests=True)
        stack.push_async_callback(admin.close)
        await ensure_streams(admin.jetstream(), REGIONS, 1)
        client_nc = await nats.connect("client", name="bench-subscriber", for_tests=True)
        stack.push_async_callback(client_nc.close)
        client = TrustClient(client_nc, trust, VERDICT_REGION)
        stack.push_async_callback(client.close)
        stream = await client.stream(VERDICT_REGION, deliver="new")
        stack.push_async_callback(stream.aclose)
        user = nats.user("coordinator")
        job = tmp / "publish.msgpack"
        job.write_bytes(
            msgspec.msgpack.encode(
                {
                    "urls": nats.urls,
                    "user": user.name,
                    "password": user.password,
                    "pause_s": pause_s,
                    "batches": [
                        (head_subject(VERDICT_REGION, COORDINATOR_ID, _size(i, batch)), n, items)
                        for i, (n, items) in enumerate(batches)
                    ],
                }
            )
        )
        os.chmod(job, 0o600)
        progress(f"publishing {len(batches)} batches of {batch} from a child process")
        prof = cProfile.Profile() if profile is not None else None
        del batches  # the sealed copies are in the job file
        gc.collect()
        gc.freeze()  # the set-up objects are not the subscriber's to scan
        thresholds = gc.get_threshold()
        # Python's defaults (a library does not tune its host's GC), or ``gc_thresholds``: e.g. the
        # coordinator's, as a subscriber process may set them (``cctf watch`` does)
        gc.set_threshold(*(gc_thresholds or (700, 10, 10)))
        stack.callback(gc.set_threshold, *thresholds)
        t_cpu = time.process_time()
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        child = spawn([sys.executable, __file__, "--publish-child", str(job)])
        got = 0
        try:
            async with asyncio.timeout(30 + verdicts / 500):
                async for _ in stream._feed if transport_only else stream:
                    got += 1
                    if got == verdicts:
                        break
        except TimeoutError:
            progress(f"timed out after {got} of {verdicts} verdicts")
        feed = stream._feed
        deadline = time.monotonic() + 5.0  # every durable copy too (each one is recognised)
        if not hasattr(feed, "repeats"):  # an older feed (a baseline run): give them a second
            await asyncio.sleep(1.0)
        while getattr(feed, "repeats", got) < got and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cpu = time.process_time() - t_cpu
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(profile))
        wall = time.perf_counter() - t0
        await asyncio.to_thread(child.wait, 30)
        return {
            "what": "CPU of a verifying TrustClient stream per batch-signed verdict (live copy + "
            "ordered JetStream copy, each verified once), publisher in another process",
            "verdicts": verdicts,
            "verified": got,
            "batch": batch,
            "cpu_ms_per_verdict": round(cpu / max(got, 1) * 1000, 4),
            "verifier_alone_us_per_verdict": alone_us,
            "wall_s": round(wall, 2),
            "rejected": dict(client.rejected),
            "heads_added": dict(client.head_feed.added),
            "live_dropped": getattr(feed, "live_dropped", None),
            "second_copies_recognised": getattr(feed, "repeats", None),
            "gc_thresholds": list(gc_thresholds or (700, 10, 10)),
            "load_avg_1m": os.getloadavg()[0],
        }


def _size(i: int, batch: int) -> int:
    return (i + 1) * batch  # every batch but a short last one is full (callers pass multiples)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CPU per verified verdict of the subscriber (JSON)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--verdicts", type=int, default=None, help="default 20000 (quick 2000)")
    p.add_argument("--batch", type=int, default=1000, help="verdicts per signed head")
    p.add_argument("--pause", type=float, default=0.05, help="seconds between batches")
    p.add_argument(
        "--transport-only", action="store_true", help="iterate the merged feed, verify nothing"
    )
    p.add_argument("--profile", type=Path, metavar="FILE", help="cProfile the measured phase")
    p.add_argument(
        "--gc-tuned",
        action="store_true",
        help="measure with the coordinator's GC thresholds instead of Python's defaults",
    )
    p.add_argument("--publish-child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.publish_child is not None:
        asyncio.run(_publish_child(a.publish_child))
        return 0
    count = a.verdicts or (2000 if a.quick else 20_000)
    count -= count % a.batch or 0
    return run_main(
        lambda progress: measure(
            progress,
            verdicts=count,
            batch=a.batch,
            pause_s=a.pause,
            transport_only=a.transport_only,
            profile=a.profile,
            gc_thresholds=GC_THRESHOLDS if a.gc_tuned else None,
        ),
        budget_s=120.0 + count / 200,
    )


if __name__ == "__main__":
    sys.exit(main())
