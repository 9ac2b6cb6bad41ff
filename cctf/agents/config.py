"""Resolver agent configuration: a JSON file, validated with clear error messages.

Format (relative paths are relative to the config file's directory)::

    {
      "agent": "agent-1",                      # agent id, [a-z0-9][a-z0-9-]{0,31}; the key's principal
      "region": "us-east",                     # region token
      "key_file": "keys/agent-1.key.json",     # private signing key (cctf-signing-key JSON)
      "trust": "trust.json",                   # optional: a trust config, or one trust entry
                                               #   (.pub.json); the key must be listed there as an
                                               #   agent key of this agent and this region. Default:
                                               #   <name>.pub.json beside <name>.key.json, if present
      "nats": {"credentials": ".cctf/nats-credentials.json", "user": "agent-us-east"},
          # or {"urls": ["nats://127.0.0.1:4222"], "user": "agent-us-east", "password": "..."}
          # (with "credentials", "urls" may still be given to override the file's)
      "resolvers": [{"id": "r1", "address": "127.0.0.1", "port": 5301, "transport": "udp"}, ...],
      "names": [["www.demo.test.", "A"], ["api.demo.test.", "AAAA"]],
      "round_ms": 1000,                        # optional, default 1000
      "query_deadline_ms": 600,                # optional, default 60 % of round_ms
      "ballot_lifetime_ms": 30000,             # optional, default 30000
      "publish_timeout_ms": 400                # optional: one publish attempt's ack timeout,
                                               #   default min(2000, round_ms - query_deadline_ms)
    }

The NATS user must be ``agent-<region>``: the server only lets that user publish on
``cctf.v1.vote.<region>.>``, so any other user is a configuration mistake caught here, not on the bus.

Passwords are held in :class:`NatsSettings` outside its ``repr`` and never logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cctf.agents.canonical import parse_qname, parse_qtype
from cctf.agents.dnsquery import ResolverSpec, prepare
from cctf.bus.settings import NatsSettings, NatsSettingsError
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.subjects import normalize_name
from cctf.crypto.errors import CryptoError
from cctf.crypto.keys import SigningKey, read_json
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.errors import ConfigError as RootConfigError
from cctf.ids import check_id, check_qtype

__all__ = [
    "DEFAULT_BALLOT_LIFETIME_MS",
    "DEFAULT_ROUND_MS",
    "MAX_BALLOT_LIFETIME_MS",
    "AgentConfig",
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
MAX_CONFIG_BYTES: Final = 1 << 20
KEY_SUFFIX: Final = ".key.json"
PUB_SUFFIX: Final = ".pub.json"

_TOP_KEYS: Final = frozenset(
    {
        "agent",
        "region",
        "key_file",
        "trust",
        "nats",
        "resolvers",
        "names",
        "round_ms",
        "query_deadline_ms",
        "ballot_lifetime_ms",
        "publish_timeout_ms",
    }
)


class ConfigError(RootConfigError):
    """The agent configuration is invalid; the message says where and why (never a secret)."""


def expected_nats_user(region: str) -> str:
    """The only NATS user an agent of ``region`` may use: ``agent-<region>``."""
    return f"agent-{check_id(region, 'region')}"


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

    @classmethod
    def from_dict(cls, obj: Any, *, base_dir: Path | None = None) -> AgentConfig:
        """Validate a parsed JSON object. ``base_dir`` anchors relative paths (default: the current
        directory). Reads the NATS credentials file when one is named. Raises :class:`ConfigError`."""
        return _parse(obj, Path(base_dir) if base_dir is not None else Path.cwd())

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and validate a JSON config file. Raises :class:`ConfigError`."""
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
    """Read and validate a JSON agent config file. Raises :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"agent config {p} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"agent config {p} is not valid JSON: {exc}") from None
    try:
        return _parse(obj, p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


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


def _int(obj: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be an integer (milliseconds), got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: {value} is outside {lo}..{hi}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{key}: required, a non-empty string")
    return value


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _parse_nats(obj: Any, region: str, base: Path) -> NatsSettings:
    """The shared ``nats`` block, resolved now, and only as this region's agent user."""
    try:
        settings = NatsSettings.from_json(obj, base)
    except NatsSettingsError as exc:
        raise ConfigError(str(exc)) from None
    want = expected_nats_user(region)
    if settings.user != want:
        raise ConfigError(
            f"nats.user: {settings.user!r} does not match region {region!r}; an agent of this "
            f"region must connect as {want!r} (the only user allowed to publish its votes)"
        )
    try:
        return settings.resolved()
    except NatsSettingsError as exc:
        raise ConfigError(str(exc)) from None


