"""The agent certificate profile (pure): SPIFFE ID, key-binding extension, build and check.

An agent certificate is an X.509-SVID (docs/ca.md §2)::

    subject      CN=<agent>, OU=<region>, O=cctf
    SAN          exactly one URI: spiffe://<trust-domain>/cctf/agent/<region>/<agent>
    SPKI         the agent's TLS key, ECDSA P-256 (from its CSR; the key never leaves the agent)
    validity     notBefore = issue time (s), notAfter = notBefore + lifetime, lifetime ≤ 24 h
    extensions   basicConstraints CA:FALSE (critical), keyUsage digitalSignature (critical),
                 extKeyUsage clientAuth, SKI, AKI, and the non-critical key binding below
    signature    by the operator's intermediate CA (ECDSA P-256 / SHA-256 or Ed25519)

Key binding, attribute type :data:`KEY_BINDING_OID` (``2.25.<uuid>``, a UUID-derived OID that
needs no registration), carried as the one attribute of a non-critical ``subjectDirectoryAttributes``
extension (``2.5.29.9``, RFC 5280 §4.2.1.8: ``SEQUENCE { SEQUENCE { type, SET { value } } }``). Not
an extension of its own OID: Go's X.509 parser, so nats-server, refuses a certificate holding an
extension OID with an arc above 2^31 - 1 ("x509: malformed extension OID field"), and a UUID arc is
128 bits; inside 2.5.29.9 the attribute type is opaque to it. The attribute value is the DER of::

    CctfKeyBinding ::= SEQUENCE {
        version  INTEGER (1),
        suite    UTF8String,                        -- e.g. "hybrid-ed25519-ml-dsa-65"
        kid      UTF8String,                        -- the agent's hybrid key id (cctf.crypto.keys)
        digests  SEQUENCE SIZE (1..4) OF OCTET STRING (SIZE (32))
                                                    -- SHA-256 of each raw public key, in the
                                                    -- suite's component order
    }

It is non-critical: TLS stacks that do not know it (nats-server) ignore it; the coordinator's
:class:`~cctf.ca.registry.CertRegistry` requires it and checks it against its trust config.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from cctf.ca.errors import CaError, CaReason
from cctf.crypto.keys import PublicKeySet
from cctf.ids import IdError, check_id

__all__ = [
    "BINDING_EXTENSION_OID",
    "DEFAULT_LIFETIME_MS",
    "KEY_BINDING_OID",
    "MAX_CERT_BYTES",
    "MAX_LIFETIME_MS",
    "MIN_LIFETIME_MS",
    "AgentCert",
    "KeyBinding",
    "agent_spiffe_id",
    "build_agent_cert",
    "decode_binding",
    "encode_binding",
    "parse_agent_cert",
    "unwrap_binding",
    "wrap_binding",
]

KEY_BINDING_OID: Final = x509.ObjectIdentifier("2.25.309931722773230907201047577551449518230")
#: The extension that carries the key binding attribute (see the module docstring).
BINDING_EXTENSION_OID: Final = ExtensionOID.SUBJECT_DIRECTORY_ATTRIBUTES
DEFAULT_LIFETIME_MS: Final = 3_600_000
MAX_LIFETIME_MS: Final = 24 * 3_600_000
#: shortest lifetime the CA issues (tests use a few seconds; production: minutes to hours)
MIN_LIFETIME_MS: Final = 2_000
MAX_CERT_BYTES: Final = 16 * 1024
_BINDING_VERSION: Final = 1
_MAX_DIGESTS: Final = 4
_PATH_PREFIX: Final = "/cctf/agent/"


def agent_spiffe_id(trust_domain: str, region: str, agent: str) -> str:
    """``spiffe://<trust-domain>/cctf/agent/<region>/<agent>``."""
    return f"spiffe://{trust_domain}{_PATH_PREFIX}{region}/{agent}"


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """What the extension binds: the hybrid key's suite, kid and per-component key digests."""

    suite: str
    kid: str
    digests: tuple[bytes, ...]

    @classmethod
    def of(cls, keys: PublicKeySet) -> KeyBinding:
        return cls(keys.suite.value, keys.kid, tuple(hashlib.sha256(r).digest() for r in keys.raw))

    def matches(self, keys: PublicKeySet) -> bool:
        return self == KeyBinding.of(keys)


# ---- a strict DER codec for the four types the binding uses -------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def encode_binding(b: KeyBinding) -> bytes:
    """The extension value (DER of ``CctfKeyBinding``)."""
    inner = _tlv(0x02, bytes([_BINDING_VERSION]))
    inner += _tlv(0x0C, b.suite.encode()) + _tlv(0x0C, b.kid.encode())
    inner += _tlv(0x30, b"".join(_tlv(0x04, d) for d in b.digests))
    return _tlv(0x30, inner)


