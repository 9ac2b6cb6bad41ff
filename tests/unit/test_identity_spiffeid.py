"""SPIFFE ID syntax: every rule with its reason code; the spiffe package's lax cases refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.identity.errors import IdentityError, Reason
from cctf.identity.spiffeid import (
    MAX_SPIFFE_ID_BYTES,
    SpiffeId,
    check_trust_domain,
    parse_spiffe_id,
)


def test_valid() -> None:
    assert parse_spiffe_id("spiffe://example.org") == SpiffeId("example.org", "")
    sid = parse_spiffe_id("spiffe://ex-1_a.org/ns/Prod/sa.x_y-z")
    assert (sid.trust_domain, sid.path, str(sid)) == ("ex-1_a.org", "/ns/Prod/sa.x_y-z", sid.uri)
    assert sid.member_of("ex-1_a.org") and not sid.member_of("example.org")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("spiffe://Example.org/a", Reason.TRUST_DOMAIN_INVALID),  # upper-case trust domain
        ("SPIFFE://example.org/a", Reason.SPIFFE_ID_MALFORMED),
        ("https://example.org/a", Reason.SPIFFE_ID_MALFORMED),
        ("spiffe:/example.org", Reason.SPIFFE_ID_MALFORMED),
        ("spiffe://", Reason.TRUST_DOMAIN_INVALID),
        ("spiffe:///a", Reason.TRUST_DOMAIN_INVALID),
        ("spiffe://example.org:443/a", Reason.SPIFFE_ID_MALFORMED),
        ("spiffe://user@example.org/a", Reason.SPIFFE_ID_MALFORMED),
        ("spiffe://ex%41mple.org/a", Reason.SPIFFE_ID_MALFORMED),
        ("spiffe://example.org/a/../b", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/./b", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/..", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a//b", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a/", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a?x=1", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a#f", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a%20b", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://example.org/a\n", Reason.PATH_SEGMENT_INVALID),  # spiffe 0.3 accepts this
        ("spiffe://example.org\n", Reason.TRUST_DOMAIN_INVALID),
        ("spiffe://example.org/é", Reason.PATH_SEGMENT_INVALID),
        ("spiffe://" + "a" * 256, Reason.TRUST_DOMAIN_INVALID),
        ("spiffe://example.org/" + "a" * (MAX_SPIFFE_ID_BYTES - 20), Reason.SPIFFE_ID_TOO_LONG),
    ],
)
def test_invalid(value: str, reason: Reason) -> None:
    with pytest.raises(IdentityError) as info:
        parse_spiffe_id(value)
    assert info.value.reason is reason
    assert str(info.value).startswith(reason.value + ": ")
    assert "\n" not in str(info.value)


def test_length_limit_is_exactly_2048_bytes() -> None:
    head = "spiffe://example.org/"
    ok = head + "a" * (MAX_SPIFFE_ID_BYTES - len(head))
    assert len(ok.encode()) == 2048
    parse_spiffe_id(ok)
    with pytest.raises(IdentityError) as info:
        parse_spiffe_id(ok + "a")
    assert info.value.reason is Reason.SPIFFE_ID_TOO_LONG


def test_uppercase_message_says_lower_case() -> None:
    with pytest.raises(IdentityError, match="upper-case"):
        check_trust_domain("Example.org")


SEG = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
TD = st.text(alphabet="abc019._-", min_size=1, max_size=20)


@given(TD, st.lists(SEG, max_size=5))
def test_roundtrip_valid(td: str, segs: list[str]) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segs)
    sid = parse_spiffe_id(text)
    assert str(sid) == text and sid.trust_domain == td


@given(st.text(max_size=60))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        sid = parse_spiffe_id(text)
    except IdentityError as exc:
        assert exc.reason in Reason
    else:
        assert str(sid) == text


def test_every_reason_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "identity.md").read_text()
    missing = [r.value for r in Reason if f"`{r.value}`" not in doc]
    assert missing == [], f"reason codes not in docs/identity.md: {missing}"
    import re

    # reason codes travel as an observation's detail (at most 64 chars on the wire)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]{1,31}", r.value) for r in Reason)
