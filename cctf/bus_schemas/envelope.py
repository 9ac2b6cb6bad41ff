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
    auth     array  the authenticator: ["sig", [sig, ...]] (one signature per suite component);
                    the first element names the kind, so further kinds (e.g. a signed Merkle tree
                    head with an inclusion proof) can be added without a new protocol version.

The signed bytes bind the NATS subject, which is *not* inside the envelope, so a message replayed onto
another subject fails verification::

    tbs = msgpack(["CCTF-ENVELOPE-v1", v, type, subject, suite, kid, iat, exp, nonce, payload])

:func:`verify_envelope` performs the checks common to every message type, in numbered steps; each
failure raises :class:`Rejected` with a machine-readable :class:`Reason`. :func:`open_signed` is the one
"open a signed message" step both verifiers (coordinator: ballots; subscriber: verdicts) start with:
steps 1–8, then step 9, the subject is of the kind the message type travels on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.subjects import Kind, ParsedSubject, SubjectError, parse_subject
from cctf.crypto.errors import KeyError_, SignatureError, SuiteError
from cctf.crypto.keys import SigningKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

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


class Rejected(Exception):
    """A message failed verification. ``reason`` is stable; ``detail`` is for humans."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


Signature = Annotated[bytes, msgspec.Meta(max_length=L.MAX_SIGNATURE_BYTES)]


class SigAuth(msgspec.Struct, tag="sig", array_like=True, frozen=True, forbid_unknown_fields=True):
    """Authenticator kind ``sig``: one signature per suite component, in component order."""

    sigs: Annotated[list[Signature], msgspec.Meta(min_length=1, max_length=L.MAX_SIGNATURES)]


Authenticator = SigAuth


class Envelope(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
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


def decode_envelope(data: bytes) -> Envelope:
    """Steps 1–2: size cap, then strict decoding. Raises :class:`Rejected`."""
    if len(data) > L.MAX_ENVELOPE_BYTES:
        raise Rejected(Reason.OVERSIZE, f"{len(data)} bytes exceeds {L.MAX_ENVELOPE_BYTES}")
    try:
        env = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        if "`$[8][0]`" in str(exc):
            raise Rejected(Reason.AUTH_KIND, f"unsupported authenticator: {exc}") from None
        raise Rejected(Reason.MALFORMED, f"invalid envelope: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 in a str field
        raise Rejected(Reason.MALFORMED, f"undecodable envelope: {exc}") from None
    # One envelope, one encoding: e.g. an int re-tagged uint64 -> int64 decodes to the same value.
    if _ENCODER.encode(env) != data:
        raise Rejected(Reason.MALFORMED, "envelope is not in canonical encoding")
    return env


@dataclass(frozen=True)
class TimePolicy:
    """Freshness rules for envelopes (all in ms)."""

    max_skew_ms: int = 5_000  # how far in the future iat may be
    max_lifetime_ms: int = 10 * 60_000  # exp - iat may not exceed this


@dataclass(frozen=True)
class VerifiedEnvelope:
    envelope: Envelope
    signer: TrustEntry


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
) -> VerifiedEnvelope:
    """Verify everything about an envelope that does not depend on its payload.

    1. size cap; 2. strict decode; 3. protocol version; 4. message type; 5. suite policy
    (anti-downgrade); 6. known key id for ``role``, and the key's suite equals the claimed suite;
    7. every component signature over the to-be-signed bytes, which bind ``subject``;
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
    try:
        signer.keys.verify(envelope_tbs(env, subject), env.auth.sigs)  # 7
    except SignatureError as exc:
        raise Rejected(Reason.SIGNATURE, str(exc)) from None
    if env.iat > now_ms + time_policy.max_skew_ms:  # 8
        raise Rejected(Reason.NOT_YET_VALID, f"issued {env.iat - now_ms} ms in the future")
    if now_ms >= env.exp:
        raise Rejected(Reason.EXPIRED, f"expired {now_ms - env.exp} ms ago")
    if env.exp - env.iat > time_policy.max_lifetime_ms or env.exp < env.iat:
        raise Rejected(Reason.LIFETIME, f"lifetime {env.exp - env.iat} ms is out of bounds")
    return VerifiedEnvelope(env, signer)


#: The subject kind each message type travels on (step 9).
SUBJECT_KIND: Final[dict[MessageType, Kind]] = {
    MessageType.BALLOT: Kind.VOTE,
    MessageType.VERDICT: Kind.VERDICT,
    MessageType.EVIDENCE: Kind.EVIDENCE,
    MessageType.IDENTITY: Kind.VERDICT,
    MessageType.SAFEMODE: Kind.CONTROL,
    MessageType.SAFEMODE_COMMAND: Kind.OPERATOR,
}


@dataclass(frozen=True)
class OpenedMessage:
    """A message that passed :func:`open_signed`: its envelope, signer and parsed subject."""

    envelope: Envelope
    signer: TrustEntry
    subject: ParsedSubject


def open_signed(
    data: bytes,
    subject: str,
    *,
    expected_type: MessageType,
    role: Role,
    trust: TrustConfig,
    policy: SuitePolicy,
    now_ms: int,
    time_policy: TimePolicy = TimePolicy(),
) -> OpenedMessage:
    """Open a signed message received on ``subject``: steps 1–8 (:func:`verify_envelope`), then

    9. ``subject`` parses (§2) and is of the kind ``expected_type`` travels on (ballots and evidence
       carry an agent, verdicts a name token and a qtype, identity verdicts a subject token and an
       identity kind) [``subject``].

    The payload is not decoded: that and every type-specific step is the caller's.
    """
    checked = verify_envelope(  # 1-8
        data,
        subject,
        expected_type=expected_type,
        role=role,
        trust=trust,
        policy=policy,
        now_ms=now_ms,
        time_policy=time_policy,
    )
    try:  # 9
        parsed = parse_subject(subject)
    except SubjectError as exc:
        raise Rejected(Reason.SUBJECT, str(exc)) from None
    kind = SUBJECT_KIND[expected_type]
    if kind is Kind.VOTE or kind is Kind.EVIDENCE:
        complete = parsed.agent is not None
    elif expected_type is MessageType.IDENTITY:
        complete = parsed.token is not None and parsed.identity_kind is not None
    elif kind is Kind.VERDICT:
        complete = parsed.token is not None and parsed.qtype is not None
    else:  # control / operator subjects carry only the region
        complete = True
    if parsed.kind is not kind or not complete:
        raise Rejected(Reason.SUBJECT, f"{subject!r} is not a {kind.value} subject")
    return OpenedMessage(checked.envelope, checked.signer, parsed)
