"""The durable log on JetStream (design decision D4): one writer per log, readers, resume.

Stream ``CCTF_LOG`` (:func:`cctf.bus.streams.log_stream_config`) holds every log, one subject per log:
``cctf.v1.log.<log-id>`` (``<log-id>`` = the coordinator id, or ``ca``). Each message is one
:class:`~cctf.translog.record.LogBatch` record (its exact canonical bytes).

Writer (:class:`LogWriter`): records are appended one at a time, in index order, each published with

* ``Nats-Msg-Id: log.<log-id>.<first_index>`` (a retried publish lands once), and
* ``Nats-Expected-Last-Subject-Sequence: <stream sequence of this log's previous record>`` (``0``
  for the first record): the engine refuses the publish when another writer appended in between.

:meth:`LogWriter.append` returns once the record is acknowledged by the stream. It retries every
transient failure (timeouts, no responders, 503, leader elections, reconnects) with the same message
id and expected sequence, with bounded exponential backoff, until acknowledged or :meth:`close`.
When the engine answers "duplicate" or "wrong last sequence", the writer reads the stored record back
from the stream leader: the same bytes mean our earlier try landed (acknowledged); other bytes mean
another writer owns the log: :class:`~cctf.translog.errors.LogFencedError`. A record over the size
bound is :class:`~cctf.translog.errors.RecordTooLargeError`; a full stream (discard new) is
:class:`~cctf.translog.errors.LogWriteError` ``full``; an append after :meth:`close` (or still
pending at it) is ``LogWriteError`` ``stopped``. Any of these leaves the caller's
:class:`~cctf.translog.logstate.LogState` holding entries the log does not: poison it and stop.

Readers: :func:`last_record` (leader read of a log's newest record), :func:`read_records` (every
stored record in order through an ephemeral ordered consumer; ``follow=True`` keeps going with new
ones), :func:`records_after` (the records stored after a stream sequence, direct gets: a
follower's catch-up right after a reconnect, before its consumer is re-created),
:func:`get_record` (one record by stream sequence, direct get), and :func:`open_log` (resume:
read every record, re-derive and check them in a :class:`~cctf.translog.logstate.LogState`, then a
writer fenced on the last one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import nats.js.errors

from cctf.bus.connect import Connection, jetstream
from cctf.bus.headers import EXPECTED_LAST_SUBJECT_SEQUENCE, MSG_ID
from cctf.bus.reader import open_ordered_feed
from cctf.bus.streams import LOG_STREAM, PUBACK_LIMIT_ERR_CODE
from cctf.crypto.keys import SigningKey
from cctf.translog.errors import (
    LogFencedError,
    LogWriteError,
    RecordError,
    RecordTooLargeError,
    TranslogError,
)
from cctf.translog.logstate import LogState, check_log_id
from cctf.translog.record import LogBatch, decode_batch

__all__ = [
    "LogReadError",
    "LogWriter",
    "StoredRecord",
    "get_record",
    "last_record",
    "log_msg_id",
    "log_subject",
    "open_log",
    "read_records",
    "reconnects",
    "records_after",
]

_log = logging.getLogger(__name__)

#: JetStream error codes: wrong last (subject) sequence, message over the stream's max_msg_size.
_ERR_WRONG_LAST_SEQUENCE: Final = 10071
_ERR_MESSAGE_TOO_LARGE: Final = 10054
_ERR_STREAM_NOT_FOUND: Final = 10059


class LogReadError(TranslogError):
    """The log could not be read from the bus (timeout, permission, connection)."""


def log_subject(log_id: str) -> str:
    """``cctf.v1.log.<log-id>``."""
    return f"cctf.v1.log.{check_log_id(log_id)}"


def log_msg_id(log_id: str, first_index: int) -> str:
    """``log.<log-id>.<first_index>``: the de-duplication id of a record."""
    return f"log.{check_log_id(log_id)}.{first_index}"


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record and the stream sequence it is stored at."""

    seq: int
    record: LogBatch


def _decode(seq: int, data: bytes) -> StoredRecord:
    try:
        return StoredRecord(seq, decode_batch(data))
    except RecordError as exc:
        raise RecordError(exc.reason, f"stream sequence {seq}: {exc}") from None


async def _leader_get(
    conn: Connection, log_id: str, seq: int | None, *, direct: bool = False
) -> tuple[int, bytes] | None:
    """A stored message from the stream leader (``direct``: from any replica, possibly stale): the
    last one of the log's subject (``seq`` None) or the one at ``seq``."""
    js = jetstream(conn)
    try:
        if seq is None:
            raw = await js.get_msg(LOG_STREAM, subject=log_subject(log_id), direct=direct)
        else:
            raw = await js.get_msg(LOG_STREAM, seq=seq, direct=direct)
    except nats.js.errors.NotFoundError as exc:
        if exc.err_code == _ERR_STREAM_NOT_FOUND:
            raise LogReadError("no-stream", f"stream {LOG_STREAM} does not exist") from None
        return None
    if seq is not None and raw.subject != log_subject(log_id):
        return (raw.seq or 0, b"")  # another log's message: never ours
    return (raw.seq or 0, raw.data or b"")


