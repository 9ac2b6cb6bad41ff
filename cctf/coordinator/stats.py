"""What the coordinator service reports about itself (:class:`CoordinatorStats`), its one error
type, and which vote regions it consumes (:func:`vote_regions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cctf.coordinator.config import CoordinatorConfig
from cctf.coordinator.counters import Counters
from cctf.crypto.trust import Role, TrustConfig
from cctf.errors import CctfError

__all__ = ["CoordinatorError", "CoordinatorStats", "vote_regions"]


class CoordinatorError(CctfError, RuntimeError):
    """The coordinator cannot run (e.g. its NATS connection closed for good)."""


@dataclass(frozen=True)
class CoordinatorStats:
    """A snapshot of one coordinator's counters (the metrics are process-wide; these are not)."""

    ballots_accepted: int
    votes_accepted: int
    votes_ignored: dict[str, int]
    rejected: dict[str, int]
    terminated: dict[str, int]
    terminated_by_region: dict[str, dict[str, int]]
    acked: int
    equivocations: int
    verdicts: dict[str, int]
    """Verdicts by outcome, counted once every region's first copy went out (a subscriber that
    received one never finds this count behind it), stored or not."""
    verdict_messages: int
    """Verdict messages stored by their stream (counted at the stream's acknowledgement)."""
    publish_retries: int
    verdicts_dropped: dict[str, int]
    held_ballots: int
    open_keys: int
    live_tallies: int
    pending_verdicts: int
    queued: int
    throttled: dict[str, int]
    lkg_verdicts: int = 0
    """LKG attestations issued."""
    lkg_names: int = 0
    """Keys in an LKG episode now."""
    lkg_loaded: int = 0
    """LKG bases read back from the engine at start."""
    lkg_store_errors: int = 0
    clock_rewinds: int = 0
    silent_keys: int = 0
    """Keys decided (UNAVAILABLE, so LKG) in a round in which no ballot arrived for them."""
    """Times the clock stepped back below the expired rounds (``clock_stepped_back`` log line)."""
    rounds_shed: int = 0
    """Rounds shed under overload (D6: still undecided ``shed_after_rounds`` after the deadline)."""
    ballots_expired: dict[str, int] | None = None
    """Ballots acknowledged without a verdict for their round, by reason (``shed``)."""
    scheduled: int = 0
    """Decided keys waiting to be signed and published (newest round first)."""
    live_ballots: int = 0
    """Ballots and evidence counted from their live (core) copy (``ballots_accepted`` has them)."""
    duplicates: dict[str, int] = field(default_factory=dict)
    """Recognised second copies, by copy (``live``, ``durable``): never counted twice."""
    live_rejected: dict[str, int] = field(default_factory=dict)
    """Refused live copies by reason (their durable copies are terminated with that reason)."""
    live_dropped: int = 0
    """Live copies dropped for a full queue or an exhausted budget (their durable copies come)."""
    live_suspensions: int = 0
    """Times a flooding region's live subscription was suspended (cctf.coordinator.livepath)."""
    verdicts_unstored: int = 0
    """Verdicts that core subscribers had but no stream stored before they expired."""
    storing_verdicts: int = 0
    """Verdicts sent, waiting for the stream's acknowledgement now."""


def vote_regions(config: CoordinatorConfig, trust: TrustConfig) -> tuple[str, ...]:
    """The regions whose vote streams to consume: configured, or those of the electorate's agents
    (and of the identity electorate's)."""
    if config.vote_regions:
        return tuple(config.vote_regions)
    agents = config.agent_ids
    regions = {e.region for e in trust if e.role is Role.AGENT and e.principal in agents}
    missing = agents - {e.principal for e in trust if e.role is Role.AGENT}
    if missing:
        raise CoordinatorError(f"electorate agents without a trusted key: {sorted(missing)}")
    return tuple(sorted(regions))


def counted_stats(n: Counters, **live: Any) -> CoordinatorStats:
    """The snapshot of the counters ``n`` plus the ``live`` figures of the service's parts (held
    ballots, open keys, tallies, queues, LKG, live path ...)."""
    return CoordinatorStats(
        ballots_accepted=n.ballots,
        votes_accepted=n.votes,
        votes_ignored=dict(n.ignored),
        rejected=dict(n.rejected),
        terminated=dict(n.terminated),
        terminated_by_region={r: dict(t) for r, t in n.terminated_by_region.items()},
        acked=n.acked,
        equivocations=n.equivocations,
        verdicts=dict(n.verdicts),
        verdict_messages=n.verdict_messages,
        publish_retries=n.retries,
        verdicts_dropped=dict(n.dropped),
        throttled=dict(n.throttled),
        clock_rewinds=n.clock_rewinds,
        silent_keys=n.silent_keys,
        rounds_shed=n.rounds_shed,
        ballots_expired=dict(n.expired),
        live_ballots=n.live_ballots,
        duplicates=dict(n.duplicates),
        live_rejected=dict(n.live_rejected),
        verdicts_unstored=n.unstored,
        **live,
    )
