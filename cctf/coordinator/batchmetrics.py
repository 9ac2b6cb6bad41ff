"""The batch-sign stage's instruments (:mod:`cctf.coordinator.batcher`), process-wide."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cctf import telemetry

__all__ = ["BatchMetrics", "metrics"]


@dataclass(frozen=True)
class BatchMetrics:
    batches: Any
    batch_verdicts: Any
    published_before_logged: Any
    head_publish_failures: Any
    held_for_log: Any


_metrics_lock = threading.Lock()
_metrics: BatchMetrics | None = None


def metrics() -> BatchMetrics:
    """The batch stage's instruments (process-wide, created once)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            m = telemetry.meter("cctf.coordinator.batch")
            _metrics = BatchMetrics(
                batches=m.create_counter(
                    "cctf_batches", description="Batches sealed (one signed log head each)"
                ),
                batch_verdicts=m.create_histogram(
                    "cctf_batch_verdicts", description="Verdicts per sealed batch"
                ),
                held_for_log=m.create_counter(
                    "cctf_log_batches_held",
                    description="Batch closes that waited for the log (APPENDS_AHEAD appends "
                    "unacknowledged: group commit)",
                ),
                published_before_logged=m.create_counter(
                    "cctf_log_published_before_logged",
                    description="Verdicts released before their batch's log append was acked "
                    "(log_wait_ms passed: a stream-leader election)",
                ),
                head_publish_failures=m.create_counter(
                    "cctf_head_publish_failures",
                    description="Heads not stored on a region before their expiry",
                ),
            )
        return _metrics
