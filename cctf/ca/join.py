"""First-certificate bootstrap (pure): the one-time, least-privilege join credential.

With ``verify_and_map`` on the NATS client port (:mod:`cctf.bus.tlsauth`) every client needs a
certificate, so an agent with none cannot ask for its first one there. The operator gives it a
**join certificate** instead (docs/ca.md §9)::

    subject      CN=join:<agent>, OU=<region>, O=cctf
    SAN          exactly one URI: spiffe://<trust-domain>/cctf/join/<region>/<agent>
    SPKI         a fresh ECDSA P-256 key (made by ``cctf ca join``, handed to the agent host)
    validity     notBefore = issue time (s), lifetime in [2 s, 1 h], default 10 min
    extensions   basicConstraints CA:FALSE (critical), keyUsage digitalSignature (critical),
                 extKeyUsage clientAuth, SKI, AKI; NO key binding (so it can never admit a ballot)
    signature    by the same intermediate as the agent certificates

nats-server maps its URI to the user ``join-<region>.<agent>`` (:func:`cctf.bus.tlsauth.join_tls_user`),
which may publish ONLY ``cctf.v1.ca.join.<region>.<agent>`` and subscribe only its inbox. On that
subject the CA answers a ``cert-request`` signed by the agent's own hybrid key (the same checks as a
renewal, docs/ca.md §3) with the agent's first certificate, at most ONCE per join certificate:

* the join certificate is appended to the CA log (``["CCTF-CA-ENTRY-v1", "join", der]``) before the
  operator receives it;
* :class:`JoinLedger` (fed in log order, by the CA's registry) holds, per (region, agent), the newest
  join certificate and whether an agent certificate of that agent was logged AFTER it;
* a join request is granted (:meth:`JoinLedger.check`) only while that newest join certificate is
  valid (``notBefore ≤ now < notAfter``) and unredeemed; the certificate issued then redeems it. The
  ledger is rebuilt from the log when the CA restarts, so a redeemed join stays redeemed.

So a stolen join credential alone gives nothing (the request must be signed by the agent's hybrid
key), is useless after 10 min, after its one use, and after the agent's first renewal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cctf.ca.errors import CaError, CaReason
from cctf.ca.profile import (
    MIN_LIFETIME_MS,
    IssuerKey,
    client_leaf_builder,
    load_issued,
    serial_hex,
    sign_der,
)
from cctf.ids import IdError, check_id

__all__ = [
    "JOIN_DEFAULT_LIFETIME_MS",
    "JOIN_MAX_LIFETIME_MS",
    "JoinCert",
    "JoinLedger",
    "JoinRequest",
    "build_join_cert",
    "join_spiffe_id",
    "parse_join_cert",
]

JOIN_DEFAULT_LIFETIME_MS: Final = 600_000
JOIN_MAX_LIFETIME_MS: Final = 3_600_000
_PATH_PREFIX: Final = "/cctf/join/"


class JoinRequest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """``cctf.v1.ca.admin.join`` (operator -> CA): ``[region, agent, csr, lifetime_ms]``; the reply
    is a ``CertResponse`` (``cctf.ca.request``) carrying the join certificate."""

    region: str
    agent: str
    csr: bytes
    lifetime_ms: int


def join_spiffe_id(trust_domain: str, region: str, agent: str) -> str:
    """``spiffe://<trust-domain>/cctf/join/<region>/<agent>``."""
    return f"spiffe://{trust_domain}{_PATH_PREFIX}{region}/{agent}"


def build_join_cert(
    *,
    tls_public_key: ec.EllipticCurvePublicKey,
    trust_domain: str,
    region: str,
    agent: str,
    serial: int,
    not_before_ms: int,
    lifetime_ms: int,
    issuer_cert: x509.Certificate,
    issuer_key: IssuerKey,
) -> bytes:
    """The DER of a join certificate (the profile above)."""
    if not MIN_LIFETIME_MS <= lifetime_ms <= JOIN_MAX_LIFETIME_MS:
        raise CaError(
            CaReason.LIFETIME,
            f"join lifetime {lifetime_ms} ms outside [{MIN_LIFETIME_MS}, {JOIN_MAX_LIFETIME_MS}]",
        )
    region, agent = check_id(region, "region"), check_id(agent, "agent")
    builder = client_leaf_builder(
        common_name=f"join:{agent}",
        region=region,
        uri=join_spiffe_id(trust_domain, region, agent),
        tls_public_key=tls_public_key,
        serial=serial,
        not_before_ms=not_before_ms,
        lifetime_ms=lifetime_ms,
        issuer_cert=issuer_cert,
    )
    return sign_der(builder, issuer_key)


