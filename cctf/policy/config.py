"""Policy settings: one typed struct (the coordinator config's ``policy:`` section)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from cctf.config import ConfigStruct

__all__ = ["DetectorSettings", "PolicyConfig"]

Prob = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0, le=1e6)]
Rounds = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
Warmup = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class DetectorSettings(ConfigStruct, frozen=True, kw_only=True):
    """One statistical detector: EWMA weight, warm-up, variance floor and z threshold.

    A sample alarms when the series has seen at least ``warmup`` samples and
    ``z = (value - mean) / max(std, min_std) >= threshold`` (mean and std of the baseline before the
    sample). ``min_std`` is the floor that keeps a perfectly steady series from alarming on noise.
    """

    alpha: Prob = 0.1
    warmup: Warmup = 10
    min_std: Positive = 0.1
    threshold: Positive = 3.5


class PolicyConfig(ConfigStruct, frozen=True, kw_only=True):
    """Detectors, safe mode and its hysteresis.

    ``auto_safe_mode``: an alarm enters safe mode for its scope (otherwise alarms are only logged and
    counted, and safe mode is the operator's). ``hold_rounds`` (N): in safe mode a changed answer must
    be the quorum's answer in N rounds before it is TRUSTED. ``quiet_rounds`` (M): an automatically
    entered scope leaves safe mode after M rounds without an alarm. ``strict_paths`` and
    ``freeze_lkg`` are flags handed, for names in safe mode, to the identity negotiator and the LKG
    stage. ``flap_window``: the status changes of one (resolver, name) counted over this many
    observations. ``max_series``: bound on the series (and per-name states) kept.
    """

    auto_safe_mode: bool = False
    hold_rounds: Rounds = 3
    quiet_rounds: Rounds = 10
    strict_paths: bool = True
    freeze_lkg: bool = False
    flap_window: Annotated[int, msgspec.Meta(ge=2, le=1024)] = 8
    max_series: Annotated[int, msgspec.Meta(ge=16, le=10_000_000)] = 100_000
    disagreement: DetectorSettings = DetectorSettings()
    region_disagreement: DetectorSettings = DetectorSettings()
    flapping: DetectorSettings = DetectorSettings(min_std=1.0, threshold=3.0)
    ttl_mismatch: DetectorSettings = DetectorSettings(min_std=1.0)
    answer_change: DetectorSettings = DetectorSettings(warmup=5)

    def __post_init__(self) -> None:
        if self.hold_rounds > self.quiet_rounds:
            raise ValueError(
                f"hold_rounds ({self.hold_rounds}) must not exceed quiet_rounds "
                f"({self.quiet_rounds}): a held change must be able to complete in safe mode"
            )
