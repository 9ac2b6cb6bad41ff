"""cctf.identity against the local identity fabric's PKI and tokens (no servers): what idfabric
issues validates; its deliberately invalid credentials are refused with the right reasons."""

from __future__ import annotations

import json
import time

import pytest

from cctf.devfabric.identity_endpoints import LocalTrustDomain
from cctf.identity.bundle import parse_bundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.tokens import verify_jwt_svid
from cctf.identity.x509svid import verify_x509_svid

NOW = time.time()
NOW_MS = int(NOW * 1000)


@pytest.fixture(scope="module")
def td() -> LocalTrustDomain:
    return LocalTrustDomain("demo.test", now=NOW)


def test_fabric_svid_and_jwt_svid_validate(td: LocalTrustDomain) -> None:
    bundle = parse_bundle("demo.test", json.dumps(td.document()).encode())
    assert bundle.sequence == td.sequence and len(bundle.x509_authorities) == 1
    sid = td.spiffe_id("api")
    issued = td.issue_svid(sid)
    svid = verify_x509_svid(list(issued.chain), bundle, NOW_MS, spiffe_id=sid)
    assert str(svid.spiffe_id) == sid
    tok = td.mint_jwt_svid(sid, "cctf", now=NOW)
    assert verify_jwt_svid(tok, bundle, "cctf", NOW_MS).subject == sid


def test_fabric_negative_credentials(td: LocalTrustDomain) -> None:
    bundle = parse_bundle("demo.test", json.dumps(td.document()).encode())
    sid = td.spiffe_id("api")
    cases = [
        (td.issue_svid(sid, rogue=True), Reason.UNKNOWN_ISSUER),
        (td.issue_svid(sid, not_after=NOW - 10), Reason.EXPIRED),
        (td.issue_svid(sid, not_before=NOW + 600), Reason.NOT_YET_VALID),
        (
            td.ca.issue_svid([sid, sid + "2"], not_before=NOW - 60, not_after=NOW + 60),
            Reason.URI_SAN_COUNT,
        ),
        (
            td.ca.issue_svid(sid, not_before=NOW - 60, not_after=NOW + 60, ca=True),
            Reason.LEAF_IS_CA,
        ),
        (
            td.ca.issue_svid(sid, not_before=NOW - 60, not_after=NOW + 60, key_cert_sign=True),
            Reason.LEAF_KEY_CERT_SIGN,
        ),
    ]
    for issued, reason in cases:
        with pytest.raises(IdentityError) as info:
            verify_x509_svid(list(issued.chain), bundle, NOW_MS)
        assert info.value.reason is reason
    rogue_tok = td.mint_jwt_svid(sid, "cctf", now=NOW, key=td.rogue_jwt)
    with pytest.raises(IdentityError) as info:
        verify_jwt_svid(rogue_tok, bundle, "cctf", NOW_MS)
    assert info.value.reason is Reason.KID_UNKNOWN
    rogue_bundle = parse_bundle("demo.test", json.dumps(td.rogue_document()).encode())
    assert rogue_bundle.digest != bundle.digest
