"""Intake: one turn of ballots and evidence (durable deliveries and live copies) -> what to settle.

Synchronous (no I/O): the service's process loop takes a turn from the live path and the fair
queues, calls :meth:`Intake.turn`, then acknowledges or terminates what it returns. Per message:

1. a durable delivery is checked against the ack ledger (a redelivery of a held ballot is kept
   with its hold; a delivery past ``max_deliver`` is poison);
2. a message whose bytes were already seen (its other copy: live or durable) is settled as its
   first copy was (:meth:`Intake.duplicate`), never counted twice and never a replay;
3. the verify stage (numbered steps) refuses it with a reason, or yields its votes;
4. its votes are counted in the tallies; a durable delivery is held until the verdicts of its keys
   are published, or acknowledged at once when it holds nothing (a round closed here without a
   tally counts it as expired ``late``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cctf import telemetry
from cctf.bus.consumer import Delivery
from cctf.bus_schemas.envelope import Reason
from cctf.coordinator.counters import Counters
from cctf.coordinator.pipeline.acks import LATE, POISON, AckLedger, Arrival
from cctf.coordinator.pipeline.live import DURABLE, LIVE, LiveCopy, envelope_digest
from cctf.coordinator.pipeline.tallies import AnyKey, Tallies
from cctf.coordinator.pipeline.verify import Refused, VerifyStage
from cctf.coordinator.replay import DuplicateIndex, Seen
from cctf.coordinator.tally import Decision

__all__ = [
    "DUPLICATE_REASON",
    "PART_BYTES",
    "STOP_LEFT_BYTES",
    "Intake",
    "Token",
    "Turn",
    "turn_parts",
]

Token = tuple[str, int]
DUPLICATE_REASON: Final = Reason.DUPLICATE.value
_MAX_DETAIL: Final = 300
#: How long the fate of a message's first copy is remembered for its other copy (a durable copy can
#: come seconds later: a stream-leader election, a redelivery), and at most how many.
_DUPLICATE_TTL_MS: Final = 120_000
_DUPLICATE_CAPACITY: Final = 262_144

#: A turn is processed in parts of about this many message bytes (a 500-name ballot is ~86 KB),
#: the service yielding to the event loop between parts: the keys one part decided go on to the
#: policy, signing and publishing stages before the next ballots are verified, instead of after
#: the whole turn (a turn may hold every region's ballot and its other copies).
PART_BYTES: Final = 64 * 1024
#: Within a part, the first message that decides keys ends the intake's call when at least this
#: many message bytes are behind it (~1 ms of verifying and tallying, a 100-name ballot is ~20 KB):
#: the decided verdicts go out first, then the rest of the part is processed whole (so a flood of
#: small ballots still gets one output per part, not one per decision).
STOP_LEFT_BYTES: Final = 16 * 1024

_log = telemetry.get_logger("cctf.coordinator")


def turn_parts(
    turn: Sequence[tuple[str, Delivery | LiveCopy]], part_bytes: int = PART_BYTES
) -> list[list[tuple[str, Delivery | LiveCopy]]]:
    """``turn`` cut, in order, into parts of at least ``part_bytes`` message bytes (the last may be
    smaller); every message is in exactly one part."""
    parts: list[list[tuple[str, Delivery | LiveCopy]]] = []
    part: list[tuple[str, Delivery | LiveCopy]] = []
    size = 0
    for item in turn:
        part.append(item)
        size += len(item[1].data)
        if size >= part_bytes:
            parts.append(part)
            part, size = [], 0
    if part:
        parts.append(part)
    return parts


@dataclass(slots=True)
class Turn:
    """What one turn leaves to settle: acknowledge, terminate (with a reason), decided keys."""

    to_ack: list[Delivery] = field(default_factory=list)
    to_term: list[tuple[Delivery, str]] = field(default_factory=list)
    decided: list[tuple[AnyKey, Decision]] = field(default_factory=list)
    #: How many messages of the turn were processed (fewer than given only with
    #: ``stop_if_left``: the rest is for the next call).
    used: int = 0


class Intake:
    """The per-message steps of the module doc over the service's shared state (``handles``: held
    deliveries by token; ``last_vote``: when each key last got a vote, the keys still waiting)."""

    def __init__(
        self,
        *,
        verify: VerifyStage,
        tallies: Tallies,
        ledger: AckLedger[Token, AnyKey],
        verdict_ttl_ms: int,
        counts: Counters,
        handles: dict[Token, Delivery],
        last_vote: dict[AnyKey, float],
        log: Callable[..., None],
    ) -> None:
        self._verify = verify
        self._tallies = tallies
        self._ledger = ledger
        self._dups: DuplicateIndex[AnyKey] = DuplicateIndex(
            _DUPLICATE_CAPACITY, max(_DUPLICATE_TTL_MS, 4 * verdict_ttl_ms)
        )
        self._counts = counts
        self._handles = handles
        self._last_vote = last_vote
        self._log = log

    def duplicate(self, d: Delivery | LiveCopy, seen: Seen[AnyKey], now_ms: int) -> str | None:
        """The other copy of a message already processed: ``None`` (nothing to settle now: a live
        copy, or a durable copy held on the keys still waiting for their verdict), ``""`` (ack it)
        or the first copy's refusal reason (terminate it with that reason)."""
        if isinstance(d, LiveCopy):
            self._counts.duplicate(LIVE)
            return None
        self._counts.duplicate(DURABLE)
        if seen.reason is not None:
            return seen.reason
        waiting = [k for k in seen.keys if k in self._last_vote]  # counted, not settled yet
        if self._ledger.hold(d.token, waiting, now_ms):
            self._handles[d.token] = d
            return None
        return ""

    def turn(
        self,
        turn: Sequence[tuple[str, Delivery | LiveCopy]],
        arrival: float,
        clock_ms: int,
        *,
        stop_if_left: int | None = None,
    ) -> Turn:
        """Steps 1-4 for every message of ``turn`` (``arrival``: monotonic seconds; ``clock_ms``:
        the wall clock, for the duplicate index). ``stop_if_left``: stop after the first message
        that decided keys if the messages behind it hold at least this many bytes
        (:attr:`Turn.used` says how many were processed), so that their verdicts go out before
        those are verified (the k-th ballot's decisions do not wait for the 4th and 5th ballots of
        the same turn); ``None``: never stop."""
        now_ms = int(arrival * 1000)
        n, ledger, dups, out = self._counts, self._ledger, self._dups, Turn(used=len(turn))
        left = sum(len(d.data) for _r, d in turn) if stop_if_left is not None else 0
        for i, (_region, d) in enumerate(turn):
            if out.decided and stop_if_left is not None and left >= stop_if_left:
                out.used = i
                break
            left -= len(d.data)
            live = isinstance(d, LiveCopy)
            if not isinstance(d, LiveCopy):  # step 1
                kind = ledger.arrival(d.token, d.num_delivered)
                if kind is Arrival.REDELIVERED:
                    self._handles[d.token] = d
                    continue
                if kind is Arrival.POISON:
                    out.to_term.append((d, POISON))
                    continue
            digest = envelope_digest(d.data)
            seen = dups.get(digest, clock_ms)
            if seen is not None:  # step 2
                settle = self.duplicate(d, seen, now_ms)
                if settle is not None and not isinstance(d, LiveCopy):
                    if settle:  # counted (once per stored message) as its first copy's reason
                        n.reject(settle)
                        out.to_term.append((d, settle))
                    else:
                        out.to_ack.append(d)
                continue
            try:  # step 3
                checked = self._verify.check(d.data, d.subject, digest)
            except Exception as exc:  # a bug, never input: count, log, terminate
                _log.exception("vote_failed", subject=d.subject[:256], error=repr(exc)[:200])
                if not isinstance(d, LiveCopy):
                    out.to_term.append((d, "internal"))
                continue
            if isinstance(checked, Refused) and checked.reason == DUPLICATE_REASON:
                # the same bytes as a message the index no longer knows: already counted once
                n.duplicate(LIVE if live else DURABLE)
                if not isinstance(d, LiveCopy):
                    out.to_ack.append(d)
                continue
            if isinstance(checked, Refused):
                dups.record(digest, Seen(reason=checked.reason), clock_ms)
                n.ignore_all(checked.ignored)
                self._log(
                    "vote_rejected:" + checked.reason,
                    reason=checked.reason,
                    subject=d.subject[:256],
                    detail=checked.detail[:_MAX_DETAIL],
                    bytes=len(d.data),
                    copy=LIVE if live else DURABLE,
                )
                if isinstance(d, LiveCopy):  # its durable copy is terminated (and counted) later
                    n.live_reject(checked.reason)
                    continue
                n.reject(checked.reason)
                out.to_term.append((d, checked.reason))
                continue
            n.ballots += 1  # step 4
            n.live_ballots += live
            n.ignore_all(checked.ignored)
            counted = self._tallies.count(checked)
            dups.record(digest, Seen(keys=tuple(counted.keys)), clock_ms)
            n.votes += len(counted.keys)
            self._last_vote.update(dict.fromkeys(counted.keys, arrival))
            out.decided.extend(counted.decided)
            n.equivocations += len(counted.equivocations)
            for voter, what in counted.equivocations:
                self._log("equivocation", voter=voter, qname=what[:256])
            n.ignore_all(counted.ignored)
            if counted.unheard and not counted.keys:  # its round closed here without a tally:
                n.expire(LATE)  # no verdict of ours holds it, count it as expired
                if not isinstance(d, LiveCopy):
                    out.to_ack.append(d)
                continue
            if isinstance(d, LiveCopy):
                continue  # no handle to hold: its durable copy is held or acked when it comes
            if ledger.hold(d.token, counted.keys, now_ms):
                self._handles[d.token] = d
            else:
                out.to_ack.append(d)
        n.flush()
        return out
