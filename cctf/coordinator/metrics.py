"""The coordinator's OpenTelemetry instruments (exported in Prometheus format by cctf.telemetry).

=====================================================  =========  ============================
Prometheus name                                        kind       labels
=====================================================  =========  ============================
``cctf_ballots_accepted_total``                        counter
``cctf_votes_accepted_total``                          counter    (votes counted by the tally)
``cctf_votes_ignored_total``                           counter    ``result`` (duplicate, closed,
                                                                  unknown_voter, overloaded,
                                                                  bad_qname, unconfigured_name)
``cctf_messages_rejected_total``                       counter    ``reason`` (envelope Reason,
                                                                  unconfigured_name, bad_qname)
``cctf_messages_terminated_total``                     counter    ``reason``, ``region`` (every
                                                                  AckTerm: the rejections, shed,
                                                                  poison, hold_expired, internal)
``cctf_messages_acked_total``                          counter    (ballots acknowledged)
``cctf_equivocations_total``                           counter
``cctf_verdicts_total``                                counter    ``outcome``
``cctf_verdict_publish_retries_total``                 counter
``cctf_verdicts_dropped_total``                        counter    ``reason`` (expired,
                                                                  unpublishable)
``cctf_decision_latency_milliseconds``                 histogram  (last counted vote → publish)
``cctf_rounds_shed_total``                             counter    (rounds shed under overload)
``cctf_ballots_expired_total``                         counter    ``reason`` (shed: acknowledged,
                                                                  no verdict for their round;
                                                                  late: its round had
                                                                  closed here with no tally)
``cctf_lkg_verdicts_total``                            counter    (LKG attestations issued)
``cctf_lkg_names``                                     gauge      (keys in an LKG episode now)
``cctf_lkg_episodes_total``                            counter    ``event`` (started, ended),
                                                                  ``reason`` (of an end)
``cctf_lkg_store_errors_total``                        counter    (LKG state reads and writes)
``cctf_coordinator_queue_depth``                       gauge      ``queue`` (live, durable: copies
                                                                  waiting to be processed;
                                                                  held_ballots, pending_verdicts,
                                                                  scheduled, storing_verdicts)
=====================================================  =========  ============================

The ``cctf_lkg_*`` instruments are created by :mod:`cctf.coordinator.lkggate`.

Instruments are process-wide and created once; several coordinators in one process (tests) share
them, so tests read per-instance numbers from ``Coordinator.stats()``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation

from cctf import telemetry

__all__ = ["LATENCY_BUCKETS_MS", "CoordinatorMetrics", "QueueSource", "instruments", "watch_queues"]

LATENCY_BUCKETS_MS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(frozen=True)
class CoordinatorMetrics:
    ballots_accepted: Counter
    votes_accepted: Counter
    votes_ignored: Counter
    messages_rejected: Counter
    messages_terminated: Counter
    messages_acked: Counter
    equivocations: Counter
    verdicts: Counter
    publish_retries: Counter
    verdicts_dropped: Counter
    decision_latency: Histogram
    rounds_shed: Counter
    ballots_expired: Counter

    def rejected(self, reason: str, count: int = 1) -> None:
        self.messages_rejected.add(count, {"reason": reason})


class QueueSource(Protocol):
    def queue_depths(self) -> Mapping[str, int]: ...


_lock = threading.Lock()
_instruments: CoordinatorMetrics | None = None
_sources: weakref.WeakSet[QueueSource] = weakref.WeakSet()


def watch_queues(source: QueueSource) -> None:
    """Report ``source``'s queue depths under ``cctf_coordinator_queue_depth`` (summed over the
    coordinators of the process) while it lives."""
    instruments()
    with _lock:
        _sources.add(source)


def _observe_queues(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        sources = list(_sources)
    totals: dict[str, int] = {}
    for source in sources:
        for queue, depth in source.queue_depths().items():
            totals[queue] = totals.get(queue, 0) + depth
    return [Observation(depth, {"queue": queue}) for queue, depth in totals.items()]


def instruments() -> CoordinatorMetrics:
    """The coordinator instruments (created on first use)."""
    global _instruments
    with _lock:
        if _instruments is None:
            m = telemetry.meter("cctf.coordinator")
            _instruments = CoordinatorMetrics(
                ballots_accepted=m.create_counter(
                    "cctf_ballots_accepted", description="Ballots that passed verification"
                ),
                votes_accepted=m.create_counter(
                    "cctf_votes_accepted", description="Votes counted by the tally"
                ),
                votes_ignored=m.create_counter(
                    "cctf_votes_ignored",
                    description="Votes of verified ballots not counted, by tally result",
                ),
                messages_rejected=m.create_counter(
                    "cctf_messages_rejected",
                    description="Messages rejected by verification, by reason",
                ),
                messages_terminated=m.create_counter(
                    "cctf_messages_terminated",
                    description="Deliveries terminated (AckTerm, never redelivered), by reason",
                ),
                messages_acked=m.create_counter(
                    "cctf_messages_acked", description="Ballots acknowledged after their verdicts"
                ),
                equivocations=m.create_counter(
                    "cctf_equivocations",
                    description="Second, different votes of a voter for one name, type and round",
                ),
                verdicts=m.create_counter(
                    "cctf_verdicts", description="Verdicts published (all regions), by outcome"
                ),
                publish_retries=m.create_counter(
                    "cctf_verdict_publish_retries", description="Failed verdict publish attempts"
                ),
                verdicts_dropped=m.create_counter(
                    "cctf_verdicts_dropped",
                    description="Verdicts given up (expired before publication, unpublishable)",
                ),
                decision_latency=m.create_histogram(
                    "cctf_decision_latency",
                    unit="ms",
                    description="From the arrival of the last counted vote to the verdict publish",
                    explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_MS),
                ),
                rounds_shed=m.create_counter(
                    "cctf_rounds_shed",
                    description="Rounds shed under overload (undecided 2 rounds after the deadline)",
                ),
                ballots_expired=m.create_counter(
                    "cctf_ballots_expired",
                    description="Ballots acknowledged without a verdict for their round, by reason",
                ),
            )
            m.create_observable_gauge(
                "cctf_coordinator_queue_depth",
                callbacks=[_observe_queues],
                description="Work waiting in the coordinator now, by queue",
            )
        return _instruments
