"""Schemathesis against the published OpenAPI of a real ``cctf gateway`` process (real TrustClient over
a real nats-server, the local identity fabric's HTTPS endpoints): every operation, positive and
negative inputs, no server error and every response as documented (status, content type, schema).
Bounded: ``max_examples`` per operation. The process must then exit 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from clientcases import sealed, verdict
from gatewayproc import GatewayProcess, prepare_streams
from gatewayworld import RelyingWorld
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import negative_data_rejection
from wirefactories import make_world

from cctf.bus.connect import connect
from cctf.devfabric.identity import IdentityFabric
from cctf.devfabric.nats import NatsFabric

MAX_EXAMPLES = 25
#: ``negative_data_rejection`` does not count 413 (the documented body bound) as a rejection (all
#: other checks run: no server error, documented status, content type and response schema).
EXCLUDED = [negative_data_rejection]
#: operations without any input: nothing to make schema-invalid
NO_INPUTS = {"GET /healthz", "GET /metrics"}


async def _publish(fabric: NatsFabric, messages: list[tuple[str, bytes]]) -> None:
    nc = await connect(fabric.urls, fabric.users["coordinator"], name="test-pub", for_tests=True)
    try:
        js = nc.jetstream()
        for subject, data in messages:
            await js.publish(subject, data)
    finally:
        await nc.close()


class _Collect:
    """Stands in for the bus while the verdicts are made (published afterwards)."""

    def __init__(self, into: list[tuple[str, bytes]]) -> None:
        self.into = into

    async def publish(self, subject: str, data: bytes) -> None:
        self.into.append((subject, data))


@pytest.fixture
def gateway_process(
    tmp_path: Path, nats_single: NatsFabric, identity_fabric_thread: IdentityFabric
) -> Iterator[GatewayProcess]:
    prepare_streams(nats_single)
    world = make_world(start_ms=time.time_ns() // 1_000_000)
    names = ["example.com.", *(w.spec.dns_name for w in identity_fabric_thread.workloads.values())]
    messages = [sealed(world, verdict(world, n)) for n in names]
    # TRUSTED bundle, JWKS and mtls verdicts: the validate and workload routes reach real material
    rw = RelyingWorld(_Collect(messages), world, identity_fabric_thread)  # type: ignore[arg-type]

    async def identity_verdicts() -> None:
        await rw.bundle()
        await rw.jwks()
        for w in identity_fabric_thread.workloads.values():
            await rw.mtls(w.spiffe_id)

    asyncio.run(identity_verdicts())
    asyncio.run(_publish(nats_single, messages))
    with GatewayProcess.start(
        tmp_path / "gw",
        nats_single,
        world,
        identity_fabric_thread.targets_document(),
        max_age_ms=3_600_000,
    ) as gw:
        yield gw
    assert gw.returncode == 0, gw.stderr()[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gateway_conforms_to_its_openapi(gateway_process: GatewayProcess) -> None:
    """Both generation modes against ONE gateway process (and fabric): positive (schema-valid
    inputs) then negative (schema-invalid ones), every operation each."""
    schema = schemathesis.openapi.from_url(gateway_process.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) == 10  # every route is in the document (4 of them the log API)
    for mode in ("positive", "negative"):
        generation = schemathesis.GenerationMode(mode)
        for operation in operations:
            if mode == "negative" and operation.label in NO_INPUTS:
                continue
            seen = _fuzz(operation, generation, gateway_process.url)
            assert seen and all(code < 500 for code in seen), (mode, operation.label, seen)


def _fuzz(operation: Any, generation: Any, url: str) -> list[int]:
    """Run the bounded Hypothesis search of one operation; the status codes it saw."""
    seen: list[int] = []

    @given(case=operation.as_strategy(generation))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        # a generous timeout: the machine may be busy (no timing is asserted here)
        response = case.call_and_validate(base_url=url, excluded_checks=EXCLUDED, timeout=60)
        seen.append(response.status_code)

    run()
    return seen