async def last_record(conn: Connection, log_id: str, *, leader: bool = True) -> StoredRecord | None:
    """The newest stored record of ``log_id``, ``None`` for an empty log: read from the stream
    leader (the writer's view; needs ``STREAM.MSG.GET``), or with ``leader=False`` by direct get
    from any replica (a reader's view, possibly a little behind). :class:`LogReadError` when the
    bus cannot be asked; :class:`RecordError` for a stored record that does not decode."""
    try:
        got = await _leader_get(conn, log_id, None, direct=not leader)
    except LogReadError:
        raise
    except (TimeoutError, nats.errors.Error) as exc:
        raise LogReadError("unavailable", f"cannot read {log_subject(log_id)}: {exc!r}") from exc
    return None if got is None else _decode(*got)


async def get_record(conn: Connection, log_id: str, seq: int) -> StoredRecord:
    """The record at stream sequence ``seq`` (direct get); :class:`LogReadError` ``not-found`` if
    none of this log is stored there."""
    js = jetstream(conn)
    try:
        raw = await js.get_msg(LOG_STREAM, seq=seq, direct=True)
    except nats.js.errors.NotFoundError:
        raise LogReadError("not-found", f"no record at stream sequence {seq}") from None
    except (TimeoutError, nats.errors.Error) as exc:
        raise LogReadError("unavailable", f"cannot read sequence {seq}: {exc!r}") from exc
    if raw.subject != log_subject(log_id):
        raise LogReadError("not-found", f"sequence {seq} is not a record of log {log_id}")
    return _decode(seq, raw.data or b"")


async def records_after(
    conn: Connection, log_id: str, seq: int, *, limit: int = 256
) -> list[StoredRecord]:
    """The records of ``log_id`` stored after stream sequence ``seq``, in order, at most ``limit``:
    direct gets "next by subject" (any replica answers, possibly a little behind; no consumer, so
    this works at once after a reconnect). :class:`LogReadError` when the bus cannot be asked;
    :class:`RecordError` for a stored record that does not decode."""
    js = jetstream(conn)
    subject = log_subject(log_id)
    out: list[StoredRecord] = []
    while len(out) < limit:
        try:
            raw = await js.get_msg(LOG_STREAM, seq=seq + 1, subject=subject, direct=True, next=True)
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code == _ERR_STREAM_NOT_FOUND:
                raise LogReadError("no-stream", f"stream {LOG_STREAM} does not exist") from None
            break
        except (TimeoutError, nats.errors.Error) as exc:
            raise LogReadError("unavailable", f"cannot read {subject}: {exc!r}") from exc
        if raw.subject != subject or not raw.seq or raw.seq <= seq:
            break  # not ours (never for a next-by-subject answer): stop rather than loop
        seq = raw.seq
        out.append(_decode(seq, raw.data or b""))
    return out


def reconnects(conn: Connection) -> int:
    """How many times ``conn`` reconnected so far (its subscriptions are re-sent at each)."""
    return int(conn.stats.get("reconnects", 0))


