"""The relying party's path rules (cctf.client.identity_paths, pure): exact cases and properties."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.bus_schemas.messages import Outcome
from cctf.client.identity_paths import dns_path, mtls_path, oidc_path
from cctf.identity.negotiator import PathState

HOLDS, FAILS, UNAVAILABLE = PathState.HOLDS, PathState.FAILS, PathState.UNAVAILABLE
WL = "spiffe://demo.test/api"
OTHER = "spiffe://demo.test/db"
B1, B2 = b"\x01" * 32, b"\x02" * 32
DNSSEC = ["secure", "insecure", "bogus", "indeterminate"]


@dataclass(frozen=True)
class Cred:
    valid: bool
    spiffe_id: str | None
    reasons: tuple[str, ...] = ()
    unavailable: bool = False


def test_dns_path_lkg_is_unavailable_unless_allowed() -> None:
    r = dns_path(Outcome.TRUSTED, "secure", require_secure=False, lkg=True)
    assert (r.state, r.reason) == (UNAVAILABLE, "dns_lkg")
    r = dns_path(Outcome.TRUSTED, "secure", require_secure=False, lkg=True, lkg_holds=True)
    assert (r.state, r.reason) == (HOLDS, "dnssec_secure")
    r = dns_path(Outcome.TRUSTED, "bogus", require_secure=False, lkg=True, lkg_holds=True)
    assert r.state is FAILS  # LKG never launders a bogus answer


@pytest.mark.parametrize(
    ("outcome", "dnssec", "secure", "state", "reason"),
    [
        (None, "", False, UNAVAILABLE, "no_verdict"),
        (Outcome.UNAVAILABLE, "indeterminate", False, UNAVAILABLE, "dns_unavailable"),
        (Outcome.DISPUTED, "indeterminate", False, FAILS, "disputed"),
        (Outcome.TRUSTED, "bogus", False, FAILS, "dnssec_bogus"),
        (Outcome.TRUSTED, "secure", True, HOLDS, "dnssec_secure"),
        (Outcome.TRUSTED, "insecure", False, HOLDS, "dnssec_insecure"),
        (Outcome.TRUSTED, "insecure", True, FAILS, "dnssec_insecure"),
        (Outcome.TRUSTED, "indeterminate", True, UNAVAILABLE, "dnssec_indeterminate"),
        (Outcome.TRUSTED, "indeterminate", False, HOLDS, "dnssec_indeterminate"),
    ],
)
def test_dns_path_table(
    outcome: Outcome | None, dnssec: str, secure: bool, state: PathState, reason: str
) -> None:
    r = dns_path(outcome, dnssec, require_secure=secure)
    assert (r.state, r.reason) == (state, reason)


@given(
    st.sampled_from([None, *Outcome]),
    st.sampled_from(DNSSEC),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_dns_path_holds_only_for_a_trusted_non_bogus_answer(
    outcome: Outcome | None, dnssec: str, secure: bool, lkg: bool, lkg_holds: bool
) -> None:
    r = dns_path(outcome, dnssec, require_secure=secure, lkg=lkg, lkg_holds=lkg_holds)
    if r.state is HOLDS:
        assert outcome is Outcome.TRUSTED and dnssec != "bogus"
        assert not lkg or lkg_holds
        assert not secure or dnssec == "secure"
        # requiring DNSSEC never makes a path hold that did not hold without it
        assert dns_path(outcome, dnssec, require_secure=False).state is HOLDS
    if outcome is not Outcome.TRUSTED:
        assert r.state is not HOLDS


def test_mtls_path_table() -> None:
    def m(outcome: Outcome | None, seen: str = WL, under: bytes = B1, chain: Cred | None = None):
        r = mtls_path(
            outcome,
            expected=WL,
            seen_spiffe_id=seen,
            seen_under=under,
            bundle_digest=B1,
            chain=chain,
        )
        return r.state, r.reason

    assert m(None) == (UNAVAILABLE, "no_verdict")
    assert m(Outcome.UNAVAILABLE) == (UNAVAILABLE, "mtls_unavailable")
    assert m(Outcome.DISPUTED) == (FAILS, "disputed")
    assert m(Outcome.TRUSTED, seen=OTHER) == (FAILS, "wrong_spiffe_id")
    assert m(Outcome.TRUSTED) == (HOLDS, "quorum")
    assert m(Outcome.TRUSTED, chain=Cred(True, WL)) == (HOLDS, "chain_valid")
    assert m(Outcome.TRUSTED, chain=Cred(True, OTHER)) == (FAILS, "wrong_spiffe_id")
    assert m(Outcome.TRUSTED, chain=Cred(False, WL, ("expired",))) == (FAILS, "expired")
    assert m(Outcome.TRUSTED, chain=Cred(False, WL, ("bundle_no_verdict",), True)) == (
        UNAVAILABLE,
        "bundle_no_verdict",
    )
    assert m(Outcome.TRUSTED, under=B2) == (UNAVAILABLE, "bundle_changed")


creds = st.one_of(
    st.none(),
    st.builds(
        Cred,
        st.booleans(),
        st.sampled_from([WL, OTHER, None]),
        st.lists(st.sampled_from(["expired", "unknown_issuer"]), max_size=1).map(tuple),
        st.booleans(),
    ),
)


@given(
    st.sampled_from([None, *Outcome]),
    st.sampled_from([WL, OTHER]),
    st.sampled_from([B1, B2, b""]),
    st.sampled_from([B1, None]),
    creds,
)
def test_mtls_path_holds_only_for_the_quorum_s_expected_identity(
    outcome: Outcome | None, seen: str, under: bytes, current: bytes | None, chain: Cred | None
) -> None:
    r = mtls_path(
        outcome,
        expected=WL,
        seen_spiffe_id=seen,
        seen_under=under,
        bundle_digest=current,
        chain=chain,
    )
    if r.state is HOLDS:
        assert outcome is Outcome.TRUSTED and seen == WL
        assert chain is None or (chain.valid and not chain.unavailable and chain.spiffe_id == WL)
    if outcome is Outcome.DISPUTED or (outcome is Outcome.TRUSTED and seen != WL):
        assert r.state is FAILS
    if (
        chain is not None
        and not chain.valid
        and not chain.unavailable
        and outcome is Outcome.TRUSTED
    ):
        assert r.state is FAILS  # a bad presented chain is a failure, never "try again"


@given(creds)
def test_oidc_path(token: Cred | None) -> None:
    r = oidc_path(token)
    if token is None:
        assert (r.state, r.reason) == (UNAVAILABLE, "no_token")
    elif token.unavailable:
        assert r.state is UNAVAILABLE
    elif token.valid:
        assert (r.state, r.reason) == (HOLDS, "token_valid")
    else:
        assert r.state is FAILS and r.reason == (
            token.reasons[0] if token.reasons else "token_invalid"
        )
