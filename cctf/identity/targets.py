"""The identity targets (design decision 5): which trust domains, OIDC issuers and workloads the
fabric watches and decides on. One typed struct, :class:`IdentityTargets`, read by agents (the
``identity:`` block of the agent file: what to fetch and probe), the coordinator (its allow-list:
only configured subjects are tallied) and relying parties (SDK / gateway: workload policies).
Commented example: ``examples/identity.yaml``. Pure (paths are anchored, never opened, here)::

    trust_domains:                       # 0..64, unique names
      - name: demo.test                  # trust domain name, [a-z0-9._-], lower case
        bundle_endpoint: https://127.0.0.1:8443/bundle   # SPIFFE https_web bundle endpoint, or
        # bundle_file: bundles/demo.test.json            #   a local SPIFFE bundle (exactly one)
        ca_file: ca/web-root.pem         # optional: web PKI roots for the endpoint (default system)
        refresh_ms: 300000               # optional: refresh when the bundle gives no refresh hint
    issuers:                             # 0..64, unique issuer URLs
      - issuer: https://127.0.0.1:8444   # exactly the discovery document's "issuer"
        audiences: [cctf]                # 1..16 audiences a relying party accepts
        ca_file: ca/web-root.pem         # optional
        discovery_url: https://...       # optional: where the discovery document is, when it is
                                         #   not <issuer>/.well-known/openid-configuration (OCI)
    workloads:                           # 0..256, unique SPIFFE IDs
      - spiffe_id: spiffe://demo.test/api   # its trust domain must be configured above
        dns_name: api.demo.test.         # optional: the DNS path (normalized: lower case, final dot)
        qtype: A                         # default A
        endpoint: 127.0.0.1:9443         # optional: host:port of its mTLS endpoint (the mtls path)
        issuer: https://127.0.0.1:8444   # optional: the OIDC path's issuer (one of issuers)
        subject: spiffe://demo.test/api  # optional: the expected token sub (default spiffe_id)
        audience: cctf                   # optional: one of the issuer's audiences (default: first)
        policy: {at_least: 2, require: [mtls]}   # default {at_least: 2, require: []}

URLs are ``https`` only -- also for loopback: the local identity fabric serves HTTPS under its own CA
(``ca_file``), so there is no plain-HTTP exception to get wrong. No userinfo, no fragment; an issuer
URL has no query either (OpenID Connect Discovery 1.0 §3). At most 2048 characters.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec

from cctf.bus_schemas.subjects import normalize_name
from cctf.config import ConfigStruct, convert_config, load_config
from cctf.identity.errors import IdentityError
from cctf.identity.spiffeid import check_trust_domain, parse_spiffe_id
from cctf.ids import IdError, check_qtype, shown

__all__ = [
    "MAX_AUDIENCES",
    "MAX_ISSUERS",
    "MAX_TRUST_DOMAINS",
    "MAX_URL_CHARS",
    "MAX_WORKLOADS",
    "PATHS",
    "IdentityTargets",
    "IssuerTarget",
    "PolicySpec",
    "TrustDomainTarget",
    "WorkloadTarget",
    "check_endpoint",
    "check_https_url",
    "identity_targets_from",
    "load_identity_targets",
]

MAX_TRUST_DOMAINS: Final = 64
MAX_ISSUERS: Final = 64
MAX_WORKLOADS: Final = 256
MAX_AUDIENCES: Final = 16
MAX_URL_CHARS: Final = 2048
MAX_AUDIENCE_CHARS: Final = 256
DEFAULT_REFRESH_MS: Final = 300_000
MIN_REFRESH_MS: Final = 1_000
MAX_REFRESH_MS: Final = 86_400_000

PathName = Literal["dns", "mtls", "oidc"]
PATHS: Final[tuple[PathName, ...]] = ("dns", "mtls", "oidc")

_HOST_RE: Final = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)


def _check_host(host: str, what: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if _HOST_RE.fullmatch(host) is None:
        raise ValueError(f"{what}: invalid host {shown(host)}")
    return host


def check_https_url(url: str, what: str, *, query_ok: bool = True) -> str:
    """``url`` if it is an absolute ``https`` URL with a host, no userinfo and no fragment (and,
    unless ``query_ok``, no query); else ``ValueError`` naming ``what``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ValueError(f"{what}: expected an https URL of 1..{MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise ValueError(f"{what}: {shown(url)} has spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{what}: {shown(url)} is not a valid URL ({exc})") from None
    if parts.scheme != "https":
        raise ValueError(f"{what}: {shown(url)} must use https (plain http is refused)")
    if not parts.hostname or parts.username is not None or "@" in parts.netloc:
        raise ValueError(f"{what}: {shown(url)} must name a host and no userinfo")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"{what}: {shown(url)} must not have a fragment")
    if not query_ok and (parts.query or "?" in url):
        raise ValueError(f"{what}: {shown(url)} must not have a query")
    if port == 0:
        raise ValueError(f"{what}: {shown(url)} has port 0")
    host = parts.hostname
    if not host.startswith("[") and ":" not in host:
        _check_host(host, what)
    return url


