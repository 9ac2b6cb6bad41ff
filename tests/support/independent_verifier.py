"""A clean-room verifier for the CCTF wire protocol, written from docs/wire-protocol.md alone.

It deliberately imports nothing from ``cctf`` and does not use msgspec: it carries its own minimal
MessagePack codec (arrays, str, bin, uint, bool: the only types the protocol uses) and uses only
``cryptography`` and ``hashlib``. ``tests/unit/test_wire_independent.py`` checks that it agrees with the
reference implementation byte for byte and reason for reason, which is the evidence that the document
is sufficient to write an independent implementation.

Section numbers (§) refer to docs/wire-protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

__all__ = [
    "HYBRID",
    "MAX_ENVELOPE",
    "SUITES",
    "Ballot",
    "Envelope",
    "Key",
    "Reject",
    "ResolverVote",
    "Verdict",
    "VerdictSubscriber",
    "VoteVerifier",
    "VoterRecord",
    "answer_digest",
    "check_name_token",
    "decode_ballot",
    "decode_envelope",
    "decode_name_token",
    "decode_verdict",
    "encode_name_token",
    "is_digest_token",
    "key_id",
    "mp_decode",
    "mp_encode",
    "normalise_name",
    "tbs_bytes",
    "trust_of",
    "verdict_subject",
    "verify_envelope",
    "vote_digest",
    "vote_subject",
]


class Reject(Exception):
    """A message was rejected; ``reason`` is the doc's reason name (§3.3, §5)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _Malformed(Exception):
    """Internal: a structural decode error (mapped to the reason ``malformed``)."""


# --------------------------------------------------------------------------------------------------
# §1 MessagePack: a strict subset (array, str, bin, uint, bool)
# --------------------------------------------------------------------------------------------------

_U64_MAX = (1 << 64) - 1


def mp_encode(obj: Any) -> bytes:
    """Encode ``obj`` in the shortest MessagePack form (§1)."""
    out = bytearray()
    _enc(obj, out)
    return bytes(out)


