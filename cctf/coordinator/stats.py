"""What the coordinator service reports about itself (:class:`CoordinatorStats`), its one error
type, and which vote regions it consumes (:func:`vote_regions`)."""

from __future__ import annotations

from dataclasses import dataclass

from cctf.coordinator.config import CoordinatorConfig
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
    verdict_messages: int
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
