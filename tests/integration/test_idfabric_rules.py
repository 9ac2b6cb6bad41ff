"""The identity fabric's credentials under cctf.identity's own rules: what it presents and mints is
accepted when genuine and refused, with the right reason, for every fault it can inject."""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from idfabric import fetch, peer_chain

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.devfabric.identity import IdentityFabric, Presentation
from cctf.identity.bundle import TrustBundle, parse_bundle
from cctf.identity.errors import IdentityError
from cctf.identity.oidc import KeySet, parse_discovery, parse_jwks
from cctf.identity.tokens import verify_id_token, verify_jwt_svid
from cctf.identity.x509svid import verify_x509_svid

REGION = DEFAULT_REGIONS[0]


def now_ms() -> int:
    return int(time.time() * 1000)


async def served_bundle(fabric: IdentityFabric) -> TrustBundle:
    raw = (await fetch(fabric.bundle.bundle_url(REGION), fabric.web_ca_file)).content
    return parse_bundle(fabric.trust_domain.name, raw)


async def served_jwks(fabric: IdentityFabric) -> KeySet:
    issuer = fabric.issuer.issuer_url
    ca = fabric.web_ca_file
    disco = parse_discovery(
        issuer, (await fetch(issuer + "/.well-known/openid-configuration", ca)).content
    )
    return parse_jwks((await fetch(disco.jwks_uri, ca)).content)


async def presented(fabric: IdentityFabric, label: str) -> list[x509.Certificate]:
    chain = await peer_chain(fabric.workload(label).address(REGION))
    return [x509.load_der_x509_certificate(d) for d in chain]


async def test_genuine_svids_validate(identity_fabric: IdentityFabric) -> None:
    bundle = await served_bundle(identity_fabric)
    for w in identity_fabric.workloads.values():
        svid = verify_x509_svid(
            await presented(identity_fabric, w.spec.label), bundle, now_ms(), spiffe_id=w.spiffe_id
        )
        assert str(svid.spiffe_id) == w.spiffe_id


@pytest.mark.parametrize(
    "presentation",
    [
        Presentation.WRONG_IDENTITY,
        Presentation.EXPIRED,
        Presentation.NOT_YET_VALID,
        Presentation.UNTRUSTED,
    ],
)
async def test_every_presentation_fault_is_refused(
    identity_fabric: IdentityFabric, presentation: Presentation
) -> None:
    bundle = await served_bundle(identity_fabric)
    api = identity_fabric.workload("api")
    api.present(presentation)
    chain = await presented(identity_fabric, "api")
    with pytest.raises(IdentityError) as info:
        verify_x509_svid(chain, bundle, now_ms(), spiffe_id=api.spiffe_id)
    assert info.value.reason  # a reason code, and a one-line message
    assert "\n" not in str(info.value)


async def test_tampered_bundle_refuses_the_genuine_svid(identity_fabric: IdentityFabric) -> None:
    identity_fabric.bundle.tamper()
    bundle = await served_bundle(identity_fabric)
    api = identity_fabric.workload("api")
    with pytest.raises(IdentityError):
        verify_x509_svid(await presented(identity_fabric, "api"), bundle, now_ms())
    # ... and accepts what the rogue CA signs: why the quorum decides which bundle is used
    api.present(Presentation.UNTRUSTED)
    svid = verify_x509_svid(await presented(identity_fabric, "api"), bundle, now_ms())
    assert str(svid.spiffe_id) == api.spiffe_id


async def test_id_tokens_validate_and_a_swapped_jwks_refuses_them(
    identity_fabric: IdentityFabric,
) -> None:
    issuer = identity_fabric.issuer
    api = identity_fabric.workload("api")
    token = issuer.mint_id_token(api.spiffe_id, "cctf-demo")
    keys = await served_jwks(identity_fabric)
    claims = verify_id_token(
        token, keys, issuer.issuer_url, ["cctf-demo"], now_ms(), subject=api.spiffe_id
    )
    assert claims.subject == api.spiffe_id
    issuer.swap_jwks()
    swapped = await served_jwks(identity_fabric)
    with pytest.raises(IdentityError):
        verify_id_token(token, swapped, issuer.issuer_url, ["cctf-demo"], now_ms())


async def test_jwt_svids_validate_under_the_bundle(identity_fabric: IdentityFabric) -> None:
    bundle = await served_bundle(identity_fabric)
    api = identity_fabric.workload("api")
    token = identity_fabric.trust_domain.mint_jwt_svid(api.spiffe_id, "relying-party")
    claims = verify_jwt_svid(token, bundle, "relying-party", now_ms())
    assert claims.subject == api.spiffe_id
    with pytest.raises(IdentityError):
        verify_jwt_svid(token, bundle, "someone-else", now_ms())
