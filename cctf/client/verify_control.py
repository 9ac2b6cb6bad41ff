"""Safe-mode announcement verification: the subscriber's numbered checks (pure, no I/O).

Steps 1–9 are :func:`cctf.client.verify.open_pinned` (the shared
:func:`cctf.bus_schemas.opening.open_signed`) with ``expected_type=safemode`` and
``role=coordinator`` (9: the subject is a control subject ``cctf.v1.control.<region>``). Then:

9.  (continued) when pinned to a region, the subject's region is it (:attr:`Reason.REGION`)
10. strict payload decoding (:attr:`Reason.MALFORMED`)
11. the payload's ``region`` equals the subject's (:attr:`Reason.SUBJECT`)
12. ``coordinator`` equals the signing key's principal, and so does the subject's coordinator token
    of a per-coordinator subject ``cctf.v1.control.<region>.<coordinator>`` (:attr:`Reason.PRINCIPAL`)
13. structure (:attr:`Reason.MALFORMED`): ``scope`` and every ``active`` entry are valid scopes
    (:func:`cctf.bus_schemas.control.check_scope`), ``active`` is sorted and distinct; ``entered``
    ⇒ ``scope`` is in ``active``, ``left`` ⇒ it is not; cause ``alarm`` ⇔ a non-empty ``rule``;
    ``issued_ms < expires_ms``
14. time: ``issued_ms == iat`` and ``expires_ms ≤ exp`` (:attr:`Reason.LIFETIME`); ``now <
    expires_ms`` (:attr:`Reason.EXPIRED`); ``iat·1000 ≤ seq < (min(iat, now) + skew)·1000``
    (:attr:`Reason.SEQUENCE`)
15. rollback per ``(coordinator, region)``: ``seq`` above the last accepted one, except the very same
    envelope bytes again (:attr:`Reason.ROLLBACK`)

Nothing is recorded for a rejected message.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from cctf.bus_schemas.control import (
    SafeModeAnnouncement,
    SafeModeCause,
    SafeModeState,
    check_scope,
    decode_announcement,
)
from cctf.bus_schemas.envelope import Reason, Rejected, TimePolicy
from cctf.bus_schemas.messages import MessageType, PayloadError
from cctf.bus_schemas.subjects import SubjectError
from cctf.client.verify import open_pinned, seq_bounds
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id

__all__ = ["AnnouncementVerifier", "CheckedAnnouncement"]


@dataclass(frozen=True, slots=True)
class CheckedAnnouncement:
    announcement: SafeModeAnnouncement
    kid: str
    duplicate: bool


class AnnouncementVerifier:
    def __init__(
        self,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        region: str | None = None,
        *,
        time_policy: TimePolicy = TimePolicy(),  # noqa: B008 - frozen, immutable
        capacity: int = 10_000,
    ) -> None:
        self.trust = trust
        self.clock = clock
        self.policy = policy
        self.region = None if region is None else check_id(region, "region")
        self.time_policy = time_policy
        self._capacity = capacity
        self._last: OrderedDict[tuple[str, str], tuple[int, bytes]] = OrderedDict()

    def verify(self, data: bytes, subject: str) -> SafeModeAnnouncement:
        return self.check(data, subject).announcement

    def check(self, data: bytes, subject: str) -> CheckedAnnouncement:
        now = self.clock.now_ms()
        opened = open_pinned(  # 1-9 (and 9, pinning)
            data,
            subject,
            expected_type=MessageType.SAFEMODE,
            trust=self.trust,
            policy=self.policy,
            now_ms=now,
            time_policy=self.time_policy,
            region=self.region,
        )
        env, signer, parsed = opened.envelope, opened.signer, opened.subject
        try:  # 10
            ann = decode_announcement(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        if ann.region != parsed.region:  # 11
            raise Rejected(Reason.SUBJECT, f"announcement for {ann.region} on {subject!r}")
        if ann.coordinator != signer.principal or parsed.coordinator not in (  # 12
            None,
            signer.principal,
        ):
            raise Rejected(
                Reason.PRINCIPAL,
                f"coordinator {ann.coordinator} on {subject[:200]!r} signed by {signer.principal}",
            )
        _check_structure(ann)  # 13
        if ann.issued_ms != env.iat or ann.expires_ms > env.exp:  # 14
            raise Rejected(Reason.LIFETIME, "announcement validity is not inside its envelope's")
        if now >= ann.expires_ms:
            raise Rejected(Reason.EXPIRED, f"announcement expired {now - ann.expires_ms} ms ago")
        low, high = seq_bounds(env.iat, now, self.time_policy.max_skew_ms)
        if not low <= ann.seq < high:
            raise Rejected(Reason.SEQUENCE, f"seq {ann.seq} outside {low} <= seq < {high}")
        key = (ann.coordinator, ann.region)  # 15
        digest = hashlib.sha256(data).digest()
        last = self._last.get(key)
        duplicate = False
        if last is not None:
            if ann.seq == last[0] and digest == last[1]:
                duplicate = True
            elif ann.seq <= last[0]:
                raise Rejected(
                    Reason.ROLLBACK, f"seq {ann.seq} for {key} is not above the accepted {last[0]}"
                )
        if not duplicate:
            self._last[key] = (ann.seq, digest)
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
        return CheckedAnnouncement(ann, env.kid, duplicate)


def _check_structure(a: SafeModeAnnouncement) -> None:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.MALFORMED, f"safe-mode announcement for {a.region}: {detail}")

    try:
        check_scope(a.scope)
        for s in a.active:
            check_scope(s)
    except SubjectError as exc:
        raise bad(str(exc)) from None
    if a.active != sorted(set(a.active)):
        raise bad("active scopes are not sorted and distinct")
    if a.state is SafeModeState.ENTERED and a.scope not in a.active:
        raise bad("entered scope missing from the active list")
    if a.state is SafeModeState.LEFT and a.scope in a.active:
        raise bad("left scope still in the active list")
    if (a.cause is SafeModeCause.ALARM) != bool(a.rule):
        raise bad("a rule is named exactly when the cause is an alarm")
    if a.issued_ms >= a.expires_ms:
        raise bad("issued_ms is not before expires_ms")
