"""The CA on NATS: answers certificate requests, appends to the CA log BEFORE answering, revokes.

Subjects (core request-reply, :mod:`cctf.bus.rpc`):

* ``cctf.v1.ca.issue.<region>.<agent>``: a signed ``cert-request`` -> ``CertResponse``
  (:mod:`cctf.ca.request`). Agents may publish only on their region's issue subjects
  (:func:`cctf.bus.accounts.agent_service_subjects`).
* ``cctf.v1.ca.admin.revoke``: ``[serial, kid, reason]`` (msgpack; ``serial`` "" = every valid
  certificate of ``kid``) -> ``[error, [serial, ...], log_index]``. Only users whose permissions
  allow publishing there (``admin``) reach it; the CA holds the one writer of its log.
* ``cctf.v1.ca.admin.join``: a ``JoinRequest`` (:mod:`cctf.ca.join`) -> ``CertResponse`` with a
  join certificate (logged first), the one-time bootstrap credential of a new agent.
* ``cctf.v1.ca.join.<region>.<agent>``: the same signed ``cert-request`` as ``issue``, from a
  connection authenticated by a join certificate (only those may publish there): granted once per
  logged join certificate, while it is valid (:class:`cctf.ca.join.JoinLedger`) [``join``].

Every certificate goes through :meth:`CaService.append` first: the entry is added to the
:class:`CaLog` (one record, signed head, durable append) and the certificate is returned only once the
append was acknowledged within ``append_timeout_s``; otherwise the reply is ``log: ...`` and nothing
is handed out (the record may still land later: a logged certificate nobody received is harmless).
The service also keeps a :class:`~cctf.ca.registry.CertRegistry` of what it logged (``list``,
``revoke``). Counters: :attr:`CaService.counts`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import msgspec

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.rpc import Served, serve
from cctf.ca.entries import RevocationReason
from cctf.ca.errors import CaError, CaReason
from cctf.ca.issuer import Issuer, random_serial
from cctf.ca.join import JoinRequest
from cctf.ca.profile import AgentCert
from cctf.ca.registry import CertRegistry
from cctf.ca.request import ISSUE_PREFIX, JOIN_PREFIX, CertResponse, encode_response
from cctf.clock import SYSTEM_CLOCK, Clock

__all__ = ["ADMIN_JOIN", "ADMIN_REVOKE", "CaLog", "CaService", "RevokeReply", "RevokeRequest"]

ADMIN_REVOKE: Final = "cctf.v1.ca.admin.revoke"
ADMIN_JOIN: Final = "cctf.v1.ca.admin.join"
_logger = telemetry.get_logger("cctf.ca")


class CaLog(Protocol):
    """The CA's log as the service needs it (:class:`cctf.ca.log.TranslogCaLog` over
    ``cctf.translog.logstate.LogState`` + ``cctf.bus.logstream.LogWriter``)."""

    @property
    def size(self) -> int: ...

    async def append(self, entries: Sequence[bytes]) -> int:
        """Append ``entries`` as one record and return its first index once the record is
        durably acknowledged; raise :class:`CaError` ``log`` when it cannot be."""
        ...


class RevokeRequest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    serial: str
    kid: str
    reason: RevocationReason


class RevokeReply(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    error: str
    serials: list[str]
    log_index: int


class CaService:
    def __init__(
        self,
        conn: Connection,
        issuer: Issuer,
        log: CaLog,
        *,
        registry: CertRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        append_timeout_s: float = 5.0,
        serials: Callable[[], int] = random_serial,
    ) -> None:
        self._conn = conn
        self.issuer = issuer
        self._log = log
        self.registry = registry or CertRegistry(
            issuer.intermediate, issuer.trust_domain, issuer.trust
        )
        self._clock = clock
        self._timeout = append_timeout_s
        self._serials = serials
        self._lock = asyncio.Lock()
        self._join_lock = asyncio.Lock()  # a join's check and its redeeming append, atomically
        self._served: list[Served] = []
        self._pending: set[asyncio.Task[int]] = set()
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def start(self) -> None:
        self._served.append(await serve(self._conn, ISSUE_PREFIX + "*.*", self.handle_issue))
        self._served.append(await serve(self._conn, JOIN_PREFIX + "*.*", self.handle_join))
        self._served.append(await serve(self._conn, ADMIN_REVOKE, self._handle_revoke))
        self._served.append(await serve(self._conn, ADMIN_JOIN, self._handle_admin_join))
        _logger.info("ca_started", log_size=self._log.size, trust_domain=self.issuer.trust_domain)

    async def stop(self) -> None:
        for s in self._served:
            await s.close()
        self._served.clear()
        if self._pending:  # appends already made: let them finish (bounded)
            await asyncio.wait(list(self._pending), timeout=self._timeout)

    async def append(self, entries: Sequence[bytes]) -> int:
        """Append and wait for the acknowledgement (at most ``append_timeout_s``)."""
        async with self._lock:  # records are made and handed to the writer in order
            task = asyncio.get_running_loop().create_task(self._log.append(entries))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._timeout)
        except TimeoutError:
            raise CaError(CaReason.LOG, "the CA log did not acknowledge in time") from None

    async def handle_issue(self, subject: str, data: bytes) -> bytes:
        return await self._issue(subject, data, ISSUE_PREFIX)

    async def handle_join(self, subject: str, data: bytes) -> bytes:
        """A first certificate over a join credential: at most one per logged join certificate."""
        async with self._join_lock:
            return await self._issue(subject, data, JOIN_PREFIX)

    async def _issue(self, subject: str, data: bytes, prefix: str) -> bytes:
        now = self._clock.now_ms()
        try:
            issued = self.issuer.issue(
                data, subject, now_ms=now, serial=self._serials(), prefix=prefix
            )
            kid = issued.request.signer.kid
            if self.registry.is_blocked(kid):  # a revoked KEY gets no new certificate
                raise CaError(CaReason.REVOKED, f"key {kid} was revoked")
            if prefix == JOIN_PREFIX:  # after the request checks: only the agent's key gets here
                req = issued.request.request
                self.registry.joins.check(req.region, req.agent, now)
                try:
                    index = await self.append([issued.entry])
                except CaError:  # the record may still land later: the join is spent (fail closed)
                    self.registry.joins.note_cert(req.region, req.agent)
                    raise
            else:
                index = await self.append([issued.entry])
        except CaError as exc:
            what = f"refused:{exc.reason.value}"
            self._count(what)
            if self.counts[what] % 100 == 1:  # rate-limited: the first, then every 100th
                _logger.warning(
                    "ca_refused",
                    reason=exc.reason.value,
                    count=self.counts[what],
                    subject=subject[:256],
                    detail=exc.detail[:300],
                )
            return encode_response(CertResponse(str(exc)[:512], b"", [], 0))
        cert = issued.cert
        self.registry.add(issued.entry)
        self._count("issued")
        _logger.info(
            "ca_issued",
            serial=cert.serial,
            kid=cert.binding.kid,
            spiffe_id=cert.spiffe_id,
            not_after_ms=cert.not_after_ms,
            log_index=index,
        )
        return encode_response(CertResponse("", cert.der, self.issuer.chain_der(), index))

    async def revoke(
        self, *, serial: str = "", kid: str = "", reason: RevocationReason
    ) -> tuple[list[str], int]:
        """Revoke one certificate (``serial``) or every valid one of ``kid``; append the
        revocations (one record) and return ``(serials, first log index)``."""
        now = self._clock.now_ms()
        targets: list[AgentCert]
        if serial:
            found = self.registry.find(serial)
            if found is None or (kid and found.binding.kid != kid):
                raise CaError(CaReason.CERT, f"no logged certificate with serial {serial}")
            targets = [found]
        else:
            targets = [
                c
                for c in self.registry.certs_of(kid)
                if c.not_after_ms > now and not self.registry.is_revoked(kid, c.serial)
            ]
            if not targets:
                raise CaError(CaReason.CERT, f"no valid certificate of key {kid} to revoke")
        entries = [self.issuer.revoke(c, reason, now_ms=now) for c in targets]
        index = await self.append(entries)
        for e in entries:
            self.registry.add(e)
        self._count("revoked")
        serials = [c.serial for c in targets]
        _logger.warning("ca_revoked", serials=serials, reason=reason.value, log_index=index)
        return serials, index

    async def _handle_admin_join(self, _subject: str, data: bytes) -> bytes:
        now = self._clock.now_ms()
        try:
            req = msgspec.msgpack.decode(data, type=JoinRequest)
            join, entry = self.issuer.issue_join(
                req.region,
                req.agent,
                req.csr,
                lifetime_ms=req.lifetime_ms,
                now_ms=now,
                serial=self._serials(),
            )
            index = await self.append([entry])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return encode_response(CertResponse(f"request: {exc}"[:300], b"", [], 0))
        except CaError as exc:
            return encode_response(CertResponse(str(exc)[:300], b"", [], 0))
        self.registry.add(entry)
        self._count("joins")
        _logger.info(
            "ca_join_issued",
            serial=join.serial,
            spiffe_id=join.spiffe_id,
            not_after_ms=join.not_after_ms,
            log_index=index,
        )
        return encode_response(CertResponse("", join.der, self.issuer.chain_der(), index))

    async def _handle_revoke(self, _subject: str, data: bytes) -> bytes:
        try:
            req = msgspec.msgpack.decode(data, type=RevokeRequest)
            serials, index = await self.revoke(serial=req.serial, kid=req.kid, reason=req.reason)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return msgspec.msgpack.encode(RevokeReply(f"request: {exc}"[:300], [], 0))
        except CaError as exc:
            return msgspec.msgpack.encode(RevokeReply(str(exc)[:300], [], 0))
        return msgspec.msgpack.encode(RevokeReply("", serials, index))

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.stop()
