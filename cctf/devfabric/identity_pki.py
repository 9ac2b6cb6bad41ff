"""Key material of the local identity fabric: CAs, X.509-SVIDs, JWT authorities, bundles, tokens.

Everything here is generated in memory with ``cryptography`` (EC P-256 keys, ES256 tokens via
PyJWT) and is for local tests and the demo only: nothing in ``cctf`` outside ``cctf.devfabric``
imports it. No I/O except the explicit ``write_*`` helpers.

* :class:`CertificateAuthority`: a root and (optionally) an intermediate CA. ``issue_svid`` makes
  X.509-SVID leaves following the SPIFFE X509-SVID profile (exactly one URI SAN, not a CA,
  ``digitalSignature`` only, serverAuth + clientAuth); ``issue_server`` makes web-PKI server
  certificates (DNS / IP SANs) for the HTTPS endpoints.
* :class:`JwtKey`: a signing key with its RFC 7638 thumbprint as ``kid`` and its public JWK.
* :func:`bundle_document`: the SPIFFE bundle (JWKS form: ``spiffe_sequence``,
  ``spiffe_refresh_hint``, ``x509-svid`` keys with ``x5c``, ``jwt-svid`` keys with ``kid``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cctf.util.files import write_file_atomic, write_secret_file

JWT_ALG = "ES256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_secrets(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """Every encoding of ``key``'s secret a leak could show: PKCS#8 DER, SEC1 DER, the raw scalar."""
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sec1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [pkcs8, sec1, scalar]


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    nums = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(nums.x.to_bytes(32, "big")),
        "y": b64url(nums.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint of an EC JWK (required members in lexicographic order)."""
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return b64url(hashlib.sha256(canon.encode()).digest())


@dataclass(frozen=True)
class Issued:
    """A certificate, its private key and the chain a server presents (leaf first, no root)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def chain_pem(self) -> bytes:
        return b"".join(cert_pem(c) for c in self.chain)

    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.chain.pem`` and ``<stem>.key.pem`` (mode 0600); returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        chain_file = directory / f"{stem}.chain.pem"
        key_file = directory / f"{stem}.key.pem"
        write_file_atomic(chain_file, self.chain_pem(), mode=0o644)
        write_secret_file(key_file, self.key_pem())
        return chain_file, key_file


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CCTF local identity fabric"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    issuer_public: ec.EllipticCurvePublicKey,
    not_before: float,
    not_after: float,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage(*, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class CertificateAuthority:
    """A root CA and, unless ``intermediate=False``, one intermediate that signs the leaves.

    ``spiffe_trust_domain`` (SPIFFE CAs): the signing certificates carry the trust domain's
    SPIFFE ID (``spiffe://<td>``) as their URI SAN, as the X509-SVID spec allows."""

    name: str
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate | None
    intermediate_key: ec.EllipticCurvePrivateKey | None
    issued: list[Issued] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        now: float,
        intermediate: bool = True,
        spiffe_trust_domain: str | None = None,
        lifetime_s: float = 7 * 86_400,
    ) -> CertificateAuthority:
        root_key = new_key()
        root_name = _name(f"{name} root CA")
        builder = _builder(
            root_name,
            root_name,
            root_key.public_key(),
            root_key.public_key(),
            now - 3600,
            now + lifetime_s,
        )
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        ).add_extension(_ca_usage(), critical=True)
        if spiffe_trust_domain is not None:
            san = x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{spiffe_trust_domain}")]
            )
            builder = builder.add_extension(san, critical=False)
        root = builder.sign(root_key, hashes.SHA256())
        inter: x509.Certificate | None = None
        inter_key: ec.EllipticCurvePrivateKey | None = None
        if intermediate:
            inter_key = new_key()
            b = _builder(
                _name(f"{name} intermediate CA"),
                root_name,
                inter_key.public_key(),
                root_key.public_key(),
                now - 3600,
                now + lifetime_s,
            )
            b = b.add_extension(
                x509.BasicConstraints(ca=True, path_length=0), critical=True
            ).add_extension(_ca_usage(), critical=True)
            if spiffe_trust_domain is not None:
                san = x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{spiffe_trust_domain}")]
                )
                b = b.add_extension(san, critical=False)
            inter = b.sign(root_key, hashes.SHA256())
        return cls(name, root, root_key, inter, inter_key)

    @property
    def signer(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self.intermediate is not None and self.intermediate_key is not None:
            return self.intermediate, self.intermediate_key
        return self.root, self.root_key

    def _issue(
        self,
        common_name: str,
        sans: Sequence[x509.GeneralName],
        eku: Sequence[x509.ObjectIdentifier],
        *,
        not_before: float,
        not_after: float,
        ca: bool = False,
        key_cert_sign: bool = False,
    ) -> Issued:
        signer_cert, signer_key = self.signer
        key = new_key()
        b = _builder(
            _name(common_name),
            signer_cert.subject,
            key.public_key(),
            signer_key.public_key(),
            not_before,
            not_after,
        )
        b = (
            b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_leaf_usage(key_cert_sign=key_cert_sign), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        )
        cert = b.sign(signer_key, hashes.SHA256())
        chain = (cert,) if self.intermediate is None else (cert, self.intermediate)
        issued = Issued(cert, key, chain)
        self.issued.append(issued)
        return issued

    def issue_svid(
        self,
        spiffe_ids: str | Sequence[str],
        *,
        not_before: float,
        not_after: float,
        ca: bool = False,
        key_cert_sign: bool = False,
    ) -> Issued:
        """An X.509-SVID leaf (several IDs or ``ca``/``key_cert_sign`` make deliberately invalid
        ones for negative tests)."""
        ids = [spiffe_ids] if isinstance(spiffe_ids, str) else list(spiffe_ids)
        return self._issue(
            ids[0][:64] if ids else "no SPIFFE ID",
            [x509.UniformResourceIdentifier(i) for i in ids],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            not_before=not_before,
            not_after=not_after,
            ca=ca,
            key_cert_sign=key_cert_sign,
        )

    def issue_server(self, hosts: Iterable[str], *, not_before: float, not_after: float) -> Issued:
        """A web-PKI server certificate for DNS names and IP addresses."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(
            f"{self.name} server",
            sans,
            [ExtendedKeyUsageOID.SERVER_AUTH],
            not_before=not_before,
            not_after=not_after,
        )

    def root_pem(self) -> bytes:
        return cert_pem(self.root)

    def certificates(self) -> list[x509.Certificate]:
        out = [self.root]
        if self.intermediate is not None:
            out.append(self.intermediate)
        out.extend(i.cert for i in self.issued)
        return out

    def private_keys(self) -> list[ec.EllipticCurvePrivateKey]:
        out = [self.root_key]
        if self.intermediate_key is not None:
            out.append(self.intermediate_key)
        out.extend(i.key for i in self.issued)
        return out


@dataclass(frozen=True)
class JwtKey:
    """An ES256 signing key; ``kid`` is its RFC 7638 thumbprint."""

    key: ec.EllipticCurvePrivateKey
    kid: str

    @classmethod
    def generate(cls) -> JwtKey:
        key = new_key()
        return cls(key, jwk_thumbprint(public_jwk(key.public_key())))

    def jwk(self, use: str | None = "sig") -> dict[str, str]:
        out = public_jwk(self.key.public_key())
        out["kid"] = self.kid
        out["alg"] = JWT_ALG
        if use is not None:
            out["use"] = use
        return out

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        hdr: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        hdr.update(headers or {})
        return jwt.encode(dict(claims), self.key, algorithm=JWT_ALG, headers=hdr)


def bundle_document(
    x509_authorities: Sequence[x509.Certificate],
    jwt_authorities: Sequence[JwtKey],
    *,
    sequence: int | None,
    refresh_hint_s: int | None,
) -> dict[str, Any]:
    """A SPIFFE bundle in its JWKS form (SPIFFE Trust Domain and Bundle spec §4)."""
    keys: list[dict[str, Any]] = []
    for cert in x509_authorities:
        pub = cert.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        jwk: dict[str, Any] = dict(public_jwk(pub))
        jwk["use"] = "x509-svid"
        jwk["x5c"] = [base64.b64encode(cert_der(cert)).decode("ascii")]
        keys.append(jwk)
    for k in jwt_authorities:
        keys.append(k.jwk(use="jwt-svid"))
    doc: dict[str, Any] = {"keys": keys}
    if sequence is not None:
        doc["spiffe_sequence"] = sequence
    if refresh_hint_s is not None:
        doc["spiffe_refresh_hint"] = refresh_hint_s
    return doc


def jwks_document(keys: Sequence[JwtKey]) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def encode_json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
