"""RFC 9457 problem details for every error the gateway answers, and the request body bound.

Every non-2xx response is ``application/problem+json``::

    {"type": "https://cctf.dev/problems/<code>", "title": "...", "status": 404,
     "detail": "no verdict on cctf.v1.verdict.us-east.www.example.com.A", "code": "no_verdict"}

``type`` is a stable URI per problem (``about:blank`` is not used: each code has its own), ``code``
the same token as an extension member (machine-readable, stable), ``detail`` one line for humans.
Validation errors (bad path, query, header or body) are ``invalid_request`` with an ``errors`` list
(``loc`` and ``msg`` only: the rejected *input* is never echoed, it may be a token).
:class:`BodyLimit` refuses a body larger than the configured bound with ``413 body_too_large``,
before the application reads it (from ``Content-Length``, and by counting a streamed body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_RESPONSES",
    "BodyLimit",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
    "problem_doc",
    "problem_response",
]

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "https://cctf.dev/problems/"
#: Errors listed in an ``invalid_request`` problem (the rest are counted in ``omitted``).
MAX_LISTED_ERRORS: Final = 10
#: Longest ``msg`` of a listed validation error.
MAX_ERROR_MSG: Final = 200

_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


_HTTP_CODES: Final = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


class Problem(BaseModel):
    """An RFC 9457 problem details object (with the ``code`` and ``errors`` extension members)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


class ProblemError(Exception):
    """Raised by a route: answered as a problem with this status and code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def problem_response(
    status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": _one_line(detail),
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _validation_errors(exc: RequestValidationError) -> tuple[list[dict[str, Any]], int]:
    listed: list[dict[str, Any]] = []
    errors = exc.errors()
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = [str(part)[:64] for part in err.get("loc", ())][:8]
        listed.append({"loc": loc, "msg": _one_line(str(err.get("msg", "")), MAX_ERROR_MSG)})
    return listed, max(0, len(errors) - MAX_LISTED_ERRORS)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem (validation, HTTP errors, routes' own, bugs)."""

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        listed, omitted = _validation_errors(exc)
        where = ", ".join(".".join(e["loc"]) for e in listed) or "request"
        return problem_response(
            422,
            "invalid_request",
            f"invalid request: {where}",
            errors=listed,
            omitted=omitted or None,
        )

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        return problem_response(exc.status_code, code, detail, headers=dict(exc.headers or {}))

    async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.status, exc.code, exc.detail)

    async def on_bug(_request: Request, _exc: Exception) -> JSONResponse:
        # the exception text may hold input: not echoed (the server log has the traceback)
        return problem_response(500, "internal_error", "internal error")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(Exception, on_bug)


def problem_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
    }


#: OpenAPI ``responses`` entries of the problems every route may answer.
PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: problem_doc("a body that is not UTF-8 JSON (malformed_body), or a malformed name"),
    413: problem_doc("request body larger than the gateway's bound (body_too_large)"),
    422: problem_doc("invalid path, query, header or body (invalid_request)"),
}

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get ``413 body_too_large``.

    A ``Content-Length`` over the bound is refused before the application runs; a streamed body is
    counted as the application reads it, and the read raises a 413 ``HTTPException`` (answered by
    the problem handlers) once the bound is passed."""

    def __init__(self, app: _App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    response = problem_response(413, "body_too_large", self._detail())
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counted_receive() -> _Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, counted_receive, send)

    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes"
