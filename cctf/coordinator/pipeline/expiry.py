"""Expiry: which rounds the deadline finalizes now, a clock that stepped back, and rounds in which
no ballot arrived at all (pure; the service calls :func:`expire_rounds` every tick).

1. ``due`` (the highest round whose deadline passed by the clock) below the tally books' horizon:
   the clock stepped back; both books rewind (``cctf.coordinator.rewind``) and nothing is expired
   this tick (docs/architecture.md, *Clock step back*).
2. **Silent rounds.** A key with a Last-Known-Good basis whose round got no ballot at all (every
   agent silent: votes stopped altogether, the region cut off, the agents down) would never be
   decided: no tally, no verdict, no LKG attestation. Before expiring, an empty tally is opened for
   each such key in the rounds now due (at most ``lookback + 1`` of them, so a clock jump forward
   does not open hundreds of rounds); its expiry decides UNAVAILABLE (every voter timed out) and the
   LKG stage attests the basis as for any timeout (or fails closed at the cap). Only rounds after
   the key's basis round: an older round is not LKG's to decide. Only in rounds in which **no
   vote at all** was counted (if the agents voted on other names, a name they did not ask about is
   not in an outage: a one-shot name, or a name dropped from their list), and only keys **voted on
   recently**
   (``cctf.coordinator.pipeline.recent.RecentKeys``: a vote of the key counted within ``lkg.silent_window_ms``, default the default cap
   of 15 min), at most ``lkg.silent_max_keys`` keys per round (most recently voted first; the rest
   get no attestation: fail closed). Re-deciding every key with a basis each round until its cap,
   whatever the agents voted, cost ≈ 240 ms per round with 50k one-shot names.
3. Every live tally of a round ``<= due`` is finalized (``Tallies.expire``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cctf.coordinator.pipeline.tallies import AnyKey, Tallies
from cctf.coordinator.tally import Decision

__all__ = ["Expired", "expire_rounds"]


@dataclass(slots=True)
class Expired:
    decided: list[tuple[AnyKey, Decision]] = field(default_factory=list)
    rewound_from: int | None = None  # the clock stepped back from this horizon
    kept_closed: int = 0  # rounds kept closed by the rewind
    silent: int = 0  # keys decided with no ballot in their round


def expire_rounds(
    tallies: Tallies,
    due: int,
    silent_keys: Iterable[tuple[tuple[str, str], int]] = (),
    lookback: int = 2,
    round_silent: Callable[[int], bool] = lambda _round: True,
) -> Expired:
    """``silent_keys``: ``((qname, qtype), basis_round)`` of the keys with an LKG basis the rule
    may decide; ``round_silent(r)``: no ballot at all was counted for round ``r``."""
    out = Expired()
    through = tallies.expired_through
    if due < through:  # 1
        out.rewound_from = through
        out.kept_closed = tallies.rewind(due)
        return out
    if due == through:
        return out
    keys = list(silent_keys)
    if keys:  # 2
        book = tallies.dns
        for r in range(max(through + 1, due - lookback, 0), due + 1):
            if not round_silent(r):  # agents voted (on other keys): not an outage of these
                continue
            out.silent += sum(
                book.open_empty(qname, qtype, r) for (qname, qtype), basis in keys if r > basis
            )
    out.decided = tallies.expire(due)  # 3
    return out