def check_endpoint(endpoint: str, what: str = "endpoint") -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` (host a DNS name, an IPv4 address or ``[IPv6]``)."""
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 300:
        raise ValueError(f"{what}: expected host:port")
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit() or not (1 <= int(port_text) <= 65535):
        raise ValueError(f"{what}: {shown(endpoint)} is not host:port with a port 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{what}: {shown(endpoint)} has an invalid IPv6 address") from None
        return host[1:-1], int(port_text)
    if not host or ":" in host:
        raise ValueError(f"{what}: {shown(endpoint)}: write an IPv6 address as [addr]:port")
    return _check_host(host, what), int(port_text)


def _identity_value_error(exc: IdentityError, what: str) -> ValueError:
    return ValueError(f"{what}: {exc.detail}")


class TrustDomainTarget(ConfigStruct, frozen=True, kw_only=True):
    """One SPIFFE trust domain and where its bundle comes from (exactly one source)."""

    name: str
    bundle_endpoint: str | None = None
    bundle_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    ca_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    refresh_ms: Annotated[int, msgspec.Meta(ge=MIN_REFRESH_MS, le=MAX_REFRESH_MS)] = (
        DEFAULT_REFRESH_MS
    )

    def __post_init__(self) -> None:
        try:
            check_trust_domain(self.name)
        except IdentityError as exc:
            raise _identity_value_error(exc, "name") from None
        if (self.bundle_endpoint is None) == (self.bundle_file is None):
            raise ValueError(
                f"trust domain {self.name!r}: give exactly one of bundle_endpoint and bundle_file"
            )
        if self.bundle_endpoint is not None:
            check_https_url(self.bundle_endpoint, f"trust domain {self.name!r} bundle_endpoint")
        if self.ca_file is not None and self.bundle_endpoint is None:
            raise ValueError(f"trust domain {self.name!r}: ca_file is for a bundle_endpoint only")


class IssuerTarget(ConfigStruct, frozen=True, kw_only=True):
    """One OIDC issuer (AWS, Azure, GCP, OCI or any other: one generic model; docs/identity.md)."""

    issuer: str
    audiences: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_AUDIENCE_CHARS)]],
        msgspec.Meta(min_length=1, max_length=MAX_AUDIENCES),
    ]
    ca_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    discovery_url: str | None = None

    def __post_init__(self) -> None:
        check_https_url(self.issuer, "issuer", query_ok=False)
        if len(set(self.audiences)) != len(self.audiences):
            raise ValueError(f"issuer {self.issuer}: duplicate audiences")
        if self.discovery_url is not None:
            check_https_url(self.discovery_url, f"issuer {self.issuer} discovery_url")

    @property
    def discovery_location(self) -> str:
        """Where the discovery document is fetched: ``discovery_url``, else
        ``<issuer without trailing />/.well-known/openid-configuration`` (OIDC Discovery §4). The
        document's ``issuer`` must equal :attr:`issuer` exactly either way."""
        if self.discovery_url is not None:
            return self.discovery_url
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class PolicySpec(ConfigStruct, frozen=True, kw_only=True):
    """A workload's trust policy: at least ``at_least`` of the three paths hold, and every path in
    ``require`` holds (``cctf.identity.negotiator.policy_from_spec``)."""

    at_least: Annotated[int, msgspec.Meta(ge=1, le=3)] = 2
    require: Annotated[list[PathName], msgspec.Meta(max_length=3)] = msgspec.field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        if len(set(self.require)) != len(self.require):
            raise ValueError("policy.require: duplicate paths")


class WorkloadTarget(ConfigStruct, frozen=True, kw_only=True):
    """One workload: its SPIFFE ID and the evidence each path uses (decision 2)."""

    spiffe_id: str
    dns_name: str | None = None
    qtype: str = "A"
    endpoint: str | None = None
    issuer: str | None = None
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    audience: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_AUDIENCE_CHARS)] | None = (
        None
    )
    policy: PolicySpec = msgspec.field(default_factory=PolicySpec)

    def __post_init__(self) -> None:
        try:
            parse_spiffe_id(self.spiffe_id)
        except IdentityError as exc:
            raise _identity_value_error(exc, "spiffe_id") from None
        where = f"workload {self.spiffe_id}"
        if self.dns_name is not None:
            try:
                norm = normalize_name(self.dns_name)
            except IdError as exc:
                raise ValueError(f"{where} dns_name: {exc}") from None
            if norm != self.dns_name:
                raise ValueError(f"{where} dns_name: write it normalized, as {norm!r}")
        try:
            check_qtype(self.qtype)
        except IdError as exc:
            raise ValueError(f"{where} qtype: {exc}") from None
        if self.endpoint is not None:
            check_endpoint(self.endpoint, f"{where} endpoint")
        if self.issuer is not None:
            check_https_url(self.issuer, f"{where} issuer", query_ok=False)
        elif self.subject is not None or self.audience is not None:
            raise ValueError(f"{where}: subject and audience need an issuer")

    @property
    def trust_domain(self) -> str:
        return parse_spiffe_id(self.spiffe_id).trust_domain

    @property
    def expected_subject(self) -> str:
        """The ``sub`` an ID token of this workload must carry (default: its SPIFFE ID)."""
        return self.spiffe_id if self.subject is None else self.subject


class IdentityTargets(ConfigStruct, frozen=True, kw_only=True):
    """Every identity subject the fabric watches; see the module docstring. Cross-references are
    checked: a workload's trust domain and issuer are configured, its audience is one of the
    issuer's; names, issuer URLs and SPIFFE IDs are unique."""

    trust_domains: Annotated[
        list[TrustDomainTarget], msgspec.Meta(max_length=MAX_TRUST_DOMAINS)
    ] = msgspec.field(default_factory=list)
    issuers: Annotated[list[IssuerTarget], msgspec.Meta(max_length=MAX_ISSUERS)] = msgspec.field(
        default_factory=list
    )
    workloads: Annotated[list[WorkloadTarget], msgspec.Meta(max_length=MAX_WORKLOADS)] = (
        msgspec.field(default_factory=list)
    )

    def __post_init__(self) -> None:
        _unique([t.name for t in self.trust_domains], "trust_domains: duplicate trust domain")
        _unique([i.issuer for i in self.issuers], "issuers: duplicate issuer")
        _unique([w.spiffe_id for w in self.workloads], "workloads: duplicate spiffe_id")
        domains = {t.name for t in self.trust_domains}
        issuers = {i.issuer: i for i in self.issuers}
        for w in self.workloads:
            if w.trust_domain not in domains:
                raise ValueError(
                    f"workload {w.spiffe_id}: trust domain {w.trust_domain!r} is not in trust_domains"
                )
            if w.issuer is not None:
                iss = issuers.get(w.issuer)
                if iss is None:
                    raise ValueError(f"workload {w.spiffe_id}: issuer {w.issuer} is not in issuers")
                if w.audience is not None and w.audience not in iss.audiences:
                    raise ValueError(
                        f"workload {w.spiffe_id}: audience {w.audience!r} is not one of the "
                        f"issuer's audiences"
                    )

    def trust_domain(self, name: str) -> TrustDomainTarget | None:
        return next((t for t in self.trust_domains if t.name == name), None)

    def issuer(self, url: str) -> IssuerTarget | None:
        return next((i for i in self.issuers if i.issuer == url), None)

    def workload(self, spiffe_id: str) -> WorkloadTarget | None:
        return next((w for w in self.workloads if w.spiffe_id == spiffe_id), None)

    def audience_of(self, workload: WorkloadTarget) -> str | None:
        """The audience a token for ``workload`` must carry (its own, else its issuer's first)."""
        if workload.issuer is None:
            return None
        if workload.audience is not None:
            return workload.audience
        iss = self.issuer(workload.issuer)
        return None if iss is None else iss.audiences[0]

    def anchored(self, base_dir: Path) -> IdentityTargets:
        """A copy with relative ``bundle_file`` / ``ca_file`` paths made relative to ``base_dir``
        (the config file's directory)."""

        def fix(p: str | None) -> str | None:
            return None if p is None else str(base_dir / p)

        return msgspec.structs.replace(
            self,
            trust_domains=[
                msgspec.structs.replace(t, bundle_file=fix(t.bundle_file), ca_file=fix(t.ca_file))
                for t in self.trust_domains
            ],
            issuers=[msgspec.structs.replace(i, ca_file=fix(i.ca_file)) for i in self.issuers],
        )


def _unique(values: list[str], message: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{message} {v!r}")
        seen.add(v)


def identity_targets_from(obj: object, where: str = "identity targets") -> IdentityTargets:
    """``obj`` (parsed YAML/JSON, e.g. an agent file's ``identity:`` block) as
    :class:`IdentityTargets`; :class:`cctf.errors.ConfigError` naming the field."""
    return convert_config(obj, IdentityTargets, where)


def load_identity_targets(path: str | Path) -> IdentityTargets:
    """Read an identity targets file (YAML or JSON) with relative paths anchored at its directory."""
    p = Path(path)
    return load_config(p, IdentityTargets, "identity targets").anchored(p.parent)
