"""The agents' UDP fast path (DNS adapter): found by the load benchmark (``benchmarks/load.py``), where
an agent spent about 1 ms of CPU per name and round in dnspython (building the query, an asyncio
datagram endpoint per query, parsing a signed response, validating its RRSIG).

* The query's wire form is built once per question (:meth:`AnswerMemo.query_wire`); each query gets a
  fresh random id (16 bits, plus the random source port of its own socket, like before).
* One plain non-blocking **connected** UDP socket (:class:`UdpChannel`) per query worker and
  resolver for one round's queries, asked one query at a time (ICMP errors surface, the kernel drops
  datagrams from other addresses; a fresh random source port every round); a datagram whose id, QR
  bit or question section does not match is ignored (a possible spoof, or a late answer to an
  earlier query), like a stub resolver does; the query is sent again after ``UDP_RETRY_S`` without
  an answer while time is left.
* **The round's questions are parsed once** (:meth:`AnswerMemo.plan`): an agent asks the same names
  every round, and parsing them (``dns.name.from_text``) and hashing ``dns.name.Name`` keys (dnspython
  lower-cases every label on each hash) were a third of a warm round's CPU; the memo is keyed by a
  plain string per question instead (its hash is cached by Python).
* **Memo of unchanged answers.** The observation of a response is a function of its bytes (after the
  id) and of time (the RRSIG validity window, the chain records' TTLs). So when a resolver sends the
  very same bytes as last round for the same question, the agent reuses that observation, DNSSEC state
  included, instead of parsing and validating again: at most for the answer's TTL, at most
  ``MAX_MEMO_S``, and never past the earliest RRSIG expiration in the answer (the cache a validating
  resolver keeps, bounded the same way). Only ``answer`` observations are memoised; a truncated
  response falls back to the general path (TCP).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Final, TypeVar

import dns.message
import dns.name
import dns.rdatatype

from cctf.agents.canonical import Observation, VoteStatus

__all__ = ["MAX_MEMO_S", "AnswerMemo", "UdpChannel", "exchange", "question_bytes"]

#: Longest time an unchanged answer's observation is reused.
MAX_MEMO_S: Final = 300.0
_MAX_ENTRIES: Final = 300_000
_MAX_DATAGRAM: Final = 65_535
_QR: Final = 0x80

#: A memo key of one question: any hashable value naming ``(qname, qtype, DO bit)`` (the agents use
#: the strings of :meth:`AnswerMemo.plan`; the tests ``(Name, RdataType, bool)`` tuples).
Question = Hashable
_P = TypeVar("_P")
#: Plans (parsed name lists) kept: an agent has one name list, tests a few.
_MAX_PLANS: Final = 8


class AnswerMemo:
    """Query templates per question and observations of unchanged responses (bounded)."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._max = max_entries
        self._queries: dict[Question, bytes] = {}
        self._answers: dict[tuple[str, Question], tuple[bytes, Observation, float]] = {}
        self._plans: dict[tuple[tuple[object, ...], bool], object] = {}
        self.hits = 0
        self.misses = 0

    def plan(
        self, names: Sequence[tuple[str, str]], want_dnssec: bool, build: Callable[[], _P]
    ) -> _P:
        """``build()`` (the parsed questions of ``names``), made once per distinct name list and DO
        bit and then reused: an agent asks the same names every round. ``build`` raising (an invalid
        name) caches nothing."""
        # an agent passes the same tuple of tuples every round: no copy; other sequences are copied
        listed: tuple[object, ...] = names if isinstance(names, tuple) else tuple(map(tuple, names))
        key = (listed, want_dnssec)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = build()
        return plan  # type: ignore[return-value]  # stored by this same call with this key

    def query_wire(self, question: Question, build: Callable[[], dns.message.Message]) -> bytes:
        """The wire form of the query ``build()`` makes for ``question``, built once (cached); its
        id bytes are replaced per query."""
        wire = self._queries.get(question)
        if wire is None:
            if len(self._queries) >= self._max:
                self._queries.clear()
            wire = self._queries[question] = build().to_wire()
        return wire

    def lookup(
        self, resolver: str, question: Question, data: bytes, now_s: float
    ) -> Observation | None:
        entry = self._answers.get((resolver, question))
        if entry is None or entry[2] <= now_s or entry[0] != data[2:]:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def store(
        self,
        resolver: str,
        question: Question,
        data: bytes,
        obs: Observation,
        response: dns.message.Message,
        now_s: float,
    ) -> None:
        if obs.status is not VoteStatus.ANSWER:
            self._answers.pop((resolver, question), None)
            return
        until = now_s + min(float(obs.ttl), MAX_MEMO_S)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                for sig in rrset:
                    until = min(until, float(sig.expiration))
        if until <= now_s:
            return
        if len(self._answers) >= self._max:
            self._answers.clear()
        self._answers[(resolver, question)] = (data[2:], obs, until)


def question_bytes(wire: bytes) -> bytes:
    """The question section of a one-question query (name, type, class)."""
    end = 12
    while wire[end] != 0:
        end += wire[end] + 1
    return wire[12 : end + 5]


#: How often the shared timer of one event loop's channels looks at their queries in flight (resend
#: after the retry interval, give up at the limit): one timer for them all instead of one per query.
TICK_S: Final = 0.01
#: A query is given up this close to its limit (as the per-query timer did).
_END_SLACK_S: Final = 0.02
#: Query ids drawn from the system's CSPRNG per call (16 bits each), instead of one call per query.
_IDS_PER_DRAW: Final = 64


