"""The local identity fabric: a SPIFFE trust domain, its bundle endpoint, an OIDC issuer and
workload TLS endpoints on loopback, for tests and ``cctf demo`` (imported by no component).

``IdentityFabric(workdir)`` holds, once started (``async with`` or ``astart``/``astop``; sync code:
``with fabric.run_in_thread():``):

* ``web_ca_file``: the PEM root of a local web PKI; every HTTPS endpoint presents a server
  certificate for ``127.0.0.1`` / ``localhost`` from it (clients pass it as ``ca_file``);
* ``trust_domain``: :class:`LocalTrustDomain` (root + intermediate CA, JWT authorities,
  ``spiffe_sequence``); ``bundle_file`` holds its bundle document as well;
* ``bundle``: :class:`BundleEndpoint`, one port per region (``bundle.bundle_url(region)``);
* ``issuer``: :class:`OidcIssuer` (``issuer.issuer_url``; ``mint_id_token``), also one port per
  region (``issuer.discovery_url(region)``: the same issuer, that view's ``jwks_uri``);
* ``workloads``: SPIFFE ID -> :class:`WorkloadEndpoint`, one port per region
  (``workload.address(region)``).

Fault knobs (run time, next connection): ``set_mode("down"|"hang"|"up", view=...)`` on any server;
``bundle.tamper/rollback/empty/serve/restore``; ``issuer.swap_jwks/serve_jwks/serve_discovery``
(per view too, reaching the regions configured with ``targets(region, issuer_view=True)``);
``workload.present(Presentation.WRONG_IDENTITY|EXPIRED|NOT_YET_VALID|UNTRUSTED, view=...)``;
``reset_faults()`` undoes them all.

For leak checks, ``secret_material()`` lists every private-key encoding, ``certificate_ders()``
every certificate and ``minted_tokens()`` every token the fabric made.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.devfabric.identity_endpoints import (
    BundleEndpoint,
    LocalTrustDomain,
    OidcIssuer,
    Presentation,
    WorkloadEndpoint,
    WorkloadSpec,
)
from cctf.devfabric.identity_pki import (
    CertificateAuthority,
    cert_der,
    encode_json,
    private_key_secrets,
)
from cctf.devfabric.identity_servers import Mode, ViewServer, server_context
from cctf.identity.targets import IdentityTargets, identity_targets_from
from cctf.util.files import write_file_atomic

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "DEFAULT_WORKLOADS",
    "BundleEndpoint",
    "IdentityFabric",
    "LocalTrustDomain",
    "Mode",
    "OidcIssuer",
    "Presentation",
    "WorkloadEndpoint",
    "WorkloadSpec",
]

DEFAULT_TRUST_DOMAIN = "demo.test"
DEFAULT_WORKLOADS: tuple[WorkloadSpec, ...] = (
    WorkloadSpec("api", "api.demo.test.", "api"),
    WorkloadSpec("auth", "auth.demo.test.", "auth"),
    WorkloadSpec("db", "db.demo.test.", "db"),
)
AUDIENCE = "cctf-demo"
WEB_HOSTS = ("127.0.0.1", "localhost", "::1")


class IdentityFabric:
    def __init__(
        self,
        workdir: Path,
        *,
        regions: Sequence[str] = DEFAULT_REGIONS,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        workloads: Sequence[WorkloadSpec] = DEFAULT_WORKLOADS,
        host: str = "127.0.0.1",
        sequence: int = 5,
        refresh_hint_s: int = 60,
        now: float | None = None,
    ) -> None:
        self.workdir = workdir
        self.regions = tuple(regions)
        self.host = host
        t = time.time() if now is None else now
        self.web_ca = CertificateAuthority.create("CCTF local web PKI", now=t, intermediate=False)
        web_cert = self.web_ca.issue_server(WEB_HOSTS, not_before=t - 60, not_after=t + 86_400)
        web_ctx = server_context(web_cert)
        self.trust_domain = LocalTrustDomain(
            trust_domain, now=t, sequence=sequence, refresh_hint_s=refresh_hint_s
        )
        self.bundle = BundleEndpoint(self.trust_domain, self.regions, web_ctx, host)
        self.issuer = OidcIssuer(web_ctx, host, now=t, views=self.regions)
        self.workload_specs = tuple(workloads)
        self.workloads: dict[str, WorkloadEndpoint] = {}
        for spec in workloads:
            w = WorkloadEndpoint(spec, self.trust_domain, self.regions, host)
            self.workloads[w.spiffe_id] = w
        self.web_ca_file = workdir / "web-ca.pem"
        self.bundle_file = workdir / "bundle.json"
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def servers(self) -> list[ViewServer]:
        return [self.bundle, self.issuer, *self.workloads.values()]

    async def astart(self) -> IdentityFabric:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_file_atomic(self.web_ca_file, self.web_ca.root_pem(), mode=0o644)
        self.write_bundle_file()
        try:
            for server in self.servers():
                await server.start()
        except BaseException:
            await self.astop()
            raise
        self._started = True
        return self

    async def astop(self) -> None:
        for server in self.servers():
            await server.stop()
        self._started = False

    async def __aenter__(self) -> IdentityFabric:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    @contextlib.contextmanager
    def run_in_thread(self, timeout_s: float = 60.0) -> Iterator[IdentityFabric]:
        """Serve from a private event loop in a daemon thread (for synchronous tests). Knobs may
        be called from the caller's thread; they take effect on the next connection."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="cctf-idfabric", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result(timeout_s)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            loop.close()

    # -- knobs --------------------------------------------------------------------------------
    def reset_faults(self) -> None:
        """Every server up, presenting and serving its genuine material."""
        for server in self.servers():
            server.set_mode(Mode.UP)
        self.bundle.restore()
        self.issuer.restore()
        for w in self.workloads.values():
            w.present(Presentation.VALID)

    def write_bundle_file(self, path: Path | None = None) -> Path:
        """Write the current bundle document (for ``bundle_file`` trust domains)."""
        target = path or self.bundle_file
        write_file_atomic(target, encode_json(self.trust_domain.document()), mode=0o644)
        return target

    def workload(self, label_or_id: str) -> WorkloadEndpoint:
        for w in self.workloads.values():
            if label_or_id in (w.spiffe_id, w.spec.label):
                return w
        raise KeyError(label_or_id)

    # -- what agents and relying parties are configured with -----------------------------------
    def targets_document(
        self,
        region: str | None = None,
        *,
        bundle_file: bool = False,
        policy: dict[str, Any] | None = None,
        issuer_view: bool = False,
    ) -> dict[str, Any]:
        """The fabric as an ``identity:`` block (plain data, e.g. for an agent file): the bundle
        endpoint and workload endpoints of ``region``'s view (the first region's when ``None``);
        ``bundle_file=True`` names :attr:`bundle_file` instead of the endpoint; ``issuer_view=True``
        gives the issuer the ``discovery_url`` of ``region``'s view (so the issuer's per-view knobs
        reach that region: split view), else its own discovery location."""
        view = region or self.regions[0]
        ca = str(self.web_ca_file)
        domain: dict[str, Any] = {"name": self.trust_domain.name}
        if bundle_file:
            domain["bundle_file"] = str(self.bundle_file)
        else:
            domain["bundle_endpoint"] = self.bundle.bundle_url(view)
            domain["ca_file"] = ca
        issuer = self.issuer.issuer_url
        audiences = sorted({w.spec.audience for w in self.workloads.values()} or {AUDIENCE})
        issuer_entry: dict[str, Any] = {"issuer": issuer, "audiences": audiences, "ca_file": ca}
        if issuer_view:
            issuer_entry["discovery_url"] = self.issuer.discovery_url(view)
        workloads = []
        for w in self.workloads.values():
            entry: dict[str, Any] = {
                "spiffe_id": w.spiffe_id,
                "dns_name": w.spec.dns_name,
                "endpoint": w.address(view),
                "issuer": issuer,
                "audience": w.spec.audience,
            }
            if policy is not None:
                entry["policy"] = policy
            workloads.append(entry)
        return {
            "trust_domains": [domain],
            "issuers": [issuer_entry],
            "workloads": workloads,
        }

    def targets(self, region: str | None = None, **kwargs: Any) -> IdentityTargets:
        """:meth:`targets_document` as an :class:`~cctf.identity.targets.IdentityTargets`."""
        return identity_targets_from(self.targets_document(region, **kwargs), "identity fabric")

    # -- leak checks --------------------------------------------------------------------------
    def _cas(self) -> list[CertificateAuthority]:
        cas = [self.web_ca, self.trust_domain.ca]
        # only the rogue CAs already made (asking for them would create them)
        for rogue in (self.trust_domain._rogue,):
            if rogue is not None:
                cas.append(rogue)
        return cas

    def secret_material(self) -> list[bytes]:
        """Every encoding (PKCS#8 DER, SEC1 DER, raw scalar) of every private key made so far."""
        out: list[bytes] = []
        for ca in self._cas():
            for key in ca.private_keys():
                out.extend(private_key_secrets(key))
        jwt_keys = [*self.trust_domain.jwt_authorities, *self.issuer.keys, *self.issuer.rogue_keys]
        if self.trust_domain._rogue_jwt is not None:
            jwt_keys.append(self.trust_domain._rogue_jwt)
        for k in jwt_keys:
            out.extend(private_key_secrets(k.key))
        return out

    def certificate_ders(self) -> list[bytes]:
        return [cert_der(c) for ca in self._cas() for c in ca.certificates()]

    def minted_tokens(self) -> list[str]:
        return [*self.trust_domain.minted, *self.issuer.minted]
