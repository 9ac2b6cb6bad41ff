"""C2SP tlog-checkpoint bodies and hybrid signed notes: round trips, strict parser, signature rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.translog.checkpoint import Checkpoint, parse_checkpoint
from cctf.translog.errors import CheckpointError, NoteError, TranslogError
from cctf.translog.merkle import MAX_TREE_SIZE
from cctf.translog.note import (
    ML_DSA_65_TYPE,
    NoteSignature,
    NoteVerifier,
    key_id,
    open_checkpoint,
    parse_note,
    sign_checkpoint,
    sign_note,
)

NAME = "log.cctf.example/verdicts"
KEY = SigningKey.generate(SuiteId.HYBRID)
OTHER = SigningKey.generate(SuiteId.HYBRID)
VERIFIER = NoteVerifier(NAME, KEY.public)

line_st = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
origin_st = line_st.filter(lambda s: s == s.strip())
checkpoint_st = st.builds(
    Checkpoint,
    origin_st,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(line_st, max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(checkpoint_st)
def test_checkpoint_round_trip(cp: Checkpoint) -> None:
    body = cp.encode()
    assert parse_checkpoint(body) == cp
    lines = body.decode().split("\n")
    assert lines[0] == cp.origin and lines[1] == str(cp.size)
    assert base64.b64decode(lines[2]) == cp.root_hash and lines[-1] == ""


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        checkpoint_st.map(lambda c: c.encode()).flatmap(
            lambda b: st.tuples(st.just(b), st.integers(0, len(b)), st.binary(max_size=3)).map(
                lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
            )
        ),
    )
)
def test_checkpoint_parser_fuzz_raises_only_its_error(body: bytes) -> None:
    try:
        cp = parse_checkpoint(body)
    except CheckpointError:
        return
    assert cp.encode() == body  # whatever parses is canonical


ROOT = hashlib.sha256(b"r").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no-final-newline"),
        (f"o\n1\n{ROOT_B64}".encode(), "no-final-newline"),
        (b"o\n1\n", "too-few-lines"),
        (f"o\n01\n{ROOT_B64}\n".encode(), "bad-size"),
        (f"o\n-1\n{ROOT_B64}\n".encode(), "bad-size"),
        (f"o\n+1\n{ROOT_B64}\n".encode(), "bad-size"),
        (f"o\n{2**63}\n{ROOT_B64}\n".encode(), "bad-size"),
        (f"o\n99999999999999999999\n{ROOT_B64}\n".encode(), "bad-size"),
        (b"o\n1\nAAAA\n", "bad-root-hash"),
        (f"o\n1\n{ROOT_B64.rstrip('=')}\n".encode(), "bad-root-hash"),
        (f"o\n1\n{ROOT_B64}\n\n".encode(), "empty-line"),
        (f"\n1\n{ROOT_B64}\n".encode(), "empty-line"),
        (f" o\n1\n{ROOT_B64}\n".encode(), "bad-origin"),
        (f"o\t\n1\n{ROOT_B64}\n".encode(), "control-character"),
        (f"o\r\n1\n{ROOT_B64}\n".encode(), "control-character"),
        (b"\xff\n1\n" + ROOT_B64.encode() + b"\n", "bad-utf8"),
        (f"o\n1\n{ROOT_B64}\n".encode() + b"e\n" * 17, "too-many-extensions"),
        (f"o\n1\n{ROOT_B64}\n{'e' * 1025}\n".encode(), "line-too-long"),
        (f"{'o' * 256}\n1\n{ROOT_B64}\n".encode(), "line-too-long"),
        (b"x" * 8193, "too-large"),
    ],
)
def test_checkpoint_parser_refusals(body: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError) as exc:
        parse_checkpoint(body)
    assert exc.value.reason == reason


def test_checkpoint_exact_bytes() -> None:
    cp = Checkpoint("example.com/log", 20852163, ROOT, ("ext one",))
    assert cp.encode() == f"example.com/log\n20852163\n{ROOT_B64}\next one\n".encode()


# ---- signed notes --------------------------------------------------------------------------


def _cp() -> Checkpoint:
    return Checkpoint(NAME, 7, ROOT)


def test_sign_and_open_checkpoint() -> None:
    note = sign_checkpoint(_cp(), NAME, KEY)
    text, sigs = note.split("\n\n")
    assert text + "\n" == _cp().encode().decode()
    lines = sigs.rstrip("\n").split("\n")
    assert len(lines) == 2 and all(line.startswith(f"\u2014 {NAME} ") for line in lines)
    ed_pk, ml_pk = KEY.public.raw
    raw0 = base64.b64decode(lines[0].split(" ")[2])
    raw1 = base64.b64decode(lines[1].split(" ")[2])
    assert raw0[:4] == hashlib.sha256(NAME.encode() + b"\n\x01" + ed_pk).digest()[:4]
    assert raw1[:4] == hashlib.sha256(NAME.encode() + b"\n" + ML_DSA_65_TYPE + ml_pk).digest()[:4]
    assert len(raw0) == 4 + 64 and len(raw1) == 4 + 3309
    assert open_checkpoint(note, VERIFIER, origin=NAME) == _cp()
    assert open_checkpoint(note.encode(), VERIFIER) == _cp()


def test_ed25519_half_is_plain_rfc8032_over_the_text() -> None:
    """A standard signed-note verifier (Ed25519, type 0x01) accepts the Ed25519 line as is."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    note = sign_checkpoint(_cp(), NAME, KEY)
    raw = base64.b64decode(note.split("\n\n")[1].split("\n")[0].split(" ")[2])
    ed25519.Ed25519PublicKey.from_public_bytes(KEY.public.raw[0]).verify(raw[4:], _cp().encode())


