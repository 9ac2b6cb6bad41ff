"""Quorum-verified key material for relying parties: a trust domain's SPIFFE bundle or an OIDC
issuer's JWKS, used ONLY when its canonical digest equals the TRUSTED identity verdict's
``facts.key_digest`` (design decision 1). A thin adapter: verdicts from
:meth:`cctf.client.sdk.TrustClient.identity_verdict`, documents from :mod:`cctf.identity.fetch`
(or a bundle file), parsing and digests from :mod:`cctf.identity.bundle` / :mod:`cctf.identity.oidc`.

:meth:`MaterialStore.material`, in order:

1. fetch and verify the identity verdict (the client's numbered steps,
   :mod:`cctf.client.verify_identity`); none, refused or not TRUSTED -> :class:`NoMaterial`
   (reason ``<kind>_no_verdict`` / ``<kind>_rejected`` / ``<kind>_<outcome>``);
2. the cache holds material of exactly that (kind, subject, digest) -> use it;
3. else fetch the document (bundle endpoint or file; OIDC discovery, then its ``jwks_uri``); a
   failure -> ``<kind>_fetch_failed``;
4. parse it and recompute its canonical digest; a document that does not parse ->
   ``<kind>_invalid``; a digest other than the verdict's -> ``<kind>_digest_mismatch`` (what we
   fetched is not what the quorum saw: a split view, a tampered endpoint, or a rotation between
   the quorum's round and our fetch -- the next verdict settles it);
5. cache it: a bounded LRU of ``cache_size`` entries.

Every refusal in steps 3-4 is counted (:attr:`MaterialStore.refused`, metric
``cctf_client_identity_material``) and logged (never a document, never a credential).
:class:`~cctf.client.sdk.FetchError` (the bus cannot be asked) propagates.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cctf.bus_schemas.evidence import IdentityKind, IdentityVerdict
from cctf.bus_schemas.messages import Outcome
from cctf.client.sdk import NoVerdict, TrustClient, VerdictRejected
from cctf.identity.bundle import TrustBundle, bundle_digest, parse_bundle
from cctf.identity.errors import IdentityError
from cctf.identity.fetch import fetch_document
from cctf.identity.oidc import KeySet, jwks_digest, parse_discovery, parse_jwks
from cctf.identity.targets import IdentityTargets, IssuerTarget, TrustDomainTarget
from cctf.telemetry import get_logger, meter
from cctf.util.files import read_bounded

__all__ = [
    "DEFAULT_MATERIAL_CACHE",
    "Fetcher",
    "Material",
    "MaterialStore",
    "NoMaterial",
]

DEFAULT_MATERIAL_CACHE: Final = 64
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
FETCH_TIMEOUT_S: Final = 5.0

#: ``fetch(url, ca_file) -> body``: a bounded HTTPS GET (default :func:`default_fetch`).
Fetcher = Callable[[str, str | None], Awaitable[bytes]]

_log = get_logger("cctf.client.material")


@dataclass(frozen=True, slots=True)
class Material:
    """Quorum-verified key material: kind, subject, canonical digest and the parsed document
    (:class:`~cctf.identity.bundle.TrustBundle` or :class:`~cctf.identity.oidc.KeySet`)."""

    kind: IdentityKind
    subject: str
    digest: bytes
    document: TrustBundle | KeySet

    @property
    def bundle(self) -> TrustBundle:
        assert isinstance(self.document, TrustBundle), self.kind
        return self.document

    @property
    def keyset(self) -> KeySet:
        assert isinstance(self.document, KeySet), self.kind
        return self.document


class NoMaterial(Exception):
    """No quorum-verified material (``reason``: a stable code; ``detail``: one line)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def default_fetch(url: str, ca_file: str | None) -> bytes:
    """The bounded HTTPS GET of :func:`cctf.identity.fetch.fetch_document`."""
    return await fetch_document(
        url, max_bytes=MAX_DOCUMENT_BYTES, ca_file=ca_file, timeout_s=FETCH_TIMEOUT_S
    )


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class MaterialStore:
    """Key material under the quorum's digest (module docstring)."""

    def __init__(
        self,
        trust: TrustClient,
        targets: IdentityTargets,
        *,
        fetch: Fetcher | None = None,
        cache_size: int = DEFAULT_MATERIAL_CACHE,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be positive")
        self.trust = trust
        self.targets = targets
        self._fetch = default_fetch if fetch is None else fetch
        self._cache: OrderedDict[tuple[str, str, bytes], Material] = OrderedDict()
        self._cache_size = cache_size
        #: refusals of fetched material by reason (digest mismatches, fetch failures, ...)
        self.refused: dict[str, int] = {}
        #: documents fetched (cache misses that reached step 3)
        self.fetched = 0
        self._m = meter("cctf.client.identity").create_counter(
            "cctf_client_identity_material", description="key material look-ups by result"
        )

    def __len__(self) -> int:
        return len(self._cache)

    async def trusted_verdict(self, kind: IdentityKind, subject: str) -> IdentityVerdict:
        """Step 1: the verified TRUSTED identity verdict, else :class:`NoMaterial`."""
        k = kind.value
        try:
            verdict = await self.trust.identity_verdict(kind, subject)
        except NoVerdict as exc:
            raise NoMaterial(f"{k}_no_verdict", str(exc)) from None
        except VerdictRejected as exc:
            raise NoMaterial(f"{k}_rejected", f"{exc.reason.value}: {exc.detail}") from None
        if verdict.outcome is not Outcome.TRUSTED:
            outcome = verdict.outcome.value
            raise NoMaterial(f"{k}_{outcome}", f"{k} verdict for {subject}: {outcome}")
        return verdict

    def _refuse(self, kind: str, reason: str, detail: str) -> NoMaterial:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._m.add(1, {"kind": kind, "result": reason})
        _log.warning("material_refused", kind=kind, reason=reason, detail=detail)
        return NoMaterial(reason, detail)

    async def material(self, kind: IdentityKind, subject: str) -> Material:
        """Steps 1-5 for a trust domain (``bundle``) or an issuer URL (``jwks``)."""
        verdict = await self.trusted_verdict(kind, subject)
        digest = verdict.facts.key_digest
        key = (kind.value, subject, digest)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        k = kind.value
        document: TrustBundle | KeySet
        try:
            if kind is IdentityKind.BUNDLE:
                domain = self.targets.trust_domain(subject)
                if domain is None:
                    raise self._refuse(k, "trust_domain_not_configured", subject)
                document, got = await self._fetch_bundle(domain)
            elif kind is IdentityKind.JWKS:
                issuer = self.targets.issuer(subject)
                if issuer is None:
                    raise self._refuse(k, "issuer_not_configured", subject)
                document, got = await self._fetch_jwks(issuer)
            else:
                raise ValueError(f"no key material of kind {k}")
        except NoMaterial:
            raise
        except IdentityError as exc:
            raise self._refuse(k, f"{k}_invalid", str(exc)) from None
        except Exception as exc:  # cctf.identity.fetch.FetchError (transport, TLS, HTTP status,
            # size), an unreadable bundle file, anything else: fail closed
            raise self._refuse(k, f"{k}_fetch_failed", _first_line(exc)) from None
        if got != digest:
            raise self._refuse(
                k,
                f"{k}_digest_mismatch",
                f"{k} of {subject}: fetched {got.hex()[:16]}…, quorum {digest.hex()[:16]}…",
            )
        material = Material(kind, subject, digest, document)
        self._cache[key] = material
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        self._m.add(1, {"kind": k, "result": "fetched"})
        return material

    async def _fetch_bundle(self, domain: TrustDomainTarget) -> tuple[TrustBundle, bytes]:
        self.fetched += 1
        if domain.bundle_file is not None:
            raw = read_bounded(Path(domain.bundle_file), "bundle file", MAX_DOCUMENT_BYTES)
        else:
            assert domain.bundle_endpoint is not None
            raw = await self._fetch(domain.bundle_endpoint, domain.ca_file)
        parsed = parse_bundle(domain.name, raw)
        return parsed, bundle_digest(parsed)

    async def _fetch_jwks(self, issuer: IssuerTarget) -> tuple[KeySet, bytes]:
        self.fetched += 1
        discovery = parse_discovery(
            issuer.issuer, await self._fetch(issuer.discovery_location, issuer.ca_file)
        )
        keyset = parse_jwks(await self._fetch(discovery.jwks_uri, issuer.ca_file))
        return keyset, jwks_digest(keyset)