def _parse_resolvers(raw: Any, base: Path) -> tuple[ResolverSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("resolvers: required, a non-empty list of resolver objects")
    specs: list[ResolverSpec] = []
    for i, item in enumerate(raw):
        if isinstance(item, Mapping) and isinstance(item.get("ca_file"), str) and item["ca_file"]:
            item = {**item, "ca_file": str(_path(item["ca_file"], base))}
        try:
            specs.append(ResolverSpec.from_dict(item))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"resolvers[{i}]: {exc}") from None
    try:
        prepare(specs)  # unique ids; CA files load now rather than in a round
    except ValueError as exc:
        raise ConfigError(f"resolvers: {exc}") from None
    return tuple(specs)


def _parse_names(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            'names: required, a non-empty list of [qname, qtype] pairs like ["www.example.", "A"]'
        )
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(raw):
        if (
            not isinstance(item, Sequence)
            or isinstance(item, str)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise ConfigError(f"names[{i}]: must be a [qname, qtype] pair of strings")
        qname_raw, qtype_raw = item
        try:
            qname = normalize_name(qname_raw)
            parse_qname(qname)
            qtype = check_qtype(qtype_raw.upper())
            parse_qtype(qtype)
        except ValueError as exc:
            raise ConfigError(f"names[{i}]: {exc}") from None
        if (qname, qtype) in seen:
            raise ConfigError(f"names[{i}]: duplicate entry {qname} {qtype}")
        seen.add((qname, qtype))
        out.append((qname, qtype))
    return tuple(out)


def _parse(obj: Any, base: Path) -> AgentConfig:
    if not isinstance(obj, Mapping):
        raise ConfigError("the agent config must be a JSON object")
    unknown = sorted(str(k) for k in obj if k not in _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}")
    try:
        agent = check_id(_str(obj, "agent"), "agent id")
        region = check_id(_str(obj, "region"), "region")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    key_file = _path(_str(obj, "key_file"), base)
    trust_file = None
    if obj.get("trust") is not None:
        trust_file = _path(_str(obj, "trust"), base)
    nats_settings = _parse_nats(obj.get("nats"), region, base)
    resolvers = _parse_resolvers(obj.get("resolvers"), base)
    names = _parse_names(obj.get("names"))
    if len(resolvers) > L.MAX_VOTERS:
        raise ConfigError(
            f"resolvers: {len(resolvers)} resolvers; a verdict lists at most {L.MAX_VOTERS} voters, "
            "so a coordinator cannot count more"
        )
    if len(names) * len(resolvers) > L.MAX_VOTES_PER_ROUND:
        raise ConfigError(
            f"{len(names)} names x {len(resolvers)} resolvers = {len(names) * len(resolvers)} votes "
            f"per round; an agent sends at most {L.MAX_BALLOTS_PER_ROUND} ballots of "
            f"{L.MAX_VOTES_PER_BALLOT} votes ({L.MAX_VOTES_PER_ROUND}) per round"
        )
    round_ms = _int(obj, "round_ms", DEFAULT_ROUND_MS, MIN_ROUND_MS, MAX_ROUND_MS)
    query_deadline_ms = _int(obj, "query_deadline_ms", round_ms * 6 // 10, 1, round_ms - 1)
    ballot_lifetime_ms = _int(
        obj, "ballot_lifetime_ms", DEFAULT_BALLOT_LIFETIME_MS, round_ms, MAX_BALLOT_LIFETIME_MS
    )
    publish_timeout_ms = _int(
        obj,
        "publish_timeout_ms",
        max(
            MIN_PUBLISH_TIMEOUT_MS,
            min(DEFAULT_MAX_PUBLISH_TIMEOUT_MS, round_ms - query_deadline_ms),
        ),
        MIN_PUBLISH_TIMEOUT_MS,
        MAX_PUBLISH_TIMEOUT_MS,
    )
    return AgentConfig(
        agent=agent,
        region=region,
        key_file=key_file,
        nats=nats_settings,
        resolvers=resolvers,
        names=names,
        round_ms=round_ms,
        query_deadline_ms=query_deadline_ms,
        ballot_lifetime_ms=ballot_lifetime_ms,
        publish_timeout_ms=publish_timeout_ms,
        trust_file=trust_file,
    )
