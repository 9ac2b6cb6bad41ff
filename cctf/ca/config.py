"""CA configuration structs (``cctf.config.ConfigStruct``), relative paths anchored by the loader.

* :class:`CaGateConfig` — the coordinator's ``ca:`` section (absent: no certificate gate)::

      ca:
        trust_domain: cctf.test
        intermediate: ca/intermediate.pem   # signs the agent certificates
        log_key: ca/ca-log.pub.json         # the CA log's public hybrid key
        ready_timeout_ms: 5000              # start waits this long to catch up with the CA log

* :class:`AgentCaConfig` — the agent's ``ca:`` section (absent: no certificate)::

      ca:
        trust_domain: cctf.test
        intermediate: ca/intermediate.pem
        cert_dir: certs                     # <agent>.cert.pem (leaf + chain), <agent>.tls-key.pem
        lifetime_ms: 0                      # 0: the CA's default
        join_cert: join/join.cert.pem       # optional: the one-time join credential (`cctf ca
        join_key: join/join.tls-key.pem     #   join`) used when cert_dir holds no valid certificate

* :class:`CaConfig` — ``cctf ca serve``'s file (``cctf ca init`` writes one), see ``examples/ca.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cctf.bus.settings import NatsSettings
from cctf.ca.profile import MAX_LIFETIME_MS, MIN_LIFETIME_MS, IssuerKey
from cctf.config import ConfigStruct, load_config
from cctf.crypto.errors import CryptoError
from cctf.crypto.keys import PublicKeySet, SigningKey, load_signing_key, read_json
from cctf.crypto.trust import TrustConfig
from cctf.errors import ConfigError
from cctf.identity.errors import IdentityError
from cctf.identity.spiffeid import check_trust_domain
from cctf.util.files import read_bounded

__all__ = [
    "AgentCaConfig",
    "CaConfig",
    "CaGateConfig",
    "load_ca_config",
    "load_certificate",
    "load_issuer_key",
    "load_public_key",
]

Lifetime = Annotated[int, msgspec.Meta(ge=MIN_LIFETIME_MS, le=MAX_LIFETIME_MS)]


def _anchor(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _trust_domain(value: str) -> None:
    try:
        check_trust_domain(value)
    except IdentityError as exc:
        raise ValueError(f"trust_domain: {exc}") from None


def load_certificate(path: str, what: str) -> x509.Certificate:
    data = read_bounded(path, what, 64 * 1024)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{what} {path}: not a PEM certificate ({exc})") from None


def load_issuer_key(path: str) -> IssuerKey:
    data = read_bounded(path, "intermediate key", 64 * 1024)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"intermediate key {path}: not an unencrypted PEM key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"intermediate key {path}: ECDSA or Ed25519 keys only")
    return key


def load_public_key(path: str, what: str) -> PublicKeySet:
    try:
        return PublicKeySet.from_json(read_json(Path(path), what))
    except CryptoError as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None


class CaGateConfig(ConfigStruct, frozen=True, kw_only=True):
    trust_domain: str
    intermediate: str
    log_key: str
    ready_timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 5_000

    def __post_init__(self) -> None:
        _trust_domain(self.trust_domain)

    def anchored(self, base: Path) -> CaGateConfig:
        return msgspec.structs.replace(
            self,
            intermediate=_anchor(self.intermediate, base),
            log_key=_anchor(self.log_key, base),
        )


class AgentCaConfig(ConfigStruct, frozen=True, kw_only=True):
    trust_domain: str
    intermediate: str
    cert_dir: str
    lifetime_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_LIFETIME_MS)] = 0
    request_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 5_000
    join_cert: str | None = None
    join_key: str | None = None

    def __post_init__(self) -> None:
        _trust_domain(self.trust_domain)
        if self.lifetime_ms and self.lifetime_ms < MIN_LIFETIME_MS:
            raise ValueError(f"lifetime_ms: 0 (the CA's default) or at least {MIN_LIFETIME_MS}")
        if (self.join_cert is None) != (self.join_key is None):
            raise ValueError("join_cert and join_key: both or neither")

    def anchored(self, base: Path) -> AgentCaConfig:
        return msgspec.structs.replace(
            self,
            intermediate=_anchor(self.intermediate, base),
            cert_dir=_anchor(self.cert_dir, base),
            join_cert=None if self.join_cert is None else _anchor(self.join_cert, base),
            join_key=None if self.join_key is None else _anchor(self.join_key, base),
        )


class CaConfig(ConfigStruct, frozen=True, kw_only=True):
    trust_domain: str
    intermediate: str  # PEM certificate of the operator's intermediate CA
    intermediate_key: str  # its PEM private key (unencrypted; keep the file 0600)
    chain: list[str] = msgspec.field(default_factory=list)  # further intermediates, PEM
    log_key: str  # the CA log's private hybrid signing key (cctf-signing-key JSON)
    trust_file: str  # the agents' hybrid keys (the coordinators' trust config)
    nats: NatsSettings | None = None
    default_lifetime_ms: Lifetime = 3_600_000
    max_lifetime_ms: Lifetime = MAX_LIFETIME_MS
    append_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 5_000

    def __post_init__(self) -> None:
        _trust_domain(self.trust_domain)
        if self.default_lifetime_ms > self.max_lifetime_ms:
            raise ValueError("default_lifetime_ms exceeds max_lifetime_ms")

    def load_log_key(self) -> SigningKey:
        try:
            return load_signing_key(Path(self.log_key))
        except CryptoError as exc:
            raise ConfigError(f"log_key: {exc}") from None

    def load_trust(self) -> TrustConfig:
        try:
            return TrustConfig.load(Path(self.trust_file))
        except CryptoError as exc:
            raise ConfigError(f"trust_file: {exc}") from None


def load_ca_config(path: str | Path) -> CaConfig:
    p = Path(path)
    c = load_config(p, CaConfig, "CA config")
    base = p.resolve().parent
    return msgspec.structs.replace(
        c,
        intermediate=_anchor(c.intermediate, base),
        intermediate_key=_anchor(c.intermediate_key, base),
        chain=[_anchor(x, base) for x in c.chain],
        log_key=_anchor(c.log_key, base),
        trust_file=_anchor(c.trust_file, base),
        nats=c.nats.anchored(base) if c.nats is not None else None,
    )
