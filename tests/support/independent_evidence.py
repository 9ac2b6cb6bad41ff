"""Clean-room verifier for identity evidence and identity verdicts, from docs/wire-protocol.md alone.

The companion of ``independent_verifier`` (whose MessagePack codec, field checks and envelope checks
it reuses): it imports nothing from ``cctf`` and no msgspec. Section numbers (§) refer to
docs/wire-protocol.md (§2 identity verdict subjects, §5.5–§5.8).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from independent_verifier import (
    HYBRID,
    MAX_SUBJECT,
    Key,
    Reject,
    VoterRecord,
    _arr,
    _bin_f,
    _bool_f,
    _enum_f,
    _list_f,
    _Malformed,
    _str_f,
    _uint_f,
    is_digest_token,
    mp_decode,
    mp_encode,
    verify_envelope,
)

__all__ = [
    "EMPTY_FACTS",
    "EvidenceBallot",
    "EvidenceVerifier",
    "Facts",
    "IdentitySubscriber",
    "IdentityVerdict",
    "Observation",
    "check_observations",
    "decode_evidence",
    "decode_identity_verdict",
    "evidence_subject",
    "facts_digest",
    "identity_token",
    "identity_verdict_subject",
    "observation_digest",
    "parse_evidence_subject",
    "parse_identity_verdict_subject",
]

KINDS = ("bundle", "jwks", "mtls")
STATUSES = ("ok", "timeout", "error", "invalid")
OUTCOMES = ("trusted", "disputed", "unavailable")
VOTER_STATES = ("agree", "disagree", "unavailable")
_IDENT = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SUBJECT = re.compile(r"[!-~]{1,2048}")  # 0x21..0x7E
_SPIFFE_FIELD = re.compile(r"[!-~]{0,2048}")
_DETAIL = re.compile(r"(?:[a-z][a-z0-9_.-]{0,63})?")


# -------------------------------------------------------------------------------- §2 identity subjects


def identity_token(kind: str, subject: str) -> str:
    if kind not in KINDS or not _SUBJECT.fullmatch(subject):
        raise ValueError("bad identity kind or subject")
    h = hashlib.sha256(
        b"CCTF-identity-subject-v1\x00" + kind.encode() + b"\x00" + subject.encode()
    ).digest()
    return "=" + base64.b32encode(h).decode().lower().rstrip("=")


def identity_verdict_subject(region: str, kind: str, subject: str) -> str:
    if not _IDENT.fullmatch(region):
        raise ValueError("bad region")
    return f"cctf.v1.verdict.{region}.{identity_token(kind, subject)}.{kind}"


def evidence_subject(region: str, agent: str) -> str:
    if not (_IDENT.fullmatch(region) and _IDENT.fullmatch(agent)):
        raise ValueError("bad identifier")
    return f"cctf.v1.evidence.{region}.{agent}"


def parse_evidence_subject(s: str) -> tuple[str, str] | None:
    parts = s.split(".")
    if len(s.encode()) > MAX_SUBJECT or len(parts) != 5 or parts[:3] != ["cctf", "v1", "evidence"]:
        return None
    if not (_IDENT.fullmatch(parts[3]) and _IDENT.fullmatch(parts[4])):
        return None
    return parts[3], parts[4]


def parse_identity_verdict_subject(s: str) -> tuple[str, str, str, str | None] | None:
    """(region, subject token, kind, coordinator of a per-coordinator subject or None), or None."""
    parts = s.split(".")
    if len(s.encode()) > MAX_SUBJECT or len(parts) not in (6, 7):
        return None
    if parts[:3] != ["cctf", "v1", "verdict"]:
        return None
    region, token, kind = parts[3:6]
    coordinator = parts[6] if len(parts) == 7 else None
    if coordinator is not None and not _IDENT.fullmatch(coordinator):
        return None
    if not _IDENT.fullmatch(region) or kind not in KINDS or not is_digest_token(token):
        return None
    return region, token, kind, coordinator


# ----------------------------------------------------------------------------------- §5.5 messages


@dataclass(frozen=True)
class Facts:
    spiffe_id: str
    key_digest: bytes
    bundle_digest: bytes
    sequence: int
    not_before_ms: int
    not_after_ms: int
    keys: int

    def to_list(self) -> list[Any]:
        return [
            self.spiffe_id,
            self.key_digest,
            self.bundle_digest,
            self.sequence,
            self.not_before_ms,
            self.not_after_ms,
            self.keys,
        ]

    @classmethod
    def from_list(cls, x: Any) -> Facts:
        f = _arr(x, 7, "Facts")
        return cls(
            spiffe_id=_str_f(f[0], "spiffe_id", pattern=_SPIFFE_FIELD),
            key_digest=_bin_f(f[1], "key_digest", 0, 32),
            bundle_digest=_bin_f(f[2], "bundle_digest", 0, 32),
            sequence=_uint_f(f[3], "sequence"),
            not_before_ms=_uint_f(f[4], "not_before_ms"),
            not_after_ms=_uint_f(f[5], "not_after_ms"),
            keys=_uint_f(f[6], "keys", 65535),
        )


EMPTY_FACTS = Facts("", b"", b"", 0, 0, 0, 0)


@dataclass(frozen=True)
class Observation:
    agent: str
    region: str
    round: int
    kind: str
    subject: str
    status: str
    facts: Facts
    facts_digest: bytes
    detail: str
    observed_ms: int

    def to_list(self) -> list[Any]:
        return [
            self.agent,
            self.region,
            self.round,
            self.kind,
            self.subject,
            self.status,
            self.facts.to_list(),
            self.facts_digest,
            self.detail,
            self.observed_ms,
        ]

    @classmethod
    def from_list(cls, x: Any) -> Observation:
        f = _arr(x, 10, "Observation")
        return cls(
            agent=_str_f(f[0], "agent", pattern=_IDENT),
            region=_str_f(f[1], "region", pattern=_IDENT),
            round=_uint_f(f[2], "round"),
            kind=_enum_f(f[3], "kind", KINDS),
            subject=_str_f(f[4], "subject", pattern=_SUBJECT),
            status=_enum_f(f[5], "status", STATUSES),
            facts=Facts.from_list(f[6]),
            facts_digest=_bin_f(f[7], "facts_digest", 0, 32),
            detail=_str_f(f[8], "detail", pattern=_DETAIL),
            observed_ms=_uint_f(f[9], "observed_ms"),
        )


@dataclass(frozen=True)
class EvidenceBallot:
    agent: str
    region: str
    round: int
    issued_ms: int
    observations: tuple[Observation, ...]

    @classmethod
    def from_list(cls, x: Any) -> EvidenceBallot:
        f = _arr(x, 5, "EvidenceBallot")
        return cls(
            agent=_str_f(f[0], "agent", pattern=_IDENT),
            region=_str_f(f[1], "region", pattern=_IDENT),
            round=_uint_f(f[2], "round"),
            issued_ms=_uint_f(f[3], "issued_ms"),
            observations=tuple(Observation.from_list(o) for o in _list_f(f[4], "observations", 64)),
        )


@dataclass(frozen=True)
class IdentityVerdict:
    kind: str
    subject: str
    round: int
    outcome: str
    facts: Facts
    facts_digest: bytes
    voters: tuple[VoterRecord, ...]
    k: int
    n: int
    observation_digests: tuple[bytes, ...]
    decided_early: bool
    issued_ms: int
    expires_ms: int
    coordinator: str
    seq: int

    @classmethod
    def from_list(cls, x: Any) -> IdentityVerdict:
        f = _arr(x, 15, "IdentityVerdict")
        return cls(
            kind=_enum_f(f[0], "kind", KINDS),
            subject=_str_f(f[1], "subject", pattern=_SUBJECT),
            round=_uint_f(f[2], "round"),
            outcome=_enum_f(f[3], "outcome", OUTCOMES),
            facts=Facts.from_list(f[4]),
            facts_digest=_bin_f(f[5], "facts_digest", 0, 32),
            voters=tuple(VoterRecord.from_list(v) for v in _list_f(f[6], "voters", 64)),
            k=_uint_f(f[7], "k", 64, lo=1),
            n=_uint_f(f[8], "n", 64, lo=1),
            observation_digests=tuple(
                _bin_f(d, "observation_digests[]", 32, 32)
                for d in _list_f(f[9], "observation_digests", 64)
            ),
            decided_early=_bool_f(f[10], "decided_early"),
            issued_ms=_uint_f(f[11], "issued_ms"),
            expires_ms=_uint_f(f[12], "expires_ms"),
            coordinator=_str_f(f[13], "coordinator", pattern=_IDENT),
            seq=_uint_f(f[14], "seq"),
        )


def decode_evidence(payload: bytes) -> EvidenceBallot:
    try:
        return EvidenceBallot.from_list(mp_decode(payload))
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc


def decode_identity_verdict(payload: bytes) -> IdentityVerdict:
    try:
        return IdentityVerdict.from_list(mp_decode(payload))
    except _Malformed as exc:
        raise Reject("malformed", str(exc)) from exc


def facts_digest(kind: str, subject: str, facts: Facts) -> bytes:
    return hashlib.sha256(
        b"CCTF-facts-v1\x00" + mp_encode([kind, subject, facts.to_list()])
    ).digest()


def observation_digest(obs: Observation) -> bytes:
    return hashlib.sha256(b"CCTF-observation-v1\x00" + mp_encode(obs.to_list())).digest()


def _facts_shape_ok(kind: str, subject: str, f: Facts) -> bool:
    """§5.5 table, for an ok observation / a trusted verdict."""
    if len(f.key_digest) != 32:
        return False
    if kind == "mtls":
        return (
            f.spiffe_id == subject
            and len(f.bundle_digest) == 32
            and f.sequence == 0
            and f.keys == 0
            and f.not_before_ms <= f.not_after_ms
        )
    if f.spiffe_id or f.bundle_digest or f.not_before_ms or f.not_after_ms or f.keys < 1:
        return False
    return kind == "bundle" or f.sequence == 0


# ------------------------------------------------------------------------- §5.6 / §5.8 receivers


def check_observations(ballot: EvidenceBallot) -> None:
    """§5.6 step 14: every observation, in order; the first failing one decides."""
    seen: set[tuple[str, str]] = set()
    for o in ballot.observations:
        if o.region != ballot.region:
            raise Reject("region_mismatch")
        if o.agent != ballot.agent:
            raise Reject("principal_mismatch")
        if o.round != ballot.round:
            raise Reject("round")
        if o.status == "ok":
            if o.detail or not _facts_shape_ok(o.kind, o.subject, o.facts):
                raise Reject("malformed", "ok observation")
            if o.facts_digest != facts_digest(o.kind, o.subject, o.facts):
                raise Reject("malformed", "facts_digest")
        else:
            if not o.detail or o.facts_digest:
                raise Reject("malformed", "non-ok observation")
            if o.status != "invalid" and o.facts != EMPTY_FACTS:
                raise Reject("malformed", "facts without an observation")
        if (o.kind, o.subject) in seen:
            raise Reject("malformed", "repeated subject")
        seen.add((o.kind, o.subject))


@dataclass
class EvidenceVerifier:
    """The coordinator's checks on evidence: §3.3 steps 1–8, then §5.6 steps 9–14."""

    trust: dict[str, Key]
    round_ms: int = 1_000
    max_round_lag: int = 2
    min_suite: str = HYBRID
    seen: dict[tuple[str, bytes], bytes] = field(default_factory=dict)  # -> SHA-256 of the bytes

    def verify(self, data: bytes, subject: str, now_ms: int) -> EvidenceBallot:
        env, key = verify_envelope(
            data,
            subject,
            expected_type="evidence",
            expected_role="agent",
            trust=self.trust,
            now_ms=now_ms,
            min_suite=self.min_suite,
        )
        parsed = parse_evidence_subject(subject)  # 9
        if parsed is None:
            raise Reject("subject")
        digest = hashlib.sha256(data).digest()
        first = self.seen.setdefault((env.kid, env.nonce), digest)  # 10
        if first != digest:
            raise Reject("replay")  # another message reusing the nonce
        if first is not digest:
            raise Reject("duplicate")  # the same message again
        ballot = decode_evidence(env.payload)  # 11
        s_region, s_agent = parsed  # 12
        if not s_region == key.region == ballot.region:
            raise Reject("region_mismatch")
        if not s_agent == key.principal == ballot.agent:
            raise Reject("principal_mismatch")
        current = now_ms // self.round_ms  # 13
        if not current - self.max_round_lag <= ballot.round <= current + 1:
            raise Reject("round")
        check_observations(ballot)  # 14
        return ballot


