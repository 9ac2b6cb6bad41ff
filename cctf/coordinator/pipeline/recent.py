"""Which DNS keys, and which rounds, were voted on recently (pure): the bounds of the silent-round
LKG rule (``cctf.coordinator.pipeline.expiry``, step 2)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cctf.coordinator.lkgconfig import LkgConfig

__all__ = ["RecentKeys"]

_HARD_MAX_KEYS: Final = 1_000_000
_MAX_ROUNDS: Final = 4096  # rounds remembered as voted (far more than a round stays undecided)


class RecentKeys:
    """``(qname, qtype)`` of the DNS keys voted on within the last ``window`` rounds (pure, bounded).

    Each key holds a *mark*: the newest round noted so far when its last vote was noted (so marks
    never decrease in the order keys were last noted, even for a late vote of an older round);
    keys are kept in that order, so the recent ones are read from the end and the stale ones
    dropped from the front, each in O(1)."""

    def __init__(self, window: int, max_keys: int = _HARD_MAX_KEYS) -> None:
        self.window = max(0, window)
        self._max = max(1, max_keys)
        self._marks: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._newest = -1
        self._voted_rounds: OrderedDict[int, None] = OrderedDict()  # rounds with a counted vote

    @classmethod
    def for_config(cls, lkg: LkgConfig, round_ms: int) -> RecentKeys:
        """``lkg.silent_window_ms`` in rounds (rounded up), bounded by ``lkg.max_keys``."""
        return cls(-(-lkg.silent_window_ms // round_ms), lkg.max_keys)

    def __len__(self) -> int:
        return len(self._marks)

    def note(self, qname: str, qtype: str, round_: int) -> None:
        """A vote of ``(qname, qtype)`` in ``round_`` was counted (per vote: O(1))."""
        rounds = self._voted_rounds
        if round_ not in rounds:
            rounds[round_] = None
            if len(rounds) > _MAX_ROUNDS:
                rounds.popitem(last=False)
        marks = self._marks
        if round_ > self._newest:  # once per round: drop the keys that left the window
            self._newest = round_
            horizon = round_ - self.window
            while marks:
                first = next(iter(marks.values()))
                if first >= horizon:
                    break
                marks.popitem(last=False)
        key = (qname, qtype)
        marks[key] = self._newest
        marks.move_to_end(key)
        if len(marks) > self._max:
            marks.popitem(last=False)

    def round_silent(self, round_: int) -> bool:
        """No vote at all was counted for ``round_`` (every agent silent), as far as kept."""
        return round_ not in self._voted_rounds

    def since(self, oldest: int, limit: int) -> list[tuple[str, str]]:
        """Keys noted with a mark ``>= oldest``, most recent first, at most ``limit``."""
        out: list[tuple[str, str]] = []
        for key, mark in reversed(self._marks.items()):
            if mark < oldest or len(out) >= limit:
                break
            out.append(key)
        return out
