"""The gateway's HTTP API over a real TrustClient on a real nats-server, with the local identity
fabric's real HTTPS endpoints and credentials: every route, its problem details, bounds and the
published OpenAPI document."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from clientbus import Bus, bus_fixture  # noqa: F401 - fixture bus
from clientcases import NAME, bad_messages
from gatewayworld import RelyingWorld
from wirefactories import make_world

from cctf import telemetry
from cctf.bus_schemas.messages import Outcome
from cctf.client.present import verdict_to_json
from cctf.client.sdk import TrustClient
from cctf.devfabric.identity import IdentityFabric
from cctf.gateway.app import create_app
from cctf.gateway.problems import PROBLEM_JSON

OPENAPI_DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


class Gateway:
    def __init__(self, rw: RelyingWorld, trust: TrustClient, http: httpx2.AsyncClient) -> None:
        self.rw = rw
        self.trust = trust
        self.http = http


@pytest.fixture
async def gw(bus: Bus, identity_fabric: IdentityFabric) -> AsyncIterator[Gateway]:
    import time

    world = make_world(start_ms=time.time_ns() // 1_000_000)
    trust = TrustClient(bus.client_nc, world.trust, "us-east", clock=world.clock)
    rw = RelyingWorld(bus, world, identity_fabric)
    app = create_app(rw.client(trust), max_body_bytes=8192)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield Gateway(rw, trust, http)


def problem(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"].endswith("/" + code) and body["title"] and body["detail"]
    return body


# ---- /v1/trust/{name}


async def test_trust_answers_the_verified_verdict(gw: Gateway) -> None:
    v = await gw.rw.dns(NAME)
    r = await gw.http.get(f"/v1/trust/{NAME}")
    assert r.status_code == 200 and r.json() == verdict_to_json(v)
    disputed = await gw.rw.dns("other.example.", Outcome.DISPUTED)
    r = await gw.http.get("/v1/trust/other.example.", params={"qtype": "A"})
    assert r.json()["outcome"] == "disputed" and r.json()["seq"] == disputed.seq


async def test_trust_problems(gw: Gateway) -> None:
    problem(await gw.http.get("/v1/trust/missing.example."), 404, "no_verdict")
    r = await gw.http.get(f"/v1/trust/{NAME}", params={"qtype": "a b"})
    assert problem(r, 422, "invalid_request")["errors"][0]["loc"] == ["query", "qtype"]
    problem(await gw.http.get("/v1/trust/bad..name"), 422, "invalid_request")
    problem(await gw.http.get("/v1/trust/" + "a" * 64 + ".example."), 422, "invalid_request")
    assert (await gw.http.get(f"/v1/trust/{NAME}", params={"qtype": "aaaa"})).status_code == 404
    subject, data, _reason = bad_messages(gw.rw.world)["tampered"]
    await gw.rw.bus.publish(subject, data)
    body = problem(await gw.http.get(f"/v1/trust/{NAME}"), 502, "verdict_rejected")
    assert body["detail"].startswith("signature")


# ---- generic problems and bounds


async def test_unknown_route_and_method_are_problems(gw: Gateway) -> None:
    problem(await gw.http.get("/v2/nothing"), 404, "not_found")
    problem(await gw.http.delete("/healthz"), 405, "method_not_allowed")


async def test_validation_errors_are_problems_that_never_echo_the_input(gw: Gateway) -> None:
    secret = "eyJhbGciOiJub25lIn0.c2VjcmV0LXRva2VuLXZhbHVl."
    r = await gw.http.post("/v1/validate/token", json={"token": secret})  # no audience
    body = problem(r, 422, "invalid_request")
    assert body["errors"] and all(set(e) == {"loc", "msg"} for e in body["errors"])
    assert secret not in r.text
    r = await gw.http.post(
        "/v1/validate/token", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem(r, 422, "invalid_request")
    r = await gw.http.post("/v1/validate/certificate", json={"chain": "x", "extra": 1})
    problem(r, 422, "invalid_request")


async def test_bodies_over_the_bound_are_413_declared_or_streamed(gw: Gateway) -> None:
    big = json.dumps({"chain": "A" * 9000}).encode()
    problem(
        await gw.http.post(
            "/v1/validate/certificate", content=big, headers={"content-type": "application/json"}
        ),
        413,
        "body_too_large",
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for _ in range(10):
            yield b" " * 1000

    r = await gw.http.post(
        "/v1/validate/certificate", content=chunks(), headers={"content-type": "application/json"}
    )
    problem(r, 413, "body_too_large")


# ---- health and metrics


async def test_healthz_follows_the_nats_connection(gw: Gateway, bus: Bus) -> None:
    r = await gw.http.get("/healthz")
    assert r.status_code == 200 and r.json() == {
        "status": "ok",
        "nats": "connected",
        "region": "us-east",
    }
    await bus.client_nc.close()
    r = await gw.http.get("/healthz")
    assert r.status_code == 503 and r.json()["nats"] == "disconnected"


async def test_metrics_are_prometheus_text_with_the_gateway_counters(gw: Gateway) -> None:
    await gw.http.get("/v1/trust/missing.example.")
    r = await gw.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "cctf_gateway_requests" in r.text and 'route="/v1/trust/{name}"' in r.text


# ---- credentials


async def test_validate_certificate_under_the_quorum_bundle(gw: Gateway) -> None:
    api = gw.rw.fabric.workload("api")
    chain = api.issued().chain_pem().decode()
    r = await gw.http.post("/v1/validate/certificate", json={"chain": chain})
    body = r.json()
    assert r.status_code == 200 and body["decision"] == "invalid"  # no bundle verdict yet
    assert body["reasons"] == ["bundle_no_verdict"] and body["spiffe_id"] == api.spiffe_id

    await gw.rw.bundle()
    body = (await gw.http.post("/v1/validate/certificate", json={"chain": chain})).json()
    assert body["decision"] == "valid" and body["valid"] is True and body["reasons"] == []
    assert body["spiffe_id"] == api.spiffe_id and body["key_digest"] == gw.rw.bundle_digest().hex()

    rogue = api.issued(api_presentation("untrusted")).chain_pem().decode()
    body = (await gw.http.post("/v1/validate/certificate", json={"chain": rogue})).json()
    assert body["decision"] == "invalid" and body["reasons"] == ["unknown_issuer"]
    body = (await gw.http.post("/v1/validate/certificate", json={"chain": "junk"})).json()
    assert body["decision"] == "invalid" and body["reasons"][0] in {
        "certificate_malformed",
        "chain_empty",
    }


async def test_a_bundle_whose_digest_is_not_the_quorum_s_is_never_used(gw: Gateway) -> None:
    chain = gw.rw.fabric.workload("api").issued().chain_pem().decode()
    await gw.rw.bundle(digest=bytes(32))  # the quorum saw other material than we can fetch
    body = (await gw.http.post("/v1/validate/certificate", json={"chain": chain})).json()
    assert body["decision"] == "invalid" and body["reasons"] == ["bundle_digest_mismatch"]
    await gw.rw.bundle(Outcome.DISPUTED)
    body = (await gw.http.post("/v1/validate/certificate", json={"chain": chain})).json()
    assert body["reasons"] == ["bundle_disputed"]


async def test_validate_token_id_token_and_jwt_svid(gw: Gateway) -> None:
    fab = gw.rw.fabric
    api = fab.workload("api")
    token = fab.issuer.mint_id_token(api.spiffe_id, api.spec.audience)
    aud = api.spec.audience
    body = (await gw.http.post("/v1/validate/token", json={"token": token, "audience": aud})).json()
    assert body["decision"] == "invalid" and body["reasons"] == ["jwks_no_verdict"]
    await gw.rw.jwks()
    body = (await gw.http.post("/v1/validate/token", json={"token": token, "audience": aud})).json()
    assert body["decision"] == "valid" and body["subject"] == api.spiffe_id
    body = (
        await gw.http.post("/v1/validate/token", json={"token": token, "audience": "other"})
    ).json()
    assert body["decision"] == "invalid" and body["reasons"] == ["audience_not_configured"]

    svid = fab.trust_domain.mint_jwt_svid(api.spiffe_id, "cctf-demo")
    await gw.rw.bundle()
    body = (
        await gw.http.post("/v1/validate/token", json={"token": svid, "audience": "cctf-demo"})
    ).json()
    assert body["decision"] == "valid" and body["spiffe_id"] == api.spiffe_id


# ---- workloads


async def test_workload_decision_and_its_problems(gw: Gateway) -> None:
    fab = gw.rw.fabric
    api = fab.workload("api")
    await gw.rw.dns(api.spec.dns_name)
    await gw.rw.bundle()
    await gw.rw.mtls(api.spiffe_id)
    r = await gw.http.get(f"/v1/workloads/{api.spiffe_id}")
    body = r.json()
    assert r.status_code == 200 and body["workload"] == api.spiffe_id
    assert body["outcome"] == "trusted"
    assert {p: s["state"] for p, s in body["paths"].items()} == {
        "dns": "holds",
        "mtls": "holds",
        "oidc": "unavailable",
    }
    assert body["paths"]["oidc"]["reason"] == "no_token"

    await gw.rw.jwks()
    token = fab.issuer.mint_id_token(api.spiffe_id, api.spec.audience)
    r = await gw.http.get(
        f"/v1/workloads/{api.spiffe_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.json()["paths"]["oidc"]["state"] == "holds"
    problem(
        await gw.http.get(f"/v1/workloads/{api.spiffe_id}", headers={"Authorization": "Basic x"}),
        401,
        "bad_authorization",
    )
    problem(await gw.http.get("/v1/workloads/spiffe://demo.test/nobody"), 404, "unknown_workload")


async def test_workload_with_a_chain_in_rfc9440_headers(gw: Gateway) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    fab = gw.rw.fabric
    api = fab.workload("api")
    await gw.rw.bundle()
    await gw.rw.mtls(api.spiffe_id)

    def headers(spiffe_id: str) -> dict[str, str]:
        leaf, *rest = fab.workload(spiffe_id).issued().chain
        sf = [
            ":" + base64.b64encode(c.public_bytes(Encoding.DER)).decode() + ":"
            for c in (leaf, *rest)
        ]
        return {"Client-Cert": sf[0], "Client-Cert-Chain": ", ".join(sf[1:])}

    url = f"/v1/workloads/{api.spiffe_id}"
    body = (await gw.http.get(url, headers=headers(api.spiffe_id))).json()
    assert body["paths"]["mtls"] == {"state": "holds", "reason": "chain_valid"}
    body = (await gw.http.get(url, headers=headers("db"))).json()
    assert body["paths"]["mtls"] == {"state": "fails", "reason": "wrong_spiffe_id"}
    r = await gw.http.get(url, headers={"Client-Cert": "nope"})  # not the documented pattern
    assert problem(r, 422, "invalid_request")["errors"][0]["loc"] == ["header", "Client-Cert"]


async def test_tokens_are_never_logged(gw: Gateway) -> None:
    fab = gw.rw.fabric
    api = fab.workload("api")
    stream = io.StringIO()
    telemetry.configure_logging(level="debug", stream=stream)
    try:
        await gw.rw.jwks(digest=bytes(32))  # a refusal that logs
        token = fab.issuer.mint_id_token(api.spiffe_id, api.spec.audience)
        await gw.http.get(
            f"/v1/workloads/{api.spiffe_id}", headers={"Authorization": f"Bearer {token}"}
        )
        await gw.http.post("/v1/validate/token", json={"token": token, "audience": "cctf-demo"})
    finally:
        telemetry.configure_logging(level="warning")
    logged = stream.getvalue()
    assert "material_refused" in logged  # the log was captured
    assert token not in logged and token.split(".")[1] not in logged


# ---- OpenAPI


def test_published_openapi_matches_the_app() -> None:
    """docs/openapi.json is the app's document (regenerate: python -m cctf.gateway.openapi)."""
    from cctf.gateway.openapi import openapi_document

    assert json.loads(OPENAPI_DOC.read_text()) == openapi_document()


def api_presentation(name: str) -> Any:
    from cctf.devfabric.identity import Presentation

    return Presentation(name)
