"""The local identity fabric itself, over real HTTPS / TLS on loopback: what it serves, what each
fault knob changes (and only where it should), and that it stops cleanly."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.request
from pathlib import Path

import httpx2
import jwt
import pytest
from cryptography import x509
from cryptography.x509.verification import VerificationError
from idfabric import fetch, fetch_json, find_leaks, peer_chain, verify_svid

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.devfabric.identity import IdentityFabric, Presentation
from cctf.devfabric.identity_pki import cert_der, cert_pem, key_pem
from cctf.identity.bundle import parse_bundle
from cctf.identity.oidc import parse_discovery, parse_jwks
from cctf.identity.targets import IdentityTargets

REGION = DEFAULT_REGIONS[0]
OTHER = DEFAULT_REGIONS[1]


async def bundle(fabric: IdentityFabric, view: str = REGION) -> dict:
    return await fetch_json(fabric.bundle.bundle_url(view), fabric.web_ca_file)


async def test_bundle_document_is_a_spiffe_bundle(identity_fabric: IdentityFabric) -> None:
    doc = await bundle(identity_fabric)
    td = identity_fabric.trust_domain
    assert doc["spiffe_sequence"] == td.sequence == 5
    assert doc["spiffe_refresh_hint"] == 60
    x509_keys = [k for k in doc["keys"] if k["use"] == "x509-svid"]
    jwt_keys = [k for k in doc["keys"] if k["use"] == "jwt-svid"]
    assert len(x509_keys) == 1 and len(jwt_keys) == 1
    (root_b64,) = x509_keys[0]["x5c"]
    assert base64.b64decode(root_b64) == cert_der(td.ca.root)
    assert "kid" not in x509_keys[0]
    assert jwt_keys[0]["kid"] == td.jwt_authorities[0].kid
    assert all("d" not in k for k in doc["keys"])  # public keys only
    # the same document from every view, and in bundle_file
    for view in DEFAULT_REGIONS:
        assert await bundle(identity_fabric, view) == doc
    assert json.loads(identity_fabric.bundle_file.read_bytes()) == doc


async def test_https_needs_the_web_ca(identity_fabric: IdentityFabric) -> None:
    with pytest.raises(httpx2.ConnectError):
        async with httpx2.AsyncClient(verify=ssl.create_default_context(), timeout=5) as c:
            await c.get(identity_fabric.bundle.bundle_url(REGION))
    r = await fetch(identity_fabric.bundle.url(REGION) + "/nope", identity_fabric.web_ca_file)
    assert r.status_code == 404


async def test_rotate_bumps_the_sequence_and_adds_a_jwt_authority(
    identity_fabric: IdentityFabric,
) -> None:
    identity_fabric.trust_domain.rotate()
    doc = await bundle(identity_fabric)
    assert doc["spiffe_sequence"] == 6
    assert len([k for k in doc["keys"] if k["use"] == "jwt-svid"]) == 2


async def test_split_view_rollback_and_empty_stay_where_they_are_set(
    identity_fabric: IdentityFabric,
) -> None:
    genuine = await bundle(identity_fabric, OTHER)
    identity_fabric.bundle.tamper(view=REGION)
    tampered = await bundle(identity_fabric, REGION)
    assert tampered["spiffe_sequence"] == genuine["spiffe_sequence"]
    assert tampered["keys"] != genuine["keys"]
    rogue_root = identity_fabric.trust_domain.rogue_ca.root
    assert base64.b64decode(tampered["keys"][0]["x5c"][0]) == cert_der(rogue_root)
    for view in DEFAULT_REGIONS[1:]:
        assert await bundle(identity_fabric, view) == genuine

    identity_fabric.bundle.rollback()
    for view in DEFAULT_REGIONS:
        assert (await bundle(identity_fabric, view))["spiffe_sequence"] == 4
    identity_fabric.bundle.empty(view=OTHER)
    empty = await bundle(identity_fabric, OTHER)
    assert empty["keys"] == [] and empty["spiffe_sequence"] == 6
    identity_fabric.reset_faults()
    assert await bundle(identity_fabric, REGION) == genuine
    assert await bundle(identity_fabric, OTHER) == genuine


async def test_down_and_hang_per_view(identity_fabric: IdentityFabric) -> None:
    url = identity_fabric.bundle.bundle_url(REGION)
    identity_fabric.bundle.set_mode("down", view=REGION)
    with pytest.raises(httpx2.ConnectError):
        await fetch(url, identity_fabric.web_ca_file)
    assert (await bundle(identity_fabric, OTHER))["keys"]
    identity_fabric.bundle.set_mode("hang", view=REGION)
    with pytest.raises(httpx2.TimeoutException):
        await fetch(url, identity_fabric.web_ca_file, timeout_s=0.5)
    identity_fabric.bundle.set_mode("up")
    assert (await bundle(identity_fabric, REGION))["keys"]
    with pytest.raises(ValueError, match="unknown view"):
        identity_fabric.bundle.set_mode("down", view="mars")


async def test_oidc_discovery_jwks_and_tokens(identity_fabric: IdentityFabric) -> None:
    issuer = identity_fabric.issuer
    disco = await fetch_json(
        issuer.issuer_url + "/.well-known/openid-configuration", identity_fabric.web_ca_file
    )
    assert disco["issuer"] == issuer.issuer_url
    assert disco["id_token_signing_alg_values_supported"] == ["ES256"]
    jwks = await fetch_json(disco["jwks_uri"], identity_fabric.web_ca_file)
    api = identity_fabric.workload("api")
    token = issuer.mint_id_token(api.spiffe_id, "cctf-demo")
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(
        token, key, algorithms=["ES256"], audience="cctf-demo", issuer=issuer.issuer_url
    )
    assert claims["sub"] == api.spiffe_id

    issuer.swap_jwks()
    swapped = await fetch_json(disco["jwks_uri"], identity_fabric.web_ca_file)
    assert {k["kid"] for k in swapped["keys"]}.isdisjoint({kid})
    issuer.set_mode("down")
    with pytest.raises(httpx2.ConnectError):
        await fetch(disco["jwks_uri"], identity_fabric.web_ca_file)
    identity_fabric.reset_faults()
    assert await fetch_json(disco["jwks_uri"], identity_fabric.web_ca_file) == jwks


async def test_jwt_svid_validates_under_the_bundle(identity_fabric: IdentityFabric) -> None:
    doc = await bundle(identity_fabric)
    api = identity_fabric.workload("api")
    token = identity_fabric.trust_domain.mint_jwt_svid(api.spiffe_id, "relying-party")
    keys = {k["kid"]: k for k in doc["keys"] if k["use"] == "jwt-svid"}
    jwk = jwt.PyJWK.from_dict(keys[jwt.get_unverified_header(token)["kid"]])
    claims = jwt.decode(token, jwk, algorithms=["ES256"], audience="relying-party")
    assert claims["sub"] == api.spiffe_id


async def test_workload_presents_an_x509_svid_chain(identity_fabric: IdentityFabric) -> None:
    td = identity_fabric.trust_domain
    for w in identity_fabric.workloads.values():
        chain = await peer_chain(w.address(REGION))
        assert len(chain) == 2  # leaf + intermediate, never the root
        assert chain[1] == cert_der(td.ca.intermediate)  # type: ignore[arg-type]
        assert verify_svid(chain, [td.ca.root]) == w.spiffe_id
        leaf = x509.load_der_x509_certificate(chain[0])
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    "presentation",
    [
        Presentation.WRONG_IDENTITY,
        Presentation.EXPIRED,
        Presentation.NOT_YET_VALID,
        Presentation.UNTRUSTED,
    ],
)
async def test_workload_faults_per_view(
    identity_fabric: IdentityFabric, presentation: Presentation
) -> None:
    td = identity_fabric.trust_domain
    api = identity_fabric.workload("api")
    api.present(presentation, view=REGION)
    chain = await peer_chain(api.address(REGION))
    if presentation is Presentation.WRONG_IDENTITY:
        assert verify_svid(chain, [td.ca.root]) == td.spiffe_id("impostor")
    else:
        with pytest.raises(VerificationError):
            verify_svid(chain, [td.ca.root])
    # the other views still present the genuine SVID
    assert verify_svid(await peer_chain(api.address(OTHER)), [td.ca.root]) == api.spiffe_id
    api.present(Presentation.VALID, view=REGION)
    assert verify_svid(await peer_chain(api.address(REGION)), [td.ca.root]) == api.spiffe_id


async def test_workload_down_everywhere(identity_fabric: IdentityFabric) -> None:
    api = identity_fabric.workload("api")
    api.set_mode("down")
    for view in DEFAULT_REGIONS:
        with pytest.raises(OSError):
            await peer_chain(api.address(view))
    assert await peer_chain(identity_fabric.workload("db").address(REGION))


async def test_stop_closes_every_port_and_hung_connection(tmp_path: Path) -> None:
    fabric = IdentityFabric(tmp_path / "f")
    await fabric.astart()
    fabric.bundle.set_mode("hang")
    url = fabric.bundle.bundle_url(REGION)
    hung = asyncio.create_task(fetch(url, fabric.web_ca_file, timeout_s=30))
    while fabric.bundle.connections == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(fabric.astop(), 10)
    with pytest.raises((httpx2.ReadError, httpx2.ConnectError, httpx2.RemoteProtocolError)):
        await hung
    for server in fabric.servers():
        assert not server._tasks
        for port in server.ports.values():
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)


def test_thread_mode_serves_synchronous_clients(identity_fabric_thread: IdentityFabric) -> None:
    ctx = ssl.create_default_context(cafile=str(identity_fabric_thread.web_ca_file))
    url = identity_fabric_thread.bundle.bundle_url(OTHER)
    with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
        assert json.loads(r.read())["spiffe_sequence"] == 5
    identity_fabric_thread.bundle.empty()
    with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
        assert json.loads(r.read())["keys"] == []


def test_targets_document_describes_each_view(tmp_path: Path) -> None:
    fabric = IdentityFabric(tmp_path / "f")
    # ports are known once started; the document shape does not need them
    fabric.bundle.ports.update({r: 1000 + i for i, r in enumerate(DEFAULT_REGIONS)})
    fabric.issuer.ports["issuer"] = 2000
    for j, w in enumerate(fabric.workloads.values()):
        w.ports.update({r: 3000 + 10 * j + i for i, r in enumerate(DEFAULT_REGIONS)})
    doc = fabric.targets_document(OTHER)
    (td,) = doc["trust_domains"]
    assert td == {
        "name": "demo.test",
        "bundle_endpoint": "https://127.0.0.1:1001/bundle.json",
        "ca_file": str(fabric.web_ca_file),
    }
    assert doc["issuers"] == [
        {
            "issuer": "https://127.0.0.1:2000",
            "audiences": ["cctf-demo"],
            "ca_file": str(fabric.web_ca_file),
        }
    ]
    api = doc["workloads"][0]
    assert api["spiffe_id"] == "spiffe://demo.test/api"
    assert api["endpoint"] == "127.0.0.1:3001" and api["dns_name"] == "api.demo.test."
    file_doc = fabric.targets_document(bundle_file=True)
    assert file_doc["trust_domains"] == [
        {"name": "demo.test", "bundle_file": str(fabric.bundle_file)}
    ]


async def test_documents_pass_the_identity_parsers(identity_fabric: IdentityFabric) -> None:
    """What the fabric serves is what cctf.identity accepts (and the targets config it describes)."""
    ca = identity_fabric.web_ca_file
    raw = (await fetch(identity_fabric.bundle.bundle_url(REGION), ca)).content
    parsed = parse_bundle("demo.test", raw)
    assert parsed.sequence == 5 and parsed.authority_count == 2
    issuer = identity_fabric.issuer.issuer_url
    disco_raw = (await fetch(issuer + "/.well-known/openid-configuration", ca)).content
    disco = parse_discovery(issuer, disco_raw)
    keys = parse_jwks((await fetch(disco.jwks_uri, ca)).content)
    assert keys.digest
    for region in DEFAULT_REGIONS:
        targets = identity_fabric.targets(region)
        assert isinstance(targets, IdentityTargets)
        (td,) = targets.trust_domains
        assert td.bundle_endpoint == identity_fabric.bundle.bundle_url(region)
        assert {w.endpoint for w in targets.workloads} == {
            w.address(region) for w in identity_fabric.workloads.values()
        }
        assert all(targets.audience_of(w) == "cctf-demo" for w in targets.workloads)
    policy = {"at_least": 3, "require": ["mtls"]}
    strict = identity_fabric.targets(bundle_file=True, policy=policy)
    assert strict.trust_domains[0].bundle_file == str(identity_fabric.bundle_file)
    assert all(w.policy.at_least == 3 for w in strict.workloads)


async def test_leak_scanner_sees_every_kind_of_secret(identity_fabric: IdentityFabric) -> None:
    api = identity_fabric.workload("api")
    issued = api.issued()
    token = identity_fabric.issuer.mint_id_token(api.spiffe_id, "cctf-demo")
    clean = json.dumps(await bundle(identity_fabric)).encode()  # public keys, x5c is base64
    assert find_leaks(b"spiffe://demo.test/api sha256:ab", identity_fabric) == []
    assert find_leaks(clean, identity_fabric) == []
    for planted in (
        token.encode(),
        key_pem(issued.key),
        cert_pem(issued.cert),
        cert_der(issued.cert),
        issued.key.private_numbers().private_value.to_bytes(32, "big"),
        b"prefix" + identity_fabric.secret_material()[0] + b"suffix",
    ):
        assert find_leaks(b"{...}" + planted + b"{...}", identity_fabric), planted[:40]


async def test_issuer_split_view_through_discovery_url(identity_fabric: IdentityFabric) -> None:
    issuer = identity_fabric.issuer
    ca = identity_fabric.web_ca_file
    (target,) = identity_fabric.targets(REGION, issuer_view=True).issuers
    assert target.issuer == issuer.issuer_url
    assert target.discovery_location == issuer.discovery_url(REGION) != issuer.discovery_url()
    keysets = {}
    for view in (REGION, OTHER):
        raw = (await fetch(issuer.discovery_url(view), ca)).content
        disco = parse_discovery(issuer.issuer_url, raw)  # names the one issuer from every view
        assert disco.jwks_uri == issuer.url(view) + "/jwks"
        keysets[view] = disco.jwks_uri
    genuine = await fetch_json(keysets[OTHER], ca)
    issuer.swap_jwks(view=REGION)
    swapped = await fetch_json(keysets[REGION], ca)
    assert swapped != genuine and await fetch_json(keysets[OTHER], ca) == genuine
    assert await fetch_json(issuer.issuer_url + "/jwks", ca) == genuine
    issuer.set_mode("down", view=OTHER)
    with pytest.raises(httpx2.ConnectError):
        await fetch(keysets[OTHER], ca)
    identity_fabric.reset_faults()
    assert await fetch_json(keysets[REGION], ca) == genuine
    # without issuer_view the targets name no discovery_url: the issuer's own location
    (plain,) = identity_fabric.targets(REGION).issuers
    assert plain.discovery_url is None