def _sigs(note: str) -> tuple[str, list[NoteSignature]]:
    parsed = parse_note(note)
    return parsed.text, list(parsed.signatures)


def _note(text: str, sigs: list[NoteSignature]) -> str:
    return text + "\n" + "".join(s.line() for s in sigs)


def _reason(note: str | bytes, origin: str | None = None) -> str:
    with pytest.raises(TranslogError) as exc:
        open_checkpoint(note, VERIFIER, origin)
    return exc.value.reason


def test_tampered_text_rejected() -> None:
    note = sign_checkpoint(_cp(), NAME, KEY)
    assert _reason(note.replace("\n7\n", "\n8\n", 1)) == "bad-signature"


def test_each_signature_alone_is_not_enough() -> None:
    text, (ed, ml) = _sigs(sign_checkpoint(_cp(), NAME, KEY))
    assert _reason(_note(text, [ed])) == "missing-signature"
    assert _reason(_note(text, [ml])) == "missing-signature"
    assert _reason(_note(text, [ed, ed])) == "missing-signature"


def test_wrong_key_name_or_key_id_is_ignored_then_missing() -> None:
    text, (ed, ml) = _sigs(sign_checkpoint(_cp(), NAME, KEY))
    renamed = NoteSignature("other.example/log", ml.key_id, ml.signature)
    assert _reason(_note(text, [ed, renamed])) == "missing-signature"
    wrong_id = NoteSignature(NAME, bytes(4), ml.signature)
    assert _reason(_note(text, [ed, wrong_id])) == "missing-signature"
    # Under another name the same key's lines are unknown: signed under a key of another name.
    other_name = sign_checkpoint(_cp(), "other.example/log", KEY)
    assert _reason(other_name) == "missing-signature"
    assert _reason(sign_checkpoint(_cp(), NAME, OTHER)) == "missing-signature"


def test_known_key_with_bad_signature_rejects_whole_note() -> None:
    text, (ed, ml) = _sigs(sign_checkpoint(_cp(), NAME, KEY))
    forged = NoteSignature(NAME, ml.key_id, bytes(3309))
    assert _reason(_note(text, [ed, ml, forged])) == "bad-signature"
    short = NoteSignature(NAME, ed.key_id, ed.signature[:63])
    assert _reason(_note(text, [short, ed, ml])) == "bad-signature"


