"""Resolver agent configuration: one typed struct (:class:`AgentFile`) read from YAML or JSON with
:func:`cctf.config.load_config` (the same size cap as every config file, one-line errors naming the
file and the field), then resolved into the runtime :class:`AgentConfig` (paths anchored, NATS
credentials read, resolvers checked). Commented examples: ``examples/agent.yaml``,
``examples/agent.json``. Relative paths are relative to the config file's directory::

    agent: agent-1                  # agent id, [a-z0-9][a-z0-9-]{0,31}; the key's principal
    region: us-east                 # region token
    key_file: keys/agent-1.key.json # private signing key (cctf-signing-key JSON)
    trust: trust.json               # optional: a trust config, or one trust entry (.pub.json); the
                                    #   key must be listed there as an agent key of this agent and
                                    #   region. Default: <name>.pub.json beside <name>.key.json
    nats: {credentials: .cctf/nats/credentials.d/agent-us-east.json, user: agent-us-east}
        # or {urls: [nats://127.0.0.1:4222], user: agent-us-east, password: "..."}
    resolvers: [{id: r1, address: 127.0.0.1, port: 5301, transport: udp}, ...]   # 1..64
    names: [[www.demo.test., A], [api.demo.test., AAAA]]
    round_ms: 1000                  # optional, default 1000
    query_deadline_ms: 600          # optional, default 60 % of round_ms
    ballot_lifetime_ms: 30000       # optional, default 30000
    publish_timeout_ms: 400         # optional: one publish attempt's ack timeout,
                                    #   default min(2000, round_ms - query_deadline_ms)
    identity: {...}                 # optional: trust domains, issuers, workloads to observe
                                    #   (cctf.identity.targets.IdentityTargets; paths relative
                                    #   to this file); published as evidence every round
    identity_probe_every_ms: 10000  # optional: JWKS and workload endpoints are observed this
                                    #   often (default: every round); bundles follow their
                                    #   spiffe_refresh_hint (else the domain's refresh_ms)
    dnssec:                         # optional (cctf.agents.dnssec)
      trust_anchors: ["demo.test. 3600 IN DS 41211 13 2 5c0e..."]   # DS or DNSKEY lines, per zone
      validating_resolvers: [r1]    # resolver ids whose AD / EDE count also over plain DNS to
                                    #   loopback, and whose answers without AD are "insecure"
    ca:                             # optional (cctf.ca.config.AgentCaConfig, docs/ca.md): get a
      trust_domain: cctf.test       #   certificate from the CA before the first round and renew
      intermediate: ca/intermediate.pem   # it at 2/3 of its lifetime
      cert_dir: certs

The NATS user must be ``agent-<region>``: the server only lets that user publish on
``cctf.v1.vote.<region>.>``, so any other user is a configuration mistake caught here, not on the bus.

Scale: more votes per round (names x resolvers) than one ballot holds are sent as several ballots;
the configuration refuses only what a coordinator would refuse: more than 64 resolvers (a verdict
lists at most 64 voters) or more than 64 ballots' worth of votes per round.

Passwords are held in :class:`NatsSettings` outside its ``repr`` and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

from cctf.agents.canonical import parse_qname, parse_qtype
from cctf.agents.dnsquery import ResolverSpec, prepare
from cctf.agents.dnssec import TrustAnchors
from cctf.bus.settings import NatsSettings, NatsSettingsError
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.subjects import normalize_name
from cctf.ca.config import AgentCaConfig
from cctf.config import ConfigStruct, convert_config, load_config
from cctf.crypto.errors import CryptoError
from cctf.crypto.keys import SigningKey, read_json
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.errors import ConfigError as RootConfigError
from cctf.identity.targets import IdentityTargets
from cctf.ids import IdError, check_id, check_qtype

__all__ = [
    "DEFAULT_BALLOT_LIFETIME_MS",
    "DEFAULT_ROUND_MS",
    "MAX_BALLOT_LIFETIME_MS",
    "AgentConfig",
    "AgentFile",
    "ConfigError",
    "NatsSettings",
    "check_key",
    "expected_nats_user",
    "load_agent_config",
]

DEFAULT_ROUND_MS: Final = 1_000
MIN_ROUND_MS: Final = 100
MAX_ROUND_MS: Final = 3_600_000
DEFAULT_BALLOT_LIFETIME_MS: Final = 30_000
#: The coordinator's default maximum envelope lifetime (``TimePolicy.max_lifetime_ms``).
MAX_BALLOT_LIFETIME_MS: Final = 10 * 60_000
MIN_PUBLISH_TIMEOUT_MS: Final = 10
MAX_PUBLISH_TIMEOUT_MS: Final = 60_000
DEFAULT_MAX_PUBLISH_TIMEOUT_MS: Final = 2_000
#: D6: one round's votes are split over ballots of at most this many votes / payload bytes
DEFAULT_BALLOT_MAX_VOTES: Final = 1_000
DEFAULT_BALLOT_MAX_BYTES: Final = 256 * 1024
MIN_BALLOT_MAX_BYTES: Final = 16 * 1024
KEY_SUFFIX: Final = ".key.json"
PUB_SUFFIX: Final = ".pub.json"


class ConfigError(RootConfigError):
    """The agent configuration is invalid; the message says where and why (never a secret)."""


def expected_nats_user(region: str) -> str:
    """The only NATS user an agent of ``region`` may use: ``agent-<region>``."""
    return f"agent-{check_id(region, 'region')}"


Ms = Annotated[int, msgspec.Meta(ge=1, le=MAX_ROUND_MS)]


class DnssecFile(ConfigStruct, frozen=True, kw_only=True):
    """The ``dnssec`` block: trust anchors (DS or DNSKEY zone-file lines) and the ids of the
    resolvers the agent treats as validating (see :mod:`cctf.agents.dnssec`)."""

    trust_anchors: list[str] = msgspec.field(default_factory=list)
    validating_resolvers: list[str] = msgspec.field(default_factory=list)


class AgentFile(ConfigStruct, frozen=True, kw_only=True):
    """An agent config file as written (YAML or JSON); see the module docstring. Field ranges are
    checked by msgspec, cross-field rules in ``__post_init__``; :meth:`AgentConfig.from_file` then
    anchors paths, reads the NATS credentials and loads CA files."""

    agent: str
    region: str
    key_file: Annotated[str, msgspec.Meta(min_length=1)]
    trust: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    nats: dict[str, Any]
    resolvers: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    names: Annotated[list[tuple[str, str]], msgspec.Meta(min_length=1)]
    round_ms: Annotated[int, msgspec.Meta(ge=MIN_ROUND_MS, le=MAX_ROUND_MS)] = DEFAULT_ROUND_MS
    query_deadline_ms: Ms | None = None
    ballot_lifetime_ms: Annotated[int, msgspec.Meta(ge=MIN_ROUND_MS, le=MAX_BALLOT_LIFETIME_MS)] = (
        DEFAULT_BALLOT_LIFETIME_MS
    )
    publish_timeout_ms: (
        Annotated[int, msgspec.Meta(ge=MIN_PUBLISH_TIMEOUT_MS, le=MAX_PUBLISH_TIMEOUT_MS)] | None
    ) = None
    identity: IdentityTargets | None = None
    identity_probe_every_ms: (
        Annotated[int, msgspec.Meta(ge=MIN_ROUND_MS, le=MAX_ROUND_MS)] | None
    ) = None
    dnssec: DnssecFile = msgspec.field(default_factory=DnssecFile)
    ballot_max_votes: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTES_PER_BALLOT)] = (
        DEFAULT_BALLOT_MAX_VOTES
    )
    ballot_max_bytes: Annotated[
        int, msgspec.Meta(ge=MIN_BALLOT_MAX_BYTES, le=L.MAX_PAYLOAD_BYTES)
    ] = DEFAULT_BALLOT_MAX_BYTES
    ca: AgentCaConfig | None = None

    def __post_init__(self) -> None:
        try:
            check_id(self.agent, "agent id")
            check_id(self.region, "region")
        except IdError as exc:
            raise ValueError(str(exc)) from None
        if self.query_deadline_ms is not None and self.query_deadline_ms >= self.round_ms:
            raise ValueError(
                f"query_deadline_ms: {self.query_deadline_ms} must be below round_ms "
                f"({self.round_ms})"
            )
        if self.ballot_lifetime_ms < self.round_ms:
            raise ValueError(
                f"ballot_lifetime_ms: {self.ballot_lifetime_ms} must be at least round_ms "
                f"({self.round_ms})"
            )
        try:
            settings = NatsSettings.from_json(self.nats)
        except NatsSettingsError as exc:
            raise ValueError(str(exc)) from None
        want = expected_nats_user(self.region)
        if settings.tls is not None:  # a certificate user: its inbox is agent-<region>.<agent>
            want = f"{want}.{self.agent}"
        if settings.user != want:
            raise ValueError(
                f"nats.user: {settings.user!r} does not match region {self.region!r}; an agent of "
                f"this region must connect as {want!r} (the only user allowed to publish its votes)"
            )
        if len(self.resolvers) > L.MAX_VOTERS:
            raise ValueError(
                f"resolvers: {len(self.resolvers)} resolvers; a verdict lists at most "
                f"{L.MAX_VOTERS} voters, so a coordinator cannot count more"
            )
        for i, item in enumerate(self.resolvers):
            try:
                ResolverSpec.from_dict(item)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"resolvers[{i}]: {exc}") from None
        seen: set[str] = set()
        for item in self.resolvers:
            if item["id"] in seen:
                raise ValueError(f"resolvers: duplicate resolver id {item['id']!r}")
            seen.add(item["id"])
        votes = len(self.names) * len(self.resolvers)
        if votes > L.MAX_VOTES_PER_ROUND:
            raise ValueError(
                f"{len(self.names)} names x {len(self.resolvers)} resolvers = {votes} votes per "
                f"round; an agent sends at most {L.MAX_BALLOTS_PER_ROUND} ballots of "
                f"{L.MAX_VOTES_PER_BALLOT} votes ({L.MAX_VOTES_PER_ROUND}) per round"
            )
        _parse_names(self.names)
        try:
            TrustAnchors.parse(self.dnssec.trust_anchors)
        except RootConfigError as exc:
            raise ValueError(str(exc)) from None
        unknown = sorted(set(self.dnssec.validating_resolvers) - seen)
        if unknown:
            raise ValueError(
                f"dnssec.validating_resolvers: {', '.join(unknown)} is not a configured resolver"
            )

    @property
    def effective_query_deadline_ms(self) -> int:
        return self.round_ms * 6 // 10 if self.query_deadline_ms is None else self.query_deadline_ms

    @property
    def effective_publish_timeout_ms(self) -> int:
        if self.publish_timeout_ms is not None:
            return self.publish_timeout_ms
        slack = self.round_ms - self.effective_query_deadline_ms
        return max(MIN_PUBLISH_TIMEOUT_MS, min(DEFAULT_MAX_PUBLISH_TIMEOUT_MS, slack))


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent configuration (see the module docstring for the JSON form)."""

    agent: str
    region: str
    key_file: Path
    nats: NatsSettings
    resolvers: tuple[ResolverSpec, ...]
    names: tuple[tuple[str, str], ...]
    round_ms: int = DEFAULT_ROUND_MS
    query_deadline_ms: int = DEFAULT_ROUND_MS * 6 // 10
    ballot_lifetime_ms: int = DEFAULT_BALLOT_LIFETIME_MS
    publish_timeout_ms: int = min(DEFAULT_MAX_PUBLISH_TIMEOUT_MS, DEFAULT_ROUND_MS * 4 // 10)
    trust_file: Path | None = None
    identity: IdentityTargets | None = None  # paths anchored at the config file's directory
    identity_probe_every_ms: int | None = None
    trust_anchors: TrustAnchors = field(default_factory=TrustAnchors)
    validating_resolvers: frozenset[str] = frozenset()
    ballot_max_votes: int = DEFAULT_BALLOT_MAX_VOTES
    ballot_max_bytes: int = DEFAULT_BALLOT_MAX_BYTES
    ca: AgentCaConfig | None = None  # certificates from the CA, renewed at 2/3 (cctf.ca.renew)

    @classmethod
    def from_dict(cls, obj: Any, *, base_dir: Path | None = None) -> AgentConfig:
        """Validate a parsed YAML/JSON object. ``base_dir`` anchors relative paths (default: the
        current directory). Reads the NATS credentials file when one is named. Raises
        :class:`ConfigError`."""
        try:
            file = convert_config(obj, AgentFile, "agent config")
        except RootConfigError as exc:
            raise ConfigError(str(exc)) from None
        return cls.from_file(file, Path(base_dir) if base_dir is not None else Path.cwd())

    @classmethod
    def from_file(cls, file: AgentFile, base: Path) -> AgentConfig:
        """Resolve a validated file: anchor paths at ``base``, read the NATS credentials, load CA
        files. Raises :class:`ConfigError`."""
        return _resolve(file, base)

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and validate a YAML or JSON config file. Raises :class:`ConfigError`."""
        return load_agent_config(path)

    @property
    def query_count(self) -> int:
        """Queries (and votes) per round: names × resolvers."""
        return len(self.names) * len(self.resolvers)

    def load_key(self) -> SigningKey:
        """Load the signing key and check it belongs to this agent and region (:func:`check_key`)
        against ``trust`` when configured, else against the public entry ``<name>.pub.json`` next to
        a ``<name>.key.json`` key file when there is one. Raises :class:`ConfigError`."""
        try:
            raw = read_json(self.key_file, "key file")
            key = SigningKey.from_private_json(raw)
        except CryptoError as exc:
            raise ConfigError(f"key_file: {exc}") from None
        # A key file may record whom it was issued to; if it does, it must be us.
        for field_name, want in (("principal", self.agent), ("region", self.region)):
            have = raw.get(field_name)
            if have is not None and have != want:
                raise ConfigError(
                    f"key_file: key {key.kid} was issued for {field_name} {have!r}, "
                    f"but this agent's {field_name} is {want!r}"
                )
        trust_file = self.trust_file
        if trust_file is None and self.key_file.name.endswith(KEY_SUFFIX):
            # ``cctf keys generate`` writes <principal>.pub.json next to <principal>.key.json
            sibling = self.key_file.with_name(self.key_file.name[: -len(KEY_SUFFIX)] + PUB_SUFFIX)
            trust_file = sibling if sibling.is_file() else None
        if trust_file is not None:
            check_key(key, self.agent, self.region, _load_trust(trust_file))
        return key


def check_key(key: SigningKey, agent: str, region: str, trust: TrustConfig) -> TrustEntry:
    """The trust entry of ``key``, which must be an agent key of principal ``agent`` in ``region``
    with the same public keys. Raises :class:`ConfigError` otherwise (the coordinator would reject
    every ballot)."""
    try:
        entry = trust.get(key.kid, Role.AGENT)
    except CryptoError as exc:
        raise ConfigError(f"trust: signing key is not an agent key there: {exc}") from None
    if entry.keys.raw != key.public.raw or entry.keys.suite is not key.suite:
        raise ConfigError(f"trust: entry {key.kid} has other public keys than key_file")
    if entry.region != region:
        raise ConfigError(
            f"trust: key {key.kid} belongs to region {entry.region!r}, "
            f"but this agent's region is {region!r}"
        )
    if entry.principal != agent:
        raise ConfigError(
            f"trust: key {key.kid} belongs to agent {entry.principal!r}, "
            f"but this agent is {agent!r}"
        )
    return entry


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON agent config file. Raises
    :class:`ConfigError` (one line naming the file and the field)."""
    p = Path(path)
    try:
        file = load_config(p, AgentFile, "agent config")
    except RootConfigError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return _resolve(file, p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"agent config {p}: {exc}") from None


# --------------------------------------------------------------------------------------------


def _load_trust(path: Path) -> TrustConfig:
    """A trust config (``{"version": 1, "keys": [...]}``) or a single trust entry (a ``.pub`` file)."""
    try:
        obj = read_json(path, "trust file")
        if "keys" in obj:
            return TrustConfig.from_json(obj)
        return TrustConfig([TrustEntry.from_json(obj)])
    except CryptoError as exc:
        raise ConfigError(f"trust: {exc}") from None


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _resolve_nats(obj: dict[str, Any], base: Path) -> NatsSettings:
    """The ``nats`` block with its credentials file read (the user was checked by the struct)."""
    try:
        return NatsSettings.from_json(obj, base).resolved()
    except NatsSettingsError as exc:
        raise ConfigError(str(exc)) from None


def _resolve_resolvers(raw: list[dict[str, Any]], base: Path) -> tuple[ResolverSpec, ...]:
    specs: list[ResolverSpec] = []
    for i, item in enumerate(raw):
        if isinstance(item.get("ca_file"), str) and item["ca_file"]:
            item = {**item, "ca_file": str(_path(item["ca_file"], base))}
        try:
            specs.append(ResolverSpec.from_dict(item))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"resolvers[{i}]: {exc}") from None
    try:
        prepare(specs)  # CA files load now rather than in a round
    except ValueError as exc:
        raise ConfigError(f"resolvers: {exc}") from None
    return tuple(specs)


