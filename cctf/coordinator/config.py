"""Coordinator configuration: a JSON file, validated field by field with clear errors.

Format (relative paths are resolved against the directory of the config file)::

    {
      "coordinator": "coord-1",                      # id, [a-z0-9][a-z0-9-]{0,31}
      "region": "us-east",
      "key_file": "keys/coord-1.key.json",           # cctf signing key (private)
      "trust_file": "trust.json",                    # TrustConfig (agent keys)
      "nats": {"credentials": "nats-creds.json", "user": "coordinator"},
         # or {"urls": ["nats://127.0.0.1:4222"], "user": "coordinator", "password": "..."}
      "rule": {"k": 3, "n": 5},
      "electorate": ["agent-us-east/r1", ...],       # n voter ids "<agent>/<resolver_id>"
      "min_suite": "hybrid-ed25519-ml-dsa-65",       # optional
      "round_ms": 1000,                              # optional
      "round_grace_ms": 1500,                        # optional; deadline of round r: (r+1)*round_ms+grace
      "max_round_lag": 2,                            # optional
      "verdict_regions": ["us-east"],                # optional, default [region]
      "verdict_ttl_ms": 30000,                       # optional
      "durable": "coord-1",                          # optional, default = coordinator id
      "metrics_port": 9464,                          # optional
      "max_open_tallies": 100000,                    # optional
      "fetch_batch": 256,                            # optional
      "max_ack_pending": 10000,                      # optional
      "ack_wait_ms": 2000                            # optional; held ballots are refreshed (+WPI)
    }

Unknown keys are an error (a typo must not silently fall back to a default). The password is never
shown in ``repr`` or in error messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cctf.bus.settings import NatsSettings, NatsSettingsError
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import TimePolicy
from cctf.bus_schemas.subjects import SubjectError
from cctf.coordinator.tally import QuorumRule
from cctf.crypto.errors import CryptoError, SuiteError
from cctf.crypto.keys import SigningKey, load_signing_key
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id

__all__ = ["ConfigError", "CoordinatorConfig", "NatsSettings"]

_DURABLE_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KNOWN: Final = frozenset(
    {
        "coordinator",
        "region",
        "key_file",
        "trust_file",
        "nats",
        "rule",
        "electorate",
        "min_suite",
        "round_ms",
        "round_grace_ms",
        "max_round_lag",
        "verdict_regions",
        "verdict_ttl_ms",
        "durable",
        "metrics_port",
        "max_open_tallies",
        "fetch_batch",
        "max_ack_pending",
        "ack_wait_ms",
    }
)
_REQUIRED: Final = ("coordinator", "region", "key_file", "trust_file", "nats", "rule", "electorate")


class ConfigError(ValueError):
    """The coordinator configuration is missing, unreadable or invalid."""


def _int(obj: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = obj.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _str(obj: dict[str, Any], name: str, what: str | None = None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what or name} must be a non-empty string, got {value!r}")
    return value


def _id(obj: dict[str, Any], name: str) -> str:
    value = _str(obj, name)
    try:
        return check_id(value, name)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None


def _path(value: str, base: Path | None) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def check_voter(voter: object) -> str:
    """Validate a voter id ``<agent>/<resolver_id>``."""
    if not isinstance(voter, str) or voter.count("/") != 1:
        raise ConfigError(f"voter id {voter!r} must look like '<agent>/<resolver_id>'")
    agent, resolver = voter.split("/")
    try:
        check_id(agent, "agent id")
        check_id(resolver, "resolver id")
    except SubjectError as exc:
        raise ConfigError(f"voter id {voter!r}: {exc}") from None
    return voter


@dataclass(frozen=True)
class CoordinatorConfig:
    coordinator: str
    region: str
    key_file: Path
    trust_file: Path
    nats: NatsSettings
    rule: QuorumRule
    electorate: tuple[str, ...]
    min_suite: SuiteId = SuiteId.HYBRID
    round_ms: int = 1_000
    round_grace_ms: int = 1_500
    max_round_lag: int = 2
    verdict_regions: tuple[str, ...] = ()
    verdict_ttl_ms: int = 30_000
    durable: str = ""
    metrics_port: int | None = None
    max_open_tallies: int = 100_000
    fetch_batch: int = 256
    max_ack_pending: int = 10_000
    ack_wait_ms: int = 2_000

    def __post_init__(self) -> None:
        if not self.verdict_regions:
            object.__setattr__(self, "verdict_regions", (self.region,))
        if not self.durable:
            object.__setattr__(self, "durable", self.coordinator)

    # ---- loading

    @classmethod
    def load(cls, path: Path | str) -> CoordinatorConfig:
        path = Path(path)
        try:
            obj = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read coordinator config {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"coordinator config {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_json(obj, base=path.resolve().parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_json(cls, obj: Any, base: Path | None = None) -> CoordinatorConfig:
        if not isinstance(obj, dict):
            raise ConfigError("coordinator config must be a JSON object")
        unknown = set(obj) - _KNOWN
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} (known: {sorted(_KNOWN)})")
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise ConfigError(f"missing required keys {missing}")
        coordinator = _id(obj, "coordinator")
        region = _id(obj, "region")
        key_file = _path(_str(obj, "key_file"), base)
        trust_file = _path(_str(obj, "trust_file"), base)
        try:
            nats = NatsSettings.from_json(obj["nats"], base)
        except NatsSettingsError as exc:
            raise ConfigError(str(exc)) from None

        rule_obj = obj["rule"]
        if not isinstance(rule_obj, dict) or set(rule_obj) != {"k", "n"}:
            raise ConfigError('rule must be an object {"k": <int>, "n": <int>}')
        k = _int(rule_obj, "k", 0, 1, L.MAX_VOTERS)
        n = _int(rule_obj, "n", 0, 1, L.MAX_VOTERS)
        try:
            rule = QuorumRule(k, n)
        except ValueError as exc:
            raise ConfigError(f"rule: {exc}") from None

        electorate = obj["electorate"]
        if not isinstance(electorate, list):
            raise ConfigError("electorate must be a list of voter ids '<agent>/<resolver_id>'")
        voters = tuple(check_voter(v) for v in electorate)
        if len(set(voters)) != len(voters):
            raise ConfigError("electorate lists a voter twice")
        if len(voters) != rule.n:
            raise ConfigError(f"electorate has {len(voters)} voters but rule.n is {rule.n}")

        try:
            min_suite = SuitePolicy.parse(str(obj.get("min_suite", SuiteId.HYBRID.value))).minimum
        except SuiteError as exc:
            raise ConfigError(f"min_suite: {exc}") from None

        regions_obj = obj.get("verdict_regions", [region])
        if not isinstance(regions_obj, list) or not regions_obj:
            raise ConfigError("verdict_regions must be a non-empty list of regions")
        try:
            verdict_regions = tuple(check_id(r, "verdict region") for r in regions_obj)
        except SubjectError as exc:
            raise ConfigError(str(exc)) from None
        if len(set(verdict_regions)) != len(verdict_regions):
            raise ConfigError("verdict_regions lists a region twice")

        durable = obj.get("durable", coordinator)
        if not isinstance(durable, str) or _DURABLE_RE.fullmatch(durable) is None:
            raise ConfigError(f"durable must match [A-Za-z0-9_-]{{1,64}}, got {durable!r}")

        metrics_port: int | None = None
        if obj.get("metrics_port") is not None:
            metrics_port = _int(obj, "metrics_port", 0, 1, 65535)

        max_lifetime = TimePolicy().max_lifetime_ms
        return cls(
            coordinator=coordinator,
            region=region,
            key_file=key_file,
            trust_file=trust_file,
            nats=nats,
            rule=rule,
            electorate=voters,
            min_suite=min_suite,
            round_ms=_int(obj, "round_ms", 1_000, 10, 3_600_000),
            round_grace_ms=_int(obj, "round_grace_ms", 1_500, 0, 3_600_000),
            max_round_lag=_int(obj, "max_round_lag", 2, 0, 1_000),
            verdict_regions=verdict_regions,
            verdict_ttl_ms=_int(obj, "verdict_ttl_ms", 30_000, 1, max_lifetime),
            durable=durable,
            metrics_port=metrics_port,
            max_open_tallies=_int(obj, "max_open_tallies", 100_000, 1, 100_000_000),
            fetch_batch=_int(obj, "fetch_batch", 256, 1, 10_000),
            max_ack_pending=_int(obj, "max_ack_pending", 10_000, 1, 1_000_000),
            ack_wait_ms=_int(obj, "ack_wait_ms", 2_000, 300, 3_600_000),
        )

    # ---- derived pieces

    @property
    def policy(self) -> SuitePolicy:
        return SuitePolicy(self.min_suite)

    def load_key(self) -> SigningKey:
        try:
            return load_signing_key(self.key_file)
        except CryptoError as exc:
            raise ConfigError(f"key_file: {exc}") from None

    def load_trust(self) -> TrustConfig:
        try:
            return TrustConfig.load(self.trust_file)
        except CryptoError as exc:
            raise ConfigError(f"trust_file: {exc}") from None
