"""A small test PKI for SPIFFE trust domains (cryptography directly): a root CA, optional
intermediates, and X.509 leaves whose every SVID-relevant property can be set wrong on purpose
(URI SANs, CA flag, key usages, validity, extra critical extensions), plus JWT authorities and
bundle documents. Reusable by every engineer's tests::

    pki = SvidPki("demo.test")                       # root + one intermediate, P-256
    leaf = pki.leaf("spiffe://demo.test/api")        # chain leaf-first: [leaf, intermediate]
    doc = pki.bundle_document(sequence=3)            # SPIFFE bundle JSON (dict)
    token = pki.jwt_svid("spiffe://demo.test/api", aud="cctf", exp_s=..., kid="k1")

Times are Unix seconds (``now_s`` of the builder, default 1_800_000_000).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW_S = 1_800_000_000
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def public_jwk(key: Any) -> dict[str, Any]:
    """The public JWK of a cryptography public key (RSA, EC P-256/384/521, Ed25519)."""
    return dict(json.loads(jwt.algorithms.get_default_algorithms()[_alg_for(key)].to_jwk(key)))


def _alg_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]  # leaf first, intermediates after, no root

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


@dataclass
class JwtAuthority:
    kid: str
    key: PrivateKey

    @property
    def alg(self) -> str:
        return _alg_for(self.key)

    def jwk(self, **extra: Any) -> dict[str, Any]:
        return {**public_jwk(self.key.public_key()), "kid": self.kid, **extra}


@dataclass
class SvidPki:
    trust_domain: str = "demo.test"
    intermediates: int = 1
    now_s: int = NOW_S
    root: Ca = field(init=False)
    chain_cas: list[Ca] = field(init=False)  # the intermediates, root-side first
    jwt_authorities: list[JwtAuthority] = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.ca(f"{self.trust_domain} root")
        self.chain_cas = []
        parent = self.root
        for i in range(self.intermediates):
            parent = self.ca(f"{self.trust_domain} intermediate {i}", parent=parent)
            self.chain_cas.append(parent)
        self.jwt_authorities = [JwtAuthority("jwt-1", ec.generate_private_key(ec.SECP256R1()))]

    @property
    def issuer(self) -> Ca:
        return self.chain_cas[-1] if self.chain_cas else self.root

    # -- certificates -----------------------------------------------------------------------
    def ca(
        self,
        name: str,
        *,
        parent: Ca | None = None,
        not_before_s: float | None = None,
        not_after_s: float | None = None,
    ) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name = subject if parent is None else parent.cert.subject
        signer = key if parent is None else parent.key
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(120) | 1)
            .not_valid_before(utc(self.now_s - 86_400 if not_before_s is None else not_before_s))
            .not_valid_after(utc(self.now_s + 10 * 86_400 if not_after_s is None else not_after_s))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain}")]
                ),
                critical=False,
            )
        )
        if parent is not None:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), False
            )
        return Ca(b.sign(signer, hashes.SHA256()), key)

    def leaf(
        self,
        *uris: str,
        issuer: Ca | None = None,
        ca: bool = False,
        key_usage: x509.KeyUsage | None = None,
        no_key_usage: bool = False,
        not_before_s: float | None = None,
        not_after_s: float | None = None,
        dns_names: Iterable[str] = (),
        extra: Iterable[tuple[x509.ExtensionType, bool]] = (),
        eku: Iterable[x509.ObjectIdentifier] | None = None,
        chain: list[x509.Certificate] | None = None,
    ) -> Leaf:
        """A leaf signed by ``issuer`` (default: the last intermediate). ``uris`` are its URI SANs
        (default: ``spiffe://<td>/workload``; pass none explicitly via ``uris=()`` with
        ``dns_names`` for a SAN without URI)."""
        issuer = self.issuer if issuer is None else issuer
        key = ec.generate_private_key(ec.SECP256R1())
        if not uris and not dns_names:
            uris = (f"spiffe://{self.trust_domain}/workload",)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns_names]
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(120) | 1)
            .not_valid_before(utc(self.now_s - 3_600 if not_before_s is None else not_before_s))
            .not_valid_after(utc(self.now_s + 3_600 if not_after_s is None else not_after_s))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if eku is None
                    else list(eku)
                ),
                critical=False,
            )
        )
        if not no_key_usage:
            b = b.add_extension(
                usage(digital_signature=True) if key_usage is None else key_usage, critical=True
            )
        for ext, critical in extra:
            b = b.add_extension(ext, critical=critical)
        cert = b.sign(issuer.key, hashes.SHA256())
        if chain is None:
            chain = (
                [cert] + [c.cert for c in reversed(self.chain_cas)]
                if issuer is self.issuer
                else [cert]
            )
        return Leaf(cert, key, chain)

    # -- bundle ---------------------------------------------------------------------------------
    def x509_authority_jwk(self, cert: x509.Certificate | None = None) -> dict[str, Any]:
        cert = self.root.cert if cert is None else cert
        der = cert.public_bytes(serialization.Encoding.DER)
        return {
            **public_jwk(cert.public_key()),
            "use": "x509-svid",
            "x5c": [base64.b64encode(der).decode()],
        }

    def bundle_document(
        self,
        *,
        sequence: int | None = 1,
        refresh_hint: int | None = 300,
        extra_keys: Iterable[Mapping[str, Any]] = (),
        x509: bool = True,
        jwt_keys: bool = True,
    ) -> dict[str, Any]:
        keys: list[Mapping[str, Any]] = []
        if x509:
            keys.append(self.x509_authority_jwk())
        if jwt_keys:
            keys += [a.jwk(use="jwt-svid") for a in self.jwt_authorities]
        keys += list(extra_keys)
        doc: dict[str, Any] = {"keys": keys}
        if sequence is not None:
            doc["spiffe_sequence"] = sequence
        if refresh_hint is not None:
            doc["spiffe_refresh_hint"] = refresh_hint
        return doc

    def bundle_bytes(self, **kw: Any) -> bytes:
        return json.dumps(self.bundle_document(**kw)).encode()

    # -- tokens ---------------------------------------------------------------------------------
    def jwt_svid(
        self,
        sub: str,
        *,
        aud: str | list[str] | None = "cctf",
        exp_s: int | None = None,
        authority: JwtAuthority | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        a = self.jwt_authorities[0] if authority is None else authority
        body: dict[str, Any] = {"sub": sub, "iat": self.now_s, **claims}
        if aud is not None:
            body["aud"] = aud
        body["exp"] = self.now_s + 300 if exp_s is None else exp_s
        if exp_s == -1:
            del body["exp"]
        hdr = {"kid": a.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(body, a.key, algorithm=a.alg, headers=hdr)


def forge(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (for alg=none, HS256-with-public-key, crit, ...)."""
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    c = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{c}.{b64url(signature)}"


def hs256_with_public_key(
    header: Mapping[str, Any], claims: Mapping[str, Any], key_bytes: bytes
) -> str:
    """The classic algorithm-confusion forgery: HS256 with the issuer's *public* key as secret."""
    import hashlib
    import hmac

    h = b64url(json.dumps({**header, "alg": "HS256"}, separators=(",", ":")).encode())
    c = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key_bytes, f"{h}.{c}".encode(), hashlib.sha256).digest()
    return f"{h}.{c}.{b64url(sig)}"
