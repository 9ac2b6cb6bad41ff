"""Safe-mode announcements for relying parties: the current state of a region and a verified feed.

The coordinator announces every change of a region's safe-mode scopes on ``cctf.v1.control.<region>``
(stored in ``CCTF_CONTROL``) and re-announces each region's state periodically, so the *last*
announcement of a region is its whole state (its ``active`` list). :class:`SafeModeReader` fetches it
(direct get) and verifies it (:class:`~cctf.client.verify_control.AnnouncementVerifier`, numbered
steps, rollback per (coordinator, region)); :meth:`SafeModeReader.watch` streams verified
announcements (an ordered consumer), skipping and counting the ones that fail verification.
``TrustClient.safe_mode`` / ``TrustClient.safe_mode_updates`` are the SDK's entry points.

k-of-m: under the client's :class:`~cctf.client.coordquorum.CoordinatorPolicy` the reader fetches
the last announcement of each configured coordinator's own subject
``cctf.v1.control.<region>.<coordinator>``, verifies each and combines them
(:func:`cctf.client.safemode_quorum.combine_safe_mode`: a scope is active when ``k`` coordinators list
it; fewer than ``k`` valid announcements fail closed, ``coordinator_quorum``); ``watch`` then follows
every coordinator's subject (``cctf.v1.control.<region>.*``) and yields the verified announcements of
the configured coordinators.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from cctf.bus.connect import Connection
from cctf.bus.reader import Deliver, ReadError, last_message, open_ordered_feed
from cctf.bus.streams import CONTROL_STREAM
from cctf.bus_schemas.control import SafeModeAnnouncement
from cctf.bus_schemas.envelope import Rejected
from cctf.bus_schemas.subjects import control_subject
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.errors import FetchError, NoVerdict, VerdictRejected
from cctf.client.safemode_quorum import combine_safe_mode
from cctf.client.verify_control import AnnouncementVerifier
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id
from cctf.telemetry import get_logger

__all__ = ["SafeModeReader", "SafeModeStatus"]

_log = get_logger("cctf.client")


@dataclass(frozen=True, slots=True)
class SafeModeStatus:
    """A region's verified safe-mode state: ``active`` scopes (``""``: the whole region)."""

    announcement: SafeModeAnnouncement
    combined: tuple[str, ...] | None = None
    """k-of-m: the scopes at least ``k`` coordinators list (``announcement`` is the newest)."""
    signers: tuple[str, ...] = ()
    """k-of-m: the coordinators whose announcements were combined."""

    @property
    def region(self) -> str:
        return self.announcement.region

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(self.announcement.active) if self.combined is None else self.combined

    def covers(self, name: str) -> bool:
        """Whether ``name`` (normalised DNS name or SPIFFE ID) is in safe mode in this region."""
        active = self.active
        return "" in active or name in active


class SafeModeReader:
    def __init__(
        self,
        nc: Connection,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy,
        *,
        request_timeout: float = 2.0,
        coordinators: Callable[[], CoordinatorPolicy | None] = lambda: None,
    ) -> None:
        """``coordinators``: the client's current k-of-m policy (``None``: one coordinator)."""
        self._coordinators = coordinators
        self._nc = nc
        self._trust = trust
        self._clock = clock
        self._policy = policy
        self._timeout = request_timeout
        self._verifiers: dict[str, AnnouncementVerifier] = {}
        self.rejected: Counter[str] = Counter()

    def verifier(self, region: str) -> AnnouncementVerifier:
        v = self._verifiers.get(region)
        if v is None:
            v = AnnouncementVerifier(self._trust, self._clock, self._policy, region=region)
            self._verifiers[region] = v
        return v

    async def status(self, region: str) -> SafeModeStatus:
        """The region's last announcement, verified. Raises :class:`NoVerdict` (none stored),
        :class:`VerdictRejected` (fails verification: fail closed) or :class:`FetchError`."""
        region = check_id(region, "region")
        if (policy := self._coordinators()) is not None:
            return await self._status_quorum(region, policy)
        subject = control_subject(region)
        try:
            data = await last_message(
                self._nc, CONTROL_STREAM, subject, request_timeout_s=self._timeout
            )
        except ReadError as exc:
            raise FetchError(str(exc)) from exc
        if data is None:
            raise NoVerdict(subject)
        try:
            return SafeModeStatus(self.verifier(region).verify(data, subject))
        except Rejected as rej:
            self.rejected[rej.reason.value] += 1
            raise VerdictRejected(subject, rej) from None

    async def _status_quorum(self, region: str, policy: CoordinatorPolicy) -> SafeModeStatus:
        subjects = [control_subject(region, c) for c in policy.of]
        raws = await asyncio.gather(
            *(
                last_message(self._nc, CONTROL_STREAM, s, request_timeout_s=self._timeout)
                for s in subjects
            ),
            return_exceptions=True,
        )
        anns: list[SafeModeAnnouncement] = []
        errors = 0
        for subject, raw in zip(subjects, raws, strict=True):
            if isinstance(raw, BaseException):
                if not isinstance(raw, ReadError):
                    raise raw
                errors += 1
            elif raw is not None:
                try:
                    anns.append(self.verifier(region).verify(raw, subject))
                except Rejected as rej:
                    self.rejected[rej.reason.value] += 1
        base = control_subject(region)
        if errors == len(subjects):
            raise FetchError(f"no coordinator's safe-mode state could be read for {base}")
        if not anns and errors == 0:
            raise NoVerdict(base)
        try:
            c = combine_safe_mode(policy, anns)
        except Rejected as rej:
            self.rejected[rej.reason.value] += 1
            raise VerdictRejected(base, rej) from None
        return SafeModeStatus(c.announcement, c.active, c.signers)

    async def watch(
        self, region: str, *, deliver: Deliver = "last_per_subject"
    ) -> AsyncIterator[SafeModeAnnouncement]:
        """Verified announcements of ``region`` as they come (by default starting with the last
        stored one); those failing verification are logged, counted and skipped."""
        region = check_id(region, "region")
        policy = self._coordinators()
        subject = control_subject(region) if policy is None else control_subject(region) + ".*"
        try:
            feed = await open_ordered_feed(
                self._nc, CONTROL_STREAM, subject, deliver=deliver, request_timeout_s=self._timeout
            )
        except ReadError as exc:
            raise FetchError(str(exc)) from exc
        async with feed:
            async for msg in feed:
                try:
                    ann = self.verifier(region).verify(msg.data, msg.subject)
                    if policy is None or ann.coordinator in policy.of:
                        yield ann
                except Rejected as rej:
                    self.rejected[rej.reason.value] += 1
                    _log.warning(
                        "announcement_rejected", reason=rej.reason.value, detail=rej.detail[:300]
                    )
