"""Identity evidence and identity verdicts on the wire (MessagePack arrays, strict typed decoding).

Agents observe key material (a trust domain's SPIFFE bundle, an OIDC issuer's JWKS) and workload TLS
endpoints (the X.509-SVID they present) and publish **metadata only** about them: digests, SPIFFE IDs,
validity windows, reason codes. Never a token, a private key or a full certificate: no field here can
hold one (strings are bounded printable ASCII or reason codes, byte strings are at most 32 bytes).

Wire forms (``docs/wire-protocol.md`` §5.5–§5.8, field by field)::

    EvidenceBallot = [agent, region, round, issued_ms, observations]
    Observation    = [agent, region, round, kind, subject, status, facts, facts_digest, detail,
                      observed_ms]
    Facts          = [spiffe_id, key_digest, bundle_digest, sequence, not_before_ms, not_after_ms, keys]
    IdentityVerdict = [kind, subject, round, outcome, facts, facts_digest, voters, k, n,
                       observation_digests, decided_early, issued_ms, expires_ms, coordinator, seq]

Decoders check types and bounds; :func:`check_observation` and :func:`check_identity_verdict` are the
consistency rules of the numbered receiver steps (coordinator §5.6 step 14, subscriber §5.8 step 13).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import (
    Digest,
    Id,
    OptDigest,
    Outcome,
    PayloadError,
    Uint,
    VoterRecord,
    VoterState,
)

__all__ = [
    "EMPTY_FACTS",
    "EvidenceBallot",
    "EvidenceStatus",
    "Facts",
    "IdentityKind",
    "IdentityVerdict",
    "Observation",
    "check_facts",
    "check_identity_verdict",
    "check_observation",
    "decode_evidence",
    "decode_identity_verdict",
    "encode",
    "facts_digest",
    "first_bad_observation",
    "observation_digest",
]

#: A subject of identity evidence (trust domain, issuer URL, SPIFFE ID) and a presented SPIFFE ID:
#: printable ASCII without spaces (``!`` .. ``~``). Trust domains, SPIFFE IDs and ``https`` URLs are
#: all of that form (an IRI is sent percent-encoded).
_VISIBLE: Final = r"[\x21-\x7e]"
Subject = Annotated[
    str, msgspec.Meta(pattern=rf"^{_VISIBLE}{{1,{L.MAX_IDENTITY_SUBJECT_CHARS}}}\Z")
]
SpiffeIdField = Annotated[
    str, msgspec.Meta(pattern=rf"^{_VISIBLE}{{0,{L.MAX_IDENTITY_SUBJECT_CHARS}}}\Z")
]
#: A reason code (``cctf.identity.errors``): empty, or lower-case ``[a-z0-9_.-]``, at most 64 chars.
Detail = Annotated[
    str, msgspec.Meta(pattern=rf"^(?:[a-z][a-z0-9_.-]{{0,{L.MAX_DETAIL_CHARS - 1}}})?\Z")
]
KeyCount = Annotated[int, msgspec.Meta(ge=0, le=L.MAX_IDENTITY_KEYS)]


class IdentityKind(StrEnum):
    """What an observation is about; its ``subject`` is the trust domain, issuer URL or SPIFFE ID."""

    BUNDLE = "bundle"  # subject: a SPIFFE trust domain name ("example.org")
    JWKS = "jwks"  # subject: an OIDC issuer URL ("https://issuer.example")
    MTLS = "mtls"  # subject: a workload's expected SPIFFE ID ("spiffe://example.org/web")


class EvidenceStatus(StrEnum):
    """How one observation went. Only ``ok`` carries a ``facts_digest`` (and counts towards a group)."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"  # transport failure, HTTP error, unparsable document
    INVALID = "invalid"  # fetched but refused (empty bundle, rollback, wrong SPIFFE ID, bad chain)