@dataclass
class IdentitySubscriber:
    """A subscriber's checks on an identity verdict: §3.3 steps 1–8, then §5.8 steps 9–17."""

    trust: dict[str, Key]
    region: str | None = None
    min_suite: str = HYBRID
    round_ms: int = 1_000
    max_skew_ms: int = 5_000
    max_decision_delay_ms: int = 60_000
    last: dict[tuple[str, str, str], tuple[int, bytes]] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # trust domain -> spiffe_sequence

    def verify(self, data: bytes, subject: str, now_ms: int) -> IdentityVerdict:
        env, key = verify_envelope(
            data,
            subject,
            expected_type="identity",
            expected_role="coordinator",
            trust=self.trust,
            now_ms=now_ms,
            min_suite=self.min_suite,
        )
        parsed = parse_identity_verdict_subject(subject)  # 9
        if parsed is None:
            raise Reject("subject")
        s_region, s_token, s_kind, s_coordinator = parsed
        if self.region is not None and s_region != self.region:
            raise Reject("region_mismatch")
        v = decode_identity_verdict(env.payload)  # 10
        if v.kind != s_kind or identity_token(v.kind, v.subject) != s_token:  # 11
            raise Reject("subject")
        if v.coordinator != key.principal:  # 12
            raise Reject("principal_mismatch")
        if s_coordinator is not None and s_coordinator != key.principal:  # 12 (per coordinator)
            raise Reject("principal_mismatch")
        _check_structure(v)  # 13
        if v.issued_ms != env.iat or v.expires_ms > env.exp:  # 14
            raise Reject("lifetime")
        if not now_ms < v.expires_ms:
            raise Reject("expired")
        earliest = min(env.iat, now_ms)
        if not env.iat * 1000 <= v.seq < (earliest + self.max_skew_ms) * 1000:
            raise Reject("sequence")
        if v.round * self.round_ms > earliest + self.max_skew_ms:
            raise Reject("round")
        if env.iat >= (v.round + 1) * self.round_ms + self.max_decision_delay_ms:
            raise Reject("round")
        slot = (v.coordinator, v.kind, v.subject)  # 16
        digest = hashlib.sha256(data).digest()
        prev = self.last.get(slot)
        if prev == (v.seq, digest):
            return v
        if prev is not None and v.seq <= prev[0]:
            raise Reject("rollback")
        if v.kind == "bundle" and v.outcome == "trusted":  # 17: per trust domain, any coordinator
            floor = self.sequences.get(v.subject)
            if floor is not None and v.facts.sequence < floor:
                raise Reject("bundle_rollback", "spiffe_sequence went backwards")
            self.sequences[v.subject] = max(v.facts.sequence, floor or 0)
        self.last[slot] = (v.seq, digest)
        return v


def _check_structure(v: IdentityVerdict) -> None:
    def bad(detail: str) -> Reject:
        return Reject("malformed", detail)

    if not v.k <= v.n < 2 * v.k:
        raise bad("quorum")
    names = [r.voter for r in v.voters]
    if len(names) != v.n or len(set(names)) != v.n or not all(_IDENT.fullmatch(x) for x in names):
        raise bad("voters")
    if not v.issued_ms < v.expires_ms:
        raise bad("issued_ms")
    if v.outcome == "trusted":
        if not _facts_shape_ok(v.kind, v.subject, v.facts):
            raise bad("facts")
        if v.facts_digest != facts_digest(v.kind, v.subject, v.facts):
            raise bad("facts_digest")
        agree = [r for r in v.voters if r.state == "agree"]
        if any(r.answer_digest not in (b"", v.facts_digest) for r in agree) or len(agree) < v.k:
            raise bad("agreeing voters")
    elif v.facts != EMPTY_FACTS or v.facts_digest:
        raise bad("facts in a verdict that is not trusted")