def _read(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos + 2 > len(data) or data[pos] != tag:
        raise CaError(CaReason.BINDING, f"expected DER tag 0x{tag:02x} at {pos}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        k = first & 0x7F
        if k == 0 or k > 2 or pos + k > len(data):
            raise CaError(CaReason.BINDING, "bad DER length")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > len(data):
        raise CaError(CaReason.BINDING, "truncated DER")
    return data[pos : pos + n], pos + n


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    out = b""
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return _tlv(0x06, out)


def wrap_binding(value: bytes) -> bytes:
    """The ``subjectDirectoryAttributes`` extension value holding ``value`` (one attribute)."""
    return _tlv(0x30, _tlv(0x30, _oid_der(KEY_BINDING_OID) + _tlv(0x31, value)))


def unwrap_binding(ext_value: bytes) -> KeyBinding:
    """Strict: exactly one attribute, of type :data:`KEY_BINDING_OID`, with one value."""
    if len(ext_value) > 1100:
        raise CaError(CaReason.BINDING, "key binding too large")
    attrs, end = _read(ext_value, 0, 0x30)
    attr, pos = _read(attrs, 0, 0x30)
    if end != len(ext_value) or pos != len(attrs):
        raise CaError(CaReason.BINDING, "the key binding must be the only directory attribute")
    oid, pos = _read(attr, 0, 0x06)
    values, pos = _read(attr, pos, 0x31)
    if pos != len(attr) or _tlv(0x06, oid) != _oid_der(KEY_BINDING_OID):
        raise CaError(CaReason.BINDING, "the directory attribute is not the key binding")
    binding = decode_binding(values)  # one value: decode_binding refuses trailing bytes
    if wrap_binding(values) != ext_value:
        raise CaError(CaReason.BINDING, "key binding is not canonical DER")
    return binding


def decode_binding(value: bytes) -> KeyBinding:
    """Strict decoding of the extension value (canonical DER only); :class:`CaError` ``binding``."""
    if len(value) > 1024:
        raise CaError(CaReason.BINDING, "key binding too large")
    seq, end = _read(value, 0, 0x30)
    if end != len(value):
        raise CaError(CaReason.BINDING, "trailing bytes after the key binding")
    version, pos = _read(seq, 0, 0x02)
    suite, pos = _read(seq, pos, 0x0C)
    kid, pos = _read(seq, pos, 0x0C)
    digests_der, pos = _read(seq, pos, 0x30)
    if pos != len(seq):
        raise CaError(CaReason.BINDING, "unexpected fields in the key binding")
    if version != bytes([_BINDING_VERSION]):
        raise CaError(CaReason.BINDING, "unsupported key binding version")
    digests: list[bytes] = []
    pos = 0
    while pos < len(digests_der):
        d, pos = _read(digests_der, pos, 0x04)
        if len(d) != 32:
            raise CaError(CaReason.BINDING, "a key digest is not 32 bytes")
        digests.append(d)
    if not 1 <= len(digests) <= _MAX_DIGESTS:
        raise CaError(CaReason.BINDING, f"{len(digests)} key digests (1..{_MAX_DIGESTS})")
    try:
        b = KeyBinding(suite.decode(), kid.decode(), tuple(digests))
    except UnicodeDecodeError:
        raise CaError(CaReason.BINDING, "key binding string is not UTF-8") from None
    if encode_binding(b) != value:
        raise CaError(CaReason.BINDING, "key binding is not canonical DER")
    return b


# ---- build ----------------------------------------------------------------------------------------

IssuerKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)


def client_leaf_builder(
    *,
    common_name: str,
    region: str,
    uri: str,
    tls_public_key: ec.EllipticCurvePublicKey,
    serial: int,
    not_before_ms: int,
    lifetime_ms: int,
    issuer_cert: x509.Certificate,
) -> x509.CertificateBuilder:
    """The TLS-client leaf every CCTF certificate shares (agent and join profiles): O=cctf,
    OU=region, CN, one URI SAN, not a CA, digitalSignature only (critical), clientAuth, SKI/AKI."""
    nb = _utc(not_before_ms)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cctf"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, region),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject)
        .public_key(tls_public_key)
        .serial_number(serial)
        .not_valid_before(nb)
        .not_valid_after(nb + dt.timedelta(milliseconds=lifetime_ms))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tls_public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )


