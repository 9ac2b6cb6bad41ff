"""The durable logs over HTTP (issue #9 scope 6): the log API of ``cctf log serve`` (NATS
request-reply, wire-protocol.md §9.4) served by the gateway.

``GET /v1/log/{log_id}/head``
    The newest head: ``size``, ``root`` (hex) and ``checkpoint`` (the signed note).
``GET /v1/log/{log_id}/entries?start=S&count=C``
    Entries ``S`` .. ``S+C-1`` (base64; fewer at the end of the log), ``count`` 1..256.
``GET /v1/log/{log_id}/inclusion?index=I[&size=N]``
    The inclusion proof of leaf ``I`` in the stored head of size ``N`` (default: the newest).
``GET /v1/log/{log_id}/consistency?size1=A[&size2=B]``
    The consistency proof between two stored heads.

Hashes are lower-case hex. The gateway passes answers through from the log monitor: a client
verifies every proof against a head whose note it verified itself (the signed checkpoint is in
the answer); nothing here is to be trusted without that. Problems: 404 ``log_unknown_head`` (no such
head, index or entry), 404 ``log_not_served`` (no monitor subscribes to this log's API), 503
``log_unavailable`` (the monitor did not answer in time, or is not ready), 502 ``log_bad_reply``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, Final, Protocol

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel

from cctf.gateway.problems import ProblemError, problem_doc
from cctf.translog.api import MAX_API_ENTRIES, ApiError

__all__ = ["LogBackend", "add_log_routes"]

LOG_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,31}$"
MAX_SIZE: Final = 2**63 - 1
LogId = Annotated[str, Path(pattern=LOG_ID_PATTERN, description="log id (coordinator id, or ca)")]


class LogBackend(Protocol):
    """What the routes ask (:class:`cctf.logmon.apiclient.LogApiClient`)."""

    async def head(self, log_id: str) -> tuple[int, bytes, str]: ...

    async def entries(self, log_id: str, start: int, count: int) -> list[bytes]: ...

    async def inclusion(
        self, log_id: str, index: int, size: int | None = None
    ) -> dict[str, Any]: ...

    async def consistency(self, log_id: str, size1: int, size2: int) -> Sequence[bytes]: ...


class LogHead(BaseModel):
    log: str
    size: int
    root: str
    checkpoint: str


class LogEntries(BaseModel):
    log: str
    start: int
    entries: list[str]


class LogInclusion(BaseModel):
    log: str
    index: int
    size: int
    root: str
    proof: list[str]
    checkpoint: str


class LogConsistency(BaseModel):
    log: str
    size1: int
    size2: int
    proof: list[str]


def _problem(exc: ApiError) -> ProblemError:
    if exc.reason in ("unknown-head", "out-of-range"):
        return ProblemError(404, "log_unknown_head", str(exc))
    if exc.reason == "not-served":
        return ProblemError(404, "log_not_served", str(exc))
    if exc.reason in ("bad-request",):
        return ProblemError(400, "log_bad_request", str(exc))
    if exc.reason == "bad-reply":
        return ProblemError(502, "log_bad_reply", str(exc))
    return ProblemError(503, "log_unavailable", str(exc))


def add_log_routes(app: FastAPI, log: LogBackend | None) -> None:
    """Add the routes (module doc); without a backend every one answers 503 ``log_unavailable``."""
    errors: dict[int | str, dict[str, Any]] = {
        404: problem_doc(
            "no such head, index or entry in the log (log_unknown_head), or no log monitor "
            "serves this log id (log_not_served)"
        ),
        502: problem_doc("the log monitor's answer is malformed (log_bad_reply)"),
        503: problem_doc("no log monitor answers, or it is not ready (log_unavailable)"),
    }

    def backend() -> LogBackend:
        if log is None:
            raise ProblemError(503, "log_unavailable", "this gateway serves no log")
        return log

    @app.get(
        "/v1/log/{log_id}/head",
        response_model=LogHead,
        responses=errors,
        summary="The newest log head",
    )
    async def log_head(log_id: LogId) -> dict[str, Any]:
        try:
            size, root, note = await backend().head(log_id)
        except ApiError as exc:
            raise _problem(exc) from None
        return {"log": log_id, "size": size, "root": root.hex(), "checkpoint": note}

    @app.get(
        "/v1/log/{log_id}/entries",
        response_model=LogEntries,
        responses=errors,
        summary="Log entries",
    )
    async def log_entries(
        log_id: LogId,
        start: Annotated[int, Query(ge=0, le=MAX_SIZE)],
        count: Annotated[int, Query(ge=1, le=MAX_API_ENTRIES)] = 16,
    ) -> dict[str, Any]:
        try:
            entries = await backend().entries(log_id, start, count)
        except ApiError as exc:
            raise _problem(exc) from None
        return {
            "log": log_id,
            "start": start,
            "entries": [base64.b64encode(e).decode() for e in entries],
        }

    @app.get(
        "/v1/log/{log_id}/inclusion",
        response_model=LogInclusion,
        responses=errors,
        summary="An inclusion proof",
    )
    async def log_inclusion(
        log_id: LogId,
        index: Annotated[int, Query(ge=0, le=MAX_SIZE)],
        size: Annotated[int | None, Query(ge=1, le=MAX_SIZE)] = None,
    ) -> dict[str, Any]:
        try:
            r = await backend().inclusion(log_id, index, size)
        except ApiError as exc:
            raise _problem(exc) from None
        return {
            "log": log_id,
            "index": r["index"],
            "size": r["size"],
            "root": r["root"].hex(),
            "proof": [p.hex() for p in r["proof"]],
            "checkpoint": r["checkpoint"],
        }

    @app.get(
        "/v1/log/{log_id}/consistency",
        response_model=LogConsistency,
        responses=errors,
        summary="A consistency proof between two stored heads",
    )
    async def log_consistency(
        log_id: LogId,
        size1: Annotated[int, Query(ge=1, le=MAX_SIZE)],
        size2: Annotated[int | None, Query(ge=1, le=MAX_SIZE)] = None,
    ) -> dict[str, Any]:
        b = backend()
        try:
            if size2 is None:
                size2, _root, _note = await b.head(log_id)
            proof = await b.consistency(log_id, size1, size2)
        except ApiError as exc:
            raise _problem(exc) from None
        return {"log": log_id, "size1": size1, "size2": size2, "proof": [p.hex() for p in proof]}
