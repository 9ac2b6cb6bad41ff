"""``LogMonitor``: follows one durable log into a :class:`~cctf.translog.mirror.LogMirror` (every root
re-derived, every head checked) and answers the log API (wire-protocol.md §9.4) from it.

* :func:`log_verifier` finds the note verifier of a log from its origin ``cctf/v1/log/<kid>``: the
  public key given (``--key``), or the trust config's entry of that kid whose principal is the log
  id. Anything else refuses (:class:`~cctf.translog.errors.MirrorError` ``unknown-key``).
* :func:`verify_log` reads every stored record once (no follow) into a new mirror: what
  ``cctf log verify`` and the demo's last line use.
* :class:`LogMonitor` keeps following (new records as they are stored) and serves requests on
  ``cctf.v1.logapi.<log-id>.*`` through :func:`cctf.bus.rpc.serve`. A log that stops verifying is
  logged once and every request is then answered ``not-ready`` (fail closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cctf.bus.connect import Connection
from cctf.bus.logstream import get_record, read_records
from cctf.bus.rpc import Served, serve
from cctf.bus_schemas.heads import LOG_ORIGIN_PREFIX
from cctf.crypto.keys import PublicKeySet
from cctf.crypto.trust import TrustConfig
from cctf.telemetry import get_logger
from cctf.translog.api import (
    API_PREFIX,
    ENTRIES_REPLY_BYTES,
    ApiError,
    answer,
    encode_error,
    encode_ok,
    parse_api_subject,
    plan_entries,
)
from cctf.translog.errors import MirrorError, TranslogError
from cctf.translog.logstate import check_log_id
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier
from cctf.util.deadline import stop_task

__all__ = ["LogMonitor", "log_verifier", "verify_log"]

_log = get_logger("cctf.logmon")

Resolver = Callable[[str], NoteVerifier]


def log_verifier(
    log_id: str, origin: str, *, trust: TrustConfig | None = None, key: PublicKeySet | None = None
) -> NoteVerifier:
    """The verifier of ``log_id``'s notes for the origin its records carry."""
    if not origin.startswith(LOG_ORIGIN_PREFIX):
        raise MirrorError("wrong-origin", f"{origin!r} is not a CCTF log origin")
    kid = origin[len(LOG_ORIGIN_PREFIX) :]
    if key is not None:
        if key.kid != kid:
            raise MirrorError(
                "unknown-key", f"the log is signed by {kid}, the key given is {key.kid}"
            )
        return NoteVerifier(origin, key)
    for entry in trust or ():
        if entry.kid == kid:
            if entry.principal != log_id:
                raise MirrorError(
                    "unknown-key", f"key {kid} belongs to {entry.principal}, not to log {log_id}"
                )
            return NoteVerifier(origin, entry.keys)
    raise MirrorError("unknown-key", f"the log's key {kid} is not in the trust config")


async def verify_log(
    conn: Connection,
    log_id: str,
    resolve: Resolver,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LogMirror | None, int]:
    """Re-derive every stored record of ``log_id`` (a fresh mirror): ``(mirror, records)``, the
    mirror ``None`` for an empty log. :class:`~cctf.translog.errors.TranslogError` at the first
    record that does not check (the mirror's reason)."""
    mirror: LogMirror | None = None
    count = 0
    async for stored in read_records(conn, log_id, progress=progress):
        if mirror is None:
            mirror = LogMirror(stored.record.origin, resolve(stored.record.origin))
        mirror.apply(stored.record)
        count += 1
    return mirror, count


class LogMonitor:
    """One followed log and its API (module doc)."""

    def __init__(self, conn: Connection, log_id: str, resolve: Resolver) -> None:
        self._conn = conn
        self.log_id = check_log_id(log_id)
        self._resolve = resolve
        self.mirror: LogMirror | None = None
        self.failed: TranslogError | None = None
        self.records = 0
        self._seqs: dict[int, int] = {}  # first_index -> stream sequence
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._served: Served | None = None

    async def start(self) -> None:
        self._served = await serve(self._conn, f"{API_PREFIX}.{self.log_id}.*", self.handle)
        self._task = asyncio.create_task(self._follow(), name=f"cctf-logmon-{self.log_id}")

    async def stop(self) -> None:
        if self._served is not None:
            await self._served.close()
        # bounded: nats-py awaits (Python 3.11 wait_for) can swallow a cancel, so cancel again
        # until the follower has unwound, and never wait more than about 2 s for it
        await stop_task(self._task, 2.0, what=f"log monitor {self.log_id}")

    def _progress(self, seq: int, last: int) -> None:
        if seq >= last:
            self.caught_up.set()

    async def _follow(self) -> None:
        delay = 0.2
        while self.failed is None:
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except TranslogError as exc:
                if isinstance(exc, MirrorError) or exc.reason not in ("unavailable", "no-stream"):
                    self.failed = exc
                    _log.error("log_does_not_verify", log=self.log_id, error=str(exc)[:300])
                    self.caught_up.set()
                    return
                _log.warning("log_read_retry", log=self.log_id, error=str(exc)[:300])
            except Exception as exc:  # the feed broke (connection): read again from where we are
                _log.warning("log_read_retry", log=self.log_id, error=repr(exc)[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _follow_once(self) -> None:
        last_seen = max(self._seqs.values(), default=0)
        async for stored in read_records(
            self._conn, self.log_id, follow=True, progress=self._progress
        ):
            if stored.seq <= last_seen:
                continue  # re-read after a broken feed
            if self.mirror is None:
                self.mirror = LogMirror(stored.record.origin, self._resolve(stored.record.origin))
            self.mirror.apply(stored.record)
            self._seqs[stored.record.first_index] = stored.seq
            self.records += 1
            last_seen = stored.seq
        self.caught_up.set()

    async def handle(self, subject: str, data: bytes) -> bytes:
        """The reply to one API request (never raises)."""
        try:
            log_id, op = parse_api_subject(subject)
            if log_id != self.log_id:
                raise ApiError("bad-request", f"this monitor serves log {self.log_id}")
            if self.failed is not None:
                raise ApiError("not-ready", f"the log does not verify: {self.failed}")
            mirror = self.mirror
            if mirror is None:
                raise ApiError("not-ready", "the log holds no head yet")
            if op != "entries":
                return answer(mirror, op, data)
            plan = plan_entries(mirror, data)
            entries: list[bytes] = []
            size = 0
            end = plan.start + plan.count
            for head in plan.records:
                stored = await get_record(self._conn, self.log_id, self._seqs[head.first_index])
                lo = max(plan.start, head.first_index) - head.first_index
                hi = min(end, head.size) - head.first_index
                for entry in stored.record.entries[lo:hi]:
                    if entries and size + len(entry) > ENTRIES_REPLY_BYTES:
                        return encode_ok({"start": plan.start, "entries": entries})
                    entries.append(entry)
                    size += len(entry) + 5
            return encode_ok({"start": plan.start, "entries": entries})
        except TranslogError as exc:
            return encode_error(exc.reason, str(exc))