def load_issued(der: bytes, issuer: x509.Certificate) -> x509.Certificate:
    """Steps 1 and 2 of every CCTF certificate check: bounded size, DER with every extension
    parsed [``cert``]; issued (name and signature) by the intermediate ``issuer`` [``issuer``]."""
    if len(der) > MAX_CERT_BYTES:
        raise CaError(CaReason.CERT, f"certificate of {len(der)} bytes exceeds {MAX_CERT_BYTES}")
    try:  # 1
        cert = x509.load_der_x509_certificate(der)
        cert.extensions  # noqa: B018 (parse every extension now)
    except ValueError as exc:
        raise CaError(CaReason.CERT, f"undecodable certificate: {exc}") from None
    if cert.issuer != issuer.subject:  # 2
        raise CaError(CaReason.ISSUER, "issuer name is not the intermediate's subject")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaError(CaReason.ISSUER, f"not signed by the intermediate: {exc}") from None
    return cert


def sign_der(builder: x509.CertificateBuilder, issuer_key: IssuerKey) -> bytes:
    """Sign ``builder`` with the intermediate's key (Ed25519: no hash) and return the DER."""
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm).public_bytes(serialization.Encoding.DER)


def build_agent_cert(
    *,
    tls_public_key: ec.EllipticCurvePublicKey,
    binding: KeyBinding,
    trust_domain: str,
    region: str,
    agent: str,
    serial: int,
    not_before_ms: int,
    lifetime_ms: int,
    issuer_cert: x509.Certificate,
    issuer_key: IssuerKey,
) -> bytes:
    """The DER of an agent certificate (the profile above). Time and serial are passed in."""
    builder = client_leaf_builder(
        common_name=agent,
        region=region,
        uri=agent_spiffe_id(trust_domain, region, agent),
        tls_public_key=tls_public_key,
        serial=serial,
        not_before_ms=not_before_ms,
        lifetime_ms=lifetime_ms,
        issuer_cert=issuer_cert,
    ).add_extension(
        x509.UnrecognizedExtension(BINDING_EXTENSION_OID, wrap_binding(encode_binding(binding))),
        critical=False,
    )
    return sign_der(builder, issuer_key)


# ---- check ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentCert:
    """A certificate that follows the agent profile and was issued by the expected issuer."""

    der: bytes
    serial: str  # lowercase hex, no leading zeros
    region: str
    agent: str
    spiffe_id: str
    binding: KeyBinding
    not_before_ms: int
    not_after_ms: int  # exclusive: valid while not_before_ms <= now < not_after_ms
    tls_key_digest: bytes  # SHA-256 of the SubjectPublicKeyInfo DER

    @property
    def lifetime_ms(self) -> int:
        return self.not_after_ms - self.not_before_ms


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1000


def parse_agent_cert(der: bytes, issuer: x509.Certificate, trust_domain: str) -> AgentCert:
    """Check ``der`` against the profile, in order; the first failure raises :class:`CaError`:

    1. size ≤ :data:`MAX_CERT_BYTES`, DER decodes [``cert``];
    2. issuer name is the intermediate's subject and its signature verifies under the
       intermediate's key [``issuer``];
    3. basicConstraints CA:FALSE; SPKI is ECDSA P-256; lifetime in
       [:data:`MIN_LIFETIME_MS`, :data:`MAX_LIFETIME_MS`] [``cert``];
    4. exactly one SAN, a URI ``spiffe://<trust_domain>/cctf/agent/<region>/<agent>`` with valid
       ids [``cert``];
    5. the key-binding extension is present once, non-critical, and decodes [``binding``].
    """
    cert = load_issued(der, issuer)  # 1, 2
    try:  # 3
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CaError(CaReason.CERT, "no basicConstraints") from None
    if bc.ca:
        raise CaError(CaReason.CERT, "certificate is a CA")
    spki = cert.public_key()
    if not isinstance(spki, ec.EllipticCurvePublicKey) or spki.curve.name != "secp256r1":
        raise CaError(CaReason.CERT, "the certificate key is not ECDSA P-256")
    nb, na = _ms(cert.not_valid_before_utc), _ms(cert.not_valid_after_utc)
    if not MIN_LIFETIME_MS <= na - nb <= MAX_LIFETIME_MS:
        raise CaError(CaReason.CERT, f"lifetime {na - nb} ms is out of bounds")
    try:  # 4
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CaError(CaReason.CERT, "no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
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
    exts = [e for e in cert.extensions if e.oid == BINDING_EXTENSION_OID]  # 5
    if len(exts) != 1 or exts[0].critical:
        raise CaError(CaReason.BINDING, "the key binding extension must appear once, non-critical")
    value = exts[0].value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - unknown OID
        raise CaError(CaReason.BINDING, "key binding extension not raw")
    binding = unwrap_binding(value.value)
    spki_der = spki.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return AgentCert(
        der=der,
        serial=serial_hex(cert.serial_number),
        region=region,
        agent=agent,
        spiffe_id=uris[0],
        binding=binding,
        not_before_ms=nb,
        not_after_ms=na,
        tls_key_digest=hashlib.sha256(spki_der).digest(),
    )
