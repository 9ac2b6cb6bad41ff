"""Acks: the final state of every delivered message (pure; times are numbers passed in).

Rules (``docs/architecture.md``, *Coordinator pipeline*):

* A delivery the coordinator refuses (bad envelope, replay, unconfigured names, shed, ...) is
  terminated at once with its reason (``AckTerm``: redelivery could not change the outcome).
* A verified ballot whose votes were counted is **held** until the verdict of every key it was
  counted in is settled (published, or given up: expired, unpublishable); then it is acknowledged.
  A key settles on its own: a verdict that cannot be published never holds ballots of other keys.
  A ballot counted in no open key (all its votes duplicates or late) is acknowledged at once.
* While held, a ballot is refreshed (``+WPI``) every ``refresh_ms`` so ``ack_wait`` can stay short,
  but never longer than ``hold_limit_ms``: then it is terminated (``hold_expired``). Nothing is held
  forever, so the consumer's ``max_ack_pending`` cannot fill with stuck ballots.
* A redelivery of a held ballot (same token) is not processed again; the newer handle replaces the
  held one. Any other delivery whose ``num_delivered`` reached ``max_deliver`` is a poison message
  (it has been delivered that often without reaching a final state): terminated (``poison``), not
  processed.
* At stop, held ballots are negatively acknowledged so a successor gets them promptly.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["HOLD_EXPIRED", "POISON", "AckLedger", "Arrival", "Due"]

T = TypeVar("T", bound=Hashable)
K = TypeVar("K", bound=Hashable)

POISON: Final = "poison"
HOLD_EXPIRED: Final = "hold_expired"
#: A valid ballot whose round had already closed here without a tally for its keys (e.g. a coordinator
#: restarted after that round's deadline, its durable delivering the ballots of its downtime): no
#: verdict of this coordinator will ever count it: acknowledged and counted as expired ``late``
#: (``cctf_ballots_expired_total``), not silently acked.
LATE: Final = "late"


class Arrival(enum.Enum):
    PROCESS = "process"
    """New work: verify and tally it."""
    REDELIVERED = "redelivered"
    """A redelivery of a ballot still held: replace the handle, do nothing else."""
    POISON = "poison"
    """Delivered ``max_deliver`` times without a final state: terminate it."""


@dataclass(frozen=True, slots=True)
class Due(Generic[T]):
    refresh: list[T]
    """Held tokens to refresh now (``+WPI``)."""
    expired: list[T]
    """Held tokens past ``hold_limit_ms``: terminate them (``hold_expired``)."""


class _Hold(Generic[K]):
    __slots__ = ("keys", "next_refresh", "remaining", "until")

    def __init__(self, until: int, next_refresh: int) -> None:
        self.remaining = 0
        self.until = until
        self.next_refresh = next_refresh
        self.keys: list[K] = []


class AckLedger(Generic[T, K]):
    """Tokens ``T`` name deliveries (e.g. ``(region, stream sequence)``); keys ``K`` name tallies."""

    def __init__(self, *, max_deliver: int, refresh_ms: int, hold_limit_ms: int) -> None:
        if max_deliver < 2 or refresh_ms < 1 or hold_limit_ms < 1:
            raise ValueError("max_deliver >= 2, refresh_ms >= 1 and hold_limit_ms >= 1 are needed")
        self._max_deliver = max_deliver
        self._refresh = refresh_ms
        self._limit = hold_limit_ms
        self._held: dict[T, _Hold[K]] = {}
        self._waiters: dict[K, list[T]] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def open_keys(self) -> int:
        return len(self._waiters)

    def is_held(self, token: T) -> bool:
        return token in self._held

    def arrival(self, token: T, num_delivered: int) -> Arrival:
        if token in self._held:
            return Arrival.REDELIVERED
        if num_delivered >= self._max_deliver:
            return Arrival.POISON
        return Arrival.PROCESS

    def hold(self, token: T, keys: Iterable[K], now_ms: int) -> bool:
        """Hold ``token`` until every key in ``keys`` settles. ``False``: no key, ack it now."""
        distinct = list(dict.fromkeys(keys))
        if not distinct:
            return False
        h: _Hold[K] = _Hold(now_ms + self._limit, now_ms + self._refresh)
        waiters = self._waiters
        for key in distinct:
            tokens = waiters.get(key)
            if tokens is None:
                waiters[key] = [token]
            else:
                tokens.append(token)
        h.keys = distinct
        h.remaining = len(distinct)
        self._held[token] = h
        return True

    def settle(self, key: K) -> list[T]:
        """The verdict of ``key`` is out (or given up): the tokens to acknowledge now."""
        done: list[T] = []
        for token in self._waiters.pop(key, ()):
            h = self._held.get(token)
            if h is None:
                continue
            h.remaining -= 1
            if h.remaining == 0:
                del self._held[token]
                done.append(token)
        return done

    def due(self, now_ms: int) -> Due[T]:
        refresh: list[T] = []
        expired: list[T] = []
        for token, h in self._held.items():
            if now_ms >= h.until:
                expired.append(token)
            elif now_ms >= h.next_refresh:
                h.next_refresh = now_ms + self._refresh
                refresh.append(token)
        for token in expired:
            self._forget(token)
        return Due(refresh, expired)

    def _forget(self, token: T) -> None:
        h = self._held.pop(token)
        for key in h.keys:
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(token)
                if not waiters:
                    del self._waiters[key]

    def drain(self) -> list[T]:
        """Forget everything held; returns the tokens (at stop: nak them)."""
        tokens = list(self._held)
        self._held.clear()
        self._waiters.clear()
        return tokens
