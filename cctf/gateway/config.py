"""The ``cctf gateway`` config (YAML or JSON; commented example: ``examples/gateway.yaml``).

``region`` (whose verdict stream to read), ``trust_file`` (the coordinators' public keys), ``nats``
(the ``client`` user, :class:`cctf.bus.settings.NatsSettings`), ``listen`` (``host:port``),
``identity`` (the shared :class:`cctf.identity.targets.IdentityTargets`: trust domains, issuers and
workloads with their policies) and a few bounds. Relative paths are anchored at the file's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import msgspec

from cctf.bus.settings import NatsSettings
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.verify import DEFAULT_ROUND_MS
from cctf.config import ConfigStruct, load_config
from cctf.crypto.errors import CryptoError
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.errors import ConfigError
from cctf.identity.targets import IdentityTargets
from cctf.ids import IdError, check_id

__all__ = ["GatewayConfig", "load_gateway_config", "parse_listen"]

DEFAULT_LISTEN: Final = "127.0.0.1:8480"
MAX_BODY_LIMIT: Final = 1024 * 1024


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> ``(host, port)``; ``ValueError`` with the reason."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must look like host:port (port 0-65535), got {text!r}")
    return host, int(port)


class CoordinatorsConfig(ConfigStruct, frozen=True, kw_only=True):
    """``coordinators: {k: 2, of: [c1, c2, c3]}``: k-of-m coordinators (cctf.client.coordquorum)."""

    k: int
    of: list[str]

    def __post_init__(self) -> None:
        self.policy()  # ValueError with the rule's own message

    def policy(self) -> CoordinatorPolicy:
        return CoordinatorPolicy(self.k, tuple(self.of))


class GatewayConfig(ConfigStruct, frozen=True, kw_only=True):
    region: str
    trust_file: str
    nats: NatsSettings
    listen: str = DEFAULT_LISTEN
    identity: IdentityTargets = msgspec.field(default_factory=IdentityTargets)
    round_ms: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_ROUND_MS
    max_age_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    min_suite: str = "hybrid-ed25519-ml-dsa-65"
    request_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 2000
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_BODY_LIMIT)] = 96 * 1024
    require_dnssec: bool = False
    dns_lkg_holds: bool = False
    material_cache: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    coordinators: CoordinatorsConfig | None = None

    def __post_init__(self) -> None:
        try:
            check_id(self.region, "region")
        except IdError as exc:
            raise ValueError(f"region: {exc}") from None
        parse_listen(self.listen)
        try:
            SuitePolicy.parse(self.min_suite)
        except CryptoError as exc:
            raise ValueError(f"min_suite: {exc}") from None

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def policy(self) -> SuitePolicy:
        return SuitePolicy.parse(self.min_suite)

    def load_trust(self) -> TrustConfig:
        try:
            return TrustConfig.load(Path(self.trust_file))
        except CryptoError as exc:
            raise ConfigError(f"trust_file: {exc}") from None


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read a gateway config; relative paths are anchored at its directory."""
    p = Path(path)
    config = load_config(p, GatewayConfig, "gateway config")
    base = p.resolve().parent
    trust = Path(config.trust_file).expanduser()
    return msgspec.structs.replace(
        config,
        trust_file=str(trust if trust.is_absolute() else base / trust),
        nats=config.nats.anchored(base),
        identity=config.identity.anchored(base),
    )
