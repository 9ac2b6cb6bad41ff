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

:meth:`Publisher.publish_many` is the same contract for a whole batch of messages (the coordinator's
verdicts of one log batch) at a fraction of the cost: instead of a future, a done callback and a
timeout timer per message (nats-py's ``publish_async`` plus ``wait_for``), every message of the batch
is published with its own reply subject under ONE wildcard inbox subscription of this publisher
(``<inbox>.<token>``, :class:`_AckCollector`), its acknowledgement is matched by token, and the batch
waits on one event with one timeout per attempt. Messages not stored after an attempt (an error
reply, no responders, no reply within ``timeout_s``, a send failure) are retried together, with the
SAME bytes and message id and the same backoff, each until it is stored, its own deadline passes, or
the caller stops: per message, the outcome is what :meth:`Publisher.publish` would give. An
attempt's messages are written to the connection in one call (:mod:`cctf.bus.batchwrite`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from cctf.bus.batchwrite import BatchWriter, OutMessage, id_header_block
from cctf.bus.connect import Connection
from cctf.bus.headers import MSG_ID
from cctf.clock import Clock

__all__ = ["STORED", "Outgoing", "PublishOutcome", "PublishResult", "Publisher"]

_MAX_IN_FLIGHT = 1_000_000
_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"
_MAX_ERROR: Final = 300
_NONCE_BYTES: Final = 8  # random bytes in each reply token


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


#: The result of a message stored at its first attempt (:meth:`Publisher.publish_many` returns this
#: one object for each such message, so a caller may test ``result is STORED``).
STORED: Final = PublishResult(PublishOutcome.PUBLISHED, 0, "", True)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of :meth:`Publisher.publish_many`: kept until stored, expired (``until_ms``, on
    the publisher's clock) or stopped; every attempt sends these same bytes and message id."""

    subject: str
    data: bytes
    msg_id: str
    until_ms: int
    expected_stream: str | None = None


class _PubAck(msgspec.Struct):
    """The parts of a JetStream publish acknowledgement (or error response) read here."""

    stream: str = ""
    error: dict[str, Any] | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class _Attempt:
    """One attempt of a batch: the messages still unanswered, by token; ``done`` once none is."""

    __slots__ = ("done", "errors", "stored", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.stored: set[int] = set()  # positions in the batch
        self.errors: dict[int, str] = {}
        self.done = asyncio.Event()


class _AckCollector:
    """One wildcard inbox subscription (``<inbox>.*``) that matches every batch publish's
    acknowledgement to its message by reply token."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._prefix = ""
        self._sub: Any = None
        self._starting = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._waiting: dict[str, tuple[_Attempt, int]] = {}

    async def start(self) -> None:
        if self._sub is not None:
            return
        async with self._starting:  # concurrent first batches share one subscription
            if self._sub is None:
                prefix = self._conn.new_inbox() + "."
                self._sub = await self._conn.subscribe(prefix + "*", cb=self._on_reply)
                self._prefix = prefix

    def reply_to(self, attempt: _Attempt, position: int, nonce: str) -> tuple[str, str]:
        """A fresh ``(token, reply subject)`` for one message of ``attempt``: a counter (unique)
        and ``nonce`` (random: a reply subject seen by a subscriber tells nothing of the next
        ones; only the server's acknowledgement, or a user allowed to publish on this inbox, can
        answer a token)."""
        token = f"{next(self._tokens)}{nonce}"
        self._waiting[token] = (attempt, position)
        attempt.waiting += 1
        return token, self._prefix + token

    def forget(self, token: str) -> None:
        """The message was not sent (or its attempt ended): a late reply is ignored."""
        got = self._waiting.pop(token, None)
        if got is not None:
            attempt, _ = got
            attempt.waiting -= 1
            if attempt.waiting == 0:
                attempt.done.set()

    async def _on_reply(self, msg: Msg) -> None:
        got = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if got is None:
            return  # an attempt that already timed out (its retry has a new token)
        attempt, position = got
        error = _ack_error(msg)
        if error is None:
            attempt.stored.add(position)
        else:
            attempt.errors[position] = error
        attempt.waiting -= 1
        if attempt.waiting == 0:
            attempt.done.set()


def _ack_error(msg: Msg) -> str | None:
    """``None`` for a stored message, else why not (as ``repr`` of the error, bounded)."""
    headers = msg.headers
    if headers and headers.get(_STATUS) == _NO_RESPONDERS:
        return "NoStreamResponseError (no responders: no stream stores this subject)"
    try:
        ack = _ack_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        return f"bad acknowledgement: {exc}"[:_MAX_ERROR]
    if ack.error is not None:
        return f"APIError {ack.error!r}"[:_MAX_ERROR]
    if not ack.stream:
        return "bad acknowledgement: no stream"
    return None


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
        self._conn = conn
        self._acks = _AckCollector(conn)
        self._writer = BatchWriter(conn)
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

    async def publish_many(
        self,
        msgs: Sequence[Outgoing],
        stopping: asyncio.Event,
        *,
        on_sent: Callable[[list[bool]], None] | None = None,
    ) -> list[PublishResult]:
        """Publish every message of ``msgs`` until stored (see the module docstring); one result
        per message, in order. ``on_sent(went_out)`` is called once, right after the first attempt
        of every message (``went_out[i]``: message ``i``'s copy went out). Never raises for a bus
        failure (``CancelledError`` passes)."""
        n = len(msgs)
        failures = [0] * n
        errors = [""] * n
        sent = [False] * n
        outcome: list[PublishOutcome | None] = [None] * n
        headers = [id_header_block(m.msg_id, m.expected_stream) for m in msgs]
        left = list(range(n))
        delay = self._first
        told = on_sent is None
        acks = self._acks
        while left:
            attempt = _Attempt()
            tokens: list[str] = []
            try:
                await self._send(attempt, tokens, msgs, left, headers, sent)
                if not told:
                    told = True
                    assert on_sent is not None
                    on_sent(list(sent))
                if attempt.waiting:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(attempt.done.wait(), self._timeout)
            finally:  # whatever happens (cancelled), a late reply of this attempt is ignored
                for token in tokens:
                    acks.forget(token)
            still: list[int] = []
            for i in left:
                if i in attempt.stored:
                    outcome[i] = PublishOutcome.PUBLISHED
                else:
                    failures[i] += 1
                    errors[i] = attempt.errors.get(i, "TimeoutError (no acknowledgement)")
                    still.append(i)
            left = still
            if not left:
                break
            if stopping.is_set():
                for i in left:
                    outcome[i] = PublishOutcome.STOPPED
                break
            now = self._clock.now_ms()
            for i in left:
                if now >= msgs[i].until_ms:
                    outcome[i] = PublishOutcome.EXPIRED
            left = [i for i in left if outcome[i] is None]
            if not left:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, self._max)
        published = PublishOutcome.PUBLISHED
        return [
            STORED
            if o is published and not f and s
            else PublishResult(o if o is not None else PublishOutcome.STOPPED, f, e, s)
            for o, f, e, s in zip(outcome, failures, errors, sent, strict=True)
        ]

    async def _send(
        self,
        attempt: _Attempt,
        tokens: list[str],
        msgs: Sequence[Outgoing],
        left: list[int],
        headers: list[bytes],
        sent: list[bool],
    ) -> None:
        """One attempt of :meth:`publish_many`: send every message of ``left`` with a fresh reply
        token (appended to ``tokens``); a message that cannot be sent is an error of ``attempt``."""
        acks = self._acks
        try:
            await acks.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # cannot even subscribe (connection closed)
            for i in left:
                attempt.errors[i] = repr(exc)[:_MAX_ERROR]
            return
        nonces = os.urandom(_NONCE_BYTES * len(left)).hex()
        width = 2 * _NONCE_BYTES
        batch: list[OutMessage] = []
        mine: list[str] = []
        for j, i in enumerate(left):
            m = msgs[i]
            token, reply = acks.reply_to(attempt, i, "x" + nonces[width * j : width * (j + 1)])
            mine.append(token)
            batch.append((m.subject, reply, headers[i], m.data))
        tokens += mine
        failed = await self._writer.write(batch)  # one write for the batch (cctf.bus.batchwrite)
        for i, token, error in zip(left, mine, failed, strict=True):
            if error is None:
                sent[i] = True
            else:
                attempt.errors[i] = repr(error)[:_MAX_ERROR]
                acks.forget(token)
