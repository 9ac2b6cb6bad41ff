"""Publishing to JetStream without waiting on a stream leader (nats-py lives here).

:meth:`Publisher.publish` sends the message at once (a JetStream publish is a core message: every
core subscriber of the subject has it as soon as it is sent, stream leader or not), tells the caller
through ``on_sent``, then waits for the stream's acknowledgement in the background of the caller's
flow and retries with the SAME bytes and message id, with exponential backoff (bounded by
``max_backoff_s``), until the message is stored, the caller's deadline (the verdict's expiry, on the
injected clock) passes, or the caller stops. The message id makes every retry, and identical
publishes by other coordinators, land at most once (the stream's duplicate window); a core
subscriber may see a retried copy again (it recognises it: same bytes).

``expected_stream`` (the ``Nats-Expected-Stream`` header) names the one stream that may store the
message: any other stream refuses it, including a copy that a push consumer delivers onto another
stream's subject (docs/threat-model.md, *Push deliveries onto stream subjects*).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cctf.bus.connect import Connection
from cctf.bus.headers import MSG_ID
from cctf.clock import Clock

__all__ = ["PublishOutcome", "PublishResult", "Publisher"]

_MAX_IN_FLIGHT = 1_000_000


class PublishOutcome(enum.Enum):
    PUBLISHED = "published"
    EXPIRED = "expired"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PublishResult:
    outcome: PublishOutcome
    failures: int
    last_error: str = ""
    sent: bool = True
    """The message went out at least once (core subscribers had it), stored or not."""


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
        # in-flight acks are bounded by the callers (each retries until its deadline), not by
        # nats-py's default of 4000, which would stall the live path during a leader election
        self._js: Any = conn.jetstream(publish_async_max_pending=_MAX_IN_FLIGHT)
        self._clock = clock
        self._timeout = timeout_s
        self._first = first_backoff_s
        self._max = max_backoff_s

    async def publish(
        self,
        subject: str,
        data: bytes,
        msg_id: str,
        until_ms: int,
        stopping: asyncio.Event,
        *,
        on_sent: Callable[[bool], None] | None = None,
        expected_stream: str | None = None,
    ) -> PublishResult:
        """Publish until stored (see the module docstring). ``on_sent(went_out)`` is called once,
        right after the first attempt: ``True`` if its copy went out, ``False`` if the attempt failed
        before (e.g. the connection is closed). Never raises for a bus failure (``CancelledError``
        passes)."""
        delay = self._first
        failures = 0
        error = ""
        sent = False
        told = on_sent is None
        while True:
            try:
                try:
                    ack = await self._js.publish_async(
                        subject, data, headers={MSG_ID: msg_id}, stream=expected_stream
                    )
                    sent = True
                finally:
                    if not told:
                        told = True
                        assert on_sent is not None
                        on_sent(sent)
                await asyncio.wait_for(ack, self._timeout)  # a timeout cancels the future
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                error = repr(exc)[:300]
            else:
                return PublishResult(PublishOutcome.PUBLISHED, failures, error, sent)
            if stopping.is_set():
                return PublishResult(PublishOutcome.STOPPED, failures, error, sent)
            if self._clock.now_ms() >= until_ms:
                return PublishResult(PublishOutcome.EXPIRED, failures, error, sent)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, self._max)
