"""RFC 9440 Client-Cert / Client-Cert-Chain headers -> a PEM chain (pure)."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from cctf.gateway.clientcert import MAX_HEADER_CHARS, ClientCertError, chain_pem


def sf(der: bytes) -> str:
    return ":" + base64.b64encode(der).decode() + ":"


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8))
def test_round_trip(ders: list[bytes]) -> None:
    chain = ", ".join(sf(d) for d in ders[1:]) or None
    pem = chain_pem(sf(ders[0]), chain)
    assert pem is not None
    blocks = pem.split("-----END CERTIFICATE-----\n")[:-1]
    got = [base64.b64decode("".join(b.splitlines()[1:])) for b in blocks]
    assert got == ders


def test_a_real_certificate_parses_back() -> None:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("example.test")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    der = cert.public_bytes(Encoding.DER)
    pem = chain_pem(sf(der), None)
    assert pem is not None
    assert x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER) == der


@pytest.mark.parametrize(
    ("cert", "chain", "needle"),
    [
        ("AAAA", None, "RFC 9440"),
        (":AA=A:", None, "RFC 9440"),
        (":!!!!:", None, "RFC 9440"),
        ("::", None, "RFC 9440"),
        (":AAAA:, :AAAA:", None, "more than one"),
        (":AAAA:", ", ".join([":AAAA:"] * 8), "more than 8"),
        (":" + "A" * MAX_HEADER_CHARS + ":", None, "longer than"),
    ],
)
def test_refused(cert: str | None, chain: str | None, needle: str) -> None:
    with pytest.raises(ClientCertError) as info:
        chain_pem(cert, chain)
    assert needle in str(info.value)


def test_no_leaf_no_chain() -> None:
    assert chain_pem(None, None) is None
    assert chain_pem(None, ":AAAA:") is None  # intermediates alone prove nothing


@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=9))
def test_the_documented_patterns_accept_exactly_what_parses(ders: list[bytes]) -> None:
    import re

    from cctf.gateway.clientcert import CERT_PATTERN, CHAIN_PATTERN

    cert, chain = sf(ders[0]), ", ".join(sf(d) for d in ders[1:]) or None
    assert re.fullmatch(CERT_PATTERN, cert)
    documented = chain is None or re.fullmatch(CHAIN_PATTERN, chain) is not None
    try:
        chain_pem(cert, chain)
        parses = True
    except ClientCertError:
        parses = False
    assert documented == parses
