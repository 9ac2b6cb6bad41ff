"""cctf.ca pure parts: profile, key binding codec, log entries, request checks, issuer, registry
(real crypto, no I/O)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

import pytest
from capki import START_MS, TRUST_DOMAIN, CaAgent, make_ca_world
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cctf.bus_schemas.envelope import Reason, Rejected, seal
from cctf.bus_schemas.messages import MessageType
from cctf.ca.client import accept_response, make_csr, new_tls_key, renew_at_ms
from cctf.ca.entries import (
    CertEntry,
    RevocationReason,
    RevokeEntry,
    decode_entry,
    encode_entry,
)
from cctf.ca.errors import CaError, CaReason
from cctf.ca.issuer import make_test_hierarchy, random_serial
from cctf.ca.profile import (
    BINDING_EXTENSION_OID,
    KEY_BINDING_OID,
    MAX_LIFETIME_MS,
    KeyBinding,
    agent_spiffe_id,
    decode_binding,
    encode_binding,
    parse_agent_cert,
    unwrap_binding,
    wrap_binding,
)
from cctf.ca.request import CertRequest, CertResponse, encode_request, issue_subject
from cctf.crypto.keys import SigningKey

HOUR = 3_600_000


# ---- profile -----------------------------------------------------------------------------------


def _independent_oid_tlv(oid: x509.ObjectIdentifier) -> bytes:
    """The OID's DER TLV as cryptography encodes it (in an extension of that OID)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1))
        .not_valid_after(dt.datetime(2030, 1, 1))
        .add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical=False)
        .sign(key, hashes.SHA256())
        .tbs_certificate_bytes
    )
    value = der.rindex(b"\x04\x02\x05\x00")  # the extension: SEQUENCE { OID, OCTET STRING }
    for i in range(value):
        if der[i] == 6 and i + 2 + der[i + 1] == value:
            return der[i:value]
    raise AssertionError("OID not found")


def test_issued_certificate_follows_the_profile() -> None:
    w = make_ca_world()
    a = w.agents["agent-us-east"]
    got = w.issue("agent-us-east", START_MS)
    c = got.cert
    assert c.spiffe_id == agent_spiffe_id(TRUST_DOMAIN, "us-east", "agent-us-east")
    assert c.spiffe_id == "spiffe://cctf.test/cctf/agent/us-east/agent-us-east"
    assert (c.region, c.agent) == ("us-east", "agent-us-east")
    assert c.binding == KeyBinding.of(a.key.public) and c.binding.kid == a.key.kid
    assert c.lifetime_ms == HOUR  # the default
    assert c.not_before_ms == START_MS // 1000 * 1000
    cert = x509.load_der_x509_certificate(c.der)
    ext = cert.extensions.get_extension_for_oid(BINDING_EXTENSION_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert unwrap_binding(ext.value.value) == c.binding
    # the attribute type is the 2.25 OID; no extension OID has an arc above 2^31 - 1 (Go's limit)
    assert KEY_BINDING_OID.dotted_string.startswith("2.25.")
    assert _independent_oid_tlv(KEY_BINDING_OID) in ext.value.value
    for e in cert.extensions:
        assert all(int(a) < 2**31 for a in e.oid.dotted_string.split("."))
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    # the certificate's key is the agent's TLS key: the CA never saw its private half
    assert cert.public_key() == a.tls_key.public_key()
    assert decode_entry(got.entry) == CertEntry(c.der)


def test_certificate_from_another_issuer_is_refused() -> None:
    w = make_ca_world()
    got = w.issue("agent-us-east", START_MS)
    other = make_test_hierarchy(TRUST_DOMAIN, now_ms=START_MS)
    with pytest.raises(CaError) as exc:
        parse_agent_cert(got.cert.der, other.intermediate, TRUST_DOMAIN)
    assert exc.value.reason is CaReason.ISSUER
    with pytest.raises(CaError) as exc:
        parse_agent_cert(got.cert.der, w.issuer.intermediate, "other.test")
    assert exc.value.reason is CaReason.CERT
    with pytest.raises(CaError) as exc:
        parse_agent_cert(b"\x30\x03junk", w.issuer.intermediate, TRUST_DOMAIN)
    assert exc.value.reason is CaReason.CERT


digests = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4)


@given(st.text(max_size=80), st.text(max_size=80), digests)
def test_binding_codec_round_trips(suite: str, kid: str, ds: list[bytes]) -> None:
    b = KeyBinding(suite, kid, tuple(ds))
    assert decode_binding(encode_binding(b)) == b


