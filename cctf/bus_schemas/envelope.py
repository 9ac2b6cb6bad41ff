"""The signed envelope: every message on the bus travels inside one.

Wire form (MessagePack array, fields in this order)::

    [v, type, suite, kid, iat, exp, nonce, payload, auth]

    v        int    protocol version, 1
    type     str    "ballot" | "verdict" | "evidence" | "identity"
    suite    str    signature suite id (cctf.crypto.suites)
    kid      str    signer's key id
    iat      int    issued-at, ms since the Unix epoch
    exp      int    expiry, ms since the Unix epoch
    nonce    bin    16 random bytes
    payload  bin    the MessagePack-encoded message of ``type``
    auth     array  the authenticator, its first element names the kind:
                    ["sig", [sig, ...]]  one signature per suite component;
                    ["tlog", subjects, index, proof, [size, root]]  batch signing: the message is
                    leaf ``index`` of its signer's transparency log, ``proof`` its RFC 9162
                    inclusion proof in the tree of ``size`` leaves whose signed checkpoint (a
                    C2SP signed note, published apart on ``cctf.v1.head...``) has ``root``.

The signed bytes bind the NATS subject, which is *not* inside the envelope, so a message replayed onto
another subject fails verification::

    tbs = msgpack(["CCTF-ENVELOPE-v1", v, type, subject, suite, kid, iat, exp, nonce, payload])

:func:`verify_envelope` performs the checks common to every message type, in numbered steps; each
failure raises :class:`Rejected` with a machine-readable :class:`Reason`. :func:`open_signed` is the one
"open a signed message" step both verifiers (coordinator: ballots; subscriber: verdicts) start with:
steps 1–8, then step 9, the subject is of the kind the message type travels on.

The ``"tlog"`` authenticator (wire-protocol.md §3.2): :class:`TlogAuth` is its codec (decoded in step
2, with its structural rules) and :func:`log_entry_bytes` the log entry a batch-signed message is
leaf of; the producer is ``cctf.coordinator.pipeline.batchsign``. Step 7 for ``"tlog"`` is
:func:`verify_tlog` against the receiver's injected :class:`~cctf.bus_schemas.tlog.HeadLookup` (the
verified heads, :class:`cctf.client.heads.HeadCache`; reasons ``subject``, ``head_unknown``,
``head_mismatch``, ``proof``); a receiver with no head lookup (the coordinator's ballot path)
refuses ``"tlog"`` as ``auth_kind``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.tlog import HeadLookup, LogPosition
from cctf.crypto.errors import KeyError_, SignatureError, SuiteError
from cctf.crypto.keys import SigningKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.translog.errors import ProofError
from cctf.translog.merkle import leaf_hash, node_hash, verify_inclusion

PROTOCOL_VERSION: Final = 1
TBS_DOMAIN: Final = "CCTF-ENVELOPE-v1"


class Reason(StrEnum):
    """Why a message was rejected (also the metric label)."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    VERSION = "version"
    TYPE = "type"
    SUBJECT = "subject"
    AUTH_KIND = "auth_kind"
    SUITE = "suite"
    UNKNOWN_KEY = "unknown_key"
    SIGNATURE = "signature"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    LIFETIME = "lifetime"
    REPLAY = "replay"
    REGION = "region_mismatch"
    PRINCIPAL = "principal_mismatch"
    ROUND = "round"
    VOTER = "unknown_voter"
    ROLLBACK = "rollback"
    SEQUENCE = "sequence"
    STALE = "stale"
    BUNDLE_ROLLBACK = "bundle_rollback"  # identity verdicts: spiffe_sequence went backwards
    LKG = "lkg"  # an LKG attestation refused by the subscriber's policy (accept_lkg=False)
    COORDINATOR_QUORUM = "coordinator_quorum"  # fewer than k configured coordinators agree (k-of-m)
    CERT_UNLOGGED = "cert_unlogged"  # ca gate: no certificate for the signer's key in the CA log
    CERT_EXPIRED = "cert_expired"  # ca gate: every logged certificate of the key is out of validity
    CERT_REVOKED = "cert_revoked"  # ca gate: the key's only valid certificates are revoked
    HEAD_UNKNOWN = "head_unknown"  # "tlog": no verified checkpoint of (kid, size) is known
    HEAD_MISMATCH = "head_mismatch"  # "tlog": the verified checkpoint has another root
    PROOF = "proof"  # "tlog": the inclusion proof does not verify
    SPLIT_VIEW = "split_view"  # a log showed two views (cctf.client.heads.SplitViewError)
    DUPLICATE = "duplicate"  # the same message again (same nonce AND envelope digest): no replay


