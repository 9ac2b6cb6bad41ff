"""Live: the coordinator's core-subscribed copy of every ballot and evidence message (design D1).

Agents publish each ballot once, with a JetStream publish; that publish is also a core message, and
the coordinator's core subscription (:func:`cctf.bus.live.subscribe_live`) receives it at once, with
or without a stream leader. The same message then comes a second time through the region's durable
consumer (the durable copy: for replay after a restart, late decisions, and whatever the live path
missed). Both copies enter the same verify/tally path; the first one processed decides, and the
other is recognised by its envelope digest (:class:`~cctf.coordinator.replay.DuplicateIndex`):

* a durable copy whose live copy was counted is *held* on the keys it was counted in that are still
  waiting for their verdict (acknowledged once they settle) or acknowledged at once when every such
  verdict is already out; one whose live copy was refused is terminated with the same reason;
* a live copy whose durable copy came first is dropped;

either way it is counted once in ``duplicates`` (by copy) and never counted twice in a tally, never
a replay. A live copy has no acknowledgement handle: it is never held or terminated, and its refusals
are counted apart (``live_rejected``) so that ``rejected``/``terminated`` stay one count per stored
message. :class:`LiveIngest` holds the bounded per-region queues of live copies (pure).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cctf.coordinator.pipeline.ingest import FairQueues

__all__ = ["DURABLE", "LIVE", "LiveCopy", "LiveIngest", "envelope_digest"]

#: Labels of the two copies of a message (``duplicates`` counter keys).
LIVE: Final = "live"
DURABLE: Final = "durable"


def envelope_digest(data: bytes) -> bytes:
    """SHA-256 of a message's bytes: what makes two copies one message."""
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class LiveCopy:
    """One core-delivered ballot or evidence message (no acknowledgement handle)."""

    region: str
    subject: str
    data: bytes


class LiveIngest:
    """Bounded queues of live copies, one per vote region, served in turn (as
    :class:`~cctf.coordinator.pipeline.ingest.FairQueues`). What does not fit is dropped and
    counted: its durable copy still comes through the stream."""

    def __init__(self, regions: Sequence[str], *, limit: int, batch: int) -> None:
        self.queues: FairQueues[LiveCopy] = FairQueues(regions, limit=limit, batch=batch)
        self.dropped = 0

    def offer(self, region: str, subject: str, data: bytes) -> bool:
        if self.queues.room(region) <= 0:
            self.dropped += 1
            return False
        self.queues.offer(region, (LiveCopy(region, subject, data),))
        return True

    def take(self) -> list[tuple[str, LiveCopy]]:
        return self.queues.take()

    def __len__(self) -> int:
        return len(self.queues)
