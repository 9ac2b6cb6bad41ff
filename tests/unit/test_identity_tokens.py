"""JWT-SVID and OIDC ID token validation: valid tokens of every allowed key type, and every negative
of the acceptance list (no aud / exp, wrong aud, alg=none, HS256 signed with the public key,
unexpected crit, JWK use=enc, sub outside the trust domain) plus the other rules, each with its
reason code."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from svidpki import NOW_S, JwtAuthority, SvidPki, forge, hs256_with_public_key

from cctf.identity.bundle import TrustBundle, parse_bundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.oidc import KeySet, parse_jwks
from cctf.identity.tokens import MAX_TOKEN_BYTES, verify_id_token, verify_jwt_svid

NOW_MS = NOW_S * 1000
SUB = "spiffe://demo.test/api"
ISS = "https://issuer.demo.test"
KEYS = {
    "es256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "es384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rs256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "eddsa": ed25519.Ed25519PrivateKey.generate,
}


@pytest.fixture(scope="module")
def pki() -> SvidPki:
    p = SvidPki("demo.test")
    p.jwt_authorities.append(JwtAuthority("jwt-rsa", KEYS["rs256"]()))
    return p


@pytest.fixture(scope="module")
def bundle(pki: SvidPki) -> TrustBundle:
    return parse_bundle("demo.test", pki.bundle_bytes())


@pytest.fixture(scope="module")
def idp() -> JwtAuthority:
    return JwtAuthority("idp-1", KEYS["es256"]())


@pytest.fixture(scope="module")
def keyset(idp: JwtAuthority) -> KeySet:
    enc = JwtAuthority("enc-1", KEYS["rs256"]())
    doc = {"keys": [idp.jwk(use="sig", alg="ES256"), enc.jwk(use="enc")]}
    return parse_jwks(json.dumps(doc).encode())


def id_token(a: JwtAuthority, *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    body: dict[str, Any] = {
        "iss": ISS,
        "sub": "workload-7",
        "aud": "cctf",
        "iat": NOW_S,
        "exp": NOW_S + 300,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, a.key, algorithm=a.alg, headers={"kid": a.kid, **(headers or {})})


def svid_refused(reason: Reason, token: str, bundle: TrustBundle, aud: str = "cctf") -> None:
    with pytest.raises(IdentityError) as info:
        verify_jwt_svid(token, bundle, aud, NOW_MS)
    assert info.value.reason is reason, str(info.value)
    assert "\n" not in str(info.value)
    assert token not in str(info.value)


def id_refused(reason: Reason, token: str, keyset: KeySet, **kw: Any) -> None:
    with pytest.raises(IdentityError) as info:
        verify_id_token(token, keyset, ISS, ["cctf", "cctf-2"], NOW_MS, **kw)
    assert info.value.reason is reason, str(info.value)
    assert token not in str(info.value)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_valid_jwt_svid_every_key_type(kind: str) -> None:
    pki = SvidPki("demo.test")
    pki.jwt_authorities = [JwtAuthority(f"k-{kind}", KEYS[kind]())]
    bundle = parse_bundle("demo.test", pki.bundle_bytes())
    c = verify_jwt_svid(pki.jwt_svid(SUB, aud=["x", "cctf"]), bundle, "cctf", NOW_MS)
    assert (c.subject, str(c.spiffe_id), c.audiences) == (SUB, SUB, ("x", "cctf"))
    assert (c.expires_ms, c.issued_ms, c.kid) == ((NOW_S + 300) * 1000, NOW_MS, f"k-{kind}")


def test_valid_jwt_svid_ps256(pki: SvidPki, bundle: TrustBundle) -> None:
    a = pki.jwt_authorities[1]
    tok = jwt.encode(
        {"sub": SUB, "aud": "cctf", "exp": NOW_S + 60},
        a.key,
        algorithm="PS256",
        headers={"kid": a.kid},
    )
    assert verify_jwt_svid(tok, bundle, "cctf", NOW_MS).alg == "PS256"


def test_valid_id_token(idp: JwtAuthority, keyset: KeySet) -> None:
    c = verify_id_token(id_token(idp), keyset, ISS, ["cctf"], NOW_MS, subject="workload-7")
    assert (c.subject, c.issuer, c.audiences, c.alg) == ("workload-7", ISS, ("cctf",), "ES256")
    # a single-key set accepts a token without kid
    one = parse_jwks(json.dumps({"keys": [idp.jwk()]}).encode())
    tok = jwt.encode({"iss": ISS, "sub": "s", "aud": "cctf", "exp": NOW_S + 5}, idp.key, "ES256")
    assert verify_id_token(tok, one, ISS, ["cctf"], NOW_MS).kid == "idp-1"


# -- the acceptance list -------------------------------------------------------------------------
def test_no_aud(pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet) -> None:
    svid_refused(Reason.AUD_MISSING, pki.jwt_svid(SUB, aud=None), bundle)
    id_refused(Reason.AUD_MISSING, id_token(idp, aud=None), keyset)


def test_no_exp(pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet) -> None:
    svid_refused(Reason.EXP_MISSING, pki.jwt_svid(SUB, exp_s=-1), bundle)
    id_refused(Reason.EXP_MISSING, id_token(idp, exp=None), keyset)


def test_wrong_aud(pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet) -> None:
    svid_refused(Reason.AUD_MISMATCH, pki.jwt_svid(SUB, aud="other"), bundle)
    id_refused(Reason.AUD_MISMATCH, id_token(idp, aud="other"), keyset)
    # an ID token listing an extra, untrusted audience (OIDC Core 3.1.3.7)
    id_refused(Reason.AUD_MISMATCH, id_token(idp, aud=["cctf", "evil"]), keyset)
    svid_refused(Reason.CLAIM_INVALID, pki.jwt_svid(SUB, aud=[]), bundle)


def test_alg_none(pki: SvidPki, bundle: TrustBundle, keyset: KeySet) -> None:
    for alg in ("none", "None", "NONE"):
        tok = forge({"alg": alg, "kid": "jwt-1"}, {"sub": SUB, "aud": "cctf", "exp": NOW_S + 60})
        svid_refused(Reason.ALG_NONE, tok, bundle)
        id_refused(Reason.ALG_NONE, tok, keyset)


def test_hs256_signed_with_the_public_key(
    pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet
) -> None:
    claims = {"sub": SUB, "aud": "cctf", "exp": NOW_S + 60, "iss": ISS}
    pub = pki.jwt_authorities[0].key.public_key()
    for secret in (
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(pki.jwt_authorities[0].jwk()).encode(),
    ):
        tok = hs256_with_public_key({"kid": "jwt-1", "typ": "JWT"}, claims, secret)
        svid_refused(Reason.ALG_HMAC, tok, bundle)
        tok = hs256_with_public_key({"kid": idp.kid}, claims, secret)
        id_refused(Reason.ALG_HMAC, tok, keyset)


def test_unexpected_crit_header(
    pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet
) -> None:
    hdr = {"crit": ["exp-ext"], "exp-ext": 1}
    svid_refused(Reason.CRIT_HEADER, pki.jwt_svid(SUB, headers=hdr), bundle)
    id_refused(Reason.CRIT_HEADER, id_token(idp, headers=hdr), keyset)


def test_jwk_use_enc(keyset: KeySet) -> None:
    enc_signer = JwtAuthority("enc-1", KEYS["rs256"]())  # kid of the enc key in the JWKS
    id_refused(Reason.KEY_USE, id_token(enc_signer), keyset)


def test_sub_outside_trust_domain(pki: SvidPki, bundle: TrustBundle) -> None:
    svid_refused(Reason.SUB_TRUST_DOMAIN, pki.jwt_svid("spiffe://other.test/api"), bundle)
    svid_refused(Reason.TRUST_DOMAIN_INVALID, pki.jwt_svid("spiffe://Demo.test/api"), bundle)
    svid_refused(Reason.SPIFFE_ID_MALFORMED, pki.jwt_svid("workload-7"), bundle)


# -- the other rules -----------------------------------------------------------------------------
def test_kid_rules(pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet) -> None:
    a = pki.jwt_authorities[0]
    no_kid = jwt.encode({"sub": SUB, "aud": "cctf", "exp": NOW_S + 60}, a.key, algorithm=a.alg)
    svid_refused(Reason.KID_MISSING, no_kid, bundle)
    rogue = JwtAuthority("jwt-9", KEYS["es256"]())
    svid_refused(Reason.KID_UNKNOWN, pki.jwt_svid(SUB, authority=rogue), bundle)
    # a rogue key under a known kid: the signature does not verify
    svid_refused(
        Reason.SIGNATURE_INVALID,
        pki.jwt_svid(SUB, authority=JwtAuthority("jwt-1", rogue.key)),
        bundle,
    )
    # several keys in the JWKS and no kid
    two = parse_jwks(json.dumps({"keys": [idp.jwk(), rogue.jwk()]}).encode())
    tok = jwt.encode({"iss": ISS, "sub": "s", "aud": "cctf", "exp": NOW_S + 5}, idp.key, "ES256")
    id_refused(Reason.KID_MISSING, tok, two)


def test_alg_must_fit_key(pki: SvidPki, bundle: TrustBundle) -> None:
    rsa_auth = pki.jwt_authorities[1]
    tok = jwt.encode(
        {"sub": SUB, "aud": "cctf", "exp": NOW_S + 60},
        rsa_auth.key,
        algorithm="RS256",
        headers={"kid": "jwt-1"},
    )  # jwt-1 is an EC key
    svid_refused(Reason.ALG_NOT_ALLOWED, tok, bundle)
    tok = forge({"alg": "ES256K", "kid": "jwt-1"}, {"sub": SUB})
    svid_refused(Reason.ALG_NOT_ALLOWED, tok, bundle)


def test_times(pki: SvidPki, bundle: TrustBundle, idp: JwtAuthority, keyset: KeySet) -> None:
    svid_refused(Reason.EXPIRED, pki.jwt_svid(SUB, exp_s=NOW_S - 31), bundle)
    verify_jwt_svid(pki.jwt_svid(SUB, exp_s=NOW_S - 29), bundle, "cctf", NOW_MS)  # within skew
    svid_refused(Reason.NOT_YET_VALID, pki.jwt_svid(SUB, nbf=NOW_S + 31), bundle)
    svid_refused(Reason.IAT_INVALID, pki.jwt_svid(SUB, iat=NOW_S + 31, exp_s=NOW_S + 90), bundle)
    for bad in ("soon", True, -5, 1e300):
        svid_refused(Reason.CLAIM_INVALID, pki.jwt_svid(SUB, exp_s=bad), bundle)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verify_jwt_svid(pki.jwt_svid(SUB), bundle, "cctf", NOW_MS, leeway_ms=10**9)
    id_refused(Reason.EXPIRED, id_token(idp, exp=NOW_S - 3600), keyset)


def test_nan_exp_refused(pki: SvidPki, bundle: TrustBundle) -> None:
    a = pki.jwt_authorities[0]
    body = b'{"sub":"' + SUB.encode() + b'","aud":"cctf","exp":NaN}'
    tok = jwt.api_jws.encode(body, a.key, algorithm=a.alg, headers={"kid": a.kid})
    svid_refused(Reason.CLAIM_INVALID, tok, bundle)


def test_iss_and_sub(idp: JwtAuthority, keyset: KeySet) -> None:
    id_refused(Reason.ISS_MISSING, id_token(idp, iss=None), keyset)
    id_refused(Reason.ISS_MISMATCH, id_token(idp, iss=ISS + "/"), keyset)
    id_refused(Reason.SUB_MISSING, id_token(idp, sub=None), keyset)
    id_refused(Reason.SUB_MISMATCH, id_token(idp), keyset, subject="workload-8")


def test_malformed_and_oversized(pki: SvidPki, bundle: TrustBundle) -> None:
    svid_refused(Reason.TOKEN_TOO_LARGE, "a" * (MAX_TOKEN_BYTES + 1), bundle)
    for bad in ("", "a.b", "a.b.c.d.e", "é.b.c", "!!!.b.c", forge({"alg": "ES256"}, {})[:-1] + "."):
        with pytest.raises(IdentityError) as info:
            verify_jwt_svid(bad, bundle, "cctf", NOW_MS)
        assert info.value.reason in (Reason.TOKEN_MALFORMED, Reason.KID_MISSING)
    svid_refused(Reason.TYP_INVALID, pki.jwt_svid(SUB, headers={"typ": "at+jwt"}), bundle)
    tok = pki.jwt_svid(SUB)
    head, _body, sig = tok.split(".")
    other = pki.jwt_svid("spiffe://demo.test/admin").split(".")[1]
    svid_refused(Reason.SIGNATURE_INVALID, f"{head}.{other}.{sig}", bundle)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.hex()))
def test_arbitrary_input_is_refused_cleanly(text: str) -> None:
    bundle = parse_bundle("demo.test", SvidPki("demo.test", intermediates=0).bundle_bytes())
    with pytest.raises(IdentityError):
        verify_jwt_svid(text, bundle, "cctf", NOW_MS)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "x"]),
        st.none() | st.text(max_size=8) | st.integers(),
    )
)
def test_arbitrary_headers_refused_cleanly(header: dict[str, Any]) -> None:
    bundle = parse_bundle("demo.test", SvidPki("demo.test", intermediates=0).bundle_bytes())
    with pytest.raises(IdentityError):
        verify_jwt_svid(
            forge(header, {"sub": SUB, "aud": "cctf", "exp": NOW_S + 5}), bundle, "cctf", NOW_MS
        )


# -- property: the reason is the first failing documented step -----------------------------------
AUDS: dict[str, Any] = {
    "missing": None,
    "ok": "cctf",
    "other": "other",
    "list": ["x", "cctf"],
    "empty": [],
}
EXPS: dict[str, Any] = {"missing": -1, "past": NOW_S - 120, "future": NOW_S + 120, "text": "later"}
SUBS: dict[str, Any] = {
    "ok": SUB,
    "other": "spiffe://other.test/a",
    "plain": "workload-7",
    "missing": None,
}


@settings(max_examples=200, deadline=None)
@given(
    header=st.sampled_from(["ok", "none", "hs256", "crit", "unknown-kid"]),
    aud=st.sampled_from(sorted(AUDS)),
    exp=st.sampled_from(sorted(EXPS)),
    nbf_future=st.booleans(),
    iat_future=st.booleans(),
    sub=st.sampled_from(sorted(SUBS)),
)
def test_jwt_svid_reason_is_first_failing_step(
    header: str, aud: str, exp: str, nbf_future: bool, iat_future: bool, sub: str
) -> None:
    pki = PKI_FOR_PROPS
    bundle = BUNDLE_FOR_PROPS
    claims: dict[str, Any] = {"iat": NOW_S + 120 if iat_future else NOW_S}
    if nbf_future:
        claims["nbf"] = NOW_S + 120
    a = pki.jwt_authorities[0]
    body = {
        k: v for k, v in {"sub": SUBS[sub], "aud": AUDS[aud], **claims}.items() if v is not None
    }
    if EXPS[exp] != -1:
        body["exp"] = EXPS[exp]
    if header == "none":
        tok = forge({"alg": "none", "kid": a.kid}, body)
    elif header == "hs256":
        tok = hs256_with_public_key({"kid": a.kid}, body, json.dumps(a.jwk()).encode())
    else:
        hdr: dict[str, Any] = {"kid": "nope" if header == "unknown-kid" else a.kid}
        if header == "crit":
            hdr["crit"] = ["x"]
        tok = jwt.encode(body, a.key, algorithm=a.alg, headers=hdr)
    expected: Reason | None
    if header == "none":
        expected = Reason.ALG_NONE
    elif header == "hs256":
        expected = Reason.ALG_HMAC
    elif header == "crit":
        expected = Reason.CRIT_HEADER
    elif header == "unknown-kid":
        expected = Reason.KID_UNKNOWN
    elif aud == "missing":
        expected = Reason.AUD_MISSING
    elif aud == "empty":
        expected = Reason.CLAIM_INVALID
    elif aud == "other":
        expected = Reason.AUD_MISMATCH
    elif exp == "missing":
        expected = Reason.EXP_MISSING
    elif exp == "text":
        expected = Reason.CLAIM_INVALID
    elif exp == "past":
        expected = Reason.EXPIRED
    elif nbf_future:
        expected = Reason.NOT_YET_VALID
    elif iat_future:
        expected = Reason.IAT_INVALID
    elif sub == "missing":
        expected = Reason.SUB_MISSING
    elif sub == "plain":
        expected = Reason.SPIFFE_ID_MALFORMED
    elif sub == "other":
        expected = Reason.SUB_TRUST_DOMAIN
    else:
        expected = None
    if expected is None:
        assert verify_jwt_svid(tok, bundle, "cctf", NOW_MS).subject == SUB
    else:
        svid_refused(expected, tok, bundle)


PKI_FOR_PROPS = SvidPki("demo.test", intermediates=0)
BUNDLE_FOR_PROPS = parse_bundle("demo.test", PKI_FOR_PROPS.bundle_bytes())