class Rejected(Exception):
    """A message failed verification. ``reason`` is stable; ``detail`` is for humans."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


Signature = Annotated[bytes, msgspec.Meta(max_length=L.MAX_SIGNATURE_BYTES)]


class SigAuth(
    msgspec.Struct, tag="sig", array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """Authenticator kind ``sig``: one signature per suite component, in component order."""

    sigs: Annotated[list[Signature], msgspec.Meta(min_length=1, max_length=L.MAX_SIGNATURES)]


#: A SHA-256 hash (a Merkle tree node or root).
Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
#: A subject named inside a ``"tlog"`` authenticator (a valid subject is ASCII, so chars = bytes).
TlogSubject = Annotated[str, msgspec.Meta(min_length=1, max_length=L.MAX_SUBJECT_BYTES)]
MAX_TLOG_SUBJECTS: Final = 16
MAX_PROOF_HASHES: Final = 64  # = cctf.translog.merkle.MAX_PROOF_HASHES
MAX_TREE_SIZE: Final = 2**63 - 1


class TlogHead(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """``[size, root]``: the tree head an inclusion proof is against."""

    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_TREE_SIZE)]
    root: Hash32


class TlogAuth(
    msgspec.Struct, tag="tlog", array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """Authenticator kind ``tlog`` (wire-protocol.md §3.2): the message is leaf ``index`` of its
    signer's log; ``subjects`` is every subject this same message is published on."""

    subjects: Annotated[list[TlogSubject], msgspec.Meta(min_length=1, max_length=MAX_TLOG_SUBJECTS)]
    index: Annotated[int, msgspec.Meta(ge=0, le=MAX_TREE_SIZE)]
    proof: Annotated[list[Hash32], msgspec.Meta(max_length=MAX_PROOF_HASHES)]
    head: TlogHead


Authenticator = SigAuth | TlogAuth

LOG_ENTRY_DOMAIN: Final = "CCTF-LOG-ENTRY-v1"


class Envelope(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    v: Annotated[int, msgspec.Meta(ge=0, le=255)]
    type: Annotated[str, msgspec.Meta(max_length=32)]
    suite: Annotated[str, msgspec.Meta(max_length=64)]
    kid: Annotated[str, msgspec.Meta(max_length=L.MAX_ID_CHARS)]
    iat: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    exp: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    nonce: Annotated[bytes, msgspec.Meta(min_length=L.NONCE_BYTES, max_length=L.NONCE_BYTES)]
    payload: Annotated[bytes, msgspec.Meta(max_length=L.MAX_PAYLOAD_BYTES)]
    auth: Authenticator


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Envelope)


def tbs_bytes(
    *,
    v: int,
    type: str,
    subject: str,
    suite: str,
    kid: str,
    iat: int,
    exp: int,
    nonce: bytes,
    payload: bytes,
) -> bytes:
    """The exact bytes every signature covers."""
    return _ENCODER.encode([TBS_DOMAIN, v, type, subject, suite, kid, iat, exp, nonce, payload])


def log_entry_bytes(
    *,
    v: int,
    type: str,
    subjects: list[str],
    suite: str,
    kid: str,
    iat: int,
    exp: int,
    nonce: bytes,
    payload: bytes,
) -> bytes:
    """The transparency-log entry of a ``"tlog"``-authenticated message (§3.2): like ``tbs`` but
    with the list of every subject it is published on; its leaf hash is ``SHA-256(0x00 || entry)``.
    """
    return _ENCODER.encode(
        [LOG_ENTRY_DOMAIN, v, type, subjects, suite, kid, iat, exp, nonce, payload]
    )


def envelope_log_entry(env: Envelope) -> bytes:
    """The log entry of an envelope whose authenticator is ``"tlog"``."""
    if not isinstance(env.auth, TlogAuth):
        raise ValueError("only a tlog-authenticated envelope is a log entry")
    return log_entry_bytes(
        v=env.v,
        type=env.type,
        subjects=env.auth.subjects,
        suite=env.suite,
        kid=env.kid,
        iat=env.iat,
        exp=env.exp,
        nonce=env.nonce,
        payload=env.payload,
    )


def envelope_tbs(env: Envelope, subject: str) -> bytes:
    return tbs_bytes(
        v=env.v,
        type=env.type,
        subject=subject,
        suite=env.suite,
        kid=env.kid,
        iat=env.iat,
        exp=env.exp,
        nonce=env.nonce,
        payload=env.payload,
    )