def _enc(obj: Any, out: bytearray) -> None:
    if obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        if obj < 0 or obj > _U64_MAX:
            raise ValueError("integer out of range")
        if obj <= 0x7F:
            out.append(obj)
        elif obj <= 0xFF:
            out += b"\xcc" + struct.pack(">B", obj)
        elif obj <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", obj)
        elif obj <= 0xFFFFFFFF:
            out += b"\xce" + struct.pack(">I", obj)
        else:
            out += b"\xcf" + struct.pack(">Q", obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        n = len(raw)
        if n <= 31:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += b"\xd9" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xda" + struct.pack(">H", n)
        else:
            out += b"\xdb" + struct.pack(">I", n)
        out += raw
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        n = len(raw)
        if n <= 0xFF:
            out += b"\xc4" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xc5" + struct.pack(">H", n)
        else:
            out += b"\xc6" + struct.pack(">I", n)
        out += raw
    elif isinstance(obj, list | tuple):
        n = len(obj)
        if n <= 15:
            out.append(0x90 | n)
        elif n <= 0xFFFF:
            out += b"\xdc" + struct.pack(">H", n)
        else:
            out += b"\xdd" + struct.pack(">I", n)
        for item in obj:
            _enc(item, out)
    else:
        raise TypeError(f"type not used by the protocol: {type(obj).__name__}")


def mp_decode(data: bytes) -> Any:
    """Decode one MessagePack value; trailing bytes are an error (§1).

    Any valid length prefix and any integer format is accepted (a payload need not be canonical,
    §1); negative integers, nil, floats, maps and other types decode to values that the field
    checks reject, and ext / unused type bytes are an error here."""
    r = _Reader(data)
    value = r.value(0)
    r.end()
    return value


class _Reader:
    """A cursor over MessagePack bytes; every error is :class:`_Malformed`."""

    def __init__(self, data: bytes) -> None:
        self.buf = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise _Malformed("truncated")
        out = bytes(self.buf[self.pos : end])
        self.pos = end
        return out

    def peek(self) -> int:
        if self.pos >= len(self.buf):
            raise _Malformed("truncated")
        return self.buf[self.pos]

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise _Malformed("trailing bytes")

    def array_header(self) -> int:
        b = self.peek()
        if 0x90 <= b <= 0x9F:
            self.pos += 1
            return b & 0x0F
        if b in (0xDC, 0xDD):
            self.pos += 1
            return self.uint(2 if b == 0xDC else 4)
        raise _Malformed("expected an array")

    def is_str(self) -> bool:
        b = self.peek()
        return 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB)

    def value(self, depth: int) -> Any:
        if depth > 8:
            raise _Malformed("nesting too deep")
        b = self.peek()
        self.pos += 1
        if b <= 0x7F:
            return b
        if b >= 0xE0:  # negative fixint
            return b - 0x100
        if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):  # map: decoded only to be rejected
            n = b & 0x0F if b <= 0x8F else self.uint(2 if b == 0xDE else 4)
            return {"map": [self.value(depth + 1) for _ in range(2 * n)]}
        if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
            self.pos -= 1
            n = self.array_header()
            if n > len(self.buf) - self.pos:  # every element takes at least one byte
                raise _Malformed("truncated")
            return [self.value(depth + 1) for _ in range(n)]
        if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
            n = b & 0x1F if b <= 0xBF else self.uint({0xD9: 1, 0xDA: 2, 0xDB: 4}[b])
            try:
                return self.take(n).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Malformed("invalid UTF-8") from exc
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b in (0xC4, 0xC5, 0xC6):
            return self.take(self.uint({0xC4: 1, 0xC5: 2, 0xC6: 4}[b]))
        if b in (0xCA, 0xCB):
            return struct.unpack(">f" if b == 0xCA else ">d", self.take(4 if b == 0xCA else 8))[0]
        if b in (0xCC, 0xCD, 0xCE, 0xCF):
            return self.uint({0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[b])
        if b in (0xD0, 0xD1, 0xD2, 0xD3):
            width = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[b]
            return int.from_bytes(self.take(width), "big", signed=True)
        raise _Malformed(f"MessagePack type 0x{b:02x} is not used by the protocol")


# --------------------------------------------------------------------------------------------------
# Strict field checks (§3, §5). "chars" are Unicode code points; byte lengths are of bin values.
# --------------------------------------------------------------------------------------------------

U63 = (1 << 63) - 1
_IDENT = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_QTYPE = re.compile(r"[A-Z][A-Z0-9]{0,9}")


def _arr(x: Any, n: int, what: str) -> list[Any]:
    if not isinstance(x, list) or len(x) != n:
        raise _Malformed(f"{what}: expected an array of {n}")
    return x


def _uint_f(x: Any, what: str, hi: int = U63, lo: int = 0) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise _Malformed(f"{what}: expected an integer in {lo}..{hi}")
    return x


def _bool_f(x: Any, what: str) -> bool:
    if type(x) is not bool:
        raise _Malformed(f"{what}: expected bool")
    return x


def _str_f(
    x: Any, what: str, max_len: int | None = None, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(x, str):
        raise _Malformed(f"{what}: expected str")
    if max_len is not None and len(x) > max_len:
        raise _Malformed(f"{what}: longer than {max_len} chars")
    if pattern is not None and not pattern.fullmatch(x):
        raise _Malformed(f"{what}: does not match {pattern.pattern}")
    return x


def _enum_f(x: Any, what: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(x, str) or x not in allowed:
        raise _Malformed(f"{what}: not one of {allowed}")
    return x


def _bin_f(x: Any, what: str, min_len: int = 0, max_len: int | None = None) -> bytes:
    if not isinstance(x, bytes):
        raise _Malformed(f"{what}: expected bin")
    if len(x) < min_len or (max_len is not None and len(x) > max_len):
        raise _Malformed(f"{what}: length {len(x)} not in {min_len}..{max_len}")
    return x


def _list_f(x: Any, what: str, cap: int) -> list[Any]:
    if not isinstance(x, list):
        raise _Malformed(f"{what}: expected array")
    if len(x) > cap:
        raise _Malformed(f"{what}: more than {cap} entries")
    return x


def _qname_f(x: Any, what: str) -> str:
    s = _str_f(x, what, 254)
    if not s:
        raise _Malformed(f"{what}: empty")
    return s


def _answer_f(x: Any, what: str) -> tuple[str, ...]:
    return tuple(_str_f(a, f"{what}[]", 512) for a in _list_f(x, what, 64))


# --------------------------------------------------------------------------------------------------
# §2 Subjects and name tokens
# --------------------------------------------------------------------------------------------------

MAX_SUBJECT = 1024
_TOKEN_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def normalise_name(name: str) -> str:
    """§2: non-empty; lower-case; the root is "."; otherwise the body (without one trailing dot) is
    UTF-8, at most 253 octets, in labels of 1-63 octets; the result is the body plus "."."""
    if not name:
        raise ValueError("empty name")
    n = name.lower()
    if n == ".":
        return n
    body = n[:-1] if n.endswith(".") else n
    raw = body.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(raw) > 253:
        raise ValueError("name longer than 253 octets")
    if any(not 1 <= len(label) <= 63 for label in raw.split(b".")):
        raise ValueError("empty label or label longer than 63 octets")
    return body + "."


def _escaped_token(n: str) -> str:
    out = []
    for ch in n[:-1]:
        if ch in _TOKEN_PLAIN:
            out.append(ch)
        elif ch == ".":
            out.append("_")
        else:
            out.extend(f"~{byte:02x}" for byte in ch.encode("utf-8"))
    return "".join(out)


def encode_name_token(name: str) -> str:
    """§2: the escaped form if it has at most 253 characters, else "=" + base32(H(name))."""
    n = normalise_name(name)
    if n == ".":
        return "~2e"
    escaped = _escaped_token(n)
    if len(escaped) <= 253:
        return escaped
    return "=" + base64.b32encode(hashlib.sha256(n.encode("utf-8")).digest()).decode().lower()[:52]


_DIGEST_TOKEN = re.compile(r"=[a-z2-7]{52}")


def is_digest_token(token: str) -> bool:
    """§2: "=" then 52 base32 characters, the last one "a" or "q" (unused bits zero)."""
    return bool(_DIGEST_TOKEN.fullmatch(token)) and token[-1] in "aq"


def check_name_token(token: str) -> None:
    """Raise ValueError unless ``token`` is a valid token of either form."""
    if not is_digest_token(token):
        decode_name_token(token)


def decode_name_token(token: str) -> str:
    """Inverse of the escaped form; rejects (ValueError) any non-canonical or digest token."""
    if token == "~2e":
        return "."
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch in _TOKEN_PLAIN:
            raw += ch.encode()
            i += 1
        elif ch == "_":
            raw += b"."
            i += 1
        elif ch == "~":
            hx = token[i + 1 : i + 3]
            if len(hx) != 2 or any(c not in "0123456789abcdef" for c in hx):
                raise ValueError("bad escape")
            raw.append(int(hx, 16))
            i += 3
        else:
            raise ValueError(f"character {ch!r} not allowed in a name token")
    if not raw:
        raise ValueError("empty token")
    try:
        name = raw.decode("utf-8") + "."
    except UnicodeDecodeError as exc:
        raise ValueError("escape is not UTF-8") from exc
    if encode_name_token(name) != token:
        raise ValueError("token not in canonical form")
    return name


def vote_subject(region: str, agent: str) -> str:
    if not (_IDENT.fullmatch(region) and _IDENT.fullmatch(agent)):
        raise ValueError("bad identifier")
    return f"cctf.v1.vote.{region}.{agent}"


def verdict_subject(region: str, qname: str, qtype: str) -> str:
    if not (_IDENT.fullmatch(region) and _QTYPE.fullmatch(qtype)):
        raise ValueError("bad region or qtype")
    s = f"cctf.v1.verdict.{region}.{encode_name_token(qname)}.{qtype}"
    if len(s.encode()) > MAX_SUBJECT:
        raise ValueError("subject longer than 1024 bytes")
    return s


def parse_vote_subject(s: str) -> tuple[str, str] | None:
    """Return (region, agent), or None if ``s`` is not a valid vote subject."""
    parts = s.split(".")
    if len(s.encode()) > MAX_SUBJECT or len(parts) != 5 or parts[:3] != ["cctf", "v1", "vote"]:
        return None
    if not (_IDENT.fullmatch(parts[3]) and _IDENT.fullmatch(parts[4])):
        return None
    return parts[3], parts[4]


def parse_verdict_subject(s: str) -> tuple[str, str, str, str | None] | None:
    """Return (region, name token, qtype, coordinator or None), or None if ``s`` is not a valid
    DNS verdict subject (6 tokens, or 7 with the coordinator's id last: §2, §5.4)."""
    parts = s.split(".")
    if (
        len(s.encode()) > MAX_SUBJECT
        or len(parts) not in (6, 7)
        or parts[:3] != ["cctf", "v1", "verdict"]
    ):
        return None
    region, token, qtype = parts[3:6]
    coordinator = parts[6] if len(parts) == 7 else None
    if not (_IDENT.fullmatch(region) and _QTYPE.fullmatch(qtype)):
        return None
    if coordinator is not None and not _IDENT.fullmatch(coordinator):
        return None
    try:
        check_name_token(token)
    except ValueError:
        return None
    return region, token, qtype, coordinator


# --------------------------------------------------------------------------------------------------
# §4 Suites, labels, key ids
# --------------------------------------------------------------------------------------------------

ED25519 = "ed25519"
MLDSA65 = "ml-dsa-65"
HYBRID = "hybrid-ed25519-ml-dsa-65"

#: suite id -> (components in signature order, rank)
SUITES: dict[str, tuple[tuple[str, ...], int]] = {
    ED25519: ((ED25519,), 1),
    MLDSA65: ((MLDSA65,), 2),
    HYBRID: ((ED25519, MLDSA65), 3),
}


def label(suite: str, component: str) -> bytes:
    return f"CCTF-v1/{suite}/{component}".encode("ascii")


def key_id(suite: str, public_keys: list[bytes] | tuple[bytes, ...]) -> str:
    h = hashlib.sha256(b"CCTF-kid-v1\x00" + suite.encode("ascii") + b"\x00" + b"".join(public_keys))
    return "k" + h.hexdigest()[:32]


def verify_component(suite: str, component: str, pk: bytes, sig: bytes, tbs: bytes) -> bool:
    lab = label(suite, component)
    try:
        if component == ED25519:
            Ed25519PublicKey.from_public_bytes(pk).verify(sig, lab + b"\x00" + tbs)
        else:
            MLDSA65PublicKey.from_public_bytes(pk).verify(sig, tbs, lab)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Key:
    """One entry of a receiver's trust configuration."""

    suite: str
    public_keys: tuple[bytes, ...]
    role: str  # "agent" or "coordinator"
    principal: str
    region: str

    @property
    def kid(self) -> str:
        return key_id(self.suite, self.public_keys)


def trust_of(*keys: Key) -> dict[str, Key]:
    return {k.kid: k for k in keys}


# --------------------------------------------------------------------------------------------------
# §3 Envelope
# --------------------------------------------------------------------------------------------------

MAX_ENVELOPE = 524_288
MAX_PAYLOAD = 507_904
DOMAIN = "CCTF-ENVELOPE-v1"


@dataclass(frozen=True)
class Envelope:
    v: int
    type: str
    suite: str
    kid: str
    iat: int
    exp: int
    nonce: bytes
    payload: bytes
    sigs: tuple[bytes, ...]  # auth = ["sig", sigs]

    def to_list(self) -> list[Any]:
        return [
            self.v,
            self.type,
            self.suite,
            self.kid,
            self.iat,
            self.exp,
            self.nonce,
            self.payload,
            ["sig", list(self.sigs)],
        ]


def tbs_bytes(env: Envelope, subject: str) -> bytes:
    """§3.1."""
    return mp_encode(
        [
            DOMAIN,
            env.v,
            env.type,
            subject,
            env.suite,
            env.kid,
            env.iat,
            env.exp,
            env.nonce,
            env.payload,
        ]
    )


def decode_envelope(data: bytes) -> Envelope:
    """§3.3 step 2: strict decode, front to back, then the canonical-form check. Raises Reject."""
    try:
        r = _Reader(data)
        if r.array_header() != 9:
            raise _Malformed("envelope: expected an array of 9")
        f = [r.value(1) for _ in range(8)]
        header = (
            _uint_f(f[0], "v", 255),
            _str_f(f[1], "type", 32),
            _str_f(f[2], "suite", 64),
            _str_f(f[3], "kid", 64),
            _uint_f(f[4], "iat"),
            _uint_f(f[5], "exp"),
            _bin_f(f[6], "nonce", 16, 16),
            _bin_f(f[7], "payload", 0, MAX_PAYLOAD),
        )
        auth_at = r.pos
        if r.array_header() < 2:
            raise _Malformed("auth: fewer than 2 elements")
        if not r.is_str() or r.value(2) != "sig":  # the kind is judged before the rest of auth
            raise Reject("auth_kind")
        r.pos = auth_at
        auth = r.value(1)
        r.end()
        a = _arr(auth, 2, "auth")
        sigs = _list_f(a[1], "auth.sigs", 4)
        if not sigs:
            raise _Malformed("auth.sigs: empty")
        env = Envelope(*header, sigs=tuple(_bin_f(s, "sig", 0, 8192) for s in sigs))
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc
    if mp_encode(env.to_list()) != data:
        raise Reject("malformed", "not in canonical form")
    return env


def verify_envelope(
    data: bytes,
    subject: str,
    *,
    expected_type: str,
    expected_role: str,
    trust: dict[str, Key],
    now_ms: int,
    min_suite: str = HYBRID,
) -> tuple[Envelope, Key]:
    """§3.3 steps 1–8. Returns the envelope and the signer's trust entry; raises Reject."""
    if len(data) > MAX_ENVELOPE:
        raise Reject("oversize")
    env = decode_envelope(data)
    if env.v != 1:
        raise Reject("version")
    if env.type != expected_type:
        raise Reject("type")
    if env.suite not in SUITES or SUITES[env.suite][1] < SUITES[min_suite][1]:
        raise Reject("suite")
    key = trust.get(env.kid)
    if key is None or key.role != expected_role:
        raise Reject("unknown_key")
    if key.suite != env.suite:
        raise Reject("suite")
    components = SUITES[env.suite][0]
    if len(env.sigs) != len(components):
        raise Reject("signature", "wrong number of component signatures")
    tbs = tbs_bytes(env, subject)
    for comp, pk, sig in zip(components, key.public_keys, env.sigs, strict=True):
        if not verify_component(env.suite, comp, pk, sig, tbs):
            raise Reject("signature", comp)
    if env.iat > now_ms + 5_000:
        raise Reject("not_yet_valid")
    if not now_ms < env.exp:
        raise Reject("expired")
    if not 0 <= env.exp - env.iat <= 600_000:
        raise Reject("lifetime")
    return env, key


# --------------------------------------------------------------------------------------------------
# §5 Messages
# --------------------------------------------------------------------------------------------------

TRANSPORTS = ("udp", "tcp", "dot", "doh", "doq")
STATUSES = ("answer", "timeout", "servfail", "error")
OUTCOMES = ("trusted", "disputed", "unavailable")
VOTER_STATES = ("agree", "disagree", "unavailable")
DNSSEC_STATES = ("secure", "insecure", "bogus", "indeterminate")
# §5.3 step 14: the DNSSEC states each vote status admits
DNSSEC_FOR_STATUS = {
    "answer": DNSSEC_STATES,
    "servfail": ("bogus", "indeterminate"),
    "timeout": ("indeterminate",),
    "error": ("indeterminate",),
}


def answer_digest(rcode: int, answer: list[str] | tuple[str, ...]) -> bytes:
    return hashlib.sha256(mp_encode([rcode, list(answer)])).digest()


@dataclass(frozen=True)
class ResolverVote:
    agent: str
    region: str
    round: int
    qname: str
    qtype: str
    resolver_id: str
    transport: str
    status: str
    rcode: int
    answer: tuple[str, ...]
    answer_digest: bytes
    ttl: int
    ad: bool
    ede: tuple[int, ...]
    observed_ms: int
    dnssec: str

    def to_list(self) -> list[Any]:
        return [
            self.agent,
            self.region,
            self.round,
            self.qname,
            self.qtype,
            self.resolver_id,
            self.transport,
            self.status,
            self.rcode,
            list(self.answer),
            self.answer_digest,
            self.ttl,
            self.ad,
            list(self.ede),
            self.observed_ms,
            self.dnssec,
        ]

    @classmethod
    def from_list(cls, x: Any) -> ResolverVote:
        f = _arr(x, 16, "ResolverVote")
        return cls(
            agent=_str_f(f[0], "agent", pattern=_IDENT),
            region=_str_f(f[1], "region", pattern=_IDENT),
            round=_uint_f(f[2], "round"),
            qname=_qname_f(f[3], "qname"),
            qtype=_str_f(f[4], "qtype", pattern=_QTYPE),
            resolver_id=_str_f(f[5], "resolver_id", pattern=_IDENT),
            transport=_enum_f(f[6], "transport", TRANSPORTS),
            status=_enum_f(f[7], "status", STATUSES),
            rcode=_uint_f(f[8], "rcode", 4095),
            answer=_answer_f(f[9], "answer"),
            answer_digest=_bin_f(f[10], "answer_digest", 0, 32),
            ttl=_uint_f(f[11], "ttl", (1 << 31) - 1),
            ad=_bool_f(f[12], "ad"),
            ede=tuple(_uint_f(e, "ede[]", 65535) for e in _list_f(f[13], "ede", 8)),
            observed_ms=_uint_f(f[14], "observed_ms"),
            dnssec=_enum_f(f[15], "dnssec", DNSSEC_STATES),
        )


def vote_digest(vote: ResolverVote) -> bytes:
    return hashlib.sha256(b"CCTF-vote-v1\x00" + mp_encode(vote.to_list())).digest()


@dataclass(frozen=True)
class Ballot:
    agent: str
    region: str
    round: int
    issued_ms: int
    votes: tuple[ResolverVote, ...]

    @classmethod
    def from_list(cls, x: Any) -> Ballot:
        f = _arr(x, 5, "Ballot")
        return cls(
            agent=_str_f(f[0], "agent", pattern=_IDENT),
            region=_str_f(f[1], "region", pattern=_IDENT),
            round=_uint_f(f[2], "round"),
            issued_ms=_uint_f(f[3], "issued_ms"),
            votes=tuple(ResolverVote.from_list(v) for v in _list_f(f[4], "votes", 4096)),
        )


@dataclass(frozen=True)
class VoterRecord:
    voter: str
    state: str
    answer_digest: bytes

    @classmethod
    def from_list(cls, x: Any) -> VoterRecord:
        f = _arr(x, 3, "VoterRecord")
        return cls(
            voter=_str_f(f[0], "voter", 129),
            state=_enum_f(f[1], "state", VOTER_STATES),
            answer_digest=_bin_f(f[2], "voter.answer_digest", 0, 32),
        )


@dataclass(frozen=True)
class Verdict:
    qname: str
    qtype: str
    round: int
    outcome: str
    rcode: int
    answer: tuple[str, ...]
    answer_digest: bytes
    voters: tuple[VoterRecord, ...]
    k: int
    n: int
    vote_digests: tuple[bytes, ...]
    decided_early: bool
    issued_ms: int
    expires_ms: int
    coordinator: str
    seq: int
    dnssec: str
    basis_round: int
    basis_ms: int

    @classmethod
    def from_list(cls, x: Any) -> Verdict:
        f = _arr(x, 19, "Verdict")
        return cls(
            qname=_qname_f(f[0], "qname"),
            qtype=_str_f(f[1], "qtype", pattern=_QTYPE),
            round=_uint_f(f[2], "round"),
            outcome=_enum_f(f[3], "outcome", OUTCOMES),
            rcode=_uint_f(f[4], "rcode", 4095),
            answer=_answer_f(f[5], "answer"),
            answer_digest=_bin_f(f[6], "answer_digest", 0, 32),
            voters=tuple(VoterRecord.from_list(v) for v in _list_f(f[7], "voters", 64)),
            k=_uint_f(f[8], "k", 64, lo=1),
            n=_uint_f(f[9], "n", 64, lo=1),
            vote_digests=tuple(
                _bin_f(d, "vote_digests[]", 32, 32) for d in _list_f(f[10], "vote_digests", 64)
            ),
            decided_early=_bool_f(f[11], "decided_early"),
            issued_ms=_uint_f(f[12], "issued_ms"),
            expires_ms=_uint_f(f[13], "expires_ms"),
            coordinator=_str_f(f[14], "coordinator", pattern=_IDENT),
            seq=_uint_f(f[15], "seq"),
            dnssec=_enum_f(f[16], "dnssec", DNSSEC_STATES),
            basis_round=_uint_f(f[17], "basis_round"),
            basis_ms=_uint_f(f[18], "basis_ms"),
        )


def decode_ballot(payload: bytes) -> Ballot:
    """Strict payload decode; raises Reject("malformed")."""
    try:
        return Ballot.from_list(mp_decode(payload))
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc


def decode_verdict(payload: bytes) -> Verdict:
    """Strict payload decode; raises Reject("malformed")."""
    try:
        return Verdict.from_list(mp_decode(payload))
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc


# --------------------------------------------------------------------------------------------------
# §5.3 / §5.4 receivers
# --------------------------------------------------------------------------------------------------


@dataclass
class VoteVerifier:
    """The coordinator's checks on a ballot: §3.3 steps 1–8, then §5.3 steps 9–14."""

    trust: dict[str, Key]
    round_ms: int = 1_000
    max_round_lag: int = 2
    min_suite: str = HYBRID
    seen: dict[tuple[str, bytes], bytes] = field(default_factory=dict)  # -> SHA-256 of the bytes

    def verify(self, data: bytes, subject: str, now_ms: int) -> Ballot:
        env, key = verify_envelope(
            data,
            subject,
            expected_type="ballot",
            expected_role="agent",
            trust=self.trust,
            now_ms=now_ms,
            min_suite=self.min_suite,
        )
        parsed = parse_vote_subject(subject)  # 9
        if parsed is None:
            raise Reject("subject")
        digest = hashlib.sha256(data).digest()
        first = self.seen.setdefault((env.kid, env.nonce), digest)  # 10
        if first != digest:
            raise Reject("replay")  # another message reusing the nonce
        if first is not digest:
            raise Reject("duplicate")  # the same message again
        ballot = decode_ballot(env.payload)  # 11
        s_region, s_agent = parsed  # 12
        if not s_region == key.region == ballot.region:
            raise Reject("region_mismatch")
        if not s_agent == key.principal == ballot.agent:
            raise Reject("principal_mismatch")
        current = now_ms // self.round_ms  # 13
        if not current - self.max_round_lag <= ballot.round <= current + 1:
            raise Reject("round")
        for v in ballot.votes:  # 14
            if v.region != ballot.region:
                raise Reject("region_mismatch")
            if v.agent != ballot.agent:
                raise Reject("principal_mismatch")
            if v.round != ballot.round:
                raise Reject("round")
            want = answer_digest(v.rcode, v.answer) if v.status == "answer" else b""
            if v.answer_digest != want:
                raise Reject("malformed", "answer_digest")
            if v.dnssec not in DNSSEC_FOR_STATUS[v.status]:
                raise Reject("malformed", "dnssec state not allowed with the status")
        return ballot


@dataclass
class VerdictSubscriber:
    """A subscriber's checks on a verdict: §3.3 steps 1–8, then §5.4 steps 9–15."""

    trust: dict[str, Key]
    region: str | None = None
    min_suite: str = HYBRID
    round_ms: int = 1_000
    max_skew_ms: int = 5_000
    max_decision_delay_ms: int = 60_000
    max_lkg_lifetime_ms: int = 30_000
    max_lkg_staleness_ms: int = 900_000
    accept_lkg: bool = True
    last: dict[tuple[str, str, str], tuple[int, bytes]] = field(default_factory=dict)

    def open(self, data: bytes, subject: str, now_ms: int) -> tuple[Any, Key]:
        """§3.3 steps 1–8 (a batch-signed subscriber replaces this, see independent_tlog)."""
        return verify_envelope(
            data,
            subject,
            expected_type="verdict",
            expected_role="coordinator",
            trust=self.trust,
            now_ms=now_ms,
            min_suite=self.min_suite,
        )

    def verify(self, data: bytes, subject: str, now_ms: int) -> Verdict:
        env, key = self.open(data, subject, now_ms)
        parsed = parse_verdict_subject(subject)  # 9
        if parsed is None:
            raise Reject("subject")
        s_region, s_token, s_qtype, s_coordinator = parsed
        if self.region is not None and s_region != self.region:
            raise Reject("region_mismatch")
        v = decode_verdict(env.payload)  # 10
        try:  # 11
            qname = normalise_name(v.qname)
        except ValueError as exc:
            raise Reject("malformed", "qname") from exc
        if qname != v.qname:
            raise Reject("malformed", "qname not normalised")
        if (encode_name_token(qname), v.qtype) != (s_token, s_qtype):
            raise Reject("subject")
        if v.coordinator != key.principal:  # 12
            raise Reject("principal_mismatch")
        if s_coordinator is not None and s_coordinator != key.principal:
            raise Reject("principal_mismatch")
        _check_verdict_structure(v)  # 13
        # 14: times, seq and round against the envelope and the clock
        if v.issued_ms != env.iat or v.expires_ms > env.exp:
            raise Reject("lifetime", "verdict validity outside its envelope")
        if not now_ms < v.expires_ms:
            raise Reject("expired")
        earliest = min(env.iat, now_ms)
        if not env.iat * 1000 <= v.seq < (earliest + self.max_skew_ms) * 1000:
            raise Reject("sequence")
        if v.round * self.round_ms > earliest + self.max_skew_ms:
            raise Reject("round", "round starts after its issue time")
        if env.iat >= (v.round + 1) * self.round_ms + self.max_decision_delay_ms:
            raise Reject("round", "round ended too long before its issue time")
        lkg = v.basis_round != v.round  # 14e (13 made both basis fields agree on this)
        if lkg and v.expires_ms - v.issued_ms > self.max_lkg_lifetime_ms:
            raise Reject("lifetime", "LKG attestation lives too long")
        if lkg and v.expires_ms - v.basis_ms > self.max_lkg_staleness_ms:
            raise Reject("stale", "LKG attestation usable beyond its cap")
        if lkg and not (
            v.basis_round * self.round_ms <= v.basis_ms + self.max_skew_ms
            and v.basis_ms < (v.basis_round + 1) * self.round_ms + self.max_decision_delay_ms
        ):
            raise Reject("round", "LKG basis outside its round's window")
        if lkg and not self.accept_lkg:  # policy
            raise Reject("lkg")
        slot = (v.coordinator, qname, v.qtype)  # 15
        digest = hashlib.sha256(data).digest()
        prev = self.last.get(slot)
        if prev == (v.seq, digest):  # the same signed statement again: accepted, no state change
            return v
        if prev is not None and v.seq <= prev[0]:
            raise Reject("rollback")
        self.last[slot] = (v.seq, digest)
        return v


def _check_verdict_structure(v: Verdict) -> None:
    def bad(detail: str) -> Reject:
        return Reject("malformed", detail)

    if not v.k <= v.n < 2 * v.k:
        raise bad("quorum")
    if len(v.voters) != v.n or len({r.voter for r in v.voters}) != v.n:
        raise bad("voters")
    if not v.issued_ms < v.expires_ms:
        raise bad("issued_ms")
    if v.outcome == "trusted":
        if v.answer_digest != answer_digest(v.rcode, v.answer):
            raise bad("answer_digest")
        agree = [r for r in v.voters if r.state == "agree"]
        if any(r.answer_digest not in (b"", v.answer_digest) for r in agree) or len(agree) < v.k:
            raise bad("agreeing voters")
        if v.dnssec == "bogus":
            raise bad("a trusted verdict cannot be bogus")
    elif v.answer or v.rcode != 0 or v.answer_digest:
        raise bad("answer in a verdict that is not trusted")
    elif v.dnssec != "indeterminate":
        raise bad("dnssec state in a verdict that is not trusted")
    if (v.basis_round == v.round) != (v.basis_ms == v.issued_ms):
        raise bad("basis round and time disagree on freshness")
    if v.basis_round > v.round or v.basis_ms > v.issued_ms:
        raise bad("basis newer than the verdict")
    if v.basis_round != v.round and v.outcome != "trusted":
        raise bad("LKG attestation that is not trusted")
