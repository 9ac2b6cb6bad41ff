"""The HTTP API of a relying party (FastAPI): the SDK's decisions over HTTP, no decision logic here.

Routes (every error is an RFC 9457 problem, :mod:`cctf.gateway.problems`):

``GET /v1/trust/{name}?qtype=A``
    The latest verified DNS verdict (``TrustClient.check``). 404 ``no_verdict``; 502
    ``verdict_rejected`` (the stored verdict failed verification: fail closed); 503 ``bus_unavailable``.
``GET /v1/workloads/{spiffe_id}``
    The negotiated decision for a configured workload. A token for its OIDC path may be presented
    as ``Authorization: Bearer <token>`` (validated, never logged, never stored), a certificate
    chain for its mtls path as RFC 9440 ``Client-Cert`` / ``Client-Cert-Chain`` headers. 404
    ``unknown_workload``; 400 ``bad_client_cert``.
``POST /v1/validate/certificate`` ``{"chain": PEM}`` / ``POST /v1/validate/token`` ``{"token", "audience"}``
    Local validation under quorum-verified keys: 200 with ``decision`` ``valid`` or ``invalid`` and
    the reasons (an invalid credential is an answer, not an error).
``GET /v1/log/{log_id}/head|entries|inclusion|consistency``
    The durable logs (:mod:`cctf.gateway.logroutes`, answered by ``cctf log serve``).
``GET /healthz``
    200 when the NATS connection is up, 503 (same body, ``degraded``) when not.
``GET /metrics``
    Prometheus text of the process's metrics (:func:`cctf.telemetry.prometheus_text`).

The backend (:class:`GatewayBackend`) is :class:`cctf.client.identity.IdentityClient`; tests and
benchmarks pass the real one over a real NATS server.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final, Protocol

from fastapi import FastAPI, Header, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from cctf.bus_schemas.messages import Verdict
from cctf.client.identity import (
    CredentialDecision,
    UnknownWorkload,
    WorkloadDecision,
    workload_to_json,
)
from cctf.client.present import verdict_to_json
from cctf.client.sdk import FetchError, NoVerdict, VerdictRejected
from cctf.gateway.clientcert import (
    CERT_PATTERN,
    CHAIN_PATTERN,
    MAX_HEADER_CHARS,
    ClientCertError,
    chain_pem,
)
from cctf.gateway.logroutes import LogBackend, add_log_routes
from cctf.gateway.models import (
    MAX_TOKEN,
    CertificateRequest,
    CredentialResult,
    Health,
    TokenRequest,
    TrustVerdict,
    WorkloadResult,
)
from cctf.gateway.problems import (
    PROBLEM_RESPONSES,
    BodyLimit,
    ProblemError,
    install_problem_handlers,
    problem_doc,
)
from cctf.ids import IdError
from cctf.telemetry import meter, prometheus_text

__all__ = ["DEFAULT_MAX_BODY_BYTES", "GatewayBackend", "create_app"]

#: Default bound of a request body (bytes): a PEM chain or a token with its JSON framing.
DEFAULT_MAX_BODY_BYTES: Final = 96 * 1024
MAX_NAME: Final = 253
#: Names in presentation form, ASCII (internationalized names as A-labels, ``xn--``): labels of
#: 1..63 letters, digits, ``-``, ``_`` or ``*``, an optional final dot; or the root ``.``.
NAME_PATTERN: Final = r"^(?:(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?|\.)$"
QTYPE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9]{0,9}$"
MAX_SPIFFE_ID: Final = 2048 + 64  # over the SPIFFE limit: the SDK refuses it with its reason
PROMETHEUS_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"


class GatewayBackend(Protocol):
    """What the gateway asks (the SDK: :class:`cctf.client.identity.IdentityClient`)."""

    @property
    def region(self) -> str: ...

    def connected(self) -> bool: ...

    async def verdict(self, name: str, qtype: str) -> Verdict: ...

    async def validate_certificate(self, chain_pem: str) -> CredentialDecision: ...

    async def validate_token(self, token: str, audience: str) -> CredentialDecision: ...

    async def workload(
        self, spiffe_id: str, *, token: str | None = None, chain: str | None = None
    ) -> WorkloadDecision: ...


def _bus_problem(exc: Exception) -> ProblemError:
    if isinstance(exc, NoVerdict):
        return ProblemError(404, "no_verdict", str(exc))
    if isinstance(exc, VerdictRejected):
        return ProblemError(502, "verdict_rejected", f"{exc.reason.value}: {exc.detail}")
    return ProblemError(503, "bus_unavailable", f"the bus cannot be asked: {exc}")


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (``None`` without the header)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ProblemError(401, "bad_authorization", "Authorization must be 'Bearer <token>'")
    return token


class _Measure:
    """ASGI middleware: requests by route template and status, and handling time (a plain ASGI
    wrapper: Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        m = meter("cctf.gateway")
        self.requests = m.create_counter(
            "cctf_gateway_requests", description="gateway requests by route and status"
        )
        self.latency = m.create_histogram(
            "cctf_gateway_request_seconds", unit="s", description="request handling time"
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def tracked(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")
            self.requests.add(1, {"route": label, "status": str(status["code"])})
            self.latency.record(time.perf_counter() - started, {"route": label})


def create_app(
    backend: GatewayBackend,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log: LogBackend | None = None,
) -> FastAPI:
    """The gateway application over ``backend`` (and the log API client ``log``,
    :mod:`cctf.gateway.logroutes`)."""
    app = FastAPI(
        title="CCTF gateway",
        version="1",
        summary="Quorum-verified DNS and workload identity decisions for relying parties.",
        description=__doc__,
        responses=PROBLEM_RESPONSES,
    )
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_Measure)
    decisions = meter("cctf.gateway").create_counter(
        "cctf_gateway_decisions", description="decisions answered, by kind and outcome"
    )
    bus_errors: dict[int | str, dict[str, Any]] = {
        404: problem_doc("no verdict stored (no_verdict)"),
        502: problem_doc("the stored verdict failed verification (verdict_rejected)"),
        503: problem_doc("the bus cannot be asked (bus_unavailable)"),
    }

    @app.get(
        "/v1/trust/{name}",
        response_model=TrustVerdict,
        responses=bus_errors,
        summary="The latest verified DNS verdict for a name",
    )
    async def trust(
        name: Annotated[
            str,
            Path(
                min_length=1,
                max_length=MAX_NAME,
                pattern=NAME_PATTERN,
                description="DNS name (ASCII presentation form; IDNs as A-labels)",
            ),
        ],
        qtype: Annotated[
            str, Query(pattern=QTYPE_PATTERN, description="query type, e.g. A, AAAA, TXT")
        ] = "A",
    ) -> dict[str, Any]:
        try:
            verdict = await backend.verdict(name, qtype.upper())
        except IdError as exc:
            raise ProblemError(400, "invalid_name", str(exc)) from None
        except (NoVerdict, VerdictRejected, FetchError) as exc:
            raise _bus_problem(exc) from None
        decisions.add(1, {"kind": "dns", "outcome": verdict.outcome.value})
        return verdict_to_json(verdict)

    @app.get(
        "/v1/workloads/{spiffe_id:path}",
        response_model=WorkloadResult,
        responses={
            400: problem_doc("Client-Cert / Client-Cert-Chain not RFC 9440 (bad_client_cert)"),
            401: problem_doc("Authorization is not 'Bearer <token>' (bad_authorization)"),
            404: problem_doc("the workload is not configured (unknown_workload)"),
            503: problem_doc("the bus cannot be asked (bus_unavailable)"),
        },
        summary="The negotiated trust decision for a configured workload",
    )
    async def workload(
        spiffe_id: Annotated[
            str, Path(min_length=1, max_length=MAX_SPIFFE_ID, description="SPIFFE ID")
        ],
        authorization: Annotated[
            str | None,
            Header(
                max_length=MAX_TOKEN + 16,
                description="Bearer token for the OIDC path (never logged)",
            ),
        ] = None,
        client_cert: Annotated[
            str,
            Header(
                alias="Client-Cert",
                max_length=MAX_HEADER_CHARS,
                pattern=CERT_PATTERN,
                description="RFC 9440: the presented leaf certificate, :base64 DER: (mtls path)",
            ),
        ] = "",
        client_cert_chain: Annotated[
            str,
            Header(
                alias="Client-Cert-Chain",
                max_length=MAX_HEADER_CHARS,
                pattern=CHAIN_PATTERN,
                description="RFC 9440: its intermediates, :base64 DER: list",
            ),
        ] = "",
    ) -> dict[str, Any]:
        token = _bearer(authorization)
        try:
            chain = chain_pem(client_cert or None, client_cert_chain or None)
        except ClientCertError as exc:
            raise ProblemError(400, "bad_client_cert", str(exc)) from None
        try:
            decision = await backend.workload(spiffe_id, token=token, chain=chain)
        except UnknownWorkload as exc:
            raise ProblemError(404, "unknown_workload", str(exc)) from None
        except FetchError as exc:
            raise _bus_problem(exc) from None
        result = workload_to_json(decision)
        decisions.add(1, {"kind": "workload", "outcome": str(result["outcome"])})
        return result

    @app.post(
        "/v1/validate/certificate",
        response_model=CredentialResult,
        responses={503: problem_doc("the bus cannot be asked (bus_unavailable)")},
        summary="Validate an X.509-SVID chain under the quorum-verified bundle",
    )
    async def validate_certificate(body: CertificateRequest) -> dict[str, Any]:
        try:
            decision = await backend.validate_certificate(body.chain)
        except FetchError as exc:
            raise _bus_problem(exc) from None
        decisions.add(1, {"kind": "certificate", "outcome": decision.decision})
        return decision.to_json()

    @app.post(
        "/v1/validate/token",
        response_model=CredentialResult,
        responses={503: problem_doc("the bus cannot be asked (bus_unavailable)")},
        summary="Validate a JWT-SVID or OIDC ID token under the quorum-verified keys",
    )
    async def validate_token(body: TokenRequest) -> dict[str, Any]:
        try:
            decision = await backend.validate_token(body.token, body.audience)
        except FetchError as exc:
            raise _bus_problem(exc) from None
        decisions.add(1, {"kind": "token", "outcome": decision.decision})
        return decision.to_json()

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"description": "NATS is not connected", "model": Health}},
        summary="Liveness and NATS connectivity",
    )
    async def healthz() -> JSONResponse:
        up = backend.connected()
        body = Health(
            status="ok" if up else "degraded",
            nats="connected" if up else "disconnected",
            region=backend.region,
        )
        return JSONResponse(body.model_dump(), status_code=200 if up else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(prometheus_text(), media_type=PROMETHEUS_TEXT)

    add_log_routes(app, log)
    return app