def seal(
    key: SigningKey,
    subject: str,
    msg_type: MessageType,
    payload: bytes,
    *,
    now_ms: int,
    lifetime_ms: int,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``payload`` for ``subject`` and return the encoded envelope."""
    if len(payload) > L.MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {L.MAX_PAYLOAD_BYTES}")
    nonce = os.urandom(L.NONCE_BYTES) if nonce is None else nonce
    exp = now_ms + lifetime_ms
    tbs = tbs_bytes(
        v=PROTOCOL_VERSION,
        type=msg_type.value,
        subject=subject,
        suite=key.suite.value,
        kid=key.kid,
        iat=now_ms,
        exp=exp,
        nonce=nonce,
        payload=payload,
    )
    env = Envelope(
        v=PROTOCOL_VERSION,
        type=msg_type.value,
        suite=key.suite.value,
        kid=key.kid,
        iat=now_ms,
        exp=exp,
        nonce=nonce,
        payload=payload,
        auth=SigAuth(list(key.sign(tbs))),
    )
    return _ENCODER.encode(env)


def encode_envelope(env: Envelope) -> bytes:
    return _ENCODER.encode(env)


def _skip(data: bytes, pos: int) -> int:
    """The position after the msgpack uint, str or bin at ``pos`` (the types of fields 0-7)."""
    b = data[pos]
    if b <= 0x7F:
        return pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    if b in (0xCC, 0xCD, 0xCE, 0xCF):
        return pos + 1 + (1 << (b - 0xCC))
    if b in (0xD9, 0xC4):
        return pos + 2 + data[pos + 1]
    if b in (0xDA, 0xC5):
        return pos + 3 + int.from_bytes(data[pos + 1 : pos + 3])
    if b in (0xDB, 0xC6):
        return pos + 5 + int.from_bytes(data[pos + 1 : pos + 5])
    raise IndexError("not a uint, str or bin")


def _auth_has_kind(data: bytes) -> bool:
    """Whether ``auth`` is an array of at least 2 elements by its header (§3.2: a shorter one is
    ``malformed`` whatever its first element; what follows the kind may be truncated). Only asked
    once fields 0-7 decoded and decoding failed at the kind."""
    if data[:1] != b"\x99":  # not the canonical 9-element header: judged by the kind alone
        return True
    try:
        pos = 1  # the envelope's fixarray header
        for _ in range(8):
            pos = _skip(data, pos)
        b = data[pos]
        if 0x90 <= b <= 0x9F:
            n = b & 0x0F
        elif b == 0xDC:
            n = int.from_bytes(data[pos + 1 : pos + 3])
        elif b == 0xDD:
            n = int.from_bytes(data[pos + 1 : pos + 5])
        else:
            return False
    except IndexError:
        return False
    return n >= 2


def decode_envelope(data: bytes) -> Envelope:
    """Steps 1–2: size cap, then strict decoding. Raises :class:`Rejected`."""
    if len(data) > L.MAX_ENVELOPE_BYTES:
        raise Rejected(Reason.OVERSIZE, f"{len(data)} bytes exceeds {L.MAX_ENVELOPE_BYTES}")
    try:
        env = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        if "`$[8][0]`" in str(exc) and _auth_has_kind(data):
            raise Rejected(Reason.AUTH_KIND, f"unsupported authenticator: {exc}") from None
        raise Rejected(Reason.MALFORMED, f"invalid envelope: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 in a str field
        raise Rejected(Reason.MALFORMED, f"undecodable envelope: {exc}") from None
    # One envelope, one encoding: e.g. an int re-tagged uint64 -> int64 decodes to the same value.
    if _ENCODER.encode(env) != data:
        raise Rejected(Reason.MALFORMED, "envelope is not in canonical encoding")
    if isinstance(env.auth, TlogAuth) and len(set(env.auth.subjects)) != len(env.auth.subjects):
        raise Rejected(Reason.MALFORMED, "a tlog authenticator lists a subject twice")
    return env


@dataclass(frozen=True)
class TimePolicy:
    """Freshness rules for envelopes (all in ms)."""

    max_skew_ms: int = 5_000  # how far in the future iat may be
    max_lifetime_ms: int = 10 * 60_000  # exp - iat may not exceed this


class VerifiedEnvelope(msgspec.Struct, frozen=True, gc=False):
    # a struct: built in C, untracked by the cyclic GC (one per verified message, issue #9)
    envelope: Envelope
    signer: TrustEntry
    log: LogPosition | None = None  # where a "tlog" message sits in its signer's log


def verify_tlog(env: Envelope, auth: TlogAuth, subject: str, heads: HeadLookup) -> LogPosition:
    """Step 7 for ``"tlog"`` (wire-protocol.md §3.2.1): (a) ``subject`` is one of
    ``auth.subjects`` [``subject``]; (b) the verified checkpoint of ``(kid, head.size)`` is known to
    ``heads`` [``head_unknown``] and its root equals ``head.root`` [``head_mismatch``]; (c) the
    inclusion proof of the leaf ``SHA-256(0x00 || entry)`` at ``index`` verifies against it
    (RFC 9162 §2.1.3.2) [``proof``]."""
    if subject not in auth.subjects:  # a
        raise Rejected(Reason.SUBJECT, f"{subject!r} is not among the message's tlog subjects")
    size = auth.head.size
    root = heads.verified_root(env.kid, size)  # b
    if root is None:
        raise Rejected(Reason.HEAD_UNKNOWN, f"no verified head of size {size} for key {env.kid}")
    if root != auth.head.root:
        raise Rejected(
            Reason.HEAD_MISMATCH,
            f"the verified head of size {size} for key {env.kid} has another root",
        )
    leaf = leaf_hash(envelope_log_entry(env))
    # a receiver's memoised verify_inclusion (cctf.client.inclusion: the same proofs accepted), or
    # a memo of H(0x01||l||r), if it has one
    fused = getattr(heads, "verify_inclusion", None)
    try:  # c
        if fused is not None:
            fused(leaf, auth.index, size, auth.proof, root)
        else:
            node = getattr(heads, "node_hash", node_hash)
            verify_inclusion(leaf, auth.index, size, auth.proof, root, node)
    except ProofError as exc:
        raise Rejected(Reason.PROOF, str(exc)) from None
    return LogPosition(env.kid, auth.index, size, root)


def tlog_head_of(data: bytes) -> tuple[str, int] | None:
    """``(kid, head size)`` of a decodable ``"tlog"`` envelope (what a receiver fetches when step 7
    says ``head_unknown``), else ``None``. Never raises."""
    try:
        env = decode_envelope(data)
    except Rejected:
        return None
    return (env.kid, env.auth.head.size) if isinstance(env.auth, TlogAuth) else None


def verify_envelope(
    data: bytes,
    subject: str,
    *,
    expected_type: MessageType,
    role: Role,
    trust: TrustConfig,
    policy: SuitePolicy,
    now_ms: int,
    time_policy: TimePolicy = TimePolicy(),
    heads: HeadLookup | None = None,
) -> VerifiedEnvelope:
    """Verify everything about an envelope that does not depend on its payload.

    1. size cap; 2. strict decode; 3. protocol version; 4. message type; 5. suite policy
    (anti-downgrade); 6. known key id for ``role``, and the key's suite equals the claimed suite;
    7. ``"sig"``: every component signature over the to-be-signed bytes, which bind ``subject``;
    ``"tlog"`` (only with ``heads``, else [``auth_kind``]): :func:`verify_tlog`, the log entry
    (whose subjects list binds ``subject``) is included in a checkpoint ``heads`` verified;
    8. time window: ``iat ≤ now + skew``, ``now < exp``, ``exp - iat ≤ max lifetime``.

    Replay, region pinning and payload checks are the caller's (they need state or the payload).
    """
    env = decode_envelope(data)  # 1, 2
    if env.v != PROTOCOL_VERSION:  # 3
        raise Rejected(Reason.VERSION, f"protocol version {env.v} is not {PROTOCOL_VERSION}")
    if env.type != expected_type.value:  # 4
        raise Rejected(Reason.TYPE, f"message type {env.type!r}, expected {expected_type.value!r}")
    try:
        suite = policy.check(env.suite)  # 5
    except SuiteError as exc:
        raise Rejected(Reason.SUITE, str(exc)) from None
    try:
        signer = trust.get(env.kid, role)  # 6
    except KeyError_ as exc:
        raise Rejected(Reason.UNKNOWN_KEY, str(exc)) from None
    if signer.keys.suite is not suite:
        raise Rejected(Reason.SUITE, f"key {env.kid} is a {signer.keys.suite.value} key")
    position = None
    if isinstance(env.auth, TlogAuth):  # 7 ("tlog")
        if heads is None:
            raise Rejected(Reason.AUTH_KIND, f"{env.type} messages are not batch-signed here")
        position = verify_tlog(env, env.auth, subject, heads)
    else:
        try:
            signer.keys.verify(envelope_tbs(env, subject), env.auth.sigs)  # 7 ("sig")
        except SignatureError as exc:
            raise Rejected(Reason.SIGNATURE, str(exc)) from None
    if env.iat > now_ms + time_policy.max_skew_ms:  # 8
        raise Rejected(Reason.NOT_YET_VALID, f"issued {env.iat - now_ms} ms in the future")
    if now_ms >= env.exp:
        raise Rejected(Reason.EXPIRED, f"expired {now_ms - env.exp} ms ago")
    if env.exp - env.iat > time_policy.max_lifetime_ms or env.exp < env.iat:
        raise Rejected(Reason.LIFETIME, f"lifetime {env.exp - env.iat} ms is out of bounds")
    return VerifiedEnvelope(env, signer, position)