@dataclass(frozen=True, slots=True)
class JoinCert:
    der: bytes
    serial: str
    region: str
    agent: str
    spiffe_id: str
    not_before_ms: int
    not_after_ms: int  # exclusive


def parse_join_cert(der: bytes, issuer: x509.Certificate, trust_domain: str) -> JoinCert:
    """Check ``der`` against the join profile; the first failure raises :class:`CaError`:
    1. size, DER [``cert``]; 2. issued by the intermediate [``issuer``]; 3. not a CA, ECDSA P-256,
    lifetime in [2 s, 1 h] [``cert``]; 4. exactly one SAN, the URI
    ``spiffe://<td>/cctf/join/<region>/<agent>`` with valid ids [``cert``]."""
    cert = load_issued(der, issuer)  # 1, 2
    try:  # 3
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CaError(CaReason.CERT, f"missing extension: {exc}") from None
    spki = cert.public_key()
    if bc.ca or not isinstance(spki, ec.EllipticCurvePublicKey) or spki.curve.name != "secp256r1":
        raise CaError(CaReason.CERT, "a join certificate is an ECDSA P-256 end-entity certificate")
    nb = int(cert.not_valid_before_utc.timestamp()) * 1000
    na = int(cert.not_valid_after_utc.timestamp()) * 1000
    if not MIN_LIFETIME_MS <= na - nb <= JOIN_MAX_LIFETIME_MS:
        raise CaError(CaReason.CERT, f"join lifetime {na - nb} ms is out of bounds")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)  # 4
    if len(uris) != 1 or len(list(san)) != 1:
        raise CaError(CaReason.CERT, "the SAN must be exactly one URI")
    prefix = f"spiffe://{trust_domain}{_PATH_PREFIX}"
    if not uris[0].startswith(prefix):
        raise CaError(CaReason.CERT, f"SPIFFE ID {uris[0][:200]!r} is not under {prefix}")
    parts = uris[0].removeprefix(prefix).split("/")
    try:
        if len(parts) != 2:
            raise IdError("path must be <region>/<agent>")
        region, agent = check_id(parts[0], "region"), check_id(parts[1], "agent")
    except IdError as exc:
        raise CaError(CaReason.CERT, f"SPIFFE ID path: {exc}") from None
    return JoinCert(der, serial_hex(cert.serial_number), region, agent, uris[0], nb, na)


@dataclass(slots=True)
class _Join:
    cert: JoinCert
    redeemed: bool = False


class JoinLedger:
    """Per (region, agent): the newest logged join certificate and whether it was redeemed (an agent
    certificate of that agent logged after it). Fed in log order; bounded by the trust config (one
    slot per agent)."""

    def __init__(self) -> None:
        self._joins: dict[tuple[str, str], _Join] = {}

    def note_join(self, cert: JoinCert) -> None:
        """A join certificate was logged: it replaces any earlier one of that agent."""
        self._joins[(cert.region, cert.agent)] = _Join(cert)

    def note_cert(self, region: str, agent: str) -> None:
        """An agent certificate of (region, agent) was logged: the current join is redeemed."""
        j = self._joins.get((region, agent))
        if j is not None:
            j.redeemed = True

    def check(self, region: str, agent: str, now_ms: int) -> JoinCert:
        """The join certificate that grants (region, agent) its first certificate now, else
        :class:`CaError` ``join``."""
        j = self._joins.get((region, agent))
        if j is None:
            raise CaError(CaReason.JOIN, f"no join certificate was logged for {region}/{agent}")
        if j.redeemed:
            raise CaError(CaReason.JOIN, f"the join certificate {j.cert.serial} was already used")
        if not j.cert.not_before_ms <= now_ms < j.cert.not_after_ms:
            raise CaError(CaReason.JOIN, f"the join certificate {j.cert.serial} is not valid now")
        return j.cert