@given(st.data())
def test_binding_codec_refuses_every_mutation(data: st.DataObject) -> None:
    b = KeyBinding("hybrid-ed25519-ml-dsa-65", "k" + "0" * 32, (b"\x01" * 32, b"\x02" * 32))
    raw = bytearray(encode_binding(b))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    try:
        got = decode_binding(bytes(raw))
    except CaError as exc:
        assert exc.reason is CaReason.BINDING
    else:  # a flip inside a string or digest still decodes: it must then differ
        assert got != b


def test_binding_refuses_bad_shapes() -> None:
    ok = KeyBinding("s", "k", (b"\x00" * 32,))
    for bad in (
        KeyBinding("s", "k", ()),
        KeyBinding("s", "k", (b"\x00" * 31,)),
        KeyBinding("s", "k", (b"\x00" * 32,) * 5),
    ):
        with pytest.raises(CaError):
            decode_binding(encode_binding(bad))
    assert decode_binding(encode_binding(ok)) == ok


# ---- log entries ---------------------------------------------------------------------------------


@given(
    st.integers(1, 2**159),
    st.sampled_from(list(RevocationReason)),
    st.integers(0, 2**63 - 1),
    st.binary(max_size=64),
)
def test_entries_round_trip(serial: int, reason: RevocationReason, ms: int, der: bytes) -> None:
    rev = RevokeEntry(format(serial, "x"), "k" + "a" * 32, reason, ms)
    assert decode_entry(encode_entry(rev)) == rev
    assert decode_entry(encode_entry(CertEntry(der))) == CertEntry(der)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"\x90",
        b"\x93\xb0CCTF-CA-ENTRY-v2\xa4cert\xc4\x00",
        b"\x93\xb0CCTF-CA-ENTRY-v1\xa4cert\xa0",  # der as str
        b"\x94\xb0CCTF-CA-ENTRY-v1\xa4cert\xc4\x00\x00",
        b"\x93\xb0CCTF-CA-ENTRY-v1\xa4cerx\xc4\x00",
    ],
)
def test_entries_refuse_bad_shapes(raw: bytes) -> None:
    with pytest.raises(CaError) as exc:
        decode_entry(raw)
    assert exc.value.reason is CaReason.ENTRY


@pytest.mark.parametrize(
    "field,value",
    [("serial", "0a"), ("serial", "AB"), ("serial", ""), ("kid", "kXYZ"), ("reason", "bored")],
)
def test_revocation_fields_are_checked(field: str, value: str) -> None:
    good = RevokeEntry("ab", "k" + "a" * 32, RevocationReason.SUPERSEDED, 1)
    raw = dataclasses.replace(good, **{field: value})  # type: ignore[arg-type]
    with pytest.raises(CaError):
        decode_entry(
            encode_entry(RevokeEntry(raw.serial, raw.kid, RevocationReason.SUPERSEDED, 1)).replace(
                b"superseded", str(raw.reason).encode()
            )
        )


def test_non_canonical_entry_is_refused() -> None:
    rev = encode_entry(RevokeEntry("ab", "k" + "a" * 32, RevocationReason.UNSPECIFIED, 5))
    widened = rev[:-1] + b"\xcf" + (5).to_bytes(8, "big")  # 5 as uint64
    with pytest.raises(CaError):
        decode_entry(widened)


# ---- requests ------------------------------------------------------------------------------------


def _refusal(w: object, subject: str, data: bytes, now: int = START_MS) -> CaReason:
    from capki import CaWorld

    assert isinstance(w, CaWorld)
    with pytest.raises(CaError) as exc:
        w.issuer.issue(data, subject, now_ms=now, serial=random_serial())
    return exc.value.reason