def _parse_names(raw: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Normalised, queryable, distinct ``(qname, qtype)`` pairs; ``ValueError`` naming the entry."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, (qname_raw, qtype_raw) in enumerate(raw):
        try:
            qname = normalize_name(qname_raw)
            parse_qname(qname)
            qtype = check_qtype(qtype_raw.upper())
            parse_qtype(qtype)
        except ValueError as exc:
            raise ValueError(f"names[{i}]: {exc}") from None
        if (qname, qtype) in seen:
            raise ValueError(f"names[{i}]: duplicate entry {qname} {qtype}")
        seen.add((qname, qtype))
        out.append((qname, qtype))
    return tuple(out)


def _resolve(file: AgentFile, base: Path) -> AgentConfig:
    return AgentConfig(
        agent=file.agent,
        region=file.region,
        key_file=_path(file.key_file, base),
        nats=_resolve_nats(file.nats, base),
        resolvers=_resolve_resolvers(file.resolvers, base),
        names=_parse_names(file.names),
        round_ms=file.round_ms,
        query_deadline_ms=file.effective_query_deadline_ms,
        ballot_lifetime_ms=file.ballot_lifetime_ms,
        publish_timeout_ms=file.effective_publish_timeout_ms,
        trust_file=_path(file.trust, base) if file.trust is not None else None,
        identity=file.identity.anchored(base) if file.identity is not None else None,
        identity_probe_every_ms=file.identity_probe_every_ms,
        trust_anchors=TrustAnchors.parse(file.dnssec.trust_anchors),
        validating_resolvers=frozenset(file.dnssec.validating_resolvers),
        ballot_max_votes=file.ballot_max_votes,
        ballot_max_bytes=file.ballot_max_bytes,
        ca=file.ca.anchored(base) if file.ca is not None else None,
    )