class Facts(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """What was observed, per kind (unused fields are empty / 0; :func:`check_facts`)."""

    spiffe_id: SpiffeIdField  # mtls: the SPIFFE ID presented by the endpoint
    key_digest: OptDigest  # bundle / jwks: canonical digest; mtls: H(leaf SubjectPublicKeyInfo DER)
    bundle_digest: OptDigest  # mtls: digest of the bundle the chain validated under
    sequence: Uint  # bundle: spiffe_sequence
    not_before_ms: Uint  # mtls: leaf validity
    not_after_ms: Uint
    keys: KeyCount  # bundle: X.509 authorities; jwks: keys


#: The facts of an observation that saw nothing (timeout, error) and of a non-TRUSTED verdict.
EMPTY_FACTS: Final = Facts("", b"", b"", 0, 0, 0, 0)


class Observation(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """One agent's observation of one (kind, subject) in one round."""

    agent: Id
    region: Id
    round: Uint
    kind: IdentityKind
    subject: Subject
    status: EvidenceStatus
    facts: Facts
    facts_digest: OptDigest  # facts_digest(kind, subject, facts) when status == ok, else b""
    detail: Detail  # "" when ok, else a reason code
    observed_ms: Uint

    @property
    def voter(self) -> str:
        """The voter of an identity tally is the agent itself (one vote per agent)."""
        return self.agent


class EvidenceBallot(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """All (or one part of) an agent's observations for one round, under one signature."""

    agent: Id
    region: Id
    round: Uint
    issued_ms: Uint
    observations: Annotated[
        list[Observation], msgspec.Meta(max_length=L.MAX_OBSERVATIONS_PER_BALLOT)
    ]


class IdentityVerdict(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """A coordinator's signed decision for one (kind, subject, round)."""

    kind: IdentityKind
    subject: Subject
    round: Uint
    outcome: Outcome
    facts: Facts  # the winning facts (TRUSTED), else EMPTY_FACTS
    facts_digest: OptDigest
    voters: Annotated[list[VoterRecord], msgspec.Meta(max_length=L.MAX_VOTERS)]
    k: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]
    n: Annotated[int, msgspec.Meta(ge=1, le=L.MAX_VOTERS)]
    observation_digests: Annotated[list[Digest], msgspec.Meta(max_length=L.MAX_VOTERS)]
    decided_early: bool
    issued_ms: Uint
    expires_ms: Uint
    coordinator: Id
    seq: Uint


_ENCODER: Final = msgspec.msgpack.Encoder()
_EVIDENCE_DECODER: Final = msgspec.msgpack.Decoder(EvidenceBallot)
_IDENTITY_DECODER: Final = msgspec.msgpack.Decoder(IdentityVerdict)
_FACTS_DOMAIN: Final = b"CCTF-facts-v1\x00"
_OBSERVATION_DOMAIN: Final = b"CCTF-observation-v1\x00"
_DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def encode(msg: msgspec.Struct) -> bytes:
    return _ENCODER.encode(msg)


def decode_evidence(data: bytes) -> EvidenceBallot:
    """Strict decode of an ``evidence`` payload; raises :class:`PayloadError`."""
    if len(data) > L.MAX_PAYLOAD_BYTES:
        raise PayloadError("evidence payload too large")
    try:
        return _EVIDENCE_DECODER.decode(data)
    except _DECODE_ERRORS as exc:
        raise PayloadError(f"malformed evidence: {exc}") from None


def decode_identity_verdict(data: bytes) -> IdentityVerdict:
    """Strict decode of an ``identity`` payload; raises :class:`PayloadError`."""
    if len(data) > L.MAX_PAYLOAD_BYTES:
        raise PayloadError("identity verdict payload too large")
    try:
        return _IDENTITY_DECODER.decode(data)
    except _DECODE_ERRORS as exc:
        raise PayloadError(f"malformed identity verdict: {exc}") from None


def facts_digest(kind: IdentityKind | str, subject: str, facts: Facts) -> bytes:
    """``H("CCTF-facts-v1" || 0x00 || msgpack([kind, subject, facts]))``: what an identity group is
    formed on (two agents agree when they saw the same facts for the same kind and subject)."""
    return hashlib.sha256(_FACTS_DOMAIN + _ENCODER.encode([str(kind), subject, facts])).digest()


def observation_digest(obs: Observation) -> bytes:
    """``H("CCTF-observation-v1" || 0x00 || msgpack(observation))``, listed in identity verdicts."""
    return hashlib.sha256(_OBSERVATION_DOMAIN + _ENCODER.encode(obs)).digest()


_DIGEST_LEN: Final = 32


def check_facts(kind: IdentityKind, subject: str, facts: Facts) -> None:
    """The per-kind shape of the facts of an ``ok`` observation or a TRUSTED verdict (§5.5).

    * bundle: ``spiffe_id`` empty, ``key_digest`` 32 bytes, ``bundle_digest`` empty, validity 0,
      ``keys`` ≥ 1 (``sequence`` is the bundle's ``spiffe_sequence``, any value);
    * jwks: ``spiffe_id`` empty, ``key_digest`` 32 bytes, ``bundle_digest`` empty, ``sequence`` and
      validity 0, ``keys`` ≥ 1;
    * mtls: ``spiffe_id`` equals ``subject``, ``key_digest`` and ``bundle_digest`` 32 bytes,
      ``sequence`` 0, ``not_before_ms ≤ not_after_ms``, ``keys`` 0.

    Raises :class:`PayloadError` naming the first rule broken.
    """
    if len(facts.key_digest) != _DIGEST_LEN:
        raise PayloadError(f"{kind} facts: key_digest must be {_DIGEST_LEN} bytes")
    if kind is IdentityKind.MTLS:
        if facts.spiffe_id != subject:
            raise PayloadError("mtls facts: spiffe_id differs from the subject")
        if len(facts.bundle_digest) != _DIGEST_LEN:
            raise PayloadError(f"mtls facts: bundle_digest must be {_DIGEST_LEN} bytes")
        if facts.sequence != 0 or facts.keys != 0:
            raise PayloadError("mtls facts: sequence and keys must be 0")
        if facts.not_before_ms > facts.not_after_ms:
            raise PayloadError("mtls facts: not_before_ms after not_after_ms")
        return
    if facts.spiffe_id or facts.bundle_digest:
        raise PayloadError(f"{kind} facts: spiffe_id and bundle_digest must be empty")
    if facts.not_before_ms or facts.not_after_ms:
        raise PayloadError(f"{kind} facts: validity must be 0")
    if facts.keys < 1:
        raise PayloadError(f"{kind} facts: keys must be at least 1")
    if kind is IdentityKind.JWKS and facts.sequence != 0:
        raise PayloadError("jwks facts: sequence must be 0")


def check_observation(obs: Observation) -> None:
    """Consistency of one observation (coordinator §5.6 step 14, after region/agent/round):

    * ``ok``: ``detail`` is empty, the facts have the shape of :func:`check_facts` and
      ``facts_digest == facts_digest(kind, subject, facts)``;
    * ``timeout`` / ``error``: ``detail`` is a non-empty reason code, ``facts`` is
      :data:`EMPTY_FACTS` and ``facts_digest`` is empty;
    * ``invalid``: ``detail`` is a non-empty reason code, ``facts_digest`` is empty (``facts`` may
      describe what was refused, e.g. the SPIFFE ID an endpoint presented).

    Raises :class:`PayloadError`.
    """
    if obs.status is EvidenceStatus.OK:
        if obs.detail:
            raise PayloadError("ok observation with a detail")
        check_facts(obs.kind, obs.subject, obs.facts)
        if obs.facts_digest != facts_digest(obs.kind, obs.subject, obs.facts):
            raise PayloadError("facts_digest does not match the facts")
        return
    if not obs.detail:
        raise PayloadError(f"{obs.status} observation without a reason code")
    if obs.facts_digest:
        raise PayloadError(f"{obs.status} observation with a facts_digest")
    if obs.status is not EvidenceStatus.INVALID and obs.facts != EMPTY_FACTS:
        raise PayloadError(f"{obs.status} observation with facts")


def first_bad_observation(ballot: EvidenceBallot) -> tuple[str, str] | None:
    """Coordinator §5.6 step 14 over a decoded ballot: ``None`` when every observation passes, else
    ``(reason, detail)`` for the first one that fails, ``reason`` being the envelope reason value
    (``region_mismatch``, ``principal_mismatch``, ``round`` or ``malformed``)."""
    seen: set[tuple[IdentityKind, str]] = set()
    for i, obs in enumerate(ballot.observations):
        if obs.region != ballot.region:
            return "region_mismatch", f"observation {i} is of region {obs.region!r}"
        if obs.agent != ballot.agent:
            return "principal_mismatch", f"observation {i} is of agent {obs.agent!r}"
        if obs.round != ballot.round:
            return "round", f"observation {i} is of round {obs.round}"
        try:
            check_observation(obs)
        except PayloadError as exc:
            return "malformed", f"observation {i}: {exc}"
        key = (obs.kind, obs.subject)
        if key in seen:
            return "malformed", f"observation {i}: a second {obs.kind} observation of its subject"
        seen.add(key)
    return None


def check_identity_verdict(v: IdentityVerdict) -> None:
    """Consistency of an identity verdict (subscriber §5.8 step 13); raises :class:`PayloadError`.

    ``k ≤ n < 2k``; ``voters`` has exactly ``n`` entries with distinct ``voter`` strings, each an
    agent id; ``issued_ms < expires_ms``. TRUSTED: the facts have the shape of :func:`check_facts`,
    ``facts_digest == facts_digest(kind, subject, facts)``, every ``agree`` record's digest is empty
    or equal to it and at least ``k`` records are ``agree``. Otherwise ``facts`` is
    :data:`EMPTY_FACTS` and ``facts_digest`` is empty.
    """
    if not v.k <= v.n < 2 * v.k:
        raise PayloadError("identity verdict: quorum k <= n < 2k does not hold")
    names = [r.voter for r in v.voters]
    if len(names) != v.n or len(set(names)) != v.n:
        raise PayloadError("identity verdict: voters are not n distinct entries")
    if any(_ID_RE.fullmatch(name) is None for name in names):
        raise PayloadError("identity verdict: a voter is not an agent id")
    if not v.issued_ms < v.expires_ms:
        raise PayloadError("identity verdict: issued_ms not before expires_ms")
    if v.outcome is Outcome.TRUSTED:
        check_facts(v.kind, v.subject, v.facts)
        if v.facts_digest != facts_digest(v.kind, v.subject, v.facts):
            raise PayloadError("identity verdict: facts_digest does not match the facts")
        agree = [r for r in v.voters if r.state is VoterState.AGREE]
        if any(r.answer_digest not in (b"", v.facts_digest) for r in agree):
            raise PayloadError("identity verdict: an agreeing voter has another digest")
        if len(agree) < v.k:
            raise PayloadError("identity verdict: fewer than k agreeing voters")
        return
    if v.facts != EMPTY_FACTS or v.facts_digest:
        raise PayloadError("identity verdict: facts in a verdict that is not trusted")


_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