def test_request_refusals_have_their_reason() -> None:
    w = make_ca_world()
    east, west = w.agents["agent-us-east"], w.agents["agent-eu-west"]
    subject, data = east.request(START_MS)
    w.issuer.issue(data, subject, now_ms=START_MS, serial=1)
    assert _refusal(w, subject, data) is CaReason.REPLAY
    # signed for one subject, sent on another: the envelope binds the subject
    _s, data2 = east.request(START_MS)
    assert _refusal(w, issue_subject("eu-west", "agent-us-east"), data2) is CaReason.REQUEST
    # an unknown hybrid key (no proof of possession of a trusted key)
    stranger = CaAgent("agent-us-east", "us-east", SigningKey.generate())
    assert _refusal(w, *stranger.request(START_MS)) is CaReason.REQUEST
    # an expired request
    assert _refusal(w, *east.request(START_MS), now=START_MS + 60_000) is CaReason.REQUEST
    # the west agent asking for the east agent's name, signed over the right subject
    csr = make_csr(new_tls_key(), "x")
    subj = issue_subject("us-east", "agent-us-east")
    payload = encode_request(CertRequest("us-east", "agent-us-east", csr, 0))
    forged = seal(
        west.key, subj, MessageType.CERT_REQUEST, payload, now_ms=START_MS, lifetime_ms=1000
    )
    assert _refusal(w, subj, forged) is CaReason.PRINCIPAL
    # a CSR whose signature fails (TLS key not possessed) and a non-P-256 key
    bad_csr = bytearray(csr)
    bad_csr[-3] ^= 1
    for c in (bytes(bad_csr), make_csr(ec.generate_private_key(ec.SECP384R1()), "x"), b"\x00"):
        p = encode_request(CertRequest("us-east", "agent-us-east", c, 0))
        env = seal(east.key, subj, MessageType.CERT_REQUEST, p, now_ms=START_MS, lifetime_ms=1000)
        assert _refusal(w, subj, env) is CaReason.CSR
    # lifetime bounds
    for life in (1_000, MAX_LIFETIME_MS + 1):
        assert _refusal(w, *east.request(START_MS, life)) is CaReason.LIFETIME
    # another message type on the issue subject
    env = seal(east.key, subj, MessageType.BALLOT, payload, now_ms=START_MS, lifetime_ms=1000)
    assert _refusal(w, subj, env) is CaReason.REQUEST
    assert _refusal(w, "cctf.v1.ca.issue.us-east", east.request(START_MS)[1]) is CaReason.REQUEST


def test_agent_checks_the_response_is_its_own() -> None:
    w = make_ca_world()
    east, west = w.agents["agent-us-east"], w.agents["agent-eu-west"]
    got = w.issue("agent-us-east", START_MS, 9_000)
    resp = CertResponse("", got.cert.der, w.issuer.chain_der(), 0)
    kw = {"intermediate": w.issuer.intermediate, "trust_domain": TRUST_DOMAIN}
    cert = accept_response(resp, key=east.key, tls_key=east.tls_key, **kw)  # type: ignore[arg-type]
    assert renew_at_ms(cert) == cert.not_before_ms + 6_000
    for key, tls in ((west.key, east.tls_key), (east.key, new_tls_key())):
        with pytest.raises(CaError) as exc:
            accept_response(resp, key=key, tls_key=tls, **kw)  # type: ignore[arg-type]
        assert exc.value.reason is CaReason.BINDING
    with pytest.raises(CaError):
        accept_response(
            CertResponse("csr: no", b"", [], 0),
            key=east.key,
            tls_key=east.tls_key,
            **kw,  # type: ignore[arg-type]
        )


# ---- registry ------------------------------------------------------------------------------------


def _reason(reg: object, kid: str, now: int) -> str:
    with pytest.raises(Rejected) as exc:
        reg.check(kid, now)  # type: ignore[attr-defined]
    return exc.value.reason.value


