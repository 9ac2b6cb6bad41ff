"""Resolver specifications: how an agent reaches one resolver (pure validation, no I/O)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Final

from cctf.agents.canonical import Transport
from cctf.ids import check_id

__all__ = ["DEFAULT_PORTS", "DEFAULT_URL_PATH", "TLS_TRANSPORTS", "ResolverSpec"]

#: Default port of each transport.
DEFAULT_PORTS: Final[Mapping[Transport, int]] = {
    Transport.UDP: 53,
    Transport.TCP: 53,
    Transport.DOT: 853,
    Transport.DOH: 443,
    Transport.DOQ: 853,
}
TLS_TRANSPORTS: Final = frozenset({Transport.DOT, Transport.DOH, Transport.DOQ})
DEFAULT_URL_PATH: Final = "/dns-query"
_DEFAULT_URL_PATH: Final = DEFAULT_URL_PATH
_LABEL_RE: Final = re.compile(r"[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?")
_URL_PATH_RE: Final = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,254}")
_SPEC_KEYS: Final = frozenset(
    {"id", "address", "port", "transport", "tls_hostname", "url_path", "ca_file", "verify_tls"}
)


def _is_hostname(value: str) -> bool:
    if not value or len(value) > 253:
        return False
    return all(_LABEL_RE.fullmatch(label) for label in value.removesuffix(".").split("."))


@dataclasses.dataclass(frozen=True)
class ResolverSpec:
    """One resolver as an agent reaches it. Validated on construction (``ValueError``).

    * ``id``: ``[a-z0-9][a-z0-9-]{0,31}``, unique within an agent's resolver list;
    * ``address``: an IPv4 or IPv6 literal without scope (never a name: resolving the resolver would
      be circular);
    * ``port``: 1..65535 (:meth:`from_dict` fills in :data:`DEFAULT_PORTS`);
    * ``tls_hostname``: name to verify in the server certificate and to send as SNI (and the DoH Host);
      only for ``dot``/``doh``/``doq``; when absent the IP address is verified;
    * ``url_path``: DoH path, default ``/dns-query``; only for ``doh``;
    * ``ca_file``: PEM file of the CA(s) to trust instead of the system roots; only for TLS transports;
    * ``verify_tls``: ``False`` disables certificate verification (test set-ups only); only for TLS
      transports and incompatible with ``ca_file``.
    """

    id: str
    address: str
    port: int
    transport: Transport
    tls_hostname: str | None = None
    url_path: str = _DEFAULT_URL_PATH
    ca_file: str | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        ident = self.id
        check_id(ident, "resolver id")
        where = f"resolver {ident!r}"
        try:
            transport = Transport(self.transport)
        except ValueError:
            valid = ", ".join(t.value for t in Transport)
            raise ValueError(
                f"{where}: transport {self.transport!r} is not one of {valid}"
            ) from None
        object.__setattr__(self, "transport", transport)
        if not isinstance(self.address, str):
            raise ValueError(f"{where}: address must be a string")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(
                f"{where}: address {self.address!r} is not an IPv4 or IPv6 literal"
            ) from None
        if "%" in self.address:
            raise ValueError(f"{where}: scoped IPv6 address {self.address!r} is not supported")
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(f"{where}: port {self.port!r} must be an integer in 1..65535")
        if not isinstance(self.verify_tls, bool):
            raise ValueError(f"{where}: verify_tls must be true or false")
        is_tls = transport in TLS_TRANSPORTS
        if self.tls_hostname is not None:
            if not is_tls:
                raise ValueError(f"{where}: tls_hostname only applies to dot, doh and doq")
            if not isinstance(self.tls_hostname, str) or not (
                _is_hostname(self.tls_hostname.lower()) or _is_ip(self.tls_hostname)
            ):
                raise ValueError(f"{where}: tls_hostname {self.tls_hostname!r} is not a host name")
            object.__setattr__(self, "tls_hostname", self.tls_hostname.lower().removesuffix("."))
        if not isinstance(self.url_path, str) or not _URL_PATH_RE.fullmatch(self.url_path):
            raise ValueError(
                f"{where}: url_path {self.url_path!r} must be an absolute URL path such as "
                f"{_DEFAULT_URL_PATH!r} (no query string, at most 255 characters)"
            )
        if self.url_path != _DEFAULT_URL_PATH and transport != Transport.DOH:
            raise ValueError(f"{where}: url_path only applies to doh")
        if self.ca_file is not None:
            if not is_tls:
                raise ValueError(f"{where}: ca_file only applies to dot, doh and doq")
            if not isinstance(self.ca_file, str) or not self.ca_file:
                raise ValueError(f"{where}: ca_file must be a non-empty path")
            if not self.verify_tls:
                raise ValueError(f"{where}: ca_file is given but verify_tls is false")
        if not self.verify_tls and not is_tls:
            raise ValueError(f"{where}: verify_tls only applies to dot, doh and doq")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ResolverSpec:
        """Build from a config mapping; ``port`` defaults by transport. Unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError("resolver spec must be a mapping")
        unknown = sorted(str(k) for k in data if k not in _SPEC_KEYS)
        ident = data.get("id")
        where = f"resolver {ident!r}"
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("id", "address", "transport"):
            if key not in data:
                raise ValueError(f"{where}: missing required key {key!r}")
        transport_raw = data["transport"]
        try:
            transport = (
                Transport(str(transport_raw).lower()) if isinstance(transport_raw, str) else None
            )
        except ValueError:
            transport = None
        if transport is None:
            valid = ", ".join(t.value for t in Transport)
            raise ValueError(f"{where}: transport {transport_raw!r} is not one of {valid}")
        port = data.get("port", DEFAULT_PORTS[transport])
        url_path = data.get("url_path", _DEFAULT_URL_PATH)
        verify_tls = data.get("verify_tls", True)
        for key, value, kind in (
            ("id", ident, str),
            ("address", data["address"], str),
            ("port", port, int),
            ("url_path", url_path, str),
            ("verify_tls", verify_tls, bool),
        ):
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}: {key} must be of type {kind.__name__}")
        for key in ("tls_hostname", "ca_file"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string")
        tls_hostname = data.get("tls_hostname")
        ca_file = data.get("ca_file")
        assert isinstance(ident, str) and isinstance(data["address"], str)
        assert isinstance(port, int) and isinstance(url_path, str) and isinstance(verify_tls, bool)
        assert tls_hostname is None or isinstance(tls_hostname, str)
        assert ca_file is None or isinstance(ca_file, str)
        return cls(
            id=ident,
            address=data["address"],
            port=port,
            transport=transport,
            tls_hostname=tls_hostname,
            url_path=url_path,
            ca_file=ca_file,
            verify_tls=verify_tls,
        )

    def to_dict(self) -> dict[str, object]:
        """The inverse of :meth:`from_dict` (every key present)."""
        return {
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "transport": self.transport.value,
            "tls_hostname": self.tls_hostname,
            "url_path": self.url_path,
            "ca_file": self.ca_file,
            "verify_tls": self.verify_tls,
        }


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
