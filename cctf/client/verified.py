"""``VerifiedState``: what a :class:`cctf.client.sdk.TrustClient` knows of the verdicts it verified
(no I/O): one :class:`~cctf.client.verify.VerdictVerifier` per region (shared by ``check`` and every
stream, so the client as a whole never goes back), the bounded cache of the latest verified verdict
per ``(region, qname, qtype)``, the counts of accepted and rejected messages and their metrics (the
accepted count is added to ``cctf_client_verdicts_accepted`` at most :data:`METRIC_FLUSH_S` late,
once per region per interval instead of once per verdict)."""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Final

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import Verdict
from cctf.bus_schemas.subjects import normalize_name
from cctf.client.heads import HeadCache
from cctf.client.verify import CheckedVerdict, VerdictTimes, VerdictVerifier
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id, check_qtype
from cctf.telemetry import get_logger, meter

__all__ = ["METRIC_FLUSH_S", "VerifiedState"]

#: Accepted verdicts reach the ``cctf_client_verdicts_accepted`` metric at most this late.
METRIC_FLUSH_S: Final = 0.1

_log = get_logger("cctf.client")

_CacheKey = tuple[str, str, str]  # (region, normalized qname, qtype)


class VerifiedState:
    """The verification state of a client (see the module docstring)."""

    region: str
    times: VerdictTimes
    max_age_ms: int
    accept_lkg: bool

    def __init__(
        self,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy,
        heads: HeadCache,
        *,
        cache_size: int,
        rollback_capacity: int,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be positive")
        self.trust = trust
        self.clock = clock
        self.policy = policy
        self.heads = heads
        #: Messages that failed verification, by :class:`Reason` value (and ``internal_error``).
        self.rejected: Counter[str] = Counter()
        #: Messages that passed verification (``check`` and ``verdicts``).
        self.accepted = 0
        self._rollback_capacity = rollback_capacity
        self._verifiers: dict[str, VerdictVerifier] = {}
        self._cache: OrderedDict[_CacheKey, CheckedVerdict] = OrderedDict()
        self._cache_size = cache_size
        m = meter("cctf.client")
        self._m_rejected = m.create_counter(
            "cctf_client_verdicts_rejected", description="verdicts that failed verification"
        )
        self._m_accepted = m.create_counter(
            "cctf_client_verdicts_accepted", description="verdicts that passed verification"
        )
        self._accepted_unsent: dict[str, int] = {}
        self._accepted_flush_due = False

    def verifier(self, region: str | None = None) -> VerdictVerifier:
        """The (shared) verifier of ``region`` (default: the client's region)."""
        region = self.region if region is None else check_id(region, "region")
        v = self._verifiers.get(region)
        if v is None:
            v = VerdictVerifier(
                self.trust,
                self.clock,
                self.policy,
                region,
                capacity=self._rollback_capacity,
                times=self.times,
                accept_lkg=self.accept_lkg,
                heads=self.heads,
            )
            self._verifiers[region] = v
        return v

    def _verify(
        self,
        region: str,
        data: bytes,
        subject: str,
        *,
        max_age_ms: int | None = None,
        cache: bool = True,
        quiet_head_unknown: bool = False,
    ) -> CheckedVerdict:
        """Verify, count, log and cache; raises :class:`Rejected`."""
        try:
            checked = self.verifier(region).check(data, subject, max_age_ms=max_age_ms)
        except Rejected as exc:
            if not (quiet_head_unknown and exc.reason is Reason.HEAD_UNKNOWN):
                self._count_rejected(exc.reason.value, region, subject, exc.detail)
            raise
        self.accepted += 1
        self._accepted_unsent[region] = self._accepted_unsent.get(region, 0) + 1
        if not self._accepted_flush_due:
            self._schedule_accepted_flush()
        if cache:
            self._remember(region, checked)
        return checked

    def _schedule_accepted_flush(self) -> None:
        """Send the accepted counts to the metric in :data:`METRIC_FLUSH_S` (one add per region
        per interval instead of one per verdict, which cost as much as half a verification)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): at once
            self._flush_accepted()
            return
        self._accepted_flush_due = True
        loop.call_later(METRIC_FLUSH_S, self._flush_accepted)

    def _flush_accepted(self) -> None:
        self._accepted_flush_due = False
        unsent, self._accepted_unsent = self._accepted_unsent, {}
        for region, n in unsent.items():
            self._m_accepted.add(n, {"region": region})

    def raise_for_split_view(self) -> None:
        """Raise :class:`~cctf.client.heads.SplitViewError` (a :class:`Rejected`, reason
        ``split_view``) if a coordinator's log was seen showing two views."""
        self.heads.raise_for_split_view()

    def last_checked(
        self, name: str, qtype: str = "A", region: str | None = None
    ) -> CheckedVerdict | None:
        """The details of the latest verified verdict for ``(name, qtype)`` (its signing key, its
        log position when batch-signed), whatever its age (no I/O)."""
        region = self.region if region is None else check_id(region, "region")
        return self._cache.get((region, normalize_name(name), check_qtype(qtype)))

    def _remember(self, region: str, checked: CheckedVerdict) -> None:
        v = checked.verdict
        key = (region, checked.key[1], v.qtype)
        self._cache[key] = checked
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _count_rejected(self, reason: str, region: str, subject: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._m_rejected.add(1, {"region": region, "reason": reason})
        _log.warning(
            "verdict_rejected", reason=reason, region=region, subject=subject, detail=detail
        )

    def cached(self, name: str, qtype: str = "A", region: str | None = None) -> Verdict | None:
        """The latest verified verdict known for ``(name, qtype)``, if still valid and not older
        than ``max_age_ms`` (no I/O)."""
        region = self.region if region is None else check_id(region, "region")
        checked = self._cache.get((region, normalize_name(name), check_qtype(qtype)))
        now = self.clock.now_ms()
        if (
            checked is None
            or now >= checked.valid_until_ms
            or now - checked.issued_ms > self.max_age_ms
        ):
            return None
        return checked.verdict
