"""Decide: a tally decision -> the wire verdict and its message id (pure; time through a Clock).

* ``seq`` and ``issued_ms`` agree: ``seq // 1000 == issued_ms`` always (``seq`` is
  ``max(last + 1, now_ms * 1000)``; if more than 1000 verdicts fall in one millisecond, ``issued_ms``
  follows ``seq``, a fraction of a millisecond ahead; after the clock stepped back the sequence
  starts again from the clock, :class:`~cctf.coordinator.verdicts.SequenceClock`). The verifier only admits rounds up to the
  current one plus one, so a verdict's ``round`` never starts more than one round after ``issued_ms``.
* The message id is derived from what the verdict decides, never from a counter:
  ``v1.<name-token>.<qtype>.<round>.<region>.<coordinator>`` with the subject layer's name token
  (injective, at most 253 characters: a digest form for long names), so a retried publish
  de-duplicates in the verdict stream (``Nats-Msg-Id``, duplicate window), while the verdicts of
  several coordinators running at once (k-of-m, docs/wire-protocol.md §5.6) are all stored.
"""

from __future__ import annotations

from cctf.bus_schemas.messages import Verdict
from cctf.bus_schemas.subjects import name_token
from cctf.clock import Clock
from cctf.coordinator.tally import Decision, QuorumRule, TallyKey
from cctf.coordinator.verdicts import SequenceClock, build_verdict

__all__ = ["Decider", "verdict_msg_id"]


def verdict_msg_id(qname: str, qtype: str, round_: int, region: str, coordinator: str) -> str:
    return f"v1.{name_token(qname)}.{qtype}.{round_}.{region}.{coordinator}"


class Decider:
    def __init__(
        self,
        rule: QuorumRule,
        coordinator: str,
        ttl_ms: int,
        clock: Clock,
        seq: SequenceClock | None = None,
    ) -> None:
        """``seq``: a sequence clock shared with other deciders of this coordinator (identity)."""
        self._rule = rule
        self._coordinator = coordinator
        self._ttl = ttl_ms
        self._clock = clock
        self._seq = SequenceClock(clock) if seq is None else seq

    def verdict(self, key: TallyKey, decision: Decision) -> Verdict:
        """Raises :class:`~cctf.coordinator.verdicts.VerdictError` on an inconsistent decision."""
        now = self._clock.now_ms()
        seq = self._seq.next(now)
        issued = max(now, seq // 1000)
        return build_verdict(decision, key, self._rule, self._coordinator, issued, self._ttl, seq)
