"""Replay and duplicate recognition (pure; times are numbers passed in).

:class:`ReplayCache` is a bounded cache of envelope nonces. A nonce is remembered, with the digest of
the envelope that carried it, until that envelope expires (plus the allowed clock skew); since expired
envelopes are rejected anyway, that is exactly as long as a replay could otherwise succeed. When
full, the cache refuses new entries (fail closed) instead of forgetting live ones.
:meth:`ReplayCache.admit` tells the two kinds of repeat apart (docs/threat-model.md, *Duplicates
versus replays*):

* the same ``(kid, nonce)`` with the same envelope digest is a **duplicate**: the very message seen
  before, e.g. its live (core) copy and its durable (JetStream) copy, or a publish retried with the
  same bytes. Counting it again changes nothing; it is recognised, never counted twice, never an
  attack;
* the same ``(kid, nonce)`` with a different digest is a **replay**: another message reusing a nonce.

:class:`DuplicateIndex` remembers, per envelope digest, what became of the first copy the coordinator
processed (the tally keys it was counted in, or the reason it was refused), so the other copy is
settled the same way without being verified or counted again. It is bounded and forgets the oldest
entry when full: forgetting is safe, because a copy it no longer knows is verified again and the
replay cache then recognises it as a duplicate (and the tally counts one vote per voter and key).
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Admission", "DuplicateIndex", "ReplayCache", "ReplayCacheFull", "Seen"]

K = TypeVar("K", bound=Hashable)


class ReplayCacheFull(Exception):
    """The cache holds ``capacity`` live nonces; the message must be refused."""


class Admission(enum.Enum):
    FRESH = "fresh"
    """Never seen: recorded now."""
    DUPLICATE = "duplicate"
    """Seen before with the same envelope digest: the same message again."""
    REPLAY = "replay"
    """Seen before with another envelope digest: a different message reusing the nonce."""


class ReplayCache:
    def __init__(self, capacity: int = 1_000_000, slack_ms: int = 5_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._slack = slack_ms
        self._seen: dict[bytes, tuple[int, bytes]] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _evict(self, now_ms: int) -> None:
        heap, seen = self._heap, self._seen
        while heap and heap[0][0] <= now_ms:
            forget_at, key = heapq.heappop(heap)
            entry = seen.get(key)
            if entry is not None and entry[0] == forget_at:
                del seen[key]

    def admit(self, key: bytes, digest: bytes, expires_ms: int, now_ms: int) -> Admission:
        """Record ``key`` (with the digest of its envelope) or say how it was seen before.
        Raises :class:`ReplayCacheFull` for a new key when the cache is full."""
        self._evict(now_ms)
        entry = self._seen.get(key)
        if entry is not None:
            return Admission.DUPLICATE if entry[1] == digest else Admission.REPLAY
        if len(self._seen) >= self._capacity:
            raise ReplayCacheFull(f"replay cache holds {self._capacity} live nonces")
        forget_at = expires_ms + self._slack
        self._seen[key] = (forget_at, digest)
        heapq.heappush(self._heap, (forget_at, key))
        return Admission.FRESH

    def check_and_add(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record ``key``; return ``False`` if it was already seen (any repeat is a replay: for
        messages that are never delivered twice, e.g. operator commands)."""
        return self.admit(key, b"", expires_ms, now_ms) is Admission.FRESH


@dataclass(frozen=True, slots=True)
class Seen(Generic[K]):
    """What became of the first copy of a message: counted in ``keys``, or refused (``reason``)."""

    keys: tuple[K, ...] = ()
    reason: str | None = None
    detail: str = ""


class DuplicateIndex(Generic[K]):
    """Envelope digest -> :class:`Seen`, for ``ttl_ms`` after the first copy (at most ``capacity``
    entries: the oldest is forgotten first)."""

    def __init__(self, capacity: int, ttl_ms: int) -> None:
        if capacity < 1 or ttl_ms < 1:
            raise ValueError("capacity and ttl_ms must be positive")
        self._capacity = capacity
        self._ttl = ttl_ms
        self._entries: OrderedDict[bytes, tuple[int, Seen[K]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now_ms: int) -> None:
        entries = self._entries
        while entries:
            digest, (until, _seen) = next(iter(entries.items()))
            if until > now_ms and len(entries) <= self._capacity:
                break
            del entries[digest]

    def get(self, digest: bytes, now_ms: int) -> Seen[K] | None:
        self._evict(now_ms)
        entry = self._entries.get(digest)
        return None if entry is None else entry[1]

    def record(self, digest: bytes, seen: Seen[K], now_ms: int) -> None:
        """Remember the first copy's fate (a later record of the same digest is ignored)."""
        if digest in self._entries:
            return
        self._entries[digest] = (now_ms + self._ttl, seen)
        self._evict(now_ms)
