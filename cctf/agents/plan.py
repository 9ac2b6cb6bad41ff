"""An agent's plan, checked once (pure): the questions it asks, and its round timing (the round,
its query deadline, publish attempts and start lag).

Rounds never pile up: a round is started only if the agent reaches its boundary in time
(``max_start_lag_ms``, default 2/5 of the round and at most 2/3 of the query deadline: 400 ms of a
1 s round, so a third of the query time is left; the query deadline stays ``boundary +
query_deadline_ms``, and a late-started round's ballot is still within the coordinators' grace:
better than none, found by ``benchmarks/load.py``, where a loaded machine woke agents 200 – 400 ms
late and they skipped those rounds); otherwise the rounds missed are skipped, counted and logged,
and the agent waits for the next boundary (:class:`cctf.agents.resolver.ResolverAgent`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cctf.agents.canonical import parse_qname, parse_qtype
from cctf.agents.publishing import MIN_ATTEMPT_MS
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.subjects import normalize_name
from cctf.ids import check_qtype

__all__ = ["RoundTiming", "questions", "round_timing"]


def questions(names: Iterable[tuple[str, str]], resolvers: int) -> tuple[tuple[str, str], ...]:
    """The normalized ``(qname, qtype)`` list asked of ``resolvers`` resolvers each round; what
    a round's query would refuse is refused now (``ValueError``, one line)."""
    out = tuple((normalize_name(n), check_qtype(t)) for n, t in names)
    if not out:
        raise ValueError("an agent needs at least one name")
    if len(set(out)) != len(out):
        raise ValueError("duplicate (qname, qtype) in names")
    for qname, qtype in out:
        parse_qname(qname)
        parse_qtype(qtype)
    if resolvers > L.MAX_VOTERS:
        raise ValueError(f"more than {L.MAX_VOTERS} resolvers (a verdict lists at most that)")
    if len(out) * resolvers > L.MAX_VOTES_PER_ROUND:
        raise ValueError(f"names x resolvers exceeds {L.MAX_VOTES_PER_ROUND} votes per round")
    return out


@dataclass(frozen=True, slots=True)
class RoundTiming:
    round_ms: int
    query_deadline_ms: int  # after the round's boundary
    publish_timeout_ms: int  # one publish attempt
    max_start_lag_ms: int  # later than this after its boundary, a round is skipped


def round_timing(
    round_ms: int,
    query_deadline_ms: int | None = None,
    publish_timeout_ms: int | None = None,
    max_start_lag_ms: int | None = None,
) -> RoundTiming:
    """The timing with its defaults filled in; ``ValueError`` (one line) for a value out of
    range."""
    if isinstance(round_ms, bool) or not isinstance(round_ms, int) or round_ms < 10:
        raise ValueError("round_ms must be an integer >= 10")
    query = round_ms * 6 // 10 if query_deadline_ms is None else int(query_deadline_ms)
    if not 0 < query < round_ms:
        raise ValueError("query_deadline_ms must be in 1..round_ms-1")
    publish = (
        max(MIN_ATTEMPT_MS, min(2_000, round_ms - query))
        if publish_timeout_ms is None
        else int(publish_timeout_ms)
    )
    if publish <= 0:
        raise ValueError("publish_timeout_ms must be positive")
    lag = (
        max(1, min(query * 2 // 3, round_ms * 2 // 5))
        if max_start_lag_ms is None
        else int(max_start_lag_ms)
    )
    return RoundTiming(round_ms, query, publish, lag)
