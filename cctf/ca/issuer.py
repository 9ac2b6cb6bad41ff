"""The issuer (pure): a checked request -> an agent certificate and its CA log entry.

:class:`Issuer` holds the operator's intermediate CA (certificate + private key, never logged) and
answers two calls, both returning the log entry the caller MUST append (and see acked) before it
hands anything out (:class:`cctf.ca.service.CaService` does exactly that):

* :meth:`Issuer.issue` (request bytes, subject, now, serial) -> :class:`Issued`;
* :meth:`Issuer.revoke` (certificate, reason, now) -> the revocation entry;
* :meth:`Issuer.issue_join` (region, agent, CSR, lifetime, now, serial) -> a join certificate and its
  entry (:mod:`cctf.ca.join`: the operator's one-time bootstrap credential for a new agent).

Time and serial numbers are passed in (the service draws 127-bit random serials).

:func:`make_test_hierarchy` makes the throwaway root + intermediate of ``cctf ca init`` (demo and
tests only: production brings its own intermediate, see docs/ca.md §1).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cctf.ca.entries import CertEntry, JoinEntry, RevocationReason, RevokeEntry, encode_entry
from cctf.ca.errors import CaError, CaReason
from cctf.ca.join import (
    JOIN_DEFAULT_LIFETIME_MS,
    JoinCert,
    build_join_cert,
    parse_join_cert,
)
from cctf.ca.profile import (
    DEFAULT_LIFETIME_MS,
    MAX_LIFETIME_MS,
    AgentCert,
    IssuerKey,
    KeyBinding,
    build_agent_cert,
    parse_agent_cert,
)
from cctf.ca.request import ISSUE_PREFIX, CheckedRequest, RequestReplay, check_request
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig

__all__ = ["Issued", "Issuer", "make_test_hierarchy", "random_serial"]

_SERIAL_BITS: Final = 127


def random_serial() -> int:
    """A positive serial with 127 random bits (RFC 5280: ≤ 20 octets; CA/B: ≥ 64 random bits)."""
    return int.from_bytes(os.urandom(16), "big") >> 1 | 1 << (_SERIAL_BITS - 1)


@dataclass(frozen=True, slots=True)
class Issued:
    cert: AgentCert
    entry: bytes  # the CA log entry to append BEFORE handing cert out
    request: CheckedRequest


@dataclass
class Issuer:
    intermediate: x509.Certificate
    key: IssuerKey = field(repr=False)
    trust_domain: str
    trust: TrustConfig
    chain: tuple[x509.Certificate, ...] = ()  # further intermediates above ``intermediate``
    policy: SuitePolicy = field(default_factory=SuitePolicy)
    default_lifetime_ms: int = DEFAULT_LIFETIME_MS
    max_lifetime_ms: int = MAX_LIFETIME_MS
    replay: RequestReplay = field(default_factory=RequestReplay)

    def __post_init__(self) -> None:
        if not 0 < self.default_lifetime_ms <= self.max_lifetime_ms <= MAX_LIFETIME_MS:
            raise CaError(CaReason.CONFIG, "need 0 < default_lifetime ≤ max_lifetime ≤ 24 h")
        pub = self.intermediate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mine = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pub != mine:
            raise CaError(CaReason.CONFIG, "the intermediate key does not match its certificate")

    def chain_der(self) -> list[bytes]:
        return [
            c.public_bytes(serialization.Encoding.DER) for c in (self.intermediate, *self.chain)
        ]

    def issue(
        self, data: bytes, subject: str, *, now_ms: int, serial: int, prefix: str = ISSUE_PREFIX
    ) -> Issued:
        """Check the request (:func:`cctf.ca.request.check_request`) and build the certificate."""
        checked = check_request(
            data,
            subject,
            prefix=prefix,
            trust=self.trust,
            policy=self.policy,
            replay=self.replay,
            now_ms=now_ms,
            max_lifetime_ms=self.max_lifetime_ms,
        )
        req = checked.request
        der = build_agent_cert(
            tls_public_key=checked.tls_public_key,
            binding=KeyBinding.of(checked.signer.keys),
            trust_domain=self.trust_domain,
            region=req.region,
            agent=req.agent,
            serial=serial,
            not_before_ms=now_ms,
            lifetime_ms=req.lifetime_ms or self.default_lifetime_ms,
            issuer_cert=self.intermediate,
            issuer_key=self.key,
        )
        cert = parse_agent_cert(der, self.intermediate, self.trust_domain)  # self-check
        return Issued(cert, encode_entry(CertEntry(der)), checked)

    def issue_join(
        self, region: str, agent: str, csr_der: bytes, *, lifetime_ms: int, now_ms: int, serial: int
    ) -> tuple[JoinCert, bytes]:
        """A join certificate for an agent of the trust config (``lifetime_ms`` 0: 10 min) and
        its log entry (append it, see it acked, THEN hand the certificate out)."""
        if not any(
            e.role is Role.AGENT and (e.region, e.principal) == (region, agent) for e in self.trust
        ):
            raise CaError(CaReason.PRINCIPAL, f"no agent key of {region}/{agent} is trusted")
        try:
            csr = x509.load_der_x509_csr(csr_der)
            key, ok = csr.public_key(), csr.is_signature_valid
        except (ValueError, TypeError) as exc:
            raise CaError(CaReason.CSR, f"undecodable CSR: {exc}") from None
        if (
            not ok
            or not isinstance(key, ec.EllipticCurvePublicKey)
            or key.curve.name != "secp256r1"
        ):
            raise CaError(CaReason.CSR, "the CSR is not a valid ECDSA P-256 request")
        lifetime = lifetime_ms or JOIN_DEFAULT_LIFETIME_MS
        der = build_join_cert(
            tls_public_key=key,
            trust_domain=self.trust_domain,
            region=region,
            agent=agent,
            serial=serial,
            not_before_ms=now_ms,
            lifetime_ms=lifetime,
            issuer_cert=self.intermediate,
            issuer_key=self.key,
        )
        cert = parse_join_cert(der, self.intermediate, self.trust_domain)  # self-check
        return cert, encode_entry(JoinEntry(der))

    def revoke(self, cert: AgentCert, reason: RevocationReason, *, now_ms: int) -> bytes:
        """The revocation entry of ``cert`` (append it to the CA log)."""
        return encode_entry(RevokeEntry(cert.serial, cert.binding.kid, reason, now_ms))


def _ca_cert(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    days: int,
    path_length: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )


@dataclass(frozen=True)
class TestHierarchy:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey = field(repr=False)


def make_test_hierarchy(trust_domain: str, *, now_ms: int, days: int = 30) -> TestHierarchy:
    """A throwaway root and an intermediate under it (ECDSA P-256), for the demo and tests."""
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cctf test"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} throwaway root"),
        ]
    )
    inter_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cctf test"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} agent intermediate"),
        ]
    )
    root = _ca_cert(root_name, root_name, root_key, root_key, now, days, 1)
    inter = _ca_cert(inter_name, root_name, inter_key, root_key, now, days, 0)
    return TestHierarchy(root, root_key, inter, inter_key)
