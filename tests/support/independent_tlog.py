"""A clean-room verifier of batch-signed (``"tlog"``) messages, written from docs/wire-protocol.md
§3.2.1, docs/transparency-log.md and the C2SP signed-note / tlog-checkpoint specifications alone.

It imports nothing from ``cctf``. It reuses the clean-room MessagePack codec and the verdict checks
(§5.4 steps 9–15) of ``independent_verifier`` (itself written from the document), and carries its
own signed-note parser and verifier, RFC 9162 leaf hashing and inclusion/consistency verification
(the §2.1.3.2 / §2.1.4.2 algorithms written out again, not ``cctf.translog.merkle``).
``tests/unit/test_tlog_independent.py`` checks the test vectors and random batches with it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey
from independent_verifier import (
    HYBRID,
    MAX_ENVELOPE,
    MAX_PAYLOAD,
    SUITES,
    Key,
    Reject,
    VerdictSubscriber,
    _Malformed,
    _Reader,
    mp_encode,
)

__all__ = [
    "Checkpoint",
    "TlogEnvelope",
    "TlogVerdictSubscriber",
    "decode_tlog_envelope",
    "entry_bytes",
    "leaf_hash",
    "verify_checkpoint_note",
    "verify_consistency",
    "verify_inclusion",
]

U63 = (1 << 63) - 1
ENTRY_DOMAIN = "CCTF-LOG-ENTRY-v1"
ORIGIN_PREFIX = "cctf/v1/log/"
ED25519_NOTE_TYPE = b"\x01"
ML_DSA_65_NOTE_TYPE = b"\xff" + b"cctf.ml-dsa-65/v1"


# ------------------------------------------------------------------------------ RFC 9162 §2.1


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = _node(r, p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> bool:
    """RFC 9162 §2.1.4.2, step by step (sizes ≥ 1 and size1 < size2 here)."""
    if not 0 < size1 < size2 or not proof:
        return False
    if size1 & (size1 - 1) == 0:  # a power of two: root1 is the first node
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = _node(sr, c)
        fn //= 2
        sn //= 2
    return sn == 0 and fr == root1 and sr == root2


# ------------------------------------------------------------------- C2SP signed note, checkpoint


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def _note_key_id(name: str, sig_type: bytes, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + sig_type + public_key).digest()[:4]


def verify_checkpoint_note(note: bytes, key: Key) -> Checkpoint:
    """Verify a coordinator's checkpoint note with BOTH halves of its hybrid key under the key name
    ``cctf/v1/log/<kid>``, and parse the body (origin = key name). Raises ``ValueError``."""
    if key.suite != HYBRID or len(note) > 16384:
        raise ValueError("not a hybrid log key, or too large")
    text = note.decode("utf-8")
    if any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in text):
        raise ValueError("control character")
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise ValueError("no signature block")
    body, block = text[: split + 1], text[split + 2 : -1]
    name = ORIGIN_PREFIX + key.kid
    ed_pk, ml_pk = key.public_keys
    want = {
        _note_key_id(name, ED25519_NOTE_TYPE, ed_pk): "ed25519",
        _note_key_id(name, ML_DSA_65_NOTE_TYPE, ml_pk): "ml-dsa-65",
    }
    verified = set()
    for line in block.split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("bad signature line")
        line_name, b64 = line[2:].split(" ")
        raw = base64.b64decode(b64, validate=True)
        if line_name != name or raw[:4] not in want:
            continue  # another key: ignored
        half = want[raw[:4]]
        try:
            if half == "ed25519":
                Ed25519PublicKey.from_public_bytes(ed_pk).verify(raw[4:], body.encode())
            else:
                MLDSA65PublicKey.from_public_bytes(ml_pk).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise ValueError(f"{half} note signature") from None
        verified.add(half)
    if verified != {"ed25519", "ml-dsa-65"}:
        raise ValueError("both halves must sign")
    lines = body[:-1].split("\n")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if origin != name or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise ValueError("bad checkpoint body")
    root = base64.b64decode(root_b64, validate=True)
    if len(root) != 32:
        raise ValueError("bad root")
    return Checkpoint(origin, int(size), root)


# ------------------------------------------------------------------------------- §3.2.1 envelope


@dataclass(frozen=True)
class TlogEnvelope:
    v: int
    type: str
    suite: str
    kid: str
    iat: int
    exp: int
    nonce: bytes
    payload: bytes
    subjects: tuple[str, ...]
    index: int
    proof: tuple[bytes, ...]
    size: int
    root: bytes

    def to_list(self) -> list[Any]:
        head = [self.size, self.root]
        auth = ["tlog", list(self.subjects), self.index, list(self.proof), head]
        fields = [self.v, self.type, self.suite, self.kid, self.iat, self.exp, self.nonce]
        return [*fields, self.payload, auth]


def entry_bytes(env: TlogEnvelope) -> bytes:
    f = [env.v, env.type, list(env.subjects), env.suite, env.kid, env.iat, env.exp, env.nonce]
    return mp_encode([ENTRY_DOMAIN, *f, env.payload])


def _uint(x: Any, hi: int = U63, lo: int = 0) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise _Malformed("uint out of range")
    return x


def _str(x: Any, max_chars: int, min_chars: int = 0) -> str:
    if not isinstance(x, str) or not min_chars <= len(x) <= max_chars:
        raise _Malformed("str")
    return x


def _bin(x: Any, lo: int, hi: int) -> bytes:
    if not isinstance(x, bytes) or not lo <= len(x) <= hi:
        raise _Malformed("bin")
    return x


def _list(x: Any, lo: int, hi: int) -> list[Any]:
    if not isinstance(x, list) or not lo <= len(x) <= hi:
        raise _Malformed("array")
    return x


def decode_tlog_envelope(data: bytes) -> TlogEnvelope:
    """§3 step 2 for a ``"tlog"`` envelope (any other kind: ``auth_kind``). Raises Reject."""
    try:
        r = _Reader(data)
        if r.array_header() != 9:
            raise _Malformed("envelope: expected an array of 9")
        f = [r.value(1) for _ in range(8)]
        # front to back (§1): fields 0-7 are typed before the authenticator is looked at
        fields = (
            _uint(f[0], 255),
            _str(f[1], 32),
            _str(f[2], 64),
            _str(f[3], 64),
            _uint(f[4]),
            _uint(f[5]),
            _bin(f[6], 16, 16),
            _bin(f[7], 0, MAX_PAYLOAD),
        )
        auth_at = r.pos
        if r.array_header() < 2:
            raise _Malformed("auth: fewer than 2 elements")
        if not r.is_str() or r.value(2) != "tlog":
            raise Reject("auth_kind")
        r.pos = auth_at
        a = _list(r.value(1), 5, 5)
        r.end()
        subjects = [_str(s, 1024, 1) for s in _list(a[1], 1, 16)]
        if len(set(subjects)) != len(subjects):
            raise _Malformed("subject listed twice")
        proof = [_bin(p, 32, 32) for p in _list(a[3], 0, 64)]
        head = _list(a[4], 2, 2)
        env = TlogEnvelope(
            *fields,
            tuple(subjects),
            _uint(a[2]),
            tuple(proof),
            _uint(head[0], lo=1),
            _bin(head[1], 32, 32),
        )
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc
    if mp_encode(env.to_list()) != data:
        raise Reject("malformed", "not in canonical form")
    return env


@dataclass
class TlogVerdictSubscriber(VerdictSubscriber):
    """§3.3 steps 1–8 with step 7 of §3.2.1, then the verdict steps of ``VerdictSubscriber``.
    ``heads``: ``(kid, size) -> root`` of the checkpoint notes given to :meth:`add_head`."""

    heads: dict[tuple[str, int], bytes] = field(default_factory=dict)
    positions: list[tuple[str, int, int]] = field(default_factory=list)

    def add_head(self, note: bytes, coordinator: str, size: int) -> None:
        for key in self.trust.values():
            if key.role == "coordinator" and key.principal == coordinator:
                cp = verify_checkpoint_note(note, key)
                if cp.size != size:
                    raise ValueError("head size differs from its subject's")
                self.heads[(key.kid, cp.size)] = cp.root
                return
        raise ValueError("no such coordinator")

    def open(self, data: bytes, subject: str, now_ms: int) -> tuple[Any, Key]:
        if len(data) > MAX_ENVELOPE:
            raise Reject("oversize")
        env = decode_tlog_envelope(data)
        if env.v != 1:
            raise Reject("version")
        if env.type != "verdict":
            raise Reject("type")
        if env.suite not in SUITES or SUITES[env.suite][1] < SUITES[self.min_suite][1]:
            raise Reject("suite")
        key = self.trust.get(env.kid)
        if key is None or key.role != "coordinator":
            raise Reject("unknown_key")
        if key.suite != env.suite:
            raise Reject("suite")
        if subject not in env.subjects:  # 7a
            raise Reject("subject")
        root = self.heads.get((env.kid, env.size))  # 7b
        if root is None:
            raise Reject("head_unknown")
        if root != env.root:
            raise Reject("head_mismatch")
        if not verify_inclusion(
            leaf_hash(entry_bytes(env)), env.index, env.size, list(env.proof), root
        ):
            raise Reject("proof")  # 7c
        if env.iat > now_ms + 5_000:  # 8
            raise Reject("not_yet_valid")
        if not now_ms < env.exp:
            raise Reject("expired")
        if not 0 <= env.exp - env.iat <= 600_000:
            raise Reject("lifetime")
        self.positions.append((env.kid, env.index, env.size))
        return env, key
