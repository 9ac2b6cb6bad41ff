"""Identity verdict look-ups of :class:`cctf.client.sdk.TrustClient` (a thin adapter over
:class:`cctf.client.verify_identity.IdentityVerifier` and :func:`cctf.bus.reader.last_message`).

:meth:`IdentityReader.verdict` fetches the latest message stored on the identity verdict subject
``cctf.v1.verdict.<region>.<subject-token>.<kind>`` of the region's verdict stream (direct get, the
``client`` user's permissions, as for DNS verdicts), verifies it (steps 1–17, with the one-shot
maximum age) and returns it. Fail closed like ``TrustClient.check``: :class:`NoVerdict`,
:class:`VerdictRejected` (with the reason) or :class:`FetchError`; when the bus answers with an older
verdict than one already accepted (``rollback`` or ``stale``) and the newer accepted one is still
valid and fresh, that one is returned. One verifier per region keeps the rollback floors (per
``(coordinator, kind, subject)``) and the bundle-sequence floor (per trust domain).

k-of-m: under a :class:`~cctf.client.coordquorum.CoordinatorPolicy` (``TrustClient(coordinators=)``)
the reader fetches the last message of each configured coordinator's own subject
``...<subject-token>.<kind>.<coordinator>``, verifies each (steps 1–17) and uses a verdict only
when ``k`` of them signed the same statement (:func:`cctf.client.identity_quorum.combine_identity`);
less fails closed (``coordinator_quorum``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from cctf.bus.connect import Connection
from cctf.bus.reader import ReadError, last_message
from cctf.bus.streams import verdict_stream_name
from cctf.bus_schemas.envelope import Rejected
from cctf.bus_schemas.evidence import IdentityKind, IdentityVerdict
from cctf.bus_schemas.subjects import check_identity_kind, identity_verdict_subject
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.errors import FALL_BACK, FetchError, NoVerdict, VerdictRejected
from cctf.client.identity_quorum import combine_identity
from cctf.client.verify import VerdictTimes
from cctf.client.verify_identity import CheckedIdentity, IdentityVerifier
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig

__all__ = ["IdentityReader", "is_identity_verdict_subject"]

_Key = tuple[str, str, str]  # (region, kind, subject)
_KINDS: Final = frozenset(f".{k.value}" for k in IdentityKind)


def is_identity_verdict_subject(subject: str) -> bool:
    """Whether a subject of a verdict stream is an identity verdict's (its sixth token is an
    identity kind, lower case; a DNS verdict's is an upper-case qtype; a seventh token is the
    coordinator of a per-coordinator subject): a DNS verdict stream skips those without counting
    them as rejected."""
    parts = subject.split(".", 6)
    return len(parts) >= 6 and "." + parts[5] in _KINDS


class IdentityReader:
    def __init__(
        self,
        nc: Connection,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy,
        times: VerdictTimes,
        *,
        capacity: int,
        cache_size: int,
        request_timeout: float,
        max_age_ms: int,
        on_rejected: Callable[[str, str, str, str], None],
        coordinators: Callable[[], CoordinatorPolicy | None] = lambda: None,
    ) -> None:
        """``coordinators``: the client's current k-of-m policy (``None``: any one coordinator)."""
        self._nc = nc
        self._trust = trust
        self._clock = clock
        self._policy = policy
        self._times = times
        self._capacity = capacity
        self._cache_size = cache_size
        self._timeout = request_timeout
        self.max_age_ms = max_age_ms
        self._on_rejected = on_rejected
        self._coordinators = coordinators
        self._verifiers: dict[str, IdentityVerifier] = {}
        self._cache: OrderedDict[_Key, CheckedIdentity] = OrderedDict()

    def verifier(self, region: str) -> IdentityVerifier:
        v = self._verifiers.get(region)
        if v is None:
            v = IdentityVerifier(
                self._trust,
                self._clock,
                self._policy,
                region,
                capacity=self._capacity,
                times=self._times,
            )
            self._verifiers[region] = v
        return v

    def cached(self, kind: IdentityKind | str, subject: str, region: str) -> IdentityVerdict | None:
        """The latest verified identity verdict, if still valid and not older than the max age."""
        checked = self._cache.get((region, check_identity_kind(kind).value, subject))
        now = self._clock.now_ms()
        if (
            checked is None
            or now >= checked.valid_until_ms
            or now - checked.issued_ms > self.max_age_ms
        ):
            return None
        return checked.verdict

    async def verdict(
        self, kind: IdentityKind | str, subject: str, region: str, *, cached: bool = False
    ) -> IdentityVerdict:
        k = check_identity_kind(kind)
        wire_subject = identity_verdict_subject(region, k, subject)  # SubjectError on bad input
        if cached and (hit := self.cached(k, subject, region)) is not None:
            return hit
        if (policy := self._coordinators()) is not None:
            return await self._verdict_quorum(k, subject, region, policy)
        try:
            raw = await last_message(
                self._nc,
                verdict_stream_name(region),
                wire_subject,
                request_timeout_s=self._timeout,
            )
        except ReadError as exc:
            raise FetchError(str(exc)) from exc
        if raw is None:
            raise NoVerdict(wire_subject)
        try:
            checked = self.verifier(region).check(raw, wire_subject, max_age_ms=self.max_age_ms)
        except Rejected as exc:
            self._on_rejected(exc.reason.value, region, wire_subject, exc.detail)
            if exc.reason in FALL_BACK and (newer := self.cached(k, subject, region)) is not None:
                return newer
            raise VerdictRejected(wire_subject, exc) from exc
        self._remember(region, checked)
        return checked.verdict

    async def _verdict_quorum(
        self, k: IdentityKind, subject: str, region: str, policy: CoordinatorPolicy
    ) -> IdentityVerdict:
        """``verdict`` under a k-of-m policy: the last identity verdict of each coordinator."""
        subjects = [identity_verdict_subject(region, k, subject, c) for c in policy.of]
        stream = verdict_stream_name(region)
        raws = await asyncio.gather(
            *(last_message(self._nc, stream, s, request_timeout_s=self._timeout) for s in subjects),
            return_exceptions=True,
        )
        checked: list[CheckedIdentity] = []
        errors = 0
        for wire_subject, raw in zip(subjects, raws, strict=True):
            if isinstance(raw, BaseException):
                if not isinstance(raw, ReadError):
                    raise raw
                errors += 1
                continue
            if raw is None:
                continue
            try:
                v = self.verifier(region).check(raw, wire_subject, max_age_ms=self.max_age_ms)
            except Rejected as exc:
                self._on_rejected(exc.reason.value, region, wire_subject, exc.detail)
                continue
            checked.append(v)
        base = identity_verdict_subject(region, k, subject)
        if errors == len(subjects):
            raise FetchError(f"no coordinator's identity verdict could be read for {base}")
        try:
            used = combine_identity(policy, [c.verdict for c in checked])
        except Rejected as exc:
            if not checked and errors == 0:
                raise NoVerdict(base) from None
            self._on_rejected(exc.reason.value, region, base, exc.detail)
            if (newer := self.cached(k, subject, region)) is not None:
                return newer
            raise VerdictRejected(base, exc) from exc
        self._remember(region, next(c for c in checked if c.verdict is used.verdict))
        return used.verdict

    def _remember(self, region: str, checked: CheckedIdentity) -> None:
        v = checked.verdict
        key = (region, v.kind.value, v.subject)
        self._cache[key] = checked
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