def test_registry_unlogged_expired_revoked_and_renewed() -> None:
    w = make_ca_world()
    reg = w.registry()
    kid = w.agents["agent-us-east"].key.kid
    assert _reason(reg, kid, START_MS) == Reason.CERT_UNLOGGED
    first = w.issue("agent-us-east", START_MS, 9_000)
    assert reg.add(first.entry) == first.cert
    nb = first.cert.not_before_ms
    assert reg.check(kid, nb) == first.cert
    assert reg.check(kid, nb + 8_999) == first.cert
    assert _reason(reg, kid, nb + 9_000) == Reason.CERT_EXPIRED
    assert _reason(reg, kid, nb - 1) == Reason.CERT_EXPIRED  # not yet valid
    # renewal at 2/3: the two overlap, the later one is preferred
    second = w.issue("agent-us-east", nb + 6_000, 9_000)
    reg.add(second.entry)
    assert reg.check(kid, nb + 6_000) == second.cert
    assert reg.check(kid, nb + 12_000) == second.cert
    # revoking the current one (a certificate reason): the older still valid admits, then nothing
    reg.add(w.issuer.revoke(second.cert, RevocationReason.SUPERSEDED, now_ms=nb + 7_000))
    assert reg.check(kid, nb + 7_000) == first.cert
    assert _reason(reg, kid, nb + 10_000) == Reason.CERT_REVOKED
    reg.add(w.issuer.revoke(first.cert, RevocationReason.UNSPECIFIED, now_ms=nb + 7_000))
    assert _reason(reg, kid, nb + 7_000) == Reason.CERT_REVOKED
    assert _reason(reg, kid, nb + 16_000) == Reason.CERT_EXPIRED
    assert not reg.is_blocked(kid)
    # ... so a renewal admits again; a KEY revocation (key_compromise, cessation) does not
    third = w.issue("agent-us-east", nb + 16_000, 9_000)
    reg.add(third.entry)
    assert reg.check(kid, nb + 17_000) == third.cert
    reg.add(w.issuer.revoke(third.cert, RevocationReason.KEY_COMPROMISE, now_ms=nb + 17_000))
    assert reg.is_blocked(kid)
    fourth = w.issue("agent-us-east", nb + 18_000, 9_000)  # a later certificate of that key
    reg.add(fourth.entry)
    assert _reason(reg, kid, nb + 18_000) == Reason.CERT_REVOKED
    # the other agent is unaffected
    assert _reason(reg, w.agents["agent-eu-west"].key.kid, nb) == Reason.CERT_UNLOGGED
    assert reg.refused == {} and reg.certificates == 4 and reg.revocations == 3


def test_registry_refuses_entries_it_cannot_trust() -> None:
    w = make_ca_world()
    got = w.issue("agent-us-east", START_MS)
    # a registry whose trust config does not list that key (or lists it for another agent)
    other = make_ca_world(keys={"agent-eu-west": w.agents["agent-us-east"].key})
    reg = other.registry()
    assert reg.add(got.entry) is None  # issued by another intermediate
    reg2 = dataclasses.replace(w).registry()
    reg2._trust = other.trust  # same intermediate, trust maps the key to agent-eu-west
    assert reg2.add(got.entry) is None
    assert reg2.refused == {"binding": 1}
    assert reg.add(b"junk") is None and reg.refused == {"issuer": 1, "entry": 1}
    rev = RevokeEntry("ab", "k" + "b" * 32, RevocationReason.UNSPECIFIED, 1)
    assert reg.add(encode_entry(rev)) is None  # a kid no trust entry names
    kid = w.agents["agent-us-east"].key.kid
    assert _reason(reg2, kid, START_MS) == Reason.CERT_UNLOGGED


def test_random_serials_are_positive_and_bounded() -> None:
    for _ in range(100):
        s = random_serial()
        assert 2**126 <= s < 2**127


# ---- configs -------------------------------------------------------------------------------------


def test_example_ca_config_loads_with_anchored_paths() -> None:
    from pathlib import Path

    from cctf.ca.config import load_ca_config

    examples = Path(__file__).resolve().parents[2] / "examples"
    c = load_ca_config(examples / "ca.yaml")
    assert c.trust_domain == "cctf.test" and c.intermediate == str(examples / "ca/intermediate.pem")
    assert c.default_lifetime_ms == HOUR and c.max_lifetime_ms == MAX_LIFETIME_MS
    assert c.nats is not None


def test_ca_sections_are_checked() -> None:
    from pathlib import Path

    from cctf.ca.config import AgentCaConfig, CaGateConfig
    from cctf.config import convert_config
    from cctf.errors import ConfigError

    gate = convert_config(
        {"trust_domain": "cctf.test", "intermediate": "i.pem", "log_key": "k.json"},
        CaGateConfig,
        "ca",
    )
    assert gate.anchored(Path("/x")).intermediate == "/x/i.pem"
    for bad in (
        {"trust_domain": "Bad_TD", "intermediate": "i", "log_key": "k"},
        {"trust_domain": "cctf.test", "intermediate": "i"},
        {"trust_domain": "cctf.test", "intermediate": "i", "log_key": "k", "extra": 1},
    ):
        with pytest.raises(ConfigError):
            convert_config(bad, CaGateConfig, "ca")
    base = {"trust_domain": "cctf.test", "intermediate": "i", "cert_dir": "c"}
    assert convert_config(base, AgentCaConfig, "ca").lifetime_ms == 0
    with pytest.raises(ConfigError):
        convert_config({**base, "lifetime_ms": 500}, AgentCaConfig, "ca")


# ---- registry against a brute-force model -----------------------------------------------------

