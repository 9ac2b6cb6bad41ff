"""X509-SVID validation: a valid SVID (with 0, 1 and 2 intermediates, and from the local identity
fabric's PKI), and every negative of the acceptance list with its reason code."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svidpki import NOW_S, SvidPki, usage

from cctf.identity.bundle import TrustBundle, parse_bundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.x509svid import (
    MAX_CHAIN_CERTS,
    parse_der_chain,
    parse_pem_chain,
    verify_x509_svid,
)

NOW_MS = NOW_S * 1000
ID = "spiffe://demo.test/api"


@pytest.fixture(scope="module")
def pki() -> SvidPki:
    return SvidPki("demo.test")


@pytest.fixture(scope="module")
def bundle(pki: SvidPki) -> TrustBundle:
    return parse_bundle("demo.test", pki.bundle_bytes())


def refused(
    reason: Reason, chain: list[x509.Certificate], bundle: TrustBundle, **kw: object
) -> str:
    with pytest.raises(IdentityError) as info:
        verify_x509_svid(chain, bundle, kw.pop("now_ms", NOW_MS), **kw)  # type: ignore[arg-type]
    assert info.value.reason is reason, str(info.value)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_valid_svid(depth: int) -> None:
    pki = SvidPki("demo.test", intermediates=depth)
    bundle = parse_bundle("demo.test", pki.bundle_bytes())
    leaf = pki.leaf(ID)
    assert len(leaf.chain) == depth + 1
    svid = verify_x509_svid(leaf.chain, bundle, NOW_MS, spiffe_id=ID)
    assert str(svid.spiffe_id) == ID
    spki = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert svid.leaf_key_digest == hashlib.sha256(spki).digest()
    assert svid.not_before_ms == (NOW_S - 3600) * 1000
    assert svid.not_after_ms == (NOW_S + 3600) * 1000
    assert svid.bundle_digest == bundle.digest
    # PEM round trip, and the verifier's own view (same trust domain, no expected ID)
    assert verify_x509_svid(parse_pem_chain(leaf.chain_pem()), bundle, NOW_MS) == svid


def test_leaf_without_eku_or_with_only_server_auth_is_an_svid(
    pki: SvidPki, bundle: TrustBundle
) -> None:
    for eku in ([ExtendedKeyUsageOID.SERVER_AUTH], [ExtendedKeyUsageOID.CLIENT_AUTH]):
        verify_x509_svid(pki.leaf(ID, eku=eku).chain, bundle, NOW_MS)


def test_two_uri_sans(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, "spiffe://demo.test/other")
    refused(Reason.URI_SAN_COUNT, leaf.chain, bundle)


def test_no_uri_san(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(dns_names=["api.demo.test"])
    refused(Reason.URI_SAN_COUNT, leaf.chain, bundle)


def test_ca_leaf(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, ca=True, key_usage=usage(digital_signature=True, key_cert_sign=True))
    refused(Reason.LEAF_IS_CA, leaf.chain, bundle)


def test_key_cert_sign(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, key_usage=usage(digital_signature=True, key_cert_sign=True))
    refused(Reason.LEAF_KEY_CERT_SIGN, leaf.chain, bundle)


def test_crl_sign(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, key_usage=usage(digital_signature=True, crl_sign=True))
    refused(Reason.LEAF_CRL_SIGN, leaf.chain, bundle)


def test_no_digital_signature(pki: SvidPki, bundle: TrustBundle) -> None:
    refused(Reason.LEAF_NO_DIGITAL_SIGNATURE, pki.leaf(ID, key_usage=usage()).chain, bundle)
    refused(Reason.LEAF_NO_DIGITAL_SIGNATURE, pki.leaf(ID, no_key_usage=True).chain, bundle)


def test_spiffe_id_over_2048_bytes(pki: SvidPki, bundle: TrustBundle) -> None:
    long_id = "spiffe://demo.test/" + "a" * 2100
    refused(Reason.SPIFFE_ID_TOO_LONG, pki.leaf(long_id).chain, bundle)


def test_uppercase_trust_domain(pki: SvidPki, bundle: TrustBundle) -> None:
    refused(Reason.TRUST_DOMAIN_INVALID, pki.leaf("spiffe://Demo.test/api").chain, bundle)


@pytest.mark.parametrize("path", ["/a/../b", "/./b", "/a/.", "/.."])
def test_dot_segments(pki: SvidPki, bundle: TrustBundle, path: str) -> None:
    refused(Reason.PATH_SEGMENT_INVALID, pki.leaf("spiffe://demo.test" + path).chain, bundle)


def test_expired(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, not_after_s=NOW_S - 1)
    assert "expired" in refused(Reason.EXPIRED, leaf.chain, bundle)
    # the verifier's validity check agrees one ms past notAfter, not before
    ok = pki.leaf(ID)
    refused(Reason.EXPIRED, ok.chain, bundle, now_ms=(NOW_S + 3600) * 1000 + 1000)


def test_not_yet_valid(pki: SvidPki, bundle: TrustBundle) -> None:
    leaf = pki.leaf(ID, not_before_s=NOW_S + 60)
    refused(Reason.NOT_YET_VALID, leaf.chain, bundle)


def test_expired_intermediate(pki: SvidPki, bundle: TrustBundle) -> None:
    inter = pki.ca("old intermediate", parent=pki.root, not_after_s=NOW_S - 10)
    leaf = pki.leaf(ID, issuer=inter)
    refused(Reason.EXPIRED, [leaf.cert, inter.cert], bundle)


def test_wrong_trust_domain(pki: SvidPki, bundle: TrustBundle) -> None:
    refused(Reason.WRONG_TRUST_DOMAIN, pki.leaf("spiffe://other.test/api").chain, bundle)
    # the caller expects another trust domain than the bundle's
    refused(Reason.WRONG_TRUST_DOMAIN, pki.leaf(ID).chain, bundle, trust_domain="other.test")


def test_wrong_spiffe_id(pki: SvidPki, bundle: TrustBundle) -> None:
    refused(Reason.WRONG_SPIFFE_ID, pki.leaf(ID).chain, bundle, spiffe_id="spiffe://demo.test/db")


def test_unknown_issuer(pki: SvidPki, bundle: TrustBundle) -> None:
    rogue = SvidPki("demo.test")  # same trust domain name, other keys
    refused(Reason.UNKNOWN_ISSUER, rogue.leaf(ID).chain, bundle)
    # the right leaf without its intermediate has no path either
    refused(Reason.UNKNOWN_ISSUER, pki.leaf(ID).chain[:1], bundle)
    # a bundle with JWT authorities only
    jwt_only = parse_bundle("demo.test", pki.bundle_bytes(x509=False))
    refused(Reason.UNKNOWN_ISSUER, pki.leaf(ID).chain, jwt_only)


def test_unknown_critical_extension(pki: SvidPki, bundle: TrustBundle) -> None:
    ext = x509.TLSFeature([x509.TLSFeatureType.status_request])
    refused(Reason.CHAIN_INVALID, pki.leaf(ID, extra=[(ext, True)]).chain, bundle)


def test_chain_bounds(pki: SvidPki, bundle: TrustBundle) -> None:
    refused(Reason.CHAIN_EMPTY, [], bundle)
    leaf = pki.leaf(ID)
    refused(Reason.CHAIN_TOO_LONG, leaf.chain * (MAX_CHAIN_CERTS // 2 + 1), bundle)


def test_pem_and_der_parsing() -> None:
    for bad in (b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(IdentityError) as info:
            parse_pem_chain(bad)
        assert info.value.reason in (Reason.CHAIN_EMPTY, Reason.CERTIFICATE_MALFORMED)
    with pytest.raises(IdentityError) as info:
        parse_pem_chain(b"x" * 70_000)
    assert info.value.reason is Reason.CHAIN_TOO_LONG
    with pytest.raises(IdentityError) as info:
        parse_der_chain([b"\x30\x03\x02\x01\x01"])
    assert info.value.reason is Reason.CERTIFICATE_MALFORMED
    with pytest.raises(IdentityError) as info:
        parse_der_chain([])
    assert info.value.reason is Reason.CHAIN_EMPTY


# -- property: the reason is the first failing documented step -----------------------------------
ROGUE = SvidPki("demo.test")


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    uris=st.lists(st.sampled_from(["ok", "other", "upper", "dots"]), max_size=2),
    ca=st.booleans(),
    ku=st.sampled_from(["none", "ds", "plain", "ds+kcs", "ds+crl"]),
    nb=st.sampled_from([-3600, 60]),
    na=st.sampled_from([-1, 3600]),
    rogue=st.booleans(),
)
def test_reason_is_first_failing_step(
    pki: SvidPki,
    bundle: TrustBundle,
    uris: list[str],
    ca: bool,
    ku: str,
    nb: int,
    na: int,
    rogue: bool,
) -> None:
    text = {
        "ok": ID,
        "other": "spiffe://other.test/api",
        "upper": "spiffe://Demo.test/api",
        "dots": "spiffe://demo.test/a/../b",
    }
    if nb > 0 and na < 0:
        na = 3600
    usages = {
        "plain": usage(),
        "ds": usage(digital_signature=True),
        "ds+kcs": usage(digital_signature=True, key_cert_sign=True),
        "ds+crl": usage(digital_signature=True, crl_sign=True),
    }
    src = ROGUE if rogue else pki
    leaf = src.leaf(
        *[text[u] for u in uris] or [],
        dns_names=[] if uris else ["api.demo.test"],
        ca=ca,
        key_usage=usages.get(ku),
        no_key_usage=ku == "none",
        not_before_s=NOW_S + nb,
        not_after_s=NOW_S + na,
    )
    expected: Reason | None = None
    if len(uris) != 1:
        expected = Reason.URI_SAN_COUNT
    elif uris[0] == "upper":
        expected = Reason.TRUST_DOMAIN_INVALID
    elif uris[0] == "dots":
        expected = Reason.PATH_SEGMENT_INVALID
    elif uris[0] == "other":
        expected = Reason.WRONG_TRUST_DOMAIN
    elif ca:
        expected = Reason.LEAF_IS_CA
    elif ku in ("none", "plain"):
        expected = Reason.LEAF_NO_DIGITAL_SIGNATURE
    elif ku == "ds+kcs":
        expected = Reason.LEAF_KEY_CERT_SIGN
    elif ku == "ds+crl":
        expected = Reason.LEAF_CRL_SIGN
    elif nb > 0:
        expected = Reason.NOT_YET_VALID
    elif na < 0:
        expected = Reason.EXPIRED
    elif rogue:
        expected = Reason.UNKNOWN_ISSUER
    if expected is None:
        assert str(verify_x509_svid(leaf.chain, bundle, NOW_MS).spiffe_id) == ID
    else:
        refused(expected, leaf.chain, bundle)