async def read_records(
    conn: Connection,
    log_id: str,
    *,
    follow: bool = False,
    leader: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AsyncIterator[StoredRecord]:
    """Every stored record of ``log_id`` in stream order (an ordered consumer filtered to its
    subject). Without ``follow`` the iteration ends at the record that was last when it started
    (:func:`last_record`, ``leader`` as there); with it, new records keep coming.
    ``progress(seq, last_seq)`` is called after each record."""
    last = await last_record(conn, log_id, leader=leader)
    if last is None and not follow:
        return
    last_seq = 0 if last is None else last.seq
    if last is None and progress is not None:
        progress(0, 0)  # nothing stored yet: caught up
    try:
        feed = await open_ordered_feed(conn, LOG_STREAM, log_subject(log_id), deliver="all")
    except Exception as exc:
        raise LogReadError("unavailable", f"cannot read {log_subject(log_id)}: {exc}") from exc
    async with feed:
        async for msg in feed:
            stored = _decode(msg.seq, msg.data)
            yield stored
            if progress is not None:
                progress(stored.seq, last_seq)
            if not follow and stored.seq >= last_seq:
                return


class LogWriter:
    """The one writer of a log (module doc). Create it with :func:`open_log` (or with the stream
    sequence and tree size of the log's last record)."""

    def __init__(
        self,
        conn: Connection,
        log_id: str,
        *,
        last_seq: int,
        next_index: int,
        timeout_s: float = 2.0,
        first_backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
    ) -> None:
        self._conn = conn
        self.log_id = check_log_id(log_id)
        self.subject = log_subject(log_id)
        self._js: Any = jetstream(conn, timeout=timeout_s)
        self._timeout = timeout_s
        self._first = first_backoff_s
        self._max = max_backoff_s
        self.last_seq = last_seq
        self.next_index = next_index
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_data = b""
        self.retries = 0
        """Failed publish attempts so far (each one retried)."""
        self.failed: LogWriteError | None = None

    @property
    def pending(self) -> int:
        """Appends not yet acknowledged."""
        return self._pending

    async def append(self, record: LogBatch) -> None:
        """Store ``record`` durably (module doc); returns once the stream acknowledged it.

        Cancelling the caller does not cancel the append: it goes on (same message id, same
        expected sequence) until acknowledged or :meth:`close`, and later appends wait for it, so a
        caller that gave up waiting never leaves the writer unsure of the log's last record.
        Appending the record that was acknowledged last again is a no-op (a caller's retry)."""
        try:
            data = record.encode()
        except RecordError as exc:
            raise RecordTooLargeError(exc.reason, str(exc)) from None
        self._pending += 1
        self._idle.clear()
        task = asyncio.ensure_future(self._append(record, data))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        await asyncio.shield(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller (if still waiting) gets it too
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    async def _append(self, record: LogBatch, data: bytes) -> None:
        async with self._lock:
            if self.failed is not None:
                raise LogWriteError("failed", f"the writer failed before: {self.failed}")
            if record.size == self.next_index and data == self._last_data:
                return  # the caller retried the record acknowledged last
            if record.first_index != self.next_index:
                raise LogWriteError(
                    "out-of-order",
                    f"record at {record.first_index}, the log's next index is {self.next_index}",
                )
            try:
                seq = await self._publish(record, data)
            except LogWriteError as exc:
                if exc.reason != "stopped":
                    self.failed = exc
                raise
            self.last_seq = seq
            self.next_index = record.size
            self._last_data = data

    async def _publish(self, record: LogBatch, data: bytes) -> int:
        headers = {
            MSG_ID: log_msg_id(self.log_id, record.first_index),
            EXPECTED_LAST_SUBJECT_SEQUENCE: str(self.last_seq),
        }
        delay = self._first
        while True:
            if self._stopping.is_set():
                raise LogWriteError("stopped", f"the writer of {self.subject} was closed")
            try:
                ack = await self._js.publish(
                    self.subject, data, timeout=self._timeout, headers=dict(headers)
                )
            except asyncio.CancelledError:
                raise
            except nats.js.errors.APIError as exc:
                if exc.err_code == _ERR_WRONG_LAST_SEQUENCE:
                    return await self._resolve(None, data, str(exc))
                if exc.err_code == _ERR_MESSAGE_TOO_LARGE:
                    raise RecordTooLargeError("too-large", f"the stream refused: {exc}") from None
                if exc.err_code == PUBACK_LIMIT_ERR_CODE:
                    raise LogWriteError("full", f"{LOG_STREAM} refused the record: {exc}") from None
                self._retrying(exc)
            except nats.errors.MaxPayloadError as exc:
                raise RecordTooLargeError(
                    "too-large", f"over the server's max payload: {exc}"
                ) from None
            except Exception as exc:  # timeouts, no responders, reconnecting: retry
                self._retrying(exc)
            else:
                if getattr(ack, "duplicate", False):
                    return await self._resolve(int(ack.seq), data, "duplicate message id")
                return int(ack.seq)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self._max)

    def _retrying(self, exc: BaseException) -> None:
        self.retries += 1
        if self.retries == 1 or self.retries % 50 == 0:
            _log.warning(
                "log %s: append not acknowledged yet (%d tries so far): %r",
                self.log_id,
                self.retries,
                exc,
            )

    async def _resolve(self, seq: int | None, data: bytes, why: str) -> int:
        """The engine says our record (or another one) is stored: read it from the leader."""
        delay = self._first
        while True:
            try:
                got = await _leader_get(self._conn, self.log_id, seq)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._retrying(exc)
                if self._stopping.is_set():
                    raise LogWriteError(
                        "stopped", f"the writer of {self.subject} was closed"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max)
        if got is not None and got[1] == data:
            return got[0]
        raise LogFencedError(
            "fenced",
            f"another writer appended to {self.subject} ({why}; stored sequence "
            f"{got[0] if got else 0} holds another record)",
        )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no append is pending (at most ``timeout_s``); whether it emptied."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop: pending and later appends raise ``LogWriteError`` ``stopped``."""
        self._stopping.set()


async def open_log(
    conn: Connection,
    log_id: str,
    key: SigningKey,
    *,
    progress: Callable[[int, int], None] | None = None,
    **writer_options: Any,
) -> tuple[LogState, LogWriter]:
    """Resume ``log_id`` signed by ``key``: re-derive every stored record (every root and signature
    checked, :class:`~cctf.translog.errors.MirrorError` else), then a writer fenced on the last one.
    The next head is consistent with the last stored one; nothing stored is rewritten."""
    state = LogState(key)
    last_seq = 0
    async for stored in read_records(conn, log_id, leader=True, progress=progress):
        state.mirror.apply(stored.record)
        last_seq = stored.seq
    writer = LogWriter(conn, log_id, last_seq=last_seq, next_index=state.size, **writer_options)
    return state, writer
