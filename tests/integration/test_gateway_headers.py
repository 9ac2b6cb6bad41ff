"""The gateway's real HTTP server (uvicorn) takes every header the OpenAPI document allows: RFC
9440 ``Client-Cert`` and ``Client-Cert-Chain`` of up to 64 KiB each (``MAX_HEADER_CHARS``) get an
HTTP answer (a problem), never a reset connection (schemathesis found h11's default 16 KiB bound
on a request head); a head beyond the server's bound is refused with a status, not a reset."""

from __future__ import annotations

import httpx2

from cctf.client.identity import UnknownWorkload, WorkloadDecision
from cctf.gateway.app import create_app
from cctf.gateway.clientcert import MAX_HEADER_CHARS
from cctf.gateway.openapi import _NoBackend
from cctf.gateway.server import MAX_REQUEST_HEAD, GatewayServer


class _Unknown(_NoBackend):
    """Knows no workload (the route answers 404 once it has read the headers)."""

    async def workload(
        self, spiffe_id: str, *, token: str | None = None, chain: str | None = None
    ) -> WorkloadDecision:
        raise UnknownWorkload(spiffe_id)


def _b64_item(chars: int) -> str:
    """``:<base64>:`` of ``chars`` characters in all (pattern-valid, not a certificate)."""
    body = chars - 2
    return ":" + "A" * (body - body % 4) + ":"


async def test_largest_client_cert_headers_get_an_answer() -> None:
    server = GatewayServer(create_app(_Unknown()))
    await server.start()
    try:
        async with httpx2.AsyncClient(base_url=server.url, timeout=10) as http:
            headers = {
                "Client-Cert": _b64_item(MAX_HEADER_CHARS),
                "Client-Cert-Chain": _b64_item(MAX_HEADER_CHARS),
            }
            r = await http.get("/v1/workloads/spiffe%3A%2F%2Fprod.example%2Fw", headers=headers)
            assert r.status_code == 404, r.text[:300]
            assert r.headers["content-type"].startswith("application/problem+json")
            too_big = {"X-Pad": "a" * (2 * MAX_REQUEST_HEAD)}
            r = await http.get("/healthz", headers=too_big)
            assert 400 <= r.status_code < 500
    finally:
        await server.stop()
