"""Bounded names (RFC 1035) and bounded name tokens: properties of the one normaliser and encoder.

Every valid name has exactly one token; tokens are at most 253 characters; every verdict subject fits
in ``MAX_SUBJECT_BYTES``; distinct names never share a token (the escaped form is reversible, the
digest form is SHA-256 and starts with a character escaped tokens never start with).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.subjects import (
    SubjectError,
    check_token,
    is_digest_token,
    name_from_token,
    name_token,
    normalize_name,
    parse_subject,
    token_matches,
    verdict_subject,
)

#: Characters of 1, 2, 3 and 4 UTF-8 octets, and the ones the escaped form treats specially.
_CHARS = st.sampled_from(list("abz09-_~*> \t\u00e9\u00df\u0130\u2028\u4e2d\U0001f600A"))


def _cut(text: str, octets: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form has at most ``octets`` octets."""
    out, used = [], 0
    for ch in text:
        n = len(ch.encode())
        if used + n > octets:
            break
        out.append(ch)
        used += n
    return "".join(out)


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    """Names that normalise, often near the bounds: labels up to 63 octets, up to 253 in all."""
    labels = draw(
        st.lists(st.text(_CHARS.filter(lambda c: c != "."), min_size=1, max_size=70), max_size=9)
    )
    out: list[str] = []
    used = -1
    for raw in labels:
        label = _cut(raw.lower(), L.MAX_LABEL_OCTETS)
        if not label or used + 1 + len(label.encode()) > L.MAX_NAME_OCTETS:
            break
        out.append(label)
        used += 1 + len(label.encode())
    if not out:
        return "."
    return ".".join(out) + draw(st.sampled_from(["", "."]))


def _plain_escape_length(normal: str) -> int:
    return sum(
        1 if ch in "abcdefghijklmnopqrstuvwxyz0123456789-." else 3 * len(ch.encode())
        for ch in normal[:-1]
    )


@settings(max_examples=500)
@given(
    name=valid_names(),
    region=st.sampled_from(["r", "a" * 32]),
    qtype=st.sampled_from(["A", "Z" * 10]),
)
@example(name=".".join(["a" * 63] * 3 + ["a" * 61]), region="a" * 32, qtype="Z" * 10)
@example(name=".".join(["\u00e9" * 31 + "a"] * 3 + ["\u00e9" * 30 + "a"]), region="r", qtype="A")
def test_every_valid_name_has_one_bounded_token(name: str, region: str, qtype: str) -> None:
    normal = normalize_name(name)
    assert len(normal[:-1].encode()) <= L.MAX_NAME_OCTETS
    assert all(
        1 <= len(lb.encode()) <= L.MAX_LABEL_OCTETS
        for lb in normal[:-1].split(".")
        if normal != "."
    )
    token = name_token(name)
    assert token == name_token(normal) == name_token(normal.upper() if normal.isascii() else normal)
    assert 1 <= len(token) <= L.MAX_NAME_TOKEN_CHARS
    assert check_token(token) == token
    subject = verdict_subject(region, name, qtype)
    assert len(subject.encode()) <= 313 <= L.MAX_SUBJECT_BYTES
    parsed = parse_subject(subject)
    assert parsed.token == token
    assert token_matches(token, name)
    if normal != "." and _plain_escape_length(normal) > L.MAX_NAME_TOKEN_CHARS:
        assert is_digest_token(token) and len(token) == 53
        assert parsed.qname is None
        with pytest.raises(SubjectError):
            name_from_token(token)
    else:
        assert not is_digest_token(token)
        assert parsed.qname == normal == name_from_token(token)


@settings(max_examples=500)
@given(a=valid_names(), b=valid_names())
def test_tokens_are_injective(a: str, b: str) -> None:
    assert (name_token(a) == name_token(b)) == (normalize_name(a) == normalize_name(b))


@settings(max_examples=300)
@given(name=valid_names(), data=st.data())
def test_a_one_character_change_changes_the_token(name: str, data: st.DataObject) -> None:
    normal = normalize_name(name)
    if normal == ".":
        return
    i = data.draw(st.integers(0, len(normal) - 2).filter(lambda j: normal[j] != "."))
    other = normal[:i] + ("b" if normal[i] != "b" else "c") + normal[i + 1 :]  # never longer
    assert name_token(other) != name_token(normal)
    assert not token_matches(name_token(normal), other)


def test_digest_form_is_documented_value() -> None:
    name = "_" * 63 + "." + "_" * 63
    digest = hashlib.sha256((name + ".").encode()).digest()
    expected = "=" + base64.b32encode(digest).decode().rstrip("=").lower()
    assert name_token(name) == expected == "=m5xkb6dacyg6fdeuir7lsbggiyyneb2pgofcfbvoeytlrlkjkazq"


def test_escaped_form_up_to_253_characters_then_digest() -> None:
    at_bound = "_" * 63 + "." + "a" * 63 + "." + "b" * 63 + "." + "c" * 61  # 253 + 2 escapes
    assert len(name_token("a" * 63 + "." + "a" * 63 + "." + "b" * 63 + "." + "c" * 61)) == 253
    assert is_digest_token(name_token(at_bound))  # 255 characters escaped
    just_fits = "_" + "a" * 62 + "." + "a" * 63 + "." + "b" * 63 + "." + "c" * 59  # 251 + 2
    assert name_token(just_fits).startswith("~5f") and len(name_token(just_fits)) == 253


@pytest.mark.parametrize(
    "token",
    [
        "=",
        "=" + "a" * 51,
        "=" + "a" * 53,
        "=" + "a" * 51 + "b",  # unused low bits set: not canonical
        "=" + "A" * 52,
        "=" + "a" * 51 + "1",
        "=" + "a" * 50 + "=a",
        "a" * 254,  # escaped but longer than 253 characters
        "a" * 64,  # a label over 63 octets
        "~5f" * 64,
    ],
)
def test_invalid_tokens_are_rejected(token: str) -> None:
    with pytest.raises(SubjectError):
        check_token(token)
    with pytest.raises(SubjectError):
        parse_subject(f"cctf.v1.verdict.us-east.{token}.A")


def test_escaped_equals_sign_is_not_a_digest() -> None:
    token = name_token("=" + "a" * 52)
    assert token == "~3d" + "a" * 52
    assert not is_digest_token(token)
    assert name_from_token(token) == "=" + "a" * 52 + "."
    assert is_digest_token("=" + "a" * 52)
    assert is_digest_token("=" + "a" * 51 + "q")


@settings(max_examples=200)
@given(st.text(_CHARS, max_size=300) | st.text(max_size=300))
def test_the_memoised_name_token_equals_the_computed_one(name: str) -> None:
    """``name_token`` is memoised (bounded LRU): a hit gives exactly what computing it gives, and a
    name that cannot be encoded raises every time (errors are never cached)."""
    from cctf.bus_schemas import subjects

    try:
        expected = subjects._name_token(name)
    except SubjectError:
        for _ in range(2):
            with pytest.raises(SubjectError):
                name_token(name)
        return
    assert name_token(name) == expected == name_token(name)
    assert subjects._name_token_cached.cache_info().maxsize == subjects.NAME_TOKEN_CACHE
