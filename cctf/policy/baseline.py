"""A per-series statistical baseline: exponentially weighted mean and variance, and the z-score.

For a sample ``x`` and weight ``alpha`` (West's incremental form)::

    d = x - mean;  mean += alpha * d;  var = (1 - alpha) * (var + alpha * d * d)

The first sample sets ``mean = x``, ``var = 0``. A sample is scored against the baseline *before* it
is folded in: ``z = (x - mean) / max(sqrt(var), min_std)``. Scoring is pure arithmetic on the inputs,
so the same samples in the same order always give the same scores (no randomness, no clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from cctf.policy.config import DetectorSettings

__all__ = ["Ewma", "Score"]


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    mean: float
    std: float  # the floored standard deviation the z-score divides by
    z: float
    samples: int  # samples seen before this one
    alarm: bool


class Ewma(msgspec.Struct, gc=False):
    """One series' baseline. A struct untracked by the cyclic GC (``gc=False``: it holds only
    numbers, so it can be in no cycle): a detector keeps one to three per name for up to
    ``max_series`` names, which every collection would otherwise scan again."""

    samples: int = 0
    mean: float = 0.0
    var: float = 0.0

    def score(self, x: float, s: DetectorSettings) -> Score:
        """Score ``x`` against the baseline (no update)."""
        std = max(math.sqrt(self.var), s.min_std)
        z = (x - self.mean) / std if self.samples else 0.0
        alarm = self.samples >= max(1, s.warmup) and z >= s.threshold
        return Score(x, self.mean, std, z, self.samples, alarm)

    def update(self, x: float, s: DetectorSettings) -> None:
        if self.samples == 0:
            self.mean, self.var = x, 0.0
        else:
            d = x - self.mean
            self.mean += s.alpha * d
            self.var = (1.0 - s.alpha) * (self.var + s.alpha * d * d)
        self.samples += 1

    def observe(self, x: float, s: DetectorSettings) -> Score:
        """Score ``x``, then fold it into the baseline."""
        score = self.score(x, s)
        self.update(x, s)
        return score

    def alarm(self, x: float, s: DetectorSettings) -> Score | None:
        """:meth:`observe`, returning the score only when it alarms (the detectors' hot path: the
        same arithmetic, no object for a quiet sample)."""
        n, mean, var = self.samples, self.mean, self.var
        out: Score | None = None
        if n >= max(1, s.warmup):
            std = max(math.sqrt(var), s.min_std)
            z = (x - mean) / std
            if z >= s.threshold:
                out = Score(x, mean, std, z, n, True)
        if n == 0:
            self.mean, self.var = x, 0.0
        else:
            d = x - mean
            self.mean = mean + s.alpha * d
            self.var = (1.0 - s.alpha) * (var + s.alpha * d * d)
        self.samples = n + 1
        return out
