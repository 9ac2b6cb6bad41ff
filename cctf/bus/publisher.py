"""Verdict publishing: JetStream publish with ``Nats-Msg-Id`` and bounded retry (nats-py lives here).

:meth:`Publisher.publish` retries with exponential backoff (bounded by ``max_backoff_s``) until the
message is stored, the caller's deadline (the verdict's expiry, on the injected clock) passes, or the
caller stops. The message id makes every retry, and identical publishes by other coordinators, land at
most once (the stream's duplicate window).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass
from typing import Any

from cctf.bus.connect import Connection
from cctf.bus.headers import MSG_ID
from cctf.clock import Clock

__all__ = ["PublishOutcome", "PublishResult", "Publisher"]


class PublishOutcome(enum.Enum):
    PUBLISHED = "published"
    EXPIRED = "expired"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PublishResult:
    outcome: PublishOutcome
    failures: int
    last_error: str = ""


class Publisher:
    def __init__(
        self,
        conn: Connection,
        clock: Clock,
        *,
        timeout_s: float = 2.0,
        first_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
    ) -> None:
        self._js: Any = conn.jetstream()
        self._clock = clock
        self._timeout = timeout_s
        self._first = first_backoff_s
        self._max = max_backoff_s

    async def publish(
        self, subject: str, data: bytes, msg_id: str, until_ms: int, stopping: asyncio.Event
    ) -> PublishResult:
        delay = self._first
        failures = 0
        error = ""
        while True:
            try:
                await self._js.publish(
                    subject, data, timeout=self._timeout, headers={MSG_ID: msg_id}
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                error = repr(exc)[:300]
            else:
                return PublishResult(PublishOutcome.PUBLISHED, failures, error)
            if stopping.is_set():
                return PublishResult(PublishOutcome.STOPPED, failures, error)
            if self._clock.now_ms() >= until_ms:
                return PublishResult(PublishOutcome.EXPIRED, failures, error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, self._max)
