"""The servers of the local identity fabric: a SPIFFE trust domain's bundle endpoint, an OIDC
issuer and workload TLS endpoints, each with its fault knobs (see :mod:`identity_servers` for the
per-view ``up`` / ``down`` / ``hang`` modes every one of them has as well).

Knobs take effect on the next connection; ``view=None`` means every view.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cctf.devfabric.identity_pki import (
    CertificateAuthority,
    Issued,
    JwtKey,
    bundle_document,
    encode_json,
    jwks_document,
)
from cctf.devfabric.identity_servers import (
    Response,
    ViewServer,
    json_response,
    route,
    server_context,
)

BUNDLE_PATH = "/bundle.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
SVID_LIFETIME_S = 86_400
ISSUER_VIEW = "issuer"


class LocalTrustDomain:
    """A SPIFFE trust domain: root + intermediate CA (X.509 authority: the root), JWT authorities,
    the bundle sequence. ``rotate()`` adds a JWT authority and bumps ``spiffe_sequence``."""

    def __init__(
        self, name: str, *, now: float, sequence: int = 5, refresh_hint_s: int = 60
    ) -> None:
        self.name = name
        self.now = now
        self.ca = CertificateAuthority.create(f"{name} SPIFFE", now=now, spiffe_trust_domain=name)
        self.jwt_authorities: list[JwtKey] = [JwtKey.generate()]
        self.sequence = sequence
        self.refresh_hint_s = refresh_hint_s
        self._rogue: CertificateAuthority | None = None
        self._rogue_jwt: JwtKey | None = None
        self.minted: list[str] = []

    @property
    def rogue_ca(self) -> CertificateAuthority:
        """Another CA claiming the same trust domain (what a tampered bundle or an untrusted
        workload certificate carries)."""
        if self._rogue is None:
            self._rogue = CertificateAuthority.create(
                f"{self.name} rogue", now=self.now, spiffe_trust_domain=self.name
            )
        return self._rogue

    @property
    def rogue_jwt(self) -> JwtKey:
        if self._rogue_jwt is None:
            self._rogue_jwt = JwtKey.generate()
        return self._rogue_jwt

    def spiffe_id(self, path: str) -> str:
        return f"spiffe://{self.name}/{path.lstrip('/')}"

    def document(self, *, sequence: int | None = None) -> dict[str, Any]:
        return bundle_document(
            [self.ca.root],
            self.jwt_authorities,
            sequence=self.sequence if sequence is None else sequence,
            refresh_hint_s=self.refresh_hint_s,
        )

    def rogue_document(self, *, sequence: int | None = None) -> dict[str, Any]:
        return bundle_document(
            [self.rogue_ca.root],
            [self.rogue_jwt],
            sequence=self.sequence if sequence is None else sequence,
            refresh_hint_s=self.refresh_hint_s,
        )

    def rotate(self) -> None:
        self.jwt_authorities.append(JwtKey.generate())
        self.sequence += 1

    def issue_svid(
        self,
        spiffe_id: str,
        *,
        not_before: float | None = None,
        not_after: float | None = None,
        rogue: bool = False,
    ) -> Issued:
        ca = self.rogue_ca if rogue else self.ca
        nb = self.now - 60 if not_before is None else not_before
        na = self.now + SVID_LIFETIME_S if not_after is None else not_after
        return ca.issue_svid(spiffe_id, not_before=nb, not_after=na)

    def mint_jwt_svid(
        self,
        spiffe_id: str,
        audience: str | Sequence[str],
        *,
        ttl_s: int = 300,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        key: JwtKey | None = None,
    ) -> str:
        t = int(time.time() if now is None else now)
        body: dict[str, Any] = {"sub": spiffe_id, "aud": audience, "iat": t, "exp": t + ttl_s}
        body.update(claims or {})
        token = (key or self.jwt_authorities[-1]).sign(body, headers)
        self.minted.append(token)
        return token


class BundleEndpoint(ViewServer):
    """The trust domain's bundle endpoint (SPIFFE ``https_web`` profile) at ``/bundle.json``.

    Knobs: :meth:`tamper` (a view serves a rogue CA's bundle: split view), :meth:`rollback`
    (an older ``spiffe_sequence``), :meth:`empty` (no keys), :meth:`serve` (any body),
    :meth:`restore`."""

    def __init__(
        self, domain: LocalTrustDomain, views: Sequence[str], context: ssl.SSLContext, host: str
    ) -> None:
        super().__init__(views, context, host=host, serve=route({BUNDLE_PATH: self._bundle}))
        self.domain = domain
        self._all: bytes | None = None
        self._per_view: dict[str, bytes] = {}

    def bundle_url(self, view: str) -> str:
        return self.url(view) + BUNDLE_PATH

    def _bundle(self, view: str) -> Response:
        body = self._per_view.get(view, self._all)
        return json_response(encode_json(self.domain.document()) if body is None else body)

    def serve(self, body: bytes | Mapping[str, Any], *, view: str | None = None) -> None:
        raw = body if isinstance(body, bytes) else encode_json(body)
        if view is None:
            self._per_view.clear()
            self._all = raw
        else:
            self._check_view(view)
            self._per_view[view] = raw

    def tamper(self, view: str | None = None) -> None:
        """Serve a bundle of another CA for the same trust domain (same sequence: only the keys
        differ), to one view (split view) or to all."""
        self.serve(self.domain.rogue_document(), view=view)

    def rollback(self, view: str | None = None, *, by: int = 1) -> None:
        """Serve the current keys under an older ``spiffe_sequence``."""
        self.serve(self.domain.document(sequence=self.domain.sequence - by), view=view)

    def empty(self, view: str | None = None) -> None:
        """Serve a bundle with no keys (and a newer sequence)."""
        doc = self.domain.document(sequence=self.domain.sequence + 1)
        doc["keys"] = []
        self.serve(doc, view=view)

    def restore(self, view: str | None = None) -> None:
        if view is None:
            self._all = None
            self._per_view.clear()
        else:
            self._per_view.pop(view, None)


class OidcIssuer(ViewServer):
    """A local OIDC issuer: discovery at ``/.well-known/openid-configuration``, JWKS at ``/jwks``.

    Its issuer URL is ``https://host:port`` of the view ``issuer``; with ``views`` (regions) it
    also listens once per view, each serving a discovery document that names the same issuer and a
    ``jwks_uri`` on that view (for a target's ``discovery_url``), so one region can be shown other
    keys (split view). Knobs (``view=None``: every view): :meth:`swap_jwks` (serve keys the issuer
    does not sign with), :meth:`serve_jwks` / :meth:`serve_discovery` (any body),
    :meth:`restore`."""

    def __init__(
        self, context: ssl.SSLContext, host: str, *, now: float, views: Sequence[str] = ()
    ) -> None:
        super().__init__(
            (ISSUER_VIEW, *views),
            context,
            host=host,
            serve=route({DISCOVERY_PATH: self._discovery, JWKS_PATH: self._jwks}),
        )
        self.now = now
        self.keys: list[JwtKey] = [JwtKey.generate()]
        self.rogue_keys: list[JwtKey] = [JwtKey.generate()]
        self._jwks_body: dict[str | None, bytes] = {}
        self._discovery_body: dict[str | None, bytes] = {}
        self.minted: list[str] = []

    @property
    def issuer_url(self) -> str:
        return self.url(ISSUER_VIEW)

    def discovery_url(self, view: str = ISSUER_VIEW) -> str:
        """Where ``view`` serves its discovery document."""
        return self.url(view) + DISCOVERY_PATH

    def discovery(self, view: str = ISSUER_VIEW) -> dict[str, Any]:
        return {
            "issuer": self.issuer_url,
            "jwks_uri": self.url(view) + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }

    def jwks(self) -> dict[str, Any]:
        return jwks_document(self.keys)

    def _discovery(self, view: str) -> Response:
        body = self._discovery_body.get(view, self._discovery_body.get(None))
        return json_response(encode_json(self.discovery(view)) if body is None else body)

    def _jwks(self, view: str) -> Response:
        body = self._jwks_body.get(view, self._jwks_body.get(None))
        return json_response(encode_json(self.jwks()) if body is None else body)

    def _set(
        self,
        table: dict[str | None, bytes],
        body: bytes | Mapping[str, Any] | None,
        view: str | None,
    ) -> None:
        if view is None:
            table.clear()
        else:
            self._check_view(view)
            table.pop(view, None)
        if body is not None:
            table[view] = body if isinstance(body, bytes) else encode_json(body)

    def serve_jwks(
        self, body: bytes | Mapping[str, Any] | None, *, view: str | None = None
    ) -> None:
        self._set(self._jwks_body, body, view)

    def serve_discovery(
        self, body: bytes | Mapping[str, Any] | None, *, view: str | None = None
    ) -> None:
        self._set(self._discovery_body, body, view)

    def swap_jwks(self, *, view: str | None = None) -> None:
        """Serve a JWKS of keys the issuer does not sign with (its tokens stop validating there)."""
        self.serve_jwks(jwks_document(self.rogue_keys), view=view)

    def rotate(self) -> None:
        self.keys.append(JwtKey.generate())

    def restore(self, *, view: str | None = None) -> None:
        self.serve_jwks(None, view=view)
        self.serve_discovery(None, view=view)

    def mint_id_token(
        self,
        subject: str,
        audience: str | Sequence[str],
        *,
        ttl_s: int = 300,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        key: JwtKey | None = None,
    ) -> str:
        t = int(time.time() if now is None else now)
        body: dict[str, Any] = {
            "iss": self.issuer_url,
            "sub": subject,
            "aud": audience,
            "iat": t,
            "nbf": t,
            "exp": t + ttl_s,
        }
        body.update(claims or {})
        token = (key or self.keys[-1]).sign(body, headers)
        self.minted.append(token)
        return token


class Presentation(enum.StrEnum):
    """What a workload endpoint presents in its TLS handshake."""

    VALID = "valid"  # its X.509-SVID (leaf + intermediate of the trust domain)
    WRONG_IDENTITY = "wrong-identity"  # a valid SVID of another SPIFFE ID
    EXPIRED = "expired"  # its SPIFFE ID, validity ended an hour ago
    NOT_YET_VALID = "not-yet-valid"  # its SPIFFE ID, valid from in an hour
    UNTRUSTED = "untrusted"  # its SPIFFE ID, signed by a CA outside the bundle


@dataclass(frozen=True)
class WorkloadSpec:
    """A demo workload: DNS name (in the demo zone), SPIFFE ID path, token audience."""

    label: str
    dns_name: str
    path: str
    audience: str = "cctf-demo"


class WorkloadEndpoint(ViewServer):
    """A workload's TLS endpoint presenting an X.509-SVID chain; answers any GET with its
    SPIFFE ID. Knob: :meth:`present` (a :class:`Presentation`, per view or for all)."""

    def __init__(
        self,
        spec: WorkloadSpec,
        domain: LocalTrustDomain,
        views: Sequence[str],
        host: str,
    ) -> None:
        self.spec = spec
        self.domain = domain
        self.spiffe_id = domain.spiffe_id(spec.path)
        self._issued: dict[Presentation, Issued] = {}
        self._contexts: dict[Presentation, ssl.SSLContext] = {}
        super().__init__(views, self.context(Presentation.VALID), host=host, serve=self._answer)

    def issued(self, presentation: Presentation = Presentation.VALID) -> Issued:
        if presentation not in self._issued:
            now = self.domain.now
            sid = self.spiffe_id
            match presentation:
                case Presentation.VALID:
                    issued = self.domain.issue_svid(sid)
                case Presentation.WRONG_IDENTITY:
                    issued = self.domain.issue_svid(self.domain.spiffe_id("impostor"))
                case Presentation.EXPIRED:
                    issued = self.domain.issue_svid(
                        sid, not_before=now - 7200, not_after=now - 3600
                    )
                case Presentation.NOT_YET_VALID:
                    issued = self.domain.issue_svid(
                        sid, not_before=now + 3600, not_after=now + 7200
                    )
                case Presentation.UNTRUSTED:
                    issued = self.domain.issue_svid(sid, rogue=True)
            self._issued[presentation] = issued
        return self._issued[presentation]

    def context(self, presentation: Presentation) -> ssl.SSLContext:
        if presentation not in self._contexts:
            self._contexts[presentation] = server_context(self.issued(presentation))
        return self._contexts[presentation]

    def present(self, presentation: Presentation | str, *, view: str | None = None) -> None:
        p = Presentation(presentation)
        ctx = self.context(p)
        if view is None:
            self.set_context(ctx)
        else:
            self.set_context(None if p is Presentation.VALID else ctx, view=view)

    async def _answer(self, _req: object) -> Response:
        return 200, "text/plain", (self.spiffe_id + "\n").encode()