def test_extra_unknown_signatures_ignored_not_counted() -> None:
    text, (ed, ml) = _sigs(sign_checkpoint(_cp(), NAME, KEY))
    _, (oed, oml) = _sigs(sign_checkpoint(_cp(), "witness.example/w1", OTHER))
    cosig = NoteSignature("witness.example/w1", b"\x01\x02\x03\x04", b"\x00" * 72)
    assert open_checkpoint(_note(text, [oed, ed, cosig, oml, ml]), VERIFIER) == _cp()
    assert _reason(_note(text, [oed, oml, cosig, ed])) == "missing-signature"


def test_wrong_origin_rejected() -> None:
    assert _reason(sign_checkpoint(_cp(), NAME, KEY), origin="elsewhere") == "wrong-origin"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda n: n.replace("\n\n", "\n", 1), "malformed"),
        (lambda n: n[:-1], "malformed"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no-signatures"),
        (lambda n: n.replace("\u2014 ", "- ", 1), "malformed"),
        (lambda n: n.replace(f"\u2014 {NAME} ", f"\u2014 {NAME}  ", 1), "malformed"),
        (lambda n: n.replace(f"\u2014 {NAME} ", "\u2014 a+b ", 1), "bad-key-name"),
        (lambda n: n.replace(f"\u2014 {NAME} ", "\u2014 a\u00a0b ", 1), "bad-key-name"),
        (lambda n: n.replace("\n\n", "\n\u0007\n\n", 1), "control-character"),
        (lambda n: n + "\u2014 x AAAA\n", "malformed"),
        (lambda n: n + "\u2014 x AAAAAA=\n", "bad-base64"),
        (lambda n: n + "\u2014 x !!!!!!!!\n", "bad-base64"),
        (lambda n: n + "\u2014 x AAAAAAA=\n" * 31, "too-many-signatures"),
        (lambda n: n + "\u2014 x " + "A" * 300_000 + "\n", "too-large"),
    ],
)
def test_malformed_notes(mutate: object, reason: str) -> None:
    note = sign_checkpoint(_cp(), NAME, KEY)
    assert callable(mutate)
    assert _reason(mutate(note)) == reason


def test_non_utf8_note() -> None:
    note = sign_checkpoint(_cp(), NAME, KEY).encode()
    assert _reason(b"\xff" + note) == "bad-utf8"


def test_valid_note_with_bad_checkpoint_body_is_checkpoint_error() -> None:
    note = sign_note("not a checkpoint\n", NAME, KEY)
    with pytest.raises(CheckpointError):
        open_checkpoint(note, VERIFIER)


def test_signing_refusals() -> None:
    with pytest.raises(NoteError, match="malformed"):
        sign_note("no newline", NAME, KEY)
    with pytest.raises(NoteError, match="control-character"):
        sign_note("nul \x00\n", NAME, KEY)
    with pytest.raises(NoteError, match="bad-key-name"):
        sign_note("x\n", "has space", KEY)
    with pytest.raises(NoteError, match="wrong-suite"):
        sign_note("x\n", NAME, SigningKey.generate(SuiteId.ED25519))
    with pytest.raises(NoteError, match="wrong-suite"):
        NoteVerifier(NAME, SigningKey.generate(SuiteId.ED25519).public)


def test_key_id_formula() -> None:
    assert key_id("n", b"\x01", b"k") == hashlib.sha256(b"n\n\x01k").digest()[:4]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_note_parser_fuzz_raises_only_note_error(data: st.DataObject) -> None:
    note = sign_checkpoint(_cp(), NAME, KEY)
    i = data.draw(st.integers(0, len(note)))
    junk = data.draw(st.text(max_size=4))
    mutated = note[:i] + junk + note[i + data.draw(st.integers(0, 3)) :]
    try:
        cp = open_checkpoint(mutated, VERIFIER)
    except TranslogError:
        return
    assert cp == _cp()  # only a change to an ignored part (e.g. nothing) may still verify


def test_sign_note_text_refuses_nul_and_differs_from_envelope_signing() -> None:
    from cctf.crypto.errors import SignatureError

    with pytest.raises(SignatureError):
        KEY.sign_note_text(b"a\x00b\n")
    text = _cp().encode()
    with pytest.raises(SignatureError):  # a note signature is no envelope signature
        KEY.public.verify(text, KEY.sign_note_text(text))
