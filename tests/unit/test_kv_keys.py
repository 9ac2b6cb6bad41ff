"""KV key encoding (cctf.bus.kv) and the LKG record codec (cctf.coordinator.lkgstate): property
tests over arbitrary DNS names and tampered records."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_verdict

from cctf.bus.kv import KvError, check_key, name_from_key, name_key
from cctf.bus_schemas.subjects import SubjectError, normalize_name
from cctf.coordinator.lkgstate import (
    LkgStateError,
    open_record,
    parse_record_key,
    record_key,
    seal_record,
)
from cctf.coordinator.pipeline.lkg import Basis

KEY_RE = re.compile(r"[-/_=.a-zA-Z0-9]+")

label = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=20
)


def names() -> st.SearchStrategy[str]:
    def norm(labels: list[str]) -> str | None:
        try:
            return normalize_name(".".join(labels) + ".")
        except SubjectError:
            return None

    return st.lists(label, min_size=1, max_size=6).map(norm).filter(lambda n: n is not None)  # type: ignore[return-value]


@settings(max_examples=500)
@given(names())
def test_name_key_is_a_valid_key_and_reversible(name: str) -> None:
    key = name_key(name)
    assert KEY_RE.fullmatch(key) and not key.startswith(".") and not key.endswith(".")
    assert ".." not in key
    check_key(f"coord-1.A.{key}")
    assert name_from_key(key) == name
    assert len(key) <= 3 * 253


@settings(max_examples=300)
@given(names(), names())
def test_name_key_is_injective(a: str, b: str) -> None:
    assert (name_key(a) == name_key(b)) == (a == b)


def test_examples() -> None:
    assert name_key("www.example.com.") == "www.example.com"
    assert name_key("_dmarc.example.com.") == "_dmarc.example.com"
    assert name_key("*.example.") == "=2A.example"
    assert name_key("caf\u00e9.example.") == "caf=C3=A9.example"
    assert name_key(".") == "="
    assert name_from_key("=") == "."


@pytest.mark.parametrize(
    "bad", ["", "=", "=2", "a..b", ".a", "a.", "=61", "=2e", "=2E", "a b", "=FF", "A"]
)
def test_name_from_key_refuses_what_name_key_never_makes(bad: str) -> None:
    if bad == "=":
        assert name_from_key(bad) == "."
        return
    with pytest.raises(KvError):
        name_from_key(bad)


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "a b", "a~2e", "a*", "a>"])
def test_check_key_refuses(bad: str) -> None:
    with pytest.raises(KvError):
        check_key(bad)


def test_name_key_refuses_unnormalised() -> None:
    with pytest.raises(KvError):
        name_key("www.example.com")


# --- the LKG record ---------------------------------------------------------------------------

SECRET = b"s" * 32


def basis_of(v: msgspec.Struct) -> Basis[bytes]:
    from cctf.bus_schemas.messages import encode

    return Basis(v.round, v.issued_ms, v.answer_digest, v.dnssec.value, encode(v))  # type: ignore[attr-defined]


def test_record_round_trip_and_tampering() -> None:
    v = make_verdict(qname="www.example.com.", coordinator="coord-1")
    key = record_key("coord-1", (v.qname, v.qtype))
    assert key == f"coord-1.{v.qtype}.www.example.com"
    assert parse_record_key("coord-1", key) == (v.qname, v.qtype)
    data = seal_record(SECRET, key, basis_of(v))
    got_key, basis, verdict = open_record(SECRET, "coord-1", key, data)
    assert got_key == (v.qname, v.qtype) and verdict == v and basis == basis_of(v)
    with pytest.raises(LkgStateError, match="integrity"):
        open_record(b"t" * 32, "coord-1", key, data)  # another coordinator's secret
    other = record_key("coord-1", ("api.example.com.", v.qtype))
    with pytest.raises(LkgStateError, match="integrity"):
        open_record(SECRET, "coord-1", other, data)  # moved to another key
    with pytest.raises(LkgStateError):
        open_record(SECRET, "coord-2", key, data)  # not this coordinator's key
    flipped = bytearray(data)
    flipped[-40] ^= 1
    with pytest.raises(LkgStateError):
        open_record(SECRET, "coord-1", key, bytes(flipped))
    with pytest.raises(LkgStateError, match="malformed"):
        open_record(SECRET, "coord-1", key, b"\x90")


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_open_record_never_crashes(data: bytes) -> None:
    with pytest.raises(LkgStateError):
        open_record(SECRET, "coord-1", "coord-1.A.www.example.com", data)


def test_a_record_that_disagrees_with_its_verdict_is_refused() -> None:
    v = make_verdict(qname="www.example.com.", coordinator="coord-1")
    key = record_key("coord-1", (v.qname, v.qtype))
    b = basis_of(v)
    for wrong in (
        Basis(b.round + 1, b.basis_ms, b.answer_digest, b.tag, b.payload),
        Basis(b.round, b.basis_ms - 1, b.answer_digest, b.tag, b.payload),
        Basis(b.round, b.basis_ms, b"x" * 32, b.tag, b.payload),
    ):
        with pytest.raises(LkgStateError, match="does not match"):
            open_record(SECRET, "coord-1", key, seal_record(SECRET, key, wrong))