class _Ticker:
    """The one timer of an event loop's :class:`UdpChannel` queries in flight: every
    :data:`TICK_S` it resends those unanswered for their retry interval and fails those at their
    limit; it stops when no query is in flight. A timer handle per query (created, pushed on the
    loop's heap, cancelled, popped again) was a fifth of a warm query's CPU
    (``benchmarks/load.py``, 3,000 names)."""

    __slots__ = ("_active", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # a weak reference: the ticker is the value of its loop's key in _TICKERS
        self._loop = weakref.ref(loop)
        self._active: set[UdpChannel] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, channel: UdpChannel) -> None:
        self._active.add(channel)
        loop = self._loop()
        if self._handle is None and loop is not None:
            self._handle = loop.call_later(TICK_S, self._tick)

    def discard(self, channel: UdpChannel) -> None:
        self._active.discard(channel)

    def _tick(self) -> None:
        self._handle = None
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        for channel in list(self._active):
            if not channel._check(now):
                self._active.discard(channel)
        if self._active:
            self._handle = loop.call_later(TICK_S, self._tick)


_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker] = (
    weakref.WeakKeyDictionary()
)


def _ticker(loop: asyncio.AbstractEventLoop) -> _Ticker:
    ticker = _TICKERS.get(loop)
    if ticker is None:
        ticker = _TICKERS[loop] = _Ticker(loop)
    return ticker


class UdpChannel:
    """A connected, non-blocking UDP socket to one server for one worker's consecutive queries
    within one round (:func:`cctf.agents.roundquery.query_all`): the socket, its connect and its
    reader registration are made once instead of per query (they were a third of a warm query's
    CPU). Each query still gets a fresh random id; the source port is the socket's random one, new
    every round (the channels are closed when the round's queries end). A datagram that does not
    answer the query being asked (wrong id, QR bit or question: a possible spoof, or the late
    answer of an earlier query that timed out) is read and ignored. Resends and the limit are
    kept by the loop's one :class:`_Ticker` (to within :data:`TICK_S`)."""

    __slots__ = (
        "_end",
        "_fd",
        "_fut",
        "_ids",
        "_limit_s",
        "_loop",
        "_qid",
        "_question",
        "_resend_at",
        "_retry_s",
        "_sock",
        "_ticker",
        "_wire",
    )

    def __init__(self, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._fd = -1
        try:
            self._sock.setblocking(False)
            self._sock.connect((address, port))
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._fd = self._sock.fileno()
        except BaseException:
            self._sock.close()
            raise
        self._ticker = _ticker(self._loop)
        self._fut: asyncio.Future[bytes] | None = None
        self._qid = b""
        self._question = b""
        self._wire = b""
        self._ids = b""
        self._end = self._resend_at = self._retry_s = self._limit_s = 0.0

    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP port unreachable: connection refused
                if self._fut is not None and not self._fut.done():
                    self._fut.set_exception(exc)
                return
            fut = self._fut
            if fut is None or fut.done():
                continue  # nothing asked: a late or unsolicited datagram, dropped
            qlen = len(self._question)
            if (
                len(data) >= 12
                and data[:2] == self._qid
                and data[2] & _QR
                and data[4:6] == b"\x00\x01"
                and data[12 : 12 + qlen].lower() == self._question
            ):
                fut.set_result(data)

    def _check(self, now: float) -> bool:
        """The ticker's look at this channel's query: give up at the limit, resend after the
        retry interval; ``False`` when no query is in flight any more."""
        fut = self._fut
        if fut is None or fut.done():
            return False
        if self._end - now < _END_SLACK_S:
            fut.set_exception(TimeoutError(f"no answer in {self._limit_s * 1000:.0f} ms"))
            return False
        if now >= self._resend_at:
            try:
                self._sock.send(self._wire)  # resend: a datagram may have been lost
            except OSError as exc:
                fut.set_exception(exc)
                return False
            self._resend_at = now + self._retry_s
        return True

    def _next_id(self) -> bytes:
        ids = self._ids
        if not ids:
            ids = secrets.token_bytes(2 * _IDS_PER_DRAW)
        self._ids = ids[2:]
        return ids[:2]

    async def ask(self, template: bytes, limit_s: float, retry_s: float) -> bytes:
        """Send ``template`` (a fresh id) and return the first datagram that answers it, resending
        after ``retry_s``. Raises ``TimeoutError`` after ``limit_s``, ``OSError`` for socket
        errors. One query at a time per channel."""
        qid = self._next_id()
        wire = qid + template[2:]
        self._qid = qid
        self._wire = wire
        self._question = question_bytes(wire).lower()
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._fut = fut
        now = self._loop.time()
        self._end = now + limit_s
        self._limit_s = limit_s
        self._retry_s = retry_s
        self._resend_at = now + retry_s
        try:
            self._sock.send(wire)
            self._ticker.add(self)
            return await fut
        finally:
            self._fut = None
            self._ticker.discard(self)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
        self._sock.close()


async def exchange(
    address: str, port: int, template: bytes, limit_s: float, retry_s: float
) -> bytes:
    """Send ``template`` (a fresh id) to ``address:port`` over a connected UDP socket of its own and
    return the first datagram that answers it (id, QR and question match), resending after
    ``retry_s``. Raises ``TimeoutError`` after ``limit_s``, ``OSError`` for socket errors (ICMP
    refused). One :class:`UdpChannel` for one query."""
    channel = UdpChannel(address, port)
    try:
        return await channel.ask(template, limit_s, retry_s)
    finally:
        channel.close()
