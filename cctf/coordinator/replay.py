"""A bounded replay cache of envelope nonces.

A nonce is remembered until the envelope that carried it expires (plus the allowed clock skew); since
expired envelopes are rejected anyway, that is exactly as long as a replay could otherwise succeed.
When full, the cache refuses new entries (fail closed) instead of forgetting live ones.
"""

from __future__ import annotations

import heapq


class ReplayCacheFull(Exception):
    """The cache holds ``capacity`` live nonces; the message must be refused."""


class ReplayCache:
    def __init__(self, capacity: int = 1_000_000, slack_ms: int = 5_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._slack = slack_ms
        self._seen: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _evict(self, now_ms: int) -> None:
        heap, seen = self._heap, self._seen
        while heap and heap[0][0] <= now_ms:
            forget_at, key = heapq.heappop(heap)
            if seen.get(key) == forget_at:
                del seen[key]

    def check_and_add(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record ``key``; return ``False`` if it was already seen (a replay)."""
        self._evict(now_ms)
        if key in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            raise ReplayCacheFull(f"replay cache holds {self._capacity} live nonces")
        forget_at = expires_ms + self._slack
        self._seen[key] = forget_at
        heapq.heappush(self._heap, (forget_at, key))
        return True
