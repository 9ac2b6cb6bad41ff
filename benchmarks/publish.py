#!/usr/bin/env python3
"""CPU of publishing verdict-sized messages to JetStream and awaiting every acknowledgement, in
this process (``time.process_time``): the coordinator's old path (one ``Publisher.publish`` task per
message: a nats-py future, its done callback and a ``wait_for`` timer each) against ONE
``Publisher.publish_many`` (one acknowledgement collector per batch).

    .venv/bin/python benchmarks/publish.py [--quick] [--messages N] [--bytes B]

A real single-node nats-server (``cctf.devfabric.nats``), the verdict stream of one region, every
message a distinct subject and message id with ``Nats-Expected-Stream``. Prints one JSON object:
``per_message_us`` (median over the repetitions after a warm-up) for ``per_message_tasks`` and
``publish_many``, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cctf.bus.connect import connect
from cctf.bus.publisher import Outgoing, Publisher
from cctf.bus.streams import ensure_streams, verdict_stream_of
from cctf.clock import SYSTEM_CLOCK
from cctf.devfabric.nats import NatsFabric

REGION = "us-east"


async def measure(messages: int, size: int, repetitions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        fabric = await NatsFabric.astart(Path(tmp), nodes=1, regions=[REGION])
        try:
            nc = await connect(fabric.urls, fabric.users["admin"], name="bench", for_tests=True)
            try:
                await ensure_streams(nc.jetstream(), [REGION], fabric.stream_replicas)
                return await _series(Publisher(nc, SYSTEM_CLOCK), messages, size, repetitions)
            finally:
                await nc.close()
        finally:
            await fabric.astop()


async def _series(pub: Publisher, messages: int, size: int, repetitions: int) -> dict[str, Any]:
    stopping = asyncio.Event()
    until = SYSTEM_CLOCK.now_ms() + 600_000
    data = b"x" * size
    cpu: dict[str, list[float]] = {"per_message_tasks": [], "publish_many": []}
    stored: dict[str, int] = dict.fromkeys(cpu, 0)
    for rep in range(repetitions + 1):  # the first repetition warms up
        for mode in cpu:
            subjects = [f"cctf.v1.verdict.{REGION}.r{rep}{mode[0]}n{i}.A" for i in range(messages)]
            t0 = time.process_time()
            if mode == "per_message_tasks":
                results = await asyncio.gather(
                    *(
                        pub.publish(
                            s,
                            data,
                            "id-" + s,
                            until,
                            stopping,
                            on_sent=lambda _went_out: None,
                            expected_stream=verdict_stream_of(s),
                        )
                        for s in subjects
                    )
                )
            else:
                msgs = [Outgoing(s, data, "id-" + s, until, verdict_stream_of(s)) for s in subjects]
                results = await pub.publish_many(msgs, stopping, on_sent=lambda _went_out: None)
            spent = time.process_time() - t0
            if rep:
                cpu[mode].append(spent / messages * 1e6)
                stored[mode] += sum(r.failures == 0 for r in results)
    out: dict[str, Any] = {
        "what": "CPU of this process per message: publish + await its JetStream acknowledgement",
        "messages": messages,
        "bytes": size,
        "repetitions": repetitions,
    }
    for mode, values in cpu.items():
        out[mode] = {
            "per_message_us": round(statistics.median(values), 2),
            "stored_first_try": stored[mode],
        }
    out["ratio"] = round(
        out["per_message_tasks"]["per_message_us"] / out["publish_many"]["per_message_us"], 2
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CCTF publish CPU per message (JSON on stdout)")
    p.add_argument("--quick", action="store_true", help="a second, for smoke tests")
    p.add_argument("--messages", type=int, help="messages per repetition (default 1000; quick 50)")
    p.add_argument("--bytes", type=int, default=700, help="message size (default 700)")
    a = p.parse_args(argv)
    messages = a.messages if a.messages is not None else (50 if a.quick else 1000)
    if not 1 <= messages <= 100_000 or not 1 <= a.bytes <= 65_536:
        p.error("--messages takes 1..100000, --bytes 1..65536")
    result = asyncio.run(measure(messages, a.bytes, 2 if a.quick else 5))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
