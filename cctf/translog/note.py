"""C2SP signed notes (https://c2sp.org/signed-note) with CCTF's hybrid key, and signed checkpoints.

A note is a text ending in a newline, a blank line, then one or more signature lines::

    — <key name> <base64(4-byte key ID || signature)>\\n

(U+2014 em dash, space, key name, space, standard padded base64.) A CCTF log signs with both halves
of its hybrid key (suite ``hybrid-ed25519-ml-dsa-65``), as two signature lines under one key name:

=========  =========================================================  ===========================
half       key ID = SHA-256(name || 0x0A || type || public key)[:4]   signature over the note text
=========  =========================================================  ===========================
Ed25519    type ``0x01`` (signed-note), 32-byte public key            RFC 8032, 64 bytes
ML-DSA-65  type :data:`ML_DSA_65_TYPE` (PROVISIONAL, see below),      FIPS 204, empty context,
           1952-byte public key                                       3309 bytes
=========  =========================================================  ===========================

C2SP assigns no signature type to plain ML-DSA-65 note signatures (``0x06`` is the timestamped
ML-DSA-44 *cosignature* of tlog-cosignature, a different message), so CCTF follows the signed-note
guidance for unassigned types: ``0xff`` followed by a longer identifier unlikely to collide,
``0xff || "cctf.ml-dsa-65/v1"``. This is provisional until C2SP assigns a byte.

Verification (:meth:`NoteVerifier.verify`), numbered steps:

1. Shape: at most :data:`MAX_NOTE_BYTES`, UTF-8, no control character except newline, a text ending
   in a newline, a blank line, then 1..:data:`MAX_SIGNATURES` well-formed signature lines (key name
   non-empty without Unicode spaces or ``+``, canonical base64 of more than 4 bytes).
2. A line whose (key name, key ID) is neither of the configured pair is ignored (signed-note: an
   unknown key, even one sharing a name or an ID) and counts for nothing.
3. A line matching a configured (name, ID) MUST verify, else the whole note is rejected.
4. BOTH the Ed25519 and the ML-DSA-65 signature must have verified (anti-downgrade: a note signed
   by one half only is rejected).

Every refusal is one :class:`NoteError` with a reason code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from cctf.crypto.errors import CryptoError
from cctf.crypto.keys import PublicKeySet, SigningKey
from cctf.crypto.suites import SIGNATURE_BYTES, Component, SuiteId
from cctf.translog.checkpoint import Checkpoint, check_note_text, parse_checkpoint
from cctf.translog.errors import NoteError

__all__ = [
    "ED25519_TYPE",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "ML_DSA_65_TYPE",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "key_id",
    "open_checkpoint",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
]

ED25519_TYPE: Final = b"\x01"
ML_DSA_65_TYPE: Final = b"\xff" + b"cctf.ml-dsa-65/v1"
"""PROVISIONAL signature type of ML-DSA-65 note signatures (no C2SP byte assigned)."""
MAX_SIGNATURES: Final = 32
"""signed-note: verifiers MUST accept at least 16 signatures."""
MAX_NOTE_BYTES: Final = 256 * 1024
MAX_KEY_NAME_BYTES: Final = 255
_DASH: Final = "\u2014 "


def key_id(name: str, sig_type: bytes, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` (signed-note, RECOMMENDED key ID)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + sig_type + public_key).digest()[:4]


def _check_key_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise NoteError("bad-key-name", "a key name is a non-empty string")
    if any(c.isspace() or c == "+" for c in name):
        raise NoteError("bad-key-name", "a key name has no spaces and no '+'")
    check_note_text(name, "a key name", NoteError)
    if len(name.encode("utf-8", "surrogatepass")) > MAX_KEY_NAME_BYTES:
        raise NoteError("bad-key-name", f"a key name is at most {MAX_KEY_NAME_BYTES} bytes")
    return name


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note: its text (with the final newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_note(note: str | bytes) -> Note:
    """Parse a signed note (step 1 of :meth:`NoteVerifier.verify`); never verifies anything."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError("too-large", f"a note is at most {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("bad-utf8", "a note is UTF-8 text") from None
    if not isinstance(note, str):
        raise NoteError("bad-type", "a note is text")
    if len(note) > MAX_NOTE_BYTES or len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteError("too-large", f"a note is at most {MAX_NOTE_BYTES} bytes")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("bad-utf8", "a note is UTF-8 text") from None
    check_note_text(note, "a note", NoteError)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("malformed", "a note is text, a blank line, then signature lines")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block[:-1].split("\n") if block else []
    if not lines:
        raise NoteError("no-signatures", "a note has at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too-many-signatures", f"a note has at most {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise NoteError("malformed", "a signature line starts with an em dash and a space")
    parts = line[len(_DASH) :].split(" ")
    if len(parts) != 2:
        raise NoteError("malformed", "a signature line is: em dash, key name, base64")
    name, b64 = _check_key_name(parts[0]), parts[1]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("bad-base64", "a signature is not base64") from None
    if base64.b64encode(raw).decode() != b64:
        raise NoteError("bad-base64", "a signature is not canonical base64")
    if len(raw) < 5:
        raise NoteError("malformed", "a signature is a 4-byte key ID and a signature")
    return NoteSignature(name, raw[:4], raw[4:])


def _check_text(text: str) -> bytes:
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("malformed", "a note text ends with a newline")
    check_note_text(text, "a note text", NoteError)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("bad-utf8", "a note text is UTF-8") from None


def sign_note(text: str, name: str, key: SigningKey) -> str:
    """``text`` signed by the hybrid ``key`` under key ``name``: Ed25519 line, then ML-DSA-65."""
    if key.suite is not SuiteId.HYBRID:
        raise NoteError("wrong-suite", f"a log key is {SuiteId.HYBRID.value}")
    _check_key_name(name)
    data = _check_text(text)
    try:
        ed_sig, ml_sig = key.sign_note_text(data)
    except CryptoError as exc:
        raise NoteError("sign-failed", str(exc)) from None
    ed_pk, ml_pk = key.public.raw
    sigs = (
        NoteSignature(name, key_id(name, ED25519_TYPE, ed_pk), ed_sig),
        NoteSignature(name, key_id(name, ML_DSA_65_TYPE, ml_pk), ml_sig),
    )
    return Note(text, sigs).encode()


class NoteVerifier:
    """Verifies notes against one log's key name and hybrid public key set (steps above)."""

    def __init__(self, name: str, public: PublicKeySet) -> None:
        if public.suite is not SuiteId.HYBRID:
            raise NoteError("wrong-suite", f"a log key is {SuiteId.HYBRID.value}")
        self.name = _check_key_name(name)
        ed_raw, ml_raw = public.raw
        self._ed = ed25519.Ed25519PublicKey.from_public_bytes(ed_raw)
        self._ml = mldsa.MLDSA65PublicKey.from_public_bytes(ml_raw)
        self.ed25519_id = key_id(name, ED25519_TYPE, ed_raw)
        self.ml_dsa_65_id = key_id(name, ML_DSA_65_TYPE, ml_raw)

    def verify(self, note: str | bytes) -> str:
        """The note's text, once both signatures verified; else :class:`NoteError`."""
        parsed = parse_note(note)  # step 1
        data = parsed.text.encode("utf-8")
        seen: set[Component] = set()
        for sig in parsed.signatures:
            if sig.name != self.name:
                continue  # step 2: unknown key
            if sig.key_id == self.ed25519_id:
                comp = Component.ED25519
            elif sig.key_id == self.ml_dsa_65_id:
                comp = Component.ML_DSA_65
            else:
                continue  # step 2: same name, unknown key ID
            if len(sig.signature) != SIGNATURE_BYTES[comp]:  # step 3
                raise NoteError("bad-signature", f"the {comp.value} note signature has a bad size")
            try:
                if comp is Component.ED25519:
                    self._ed.verify(sig.signature, data)
                else:
                    self._ml.verify(sig.signature, data)
            except InvalidSignature:
                raise NoteError(
                    "bad-signature", f"the {comp.value} note signature does not verify"
                ) from None
            seen.add(comp)
        missing = [c.value for c in (Component.ED25519, Component.ML_DSA_65) if c not in seen]
        if missing:  # step 4
            raise NoteError("missing-signature", f"no verified {' and '.join(missing)} signature")
        return parsed.text


def sign_checkpoint(checkpoint: Checkpoint, name: str, key: SigningKey) -> str:
    """The signed note of ``checkpoint``."""
    return sign_note(checkpoint.encode().decode("utf-8"), name, key)


def open_checkpoint(
    note: str | bytes, verifier: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint (both signatures) and parse its body; the origin must equal
    ``origin`` when given. Raises :class:`NoteError` (signatures, origin) or
    :class:`CheckpointError` (body), both :class:`~cctf.translog.errors.TranslogError`."""
    text = verifier.verify(note)
    checkpoint = parse_checkpoint(text.encode("utf-8"))
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(
            "wrong-origin", f"checkpoint origin {checkpoint.origin!r} is not {origin!r}"
        )
    return checkpoint