_POOL: dict[str, object] = {}


def _pool() -> tuple[object, list[object]]:
    """Two agents, six certificates each with different windows (made once: real signatures)."""
    if not _POOL:
        w = make_ca_world()
        certs = []
        for agent in w.agents:
            for start_s, life_s in ((0, 4), (3, 4), (6, 3), (8, 10), (20, 2), (2, 30)):
                certs.append(w.issue(agent, START_MS + start_s * 1000, life_s * 1000))
        _POOL["w"], _POOL["certs"] = w, certs
    return _POOL["w"], _POOL["certs"]  # type: ignore[return-value]


@given(st.data())
def test_registry_matches_a_brute_force_model(data: st.DataObject) -> None:
    """Any order of logged certificates and revocations, any query time: ``check`` gives what a
    direct reading of the rules (docs/ca.md §5) over the logged entries gives."""
    from cctf.ca.issuer import Issued

    w, pool = _pool()
    issued: list[Issued] = pool  # type: ignore[assignment]
    ops = data.draw(
        st.lists(
            st.tuples(st.sampled_from(["cert", "revoke"]), st.integers(0, len(issued) - 1)),
            max_size=16,
        )
    )
    reg = w.registry()  # type: ignore[attr-defined]
    logged: list[Issued] = []
    revoked: set[str] = set()
    for op, i in ops:
        it = issued[i]
        if op == "cert":
            reg.add(it.entry)
            logged.append(it)
        else:
            reg.add(w.issuer.revoke(it.cert, RevocationReason.SUPERSEDED, now_ms=0))  # type: ignore[attr-defined]
            revoked.add(it.cert.serial)
    for agent in w.agents:  # type: ignore[attr-defined]
        kid = w.agents[agent].key.kid  # type: ignore[attr-defined]
        now = START_MS // 1000 * 1000 + data.draw(st.integers(-2_000, 40_000))
        mine = [x.cert for x in logged if x.cert.binding.kid == kid]
        valid = [c for c in mine if c.not_before_ms <= now < c.not_after_ms]
        good = [c for c in valid if c.serial not in revoked]
        if not mine:
            expected: str | None = "cert_unlogged"
        elif good:
            expected = None
        elif valid:
            expected = "cert_revoked"
        else:
            expected = "cert_expired"
        try:
            got = reg.check(kid, now)
        except Rejected as exc:
            assert exc.reason.value == expected
        else:
            assert expected is None and got in good
            assert got.not_after_ms == max(c.not_after_ms for c in good)


_REQ: dict[str, object] = {}


@given(st.data())
def test_every_mutation_of_a_request_is_refused(data: st.DataObject) -> None:
    """Flip, truncate or extend any byte of a valid signed request: the CA refuses it with a
    reason (never an exception of another kind, never a certificate)."""
    if not _REQ:
        w = make_ca_world()
        _REQ["w"], _REQ["req"] = w, w.agents["agent-us-east"].request(START_MS)
    w, (subject, raw) = _REQ["w"], _REQ["req"]  # type: ignore[misc]
    buf = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        buf += data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(CaError):
        w.issuer.issue(bytes(buf), subject, now_ms=START_MS, serial=1)  # type: ignore[attr-defined]


@given(st.binary(max_size=300))
def test_response_decoder_raises_only_its_error(raw: bytes) -> None:
    from cctf.ca.request import decode_response

    with contextlib.suppress(CaError):
        decode_response(raw)


def test_binding_carrier_refuses_other_shapes() -> None:
    b = KeyBinding("hybrid-ed25519-ml-dsa-65", "k" + "0" * 32, (b"\x01" * 32, b"\x02" * 32))
    value = encode_binding(b)
    good = wrap_binding(value)
    assert unwrap_binding(good) == b
    attr = good[good.index(b"\x06") :]  # OID + SET, inside the two SEQUENCEs
    bad = {
        "trailing": good + b"\x00",
        "two values": wrap_binding(value + value),
        "other type": good.replace(b"\x06\x14\x69", b"\x06\x14\x68", 1),
        "not wrapped": value,
        "two attributes": _seq(_seq(attr) + _seq(attr)),
    }
    for what, data in bad.items():
        with pytest.raises(CaError) as info:
            unwrap_binding(data)
        assert info.value.reason is CaReason.BINDING, what


def _seq(content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x81 if n < 256 else 0x82]) + n.to_bytes(1 if n < 256 else 2, "big")
    )
    return b"\x30" + length + content
