"""Pipelined DNS over TCP (RFC 7766 §6.2.1.1) and over TLS (DoT, RFC 7858 §3.4): the agents' bulk
path for ``tcp`` and ``dot`` resolvers (network adapter; what is done with the answers lives in
:mod:`cctf.agents.roundquery`).

Found by the load benchmark (``benchmarks/load.py``, 3,000 names per 1 s round): over UDP every query
is one datagram out and one in, a ``send``, a ``recv`` and an epoll wake-up each, and those system
calls were about 40 % of a warm agent's CPU on a loaded 2-core VM (7 µs each on a quiet machine, up
to 50 µs on a busy one). Over one TCP connection the whole round's queries go out in one write and
their answers come back in a few large reads, whatever their number.

* **DoT** is the same over a TLS connection (the resolver's verified context, SNI and ALPN ``dot``):
  one handshake per round instead of one per query.
* **One connection per resolver and round** (at most :data:`MAX_PER_CONNECTION` queries each: 16-bit
  ids must be unique within a connection), opened at the round's start and closed at its end: no
  state is carried between rounds, as with the UDP path's sockets.
* **Every query has a fresh random id**, unique within its connection (drawn from the system's
  CSPRNG); answers are matched by id, and a frame is accepted only when its QR bit is set and its
  question section equals the query's (case-insensitively), as a stub resolver does. Answers may
  come in any order (RFC 7766 §7). A frame that matches nothing (an unknown or already answered id,
  another question, shorter than a header) is ignored and counted.
* **Bounded:** the framing is two length bytes and at most 65,535 bytes of message, so the read
  buffer never holds more than one partial frame plus one read; nothing is kept of an ignored frame.
* **Connection lost** (the server closed it, a reset) while queries are unanswered: they are sent
  again on a new connection while time is left, at most :data:`MAX_CONNECTIONS` connections per
  batch per round; a refused or failing connect ends the batch's unanswered queries with that error.
* **The deadline is hard:** :func:`exchange_all` returns when every query is answered or at
  ``limit_s``, whichever comes first; what is unanswered then is a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import ssl
import time
from collections.abc import Sequence
from typing import Final

from cctf.agents.udpfast import question_bytes

__all__ = ["MAX_CONNECTIONS", "MAX_PER_CONNECTION", "PipeStats", "exchange_all"]

#: Queries of one round on one connection at most (their ids must be distinct 16-bit values: a
#: quarter of the id space keeps the draw cheap); more are spread over more connections.
MAX_PER_CONNECTION: Final = 16_384
#: Connections per batch and round at most (the first and two after a lost one).
MAX_CONNECTIONS: Final = 3
_QR: Final = 0x80
#: After a read, the connection's next read waits this long (the answers arriving meanwhile are
#: taken in one read): at most this much latency added to an answer.
READ_PAUSE_S: Final = 0.004
_CONNECT_MIN_S: Final = 0.01

#: One query's result: the answer's bytes and when it arrived (``time.perf_counter``), or the error.
Result = tuple[bytes, float] | BaseException


class PipeStats:
    """Counters of one :func:`exchange_all` call (for tests and logs)."""

    __slots__ = ("connections", "frames", "ignored")

    def __init__(self) -> None:
        self.connections = 0
        self.frames = 0
        self.ignored = 0


def _fresh_ids(n: int) -> list[bytes]:
    """``n`` distinct random 16-bit ids (``n`` ≤ :data:`MAX_PER_CONNECTION`)."""
    seen: dict[bytes, None] = {}
    while len(seen) < n:
        draw = secrets.token_bytes(2 * (n - len(seen)) + 32)
        for j in range(0, len(draw), 2):
            seen[draw[j : j + 2]] = None
            if len(seen) == n:
                break
    return list(seen)


class _Pipe(asyncio.Protocol):
    """One connection's reader: splits the byte stream into frames and matches them to queries."""

    def __init__(
        self,
        pending: dict[bytes, int],
        questions: Sequence[bytes],
        results: list[Result | None],
        stats: PipeStats,
        wake: asyncio.Event,
    ) -> None:
        self._pending = pending
        self._questions = questions
        self._results = results
        self._stats = stats
        self._wake = wake
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def _resume(self) -> None:
        if not self.closed and self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        now = time.perf_counter()
        while end - pos >= 2:
            stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if stop > end:
                break
            self._frame(buf[pos + 2 : stop], now)
            pos = stop
        self._buf = buf[pos:]
        if not self._pending:
            self._wake.set()
        elif self._transport is not None:
            # read coalescing: the answers of the next READ_PAUSE_S wait in the socket's buffer and
            # are taken in one read (one recv and one wake-up per answer were most of the cost)
            self._transport.pause_reading()
            asyncio.get_running_loop().call_later(READ_PAUSE_S, self._resume)

    def _frame(self, msg: bytes, now: float) -> None:
        self._stats.frames += 1
        i = self._pending.get(msg[:2]) if len(msg) >= 12 and msg[2] & _QR else None
        if i is None:
            self._stats.ignored += 1
            return
        question = self._questions[i]
        if msg[4:6] != b"\x00\x01" or msg[12 : 12 + len(question)].lower() != question:
            self._stats.ignored += 1  # another question under this id: a spoof or a server bug
            return
        del self._pending[msg[:2]]
        self._results[i] = (msg, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc or ConnectionResetError("the server closed the connection")
        self._wake.set()


async def _batch(
    address: str,
    port: int,
    templates: Sequence[bytes],
    results: list[Result | None],
    offset: int,
    end: float,
    stats: PipeStats,
    tls: tuple[ssl.SSLContext, str | None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    count = len(templates)
    questions = [question_bytes(t).lower() for t in templates]
    todo = list(range(count))
    local: list[Result | None] = [None] * count
    error: BaseException = TimeoutError("no answer by the deadline")
    for _attempt in range(MAX_CONNECTIONS):
        if not todo or end - loop.time() < _CONNECT_MIN_S:
            break
        ids = _fresh_ids(len(todo))
        pending = dict(zip(ids, todo, strict=True))
        wake = asyncio.Event()
        try:
            async with asyncio.timeout_at(end):
                factory = functools.partial(_Pipe, pending, questions, local, stats, wake)
                if tls is None:
                    transport, pipe = await loop.create_connection(factory, address, port)
                else:
                    transport, pipe = await loop.create_connection(
                        factory, address, port, ssl=tls[0], server_hostname=tls[1]
                    )
        except TimeoutError:
            break
        except OSError as exc:  # refused, unreachable, TLS: the same for every query of the batch
            error = exc
            break
        stats.connections += 1
        try:
            transport.write(
                b"".join(
                    len(t).to_bytes(2, "big") + qid + t[2:]
                    for qid, t in zip(ids, (templates[i] for i in todo), strict=True)
                )
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(end):
                    while pending and not pipe.closed:
                        wake.clear()
                        await wake.wait()
        finally:
            transport.abort()
        todo = list(pending.values())
        if pipe.closed and pipe.lost is not None and todo:
            error = pipe.lost
    for i in todo:
        local[i] = error
    for i, result in enumerate(local):
        results[offset + i] = result if result is not None else error


async def exchange_all(
    address: str,
    port: int,
    templates: Sequence[bytes],
    limit_s: float,
    *,
    tls: tuple[ssl.SSLContext, str | None] | None = None,
) -> tuple[list[Result], PipeStats]:
    """Send every query wire form of ``templates`` (each gets a fresh id) to ``address:port`` over
    pipelined TCP (over TLS with ``tls``: the client context and the server name to verify and
    send as SNI) and return, in the same order, each one's answer and arrival time or its error
    (``TimeoutError`` when unanswered at ``limit_s``, ``OSError`` when the server cannot be reached
    or the TLS handshake fails), with the counters. Never raises for network problems."""
    loop = asyncio.get_running_loop()
    end = loop.time() + max(0.0, limit_s)
    results: list[Result | None] = [None] * len(templates)
    stats = PipeStats()
    batches = [
        _batch(
            address,
            port,
            templates[at : at + MAX_PER_CONNECTION],
            results,
            at,
            end,
            stats,
            tls,
        )
        for at in range(0, len(templates), MAX_PER_CONNECTION)
    ]
    await asyncio.gather(*batches)
    return [r if r is not None else TimeoutError("no answer") for r in results], stats
