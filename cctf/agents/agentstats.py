"""Value types of the resolver agent loop (:mod:`cctf.agents.resolver`): its counters, the report of
one round's ballots, a round's sealed parts waiting to be published."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from cctf.agents.evidence_run import EvidenceStats
from cctf.agents.publishing import PublishFailure
from cctf.bus_schemas.messages import VoteStatus

__all__ = [
    "LATE_ACK_ROUNDS",
    "NOT_RETRIED",
    "AgentStats",
    "BallotReport",
    "Prepared",
    "RegionStream",
    "cancel_quietly",
    "log_report",
]


class RegionStream(Enum):
    """Default of ``ResolverAgent(stream=...)``: the agent's own region's vote stream."""

    OWN = "own"


@dataclass(frozen=True)
class BallotReport:
    """What happened to one round's ballots (passed to ``on_ballot``)."""

    round: int
    votes: int
    ok: bool  # every part acknowledged by JetStream (possibly as a duplicate)
    publish_ms: float  # from the first attempt to the last ack (or to giving up)
    attempts: int  # publish attempts of all parts
    duplicate: bool  # the stream had already stored some part's message id
    error: str | None  # the last failure's reason (PublishFailure) of a part not acknowledged
    statuses: dict[str, int]  # vote status -> count
    parts: int = 1  # ballots sent for the round
    parts_ok: int = 1  # of which acknowledged
    query_ms: float = 0.0  # from the round's start to the last DNS observation


#: Rounds after its own that an unacknowledged ballot part is still retried (in the background):
#: the coordinators accept a ballot up to ``max_round_lag`` (2) rounds late.
LATE_ACK_ROUNDS: Final = 2
#: Failures that retrying cannot fix (see :mod:`cctf.agents.publishing`).
NOT_RETRIED: Final = frozenset({"wrong_stream", "too_large"})


@dataclass
class AgentStats:
    """Simple counters of one agent (monotonic within a process)."""

    rounds: int = 0  # rounds executed (ballots attempted)
    rounds_skipped: int = 0  # rounds whose boundary was missed (overrun, stall)
    round_errors: int = 0  # rounds aborted by an unexpected exception
    ballots_published: int = 0  # ballot messages (parts) acknowledged
    ballots_failed: int = 0  # ballot messages not acknowledged by the round's end
    #: ... of those, acknowledged later: retried in the background (same bytes and id) for
    #: LATE_ACK_ROUNDS more rounds, never blocking the next round (design D1)
    late_acks: int = 0
    duplicates: int = 0
    publish_attempts: int = 0
    publish_retries: int = 0
    #: failed publish attempts by reason (:class:`~cctf.agents.publishing.PublishFailure`)
    publish_failures: dict[str, int] = field(
        default_factory=lambda: {f.value: 0 for f in PublishFailure}
    )
    votes: int = 0
    votes_by_status: dict[str, int] = field(
        default_factory=lambda: {s.value: 0 for s in VoteStatus}
    )
    last_round: int | None = None
    last_publish_ms: float | None = None
    evidence: EvidenceStats = field(default_factory=EvidenceStats)  # identity evidence counters

    def add(self, report: BallotReport) -> None:
        """Count one round's report."""
        self.rounds += 1
        self.last_round = report.round
        self.votes += report.votes
        for status, count in report.statuses.items():
            self.votes_by_status[status] = self.votes_by_status.get(status, 0) + count
        self.publish_attempts += report.attempts
        self.publish_retries += max(0, report.attempts - report.parts)
        self.ballots_published += report.parts_ok
        self.ballots_failed += report.parts - report.parts_ok
        if report.ok:
            self.last_publish_ms = report.publish_ms
            self.duplicates += int(report.duplicate)


def log_report(log: Any, report: BallotReport) -> None:
    """One log line per round: ``ballot.published`` (info) or ``ballot.failed`` (warning)."""
    if report.ok:
        log.info(
            "ballot.published",
            round=report.round,
            votes=report.votes,
            parts=report.parts,
            statuses=report.statuses,
            query_ms=report.query_ms,
            attempts=report.attempts,
            publish_ms=round(report.publish_ms, 1),
            duplicate=report.duplicate,
        )
    else:
        log.warning(
            "ballot.failed",
            round=report.round,
            votes=report.votes,
            parts=report.parts,
            parts_ok=report.parts_ok,
            attempts=report.attempts,
            publish_ms=round(report.publish_ms, 1),
            error=report.error,
        )


@dataclass(frozen=True)
class Prepared:
    """One round's sealed ballot parts, ready to publish."""

    round: int
    sealed: list[bytes]
    votes: int
    statuses: dict[str, int]
    query_ms: float


async def cancel_quietly(task: asyncio.Future[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
