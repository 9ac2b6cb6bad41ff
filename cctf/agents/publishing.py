"""Publishing one sealed ballot to JetStream: retry rules and failure reasons (thin adapter).

A ballot part is published with ``Nats-Msg-Id`` and the expected stream (``Nats-Expected-Stream``: the
agent's own region's vote stream, so a mis-bound subject is refused by the server instead of landing
elsewhere), and retried with the *same* bytes and the *same* message id, with a short capped backoff,
until acknowledged or until the round's end; a retried publish that did land is stored once (the
stream's duplicate window).

Every failed attempt has a reason (:class:`PublishFailure`), read from the exception without importing
the NATS client (``cctf.bus`` is the only package that does): the engine refusing a message because its
subject or stream is full (discard new) is ``stream_full``; a stream other than the expected one is
``wrong_stream`` and is not retried (a configuration mistake that retrying cannot fix).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cctf.bus.headers import MSG_ID
from cctf.clock import Clock

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_START_S",
    "MIN_ATTEMPT_MS",
    "MSG_ID_HEADER",
    "PublishFailure",
    "PublishResult",
    "classify_publish_error",
    "publish_until",
]

MSG_ID_HEADER: Final = MSG_ID
#: Shortest ack timeout of one publish attempt: the first attempt gets at least this even when the
#: round is (nearly) over; a retry is only made while this much of the round is left.
MIN_ATTEMPT_MS: Final = 50
#: Backoff between publish attempts: starts here, doubles, capped.
BACKOFF_START_S: Final = 0.05
BACKOFF_MAX_S: Final = 0.5

#: JetStream API error codes (nats-server ``errors.json``).
_ERR_STREAM_NOT_MATCH: Final = 10060
_ERR_MSG_TOO_LARGE: Final = 10054
_ERR_STORE_FAILED: Final = 10077


class PublishFailure(StrEnum):
    """Why one publish attempt failed (counted per reason in the agent's stats)."""

    STREAM_FULL = "stream_full"  # discard new: the subject's or the stream's limit is reached
    WRONG_STREAM = "wrong_stream"  # the subject is bound to another stream than expected
    TOO_LARGE = "too_large"  # larger than the stream's max_msg_size
    NO_STREAM = "no_stream"  # no stream answers on the subject (no responders)
    TIMEOUT = "timeout"  # no ack in time
    DISCONNECTED = "disconnected"  # the connection is down or closed
    API_ERROR = "api_error"  # another JetStream API error
    ERROR = "error"  # anything else


#: Failures that retrying cannot fix within a round.
_FINAL: Final = frozenset({PublishFailure.WRONG_STREAM, PublishFailure.TOO_LARGE})


def classify_publish_error(exc: BaseException) -> PublishFailure:
    """The reason of a failed JetStream publish, from the exception's type name and its JetStream
    ``err_code`` / ``description`` (nats-py's ``APIError``), without importing nats-py."""
    if isinstance(exc, TimeoutError):
        return PublishFailure.TIMEOUT
    name = type(exc).__name__
    err_code = getattr(exc, "err_code", None)
    description = str(getattr(exc, "description", "") or "").lower()
    if err_code == _ERR_STREAM_NOT_MATCH or "expected stream does not match" in description:
        return PublishFailure.WRONG_STREAM
    if err_code == _ERR_MSG_TOO_LARGE or "message size exceeds" in description:
        return PublishFailure.TOO_LARGE
    if "maximum messages" in description or "maximum bytes" in description:
        return PublishFailure.STREAM_FULL
    if err_code == _ERR_STORE_FAILED:
        return PublishFailure.STREAM_FULL
    if name in ("NoStreamResponseError", "NoRespondersError"):
        return PublishFailure.NO_STREAM
    if name in ("TimeoutError", "ErrTimeout"):
        return PublishFailure.TIMEOUT
    if "Connection" in name or "Disconnected" in name or "Closed" in name or "Drain" in name:
        return PublishFailure.DISCONNECTED
    if err_code is not None or name.endswith("APIError") or hasattr(exc, "err_code"):
        return PublishFailure.API_ERROR
    return PublishFailure.ERROR


@dataclass(frozen=True)
class PublishResult:
    """What happened to one sealed ballot."""

    ok: bool  # acknowledged by JetStream (possibly as a duplicate)
    attempts: int
    duplicate: bool  # the stream had already stored this message id
    failures: tuple[PublishFailure, ...]  # the reason of every failed attempt, in order
    latency_ms: float  # from the first attempt to the ack (or to giving up)

    @property
    def error(self) -> str | None:
        """The last failure's reason when not ok."""
        return None if self.ok or not self.failures else self.failures[-1].value


async def publish_until(
    js: Any,
    subject: str,
    data: bytes,
    msg_id: str,
    *,
    stream: str | None,
    deadline_ms: int,
    attempt_timeout_ms: int,
    clock: Clock,
    pause: Callable[[float], Awaitable[None]],
    stopping: Callable[[], bool],
    on_failure: Callable[[PublishFailure, int], None] | None = None,
) -> PublishResult:
    """Publish ``data`` on ``subject`` until acked or ``deadline_ms`` (clock ms); always the same bytes
    and message id. ``pause`` sleeps (returning early on stop), ``stopping`` ends the retries. Never
    raises for a publish failure (``CancelledError`` passes through)."""
    started = time.perf_counter()
    attempts = 0
    backoff = BACKOFF_START_S
    failures: list[PublishFailure] = []

    def result(ok: bool, duplicate: bool = False) -> PublishResult:
        latency = (time.perf_counter() - started) * 1000
        return PublishResult(ok, attempts, duplicate, tuple(failures), latency)

    while True:
        attempts += 1
        remaining = deadline_ms - clock.now_ms()
        timeout_ms = min(attempt_timeout_ms, max(remaining, MIN_ATTEMPT_MS))
        try:
            ack = await js.publish(
                subject,
                data,
                timeout=timeout_ms / 1000,
                stream=stream,
                headers={MSG_ID_HEADER: msg_id},  # a fresh dict: nats-py adds to it
            )
        except Exception as exc:  # no responders, timeout, disconnected, stream full, API error...
            reason = classify_publish_error(exc)
            failures.append(reason)
            if on_failure is not None:
                on_failure(reason, attempts)
            if reason in _FINAL:
                return result(False)
        else:
            return result(True, bool(getattr(ack, "duplicate", False)))
        remaining = deadline_ms - clock.now_ms()
        if remaining < MIN_ATTEMPT_MS or stopping():
            return result(False)
        await pause(min(backoff, (remaining - MIN_ATTEMPT_MS) / 1000))
        backoff = min(backoff * 2, BACKOFF_MAX_S)
