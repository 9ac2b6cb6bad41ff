#!/usr/bin/env python3
"""Identity decisions: decisions/s and latency of validating an X.509-SVID chain and an ID token
(1) with the bare library call (``cctf.identity``: the same-run baseline), (2) through the SDK
(``IdentityClient``: a verified identity verdict fetched from NATS per decision, material under its
digest from the cache) and (3) through the gateway's HTTP API (``POST /v1/validate/certificate`` and
``/token`` on a uvicorn server in this process, an HTTP/1.1 keep-alive client).

    .venv/bin/python benchmarks/identity.py [--quick] [--samples N] [--concurrency C]

Real parts: a nats-server (``NatsFabric``), the local identity fabric (HTTPS bundle endpoint and OIDC
issuer: the material is fetched once, then used from the cache while the digest stays the quorum's),
hybrid-signed identity verdicts in the verdict stream, a verifying ``TrustClient``. Latency: ``samples``
sequential decisions (p50/p90/p99); decisions/s: ``samples`` decisions by ``concurrency`` concurrent
callers. Every decision is checked to be ``valid``. Prints ONE JSON object on stdout (progress on
stderr); ``ratios`` compare the SDK and HTTP figures with the library baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import msgspec
from harness import Progress, ratio, run_main, summary_ms

from cctf.bus.connect import connect
from cctf.bus.streams import ensure_streams
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.evidence import (
    EvidenceStatus,
    Facts,
    IdentityKind,
    IdentityVerdict,
    Observation,
    encode,
    facts_digest,
    observation_digest,
)
from cctf.bus_schemas.messages import MessageType, Outcome, VoterRecord, VoterState
from cctf.bus_schemas.subjects import identity_verdict_subject
from cctf.client.identity import IdentityClient
from cctf.client.sdk import TrustClient
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.identity import IdentityFabric
from cctf.devfabric.nats import NatsFabric
from cctf.gateway.app import create_app
from cctf.gateway.server import GatewayServer
from cctf.identity.bundle import bundle_digest, parse_bundle
from cctf.identity.oidc import jwks_digest, parse_jwks
from cctf.identity.targets import identity_targets_from
from cctf.identity.tokens import verify_id_token
from cctf.identity.x509svid import parse_pem_chain, verify_x509_svid

REGION = "us-east"
COORDINATOR = "coord-1"
AGENTS = ("agent-us-east", "agent-eu-west", "agent-ap-south")
LIFETIME_MS = 600_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CCTF identity decisions: library vs SDK vs HTTP")
    p.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    p.add_argument(
        "--samples", type=int, default=None, help="decisions per measurement (10..100000)"
    )
    p.add_argument("--concurrency", type=int, default=8, help="concurrent callers (1..64)")
    a = p.parse_args(argv)
    if a.samples is None:
        a.samples = 40 if a.quick else 1000
    if not 10 <= a.samples <= 100_000:
        p.error("--samples takes 10..100000")
    if not 1 <= a.concurrency <= 64:
        p.error("--concurrency takes 1..64")
    return a


def identity_verdict(
    kind: IdentityKind, subject: str, facts: Facts, now_ms: int
) -> IdentityVerdict:
    """What an honest coordinator signs when three agents observed ``facts``."""
    fd = facts_digest(kind, subject, facts)
    observations = [
        Observation(
            a, REGION, now_ms // 1000, kind, subject, EvidenceStatus.OK, facts, fd, "", now_ms
        )
        for a in AGENTS
    ]
    return IdentityVerdict(
        kind=kind,
        subject=subject,
        round=now_ms // 1000,
        outcome=Outcome.TRUSTED,
        facts=facts,
        facts_digest=fd,
        voters=[VoterRecord(a, VoterState.AGREE, fd) for a in AGENTS],
        k=2,
        n=3,
        observation_digests=[observation_digest(o) for o in observations],
        decided_early=False,
        issued_ms=now_ms,
        expires_ms=now_ms + LIFETIME_MS,
        coordinator=COORDINATOR,
        seq=now_ms * 1000,
    )


async def timed(
    call: Callable[[], Awaitable[bool]], samples: int, concurrency: int
) -> dict[str, Any]:
    """``samples`` sequential calls (latency), then ``samples`` calls by ``concurrency`` callers."""
    for _ in range(min(20, samples)):  # warm-up
        assert await call()
    lat: list[float] = []
    for _ in range(samples):
        t = time.perf_counter()
        ok = await call()
        lat.append(time.perf_counter() - t)
        assert ok, "a decision was not valid"
    per_worker = max(1, samples // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            assert await call(), "a decision was not valid"

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    seq_total = sum(lat)
    return {
        **summary_ms(lat),
        "decisions_per_s_sequential": round(samples / seq_total, 1),
        "decisions_per_s": round(per_worker * concurrency / elapsed, 1),
    }


async def run(a: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="cctf-bench-identity-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            progress("nats-server and the local identity fabric")
            nats = NatsFabric.start(tmp / "nats", nodes=1)
            stack.callback(nats.stop)
            fabric = await stack.enter_async_context(IdentityFabric(tmp / "idfabric"))
            admin = await connect(
                nats.urls, nats.users["admin"], name="bench-admin", for_tests=True
            )
            stack.push_async_callback(admin.close)
            await ensure_streams(admin.jetstream(), [REGION], 1)

            key = SigningKey.generate(SuiteId.HYBRID)
            trust = TrustConfig([TrustEntry(Role.COORDINATOR, COORDINATOR, REGION, key.public)])
            now = time.time_ns() // 1_000_000
            td = fabric.trust_domain.name
            issuer = fabric.issuer.issuer_url
            bundle = parse_bundle(td, msgspec.json.encode(fabric.trust_domain.document()))
            keyset = parse_jwks(msgspec.json.encode(fabric.issuer.jwks()))
            js = admin.jetstream()
            for kind, subject, facts in (
                (
                    IdentityKind.BUNDLE,
                    td,
                    Facts(
                        "",
                        bundle_digest(bundle),
                        b"",
                        bundle.sequence or 0,
                        0,
                        0,
                        bundle.authority_count,
                    ),
                ),
                (
                    IdentityKind.JWKS,
                    issuer,
                    Facts("", jwks_digest(keyset), b"", 0, 0, 0, len(keyset.keys)),
                ),
            ):
                subj = identity_verdict_subject(REGION, kind, subject)
                v = identity_verdict(kind, subject, facts, now)
                data = seal(
                    key, subj, MessageType.IDENTITY, encode(v), now_ms=now, lifetime_ms=LIFETIME_MS
                )
                await js.publish(subj, data)

            client_nc = await connect(
                nats.urls, nats.users["client"], name="bench-client", for_tests=True
            )
            stack.push_async_callback(client_nc.close)
            tc = TrustClient(client_nc, trust, REGION, max_age_ms=LIFETIME_MS)
            targets = identity_targets_from(fabric.targets_document())
            sdk = IdentityClient(tc, targets)
            server = GatewayServer(create_app(sdk), "127.0.0.1", 0)
            await server.start()
            stack.push_async_callback(server.stop)
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    base_url=server.url,
                    timeout=10.0,
                    limits=httpx2.Limits(max_keepalive_connections=64),
                )
            )

            api = fabric.workload("api")
            chain_pem = api.issued().chain_pem()
            chain_text = chain_pem.decode()
            audience = api.spec.audience
            token = fabric.issuer.mint_id_token(api.spiffe_id, audience, ttl_s=3600)

            async def lib_cert() -> bool:
                svid = verify_x509_svid(
                    parse_pem_chain(chain_pem), bundle, time.time_ns() // 1_000_000
                )
                return str(svid.spiffe_id) == api.spiffe_id

            async def lib_token() -> bool:
                c = verify_id_token(token, keyset, issuer, [audience], time.time_ns() // 1_000_000)
                return c.subject == api.spiffe_id

            async def sdk_cert() -> bool:
                return (await sdk.validate_certificate(chain_text)).valid

            async def sdk_token() -> bool:
                return (await sdk.validate_token(token, audience)).valid

            async def http_cert() -> bool:
                r = await http.post("/v1/validate/certificate", json={"chain": chain_text})
                return r.status_code == 200 and r.json()["valid"] is True

            async def http_token() -> bool:
                r = await http.post(
                    "/v1/validate/token", json={"token": token, "audience": audience}
                )
                return r.status_code == 200 and r.json()["valid"] is True

            out: dict[str, Any] = {}
            for what, calls in (
                ("certificate", (lib_cert, sdk_cert, http_cert)),
                ("token", (lib_token, sdk_token, http_token)),
            ):
                out[what] = {}
                for via, call in zip(("library", "sdk", "http"), calls, strict=True):
                    progress(f"{what} via {via}: {a.samples} decisions")
                    out[what][via] = await timed(call, a.samples, a.concurrency)
            fetched = sdk.materials.fetched
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios: dict[str, Any] = {
        "what": "via / library of the same run (latency: > 1 is slower; rate: < 1 is fewer)"
    }
    for what in ("certificate", "token"):
        lib = out[what]["library"]
        for via in ("sdk", "http"):
            got = out[what][via]
            ratios[f"{what}_{via}"] = {
                "p50_latency": ratio(got.get("p50_ms"), lib.get("p50_ms")),
                "p99_latency": ratio(got.get("p99_ms"), lib.get("p99_ms")),
                "decisions_per_s": ratio(got.get("decisions_per_s"), lib.get("decisions_per_s")),
            }
    return {
        **out,
        "ratios": ratios,
        "material_fetches": fetched,
        "config": {
            "samples": a.samples,
            "concurrency": a.concurrency,
            "suite": SuiteId.HYBRID.value,
            "http": "uvicorn in this process, httpx2 keep-alive client on loopback",
            "sdk": "one verified identity verdict (NATS direct get) per decision, material cached",
            "python": platform.python_version(),
            "machine_cores": os.cpu_count(),
            "platform": platform.platform(),
            "quick": a.quick,
            "started_utc": started.isoformat(timespec="seconds"),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)

    async def work(progress: Progress) -> dict[str, Any]:
        return await run(a, progress)

    return run_main(work, budget_s=60.0 + a.samples * 0.2)


if __name__ == "__main__":
    sys.exit(main())
