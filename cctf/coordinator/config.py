"""Coordinator settings: ONE typed struct, read from YAML or JSON (``cctf.config.load_config``).

Every knob of the coordinator lives here; :class:`~cctf.coordinator.service.Coordinator` takes one
:class:`CoordinatorConfig` (plus the loaded key and trust, and test seams: clock, monotonic).
Commented examples: ``examples/coordinator.yaml`` and ``examples/coordinator.json``.

Relative paths (``key_file``, ``trust_file``, ``nats.credentials``) are resolved against the directory
of the config file by :func:`load_coordinator_config`. Unknown keys are an error (a typo must not
silently fall back to a default). The NATS password is never shown in ``repr`` or in errors.

``names`` lists the ``[name, qtype]`` pairs the coordinator tallies; votes for any other pair are
refused (counted as ``unconfigured_name``) and never lead to a signed verdict. ``identity`` (an
:class:`~cctf.identity.targets.IdentityTargets`, the same struct agents and relying parties read) is
the allow-list of identity subjects: trust domains (``bundle``), issuer URLs (``jwks``) and workloads
with an ``endpoint`` (``mtls``); evidence for anything else is refused the same way. Identity tallies
have their own electorate of agent ids (``identity_electorate``, default: the agents of
``electorate``) and quorum (``identity_rule``, default: the smallest ``k`` with ``2k > n``). A name of the form
``"*.zone."`` admits every name strictly below ``zone.`` (an operator's choice: an agent may then open
up to ``max_open_tallies`` tallies under that zone per round).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from cctf.bus.settings import NatsSettings
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import MAX_TLOG_SUBJECTS, TimePolicy
from cctf.bus_schemas.subjects import normalize_name, verdict_subject
from cctf.ca.config import CaGateConfig
from cctf.config import ConfigStruct, load_config
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.pipeline.batchsign import MAX_BATCH
from cctf.coordinator.tally import QuorumRule
from cctf.crypto.errors import CryptoError, SuiteError
from cctf.crypto.keys import SigningKey, load_signing_key
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.errors import ConfigError
from cctf.identity.targets import IdentityTargets
from cctf.ids import IdError, check_id, check_qtype
from cctf.policy.config import PolicyConfig

__all__ = [
    "ConfigError",
    "CoordinatorConfig",
    "HostPort",
    "NameSet",
    "RuleConfig",
    "check_voter",
    "load_coordinator_config",
]

_DURABLE_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,48}")
_MAX_LIFETIME: Final = TimePolicy().max_lifetime_ms
WILDCARD: Final = "*."

Ms = Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]


def check_voter(voter: object) -> str:
    """Validate a voter id ``<agent>/<resolver_id>``."""
    if not isinstance(voter, str) or voter.count("/") != 1:
        raise ValueError(f"voter id {voter!r} must look like '<agent>/<resolver_id>'")
    agent, resolver = voter.split("/")
    try:
        check_id(agent, "agent id")
        check_id(resolver, "resolver id")
    except IdError as exc:
        raise ValueError(f"voter id {voter!r}: {exc}") from None
    return voter


class RuleConfig(ConfigStruct, frozen=True, kw_only=True):
    """``k``-of-``n``."""

    k: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]
    n: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]


class HostPort(msgspec.Struct, frozen=True):
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"metrics must look like host:port (port 1-65535), got {text!r}")
        return cls(host, int(port))


class NameSet:
    """The configured ``(name, qtype)`` pairs (exact, or ``*.zone.`` wildcards), normalised once."""

    __slots__ = ("_exact", "_zones")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._exact: set[tuple[str, str]] = set()
        self._zones: dict[str, set[str]] = {}  # qtype -> zone suffixes ".zone."
        for raw, qtype in pairs:
            check_qtype(qtype)
            if raw.startswith(WILDCARD):
                zone = normalize_name(raw[2:] or ".")
                self._zones.setdefault(qtype, set()).add("." + zone if zone != "." else ".")
            else:
                self._exact.add((normalize_name(raw), qtype))

    def __len__(self) -> int:
        return len(self._exact) + sum(len(z) for z in self._zones.values())

    @property
    def exact(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._exact)

    def admits(self, qname: str, qtype: str) -> bool:
        """``qname`` must already be normalised (:func:`normalize_name`)."""
        if (qname, qtype) in self._exact:
            return True
        zones = self._zones.get(qtype)
        if not zones:
            return False
        end = len(qname) - 1  # every proper suffix starting at a dot (not the final root dot)
        i = qname.find(".")
        while 0 <= i < end:
            if qname[i:] in zones:
                return True
            i = qname.find(".", i + 1)
        return "." in zones and qname != "."


class CoordinatorConfig(ConfigStruct, frozen=True, kw_only=True):
    """Everything a coordinator is configured with (see ``examples/coordinator.yaml``)."""

    coordinator: str
    region: str
    rule: RuleConfig
    electorate: list[str]
    names: list[tuple[str, str]]
    key_file: str | None = None
    trust_file: str | None = None
    nats: NatsSettings | None = None
    min_suite: str = "hybrid-ed25519-ml-dsa-65"
    round_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)] = 1_000
    round_grace_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = 1_500
    max_round_lag: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 2
    verdict_regions: list[str] = msgspec.field(default_factory=list)
    vote_regions: list[str] = msgspec.field(default_factory=list)
    verdict_ttl_ms: Annotated[int, msgspec.Meta(ge=1, le=_MAX_LIFETIME)] = 30_000
    durable: str = ""
    metrics: str | None = None
    max_open_tallies: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 100_000
    fetch_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    #: one region's fetch asks for at most this many bytes of deliveries (cctf.coordinator.fetching)
    fetch_max_bytes: Annotated[int, msgspec.Meta(ge=L.MAX_ENVELOPE_BYTES, le=1 << 30)] = 4 << 20
    queue_limit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 4_096
    region_rate: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0
    max_ack_pending: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    ack_wait_ms: Annotated[int, msgspec.Meta(ge=300, le=3_600_000)] = 2_000
    max_deliver: Annotated[int, msgspec.Meta(ge=2, le=100)] = 5
    max_hold_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = 0
    fetch_timeout_ms: Ms = 250
    tick_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 0
    publish_timeout_ms: Ms = 2_000
    max_backoff_ms: Ms = 2_000
    signing_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    max_pending_verdicts: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 20_000
    #: D6: a round still undecided this many rounds after its deadline is shed (counted, logged)
    shed_after_rounds: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 2
    #: decided keys taken per turn of the sign-and-publish workers (newest round first)
    schedule_chunk: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024
    #: after an ingest part that decided keys, the process loop waits up to this long for their
    #: verdicts to go out (every queued decision sent) before it verifies the next part, so a
    #: round's later ballots and other copies never delay its verdicts (0: no wait)
    output_first_ms: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 25
    replay_capacity: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 1_000_000
    identity: IdentityTargets | None = None
    identity_electorate: list[str] = msgspec.field(default_factory=list)
    identity_rule: RuleConfig | None = None
    safe_mode: PolicyConfig = PolicyConfig()
    safe_mode_refresh_ms: Annotated[int, msgspec.Meta(ge=1_000, le=240_000)] = 60_000
    lkg: LkgConfig = msgspec.field(default_factory=LkgConfig)
    #: DNS verdicts on ``cctf.v1.verdict.<region>.<name-token>.<qtype>.<coordinator>`` (identity
    #: verdicts on ``...<subject-token>.<kind>.<coordinator>``): set it on every coordinator of a
    #: k-of-m deployment (clients read each coordinator's last verdict).
    per_coordinator_subjects: bool = False
    #: ``batch``: DNS verdicts are batch-signed (one signed log head per batch, each verdict an
    #: inclusion proof, authenticator "tlog", published on EVERY verdict region); ``per_verdict``:
    #: one hybrid signature per verdict and region ("sig"). A batch closes at ``batch_max`` verdicts
    #: or ``batch_window_ms`` after the previous batch closed (at once after a quiet spell; never
    #: later than ``batch_window_ms`` after its first verdict while the log keeps up; while it is
    #: behind, it grows: group commit, ``cctf.coordinator.batcher.APPENDS_AHEAD``); its verdicts
    #: wait for the log (that and the append) at most ``log_wait_ms`` in all.
    signing: Literal["batch", "per_verdict"] = "per_verdict"
    batch_window_ms: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 5
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = 1024
    log_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 300
    #: the certificate gate (docs/ca.md §5): ballots only from keys with a logged, valid,
    #: unrevoked certificate in the CA log. Absent: no gate.
    ca: CaGateConfig | None = None
    #: The live path (design D1): also hold a core subscription on the vote and evidence subjects,
    #: so ballots are counted without waiting on a stream leader. ``false``: durable consumers only.
    live: bool = True

    def __post_init__(self) -> None:
        try:
            check_id(self.coordinator, "coordinator")
            check_id(self.region, "region")
            for r in [*self.verdict_regions, *self.vote_regions]:
                check_id(r, "region")
        except IdError as exc:
            raise ValueError(str(exc)) from None
        rule = self.quorum  # raises ValueError with the rule's own message
        voters = [check_voter(v) for v in self.electorate]
        if len(set(voters)) != len(voters):
            raise ValueError("electorate lists a voter twice")
        if len(voters) != rule.n:
            raise ValueError(f"electorate has {len(voters)} voters but rule.n is {rule.n}")
        if len(set(self.verdict_regions)) != len(self.verdict_regions):
            raise ValueError("verdict_regions lists a region twice")
        if len(set(self.vote_regions)) != len(self.vote_regions):
            raise ValueError("vote_regions lists a region twice")
        if not self.names:
            raise ValueError("names: list at least one [name, qtype] pair")
        try:
            names = NameSet(self.names)
        except IdError as exc:
            raise ValueError(f"names: {exc}") from None
        for qname, qtype in names.exact:  # every configured verdict must be publishable
            for region in self.publish_regions:
                try:
                    verdict_subject(region, qname, qtype)
                except IdError as exc:
                    raise ValueError(f"names: {exc}") from None
        if self.durable and _DURABLE_RE.fullmatch(self.durable) is None:
            raise ValueError(f"durable must match [A-Za-z0-9_-]{{1,48}}, got {self.durable!r}")
        try:
            SuitePolicy.parse(self.min_suite)
        except SuiteError as exc:
            raise ValueError(f"min_suite: {exc}") from None
        if self.metrics is not None:
            HostPort.parse(self.metrics)
        self._check_identity()
        if self.signing == "batch" and len(self.publish_regions) > MAX_TLOG_SUBJECTS:
            raise ValueError(f"signing: batch publishes to at most {MAX_TLOG_SUBJECTS} regions")

    def _check_identity(self) -> None:
        if self.identity is None:
            if self.identity_electorate or self.identity_rule is not None:
                raise ValueError("identity_electorate and identity_rule need an identity: block")
            return
        agents = self.identity_agents
        try:
            for agent in agents:
                check_id(agent, "identity_electorate agent id")
        except IdError as exc:
            raise ValueError(str(exc)) from None
        if len(set(agents)) != len(agents):
            raise ValueError("identity_electorate lists an agent twice")
        if not agents:
            raise ValueError("identity_electorate: list at least one agent id")
        if len(agents) > L.MAX_VOTERS:
            raise ValueError(f"identity_electorate: at most {L.MAX_VOTERS} agents")
        rule = self.identity_quorum  # raises ValueError with the rule's own message
        if rule.n != len(agents):
            raise ValueError(
                f"identity_electorate has {len(agents)} agents but identity_rule.n is {rule.n}"
            )

    # ---- derived pieces (cheap; computed on use)

    @property
    def quorum(self) -> QuorumRule:
        return QuorumRule(self.rule.k, self.rule.n)

    @property
    def identity_agents(self) -> tuple[str, ...]:
        """The identity electorate: ``identity_electorate``, or the distinct agents of
        ``electorate`` in order of first appearance."""
        if self.identity_electorate:
            return tuple(self.identity_electorate)
        return tuple(dict.fromkeys(v.split("/")[0] for v in self.electorate))

    @property
    def agent_ids(self) -> set[str]:
        """Every agent whose messages are tallied: the DNS electorate's and the identity one's."""
        agents = {voter.split("/")[0] for voter in self.electorate}
        if self.identity is not None:
            agents.update(self.identity_agents)
        return agents

    @property
    def identity_quorum(self) -> QuorumRule:
        if self.identity_rule is not None:
            return QuorumRule(self.identity_rule.k, self.identity_rule.n)
        n = len(self.identity_agents)
        return QuorumRule(n // 2 + 1, n)

    @property
    def publish_regions(self) -> tuple[str, ...]:
        """Regions verdicts are published to (default: the coordinator's own region)."""
        return tuple(self.verdict_regions) or (self.region,)

    @property
    def durable_prefix(self) -> str:
        return self.durable or self.coordinator

    @property
    def name_set(self) -> NameSet:
        return NameSet(self.names)

    @property
    def policy(self) -> SuitePolicy:
        return SuitePolicy.parse(self.min_suite)

    @property
    def metrics_address(self) -> HostPort | None:
        return HostPort.parse(self.metrics) if self.metrics is not None else None

    def region_rate_for(self, agents: int) -> int:
        """Deliveries per second fetched from a region with ``agents`` agents (``region_rate``, or
        by default four times the most an honest agent sends, at least 1024/s)."""
        if self.region_rate:
            return self.region_rate
        honest = L.MAX_BALLOTS_PER_ROUND * max(1, agents) * 1000 // self.round_ms
        return max(1024, 4 * honest)

    @property
    def hold_limit_ms(self) -> int:
        """How long a verified ballot may wait for its verdicts before it is terminated."""
        if self.max_hold_ms:
            return self.max_hold_ms
        window = (self.max_round_lag + 2) * self.round_ms + self.round_grace_ms
        return window + self.verdict_ttl_ms + self.ack_wait_ms

    def nats_settings(self) -> NatsSettings:
        if self.nats is None:
            raise ConfigError("nats: required, the connection block")
        return self.nats

    def load_key(self) -> SigningKey:
        if self.key_file is None:
            raise ConfigError("key_file: required, the coordinator's signing key")
        try:
            return load_signing_key(Path(self.key_file))
        except CryptoError as exc:
            raise ConfigError(f"key_file: {exc}") from None

    def load_trust(self) -> TrustConfig:
        if self.trust_file is None:
            raise ConfigError("trust_file: required, the trust config with the agents' keys")
        try:
            return TrustConfig.load(Path(self.trust_file))
        except CryptoError as exc:
            raise ConfigError(f"trust_file: {exc}") from None


def _anchor(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def anchored(config: CoordinatorConfig, base: Path) -> CoordinatorConfig:
    """``config`` with its relative paths resolved against ``base``."""
    nats = config.nats.anchored(base) if config.nats is not None else None
    return msgspec.structs.replace(
        config,
        key_file=_anchor(config.key_file, base),
        trust_file=_anchor(config.trust_file, base),
        nats=nats,
        identity=config.identity.anchored(base) if config.identity is not None else None,
        ca=config.ca.anchored(base) if config.ca is not None else None,
    )


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    """Read a coordinator config (YAML when it ends in ``.yaml``/``.yml``, else JSON)."""
    p = Path(path)
    return anchored(load_config(p, CoordinatorConfig, "coordinator config"), p.resolve().parent)
