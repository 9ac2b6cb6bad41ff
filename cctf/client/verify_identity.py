"""Identity verdict verification: the subscriber's numbered checks (pure, no I/O).

The identity counterpart of :class:`cctf.client.verify.VerdictVerifier` (``docs/wire-protocol.md``,
*IdentityVerdict*), mirroring its steps and reusing its helpers: the shared
:func:`cctf.bus_schemas.opening.open_signed` (steps 1–9), :func:`cctf.client.verify.check_times`
(step 14), :func:`cctf.client.verify.check_age` (step 15) and :class:`cctf.client.verify.SeqMemory`
(step 16). Every failure raises :class:`~cctf.bus_schemas.envelope.Rejected` with its reason.

1–9. :func:`cctf.client.verify.open_pinned` (:func:`open_signed` with ``expected_type=identity``
     and ``role=coordinator``): size, decode, version, type, suite policy, known coordinator key,
     signature over bytes that bind the subject (identity verdicts are never batch-signed),
     envelope time window; 9, the subject is an identity verdict subject
     ``cctf.v1.verdict.<region>.<subject-token>.<kind>`` [``subject``]
9.   (continued) when the verifier is pinned to a region, the subject's region equals it
     [``region_mismatch``]
10.  strict payload decoding as ``IdentityVerdict`` [``malformed``]
11.  the subject token equals ``identity_token(kind, subject)`` of the payload and the subject's kind
     equals the payload's ``kind`` [``subject``]
12.  the payload's ``coordinator`` equals the signing key's principal, and so does the subject's
     coordinator token of a per-coordinator subject ``...<kind>.<coordinator>`` [``principal_mismatch``]
13.  consistency (:func:`cctf.bus_schemas.evidence.check_identity_verdict`) [``malformed``]:
     ``k ≤ n < 2k``, ``n`` distinct agent ids, ``issued_ms < expires_ms``; TRUSTED ⇒ the facts have
     their kind's shape, ``facts_digest`` is the digest of ``(kind, subject, facts)``, at least ``k``
     ``agree`` records none of which carries another digest; otherwise empty facts and digest
14.  time, sequence and round, exactly as for DNS verdicts (:func:`check_times`: ``lifetime``,
     ``expired``, ``sequence``, ``round``)
15.  optional (one-shot look-ups): ``now − iat ≤ max_age_ms`` [``stale``]
16.  rollback per ``(coordinator, kind, subject)``: ``seq`` above the last accepted one, except the
     very same envelope bytes again (a duplicate) [``rollback``]
17.  bundle sequence, per trust domain (any coordinator): a TRUSTED ``bundle`` verdict's
     ``facts.sequence`` (the bundle's ``spiffe_sequence``) is not below that of the last TRUSTED
     bundle verdict accepted for the trust domain [``bundle_rollback``]

Only a message that passes every step changes state (16 and 17). The state of both is bounded
(``capacity`` keys each, LRU); an evicted key forgets its floor, as for DNS verdicts.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from cctf.bus_schemas.envelope import Reason, Rejected, TimePolicy
from cctf.bus_schemas.evidence import (
    IdentityKind,
    IdentityVerdict,
    check_identity_verdict,
    decode_identity_verdict,
)
from cctf.bus_schemas.messages import MessageType, Outcome, PayloadError
from cctf.bus_schemas.subjects import SubjectError, identity_token
from cctf.client.verify import (
    DEFAULT_CAPACITY,
    SeqMemory,
    VerdictTimes,
    check_age,
    check_times,
    open_pinned,
)
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import TrustConfig
from cctf.ids import check_id

__all__ = ["CheckedIdentity", "IdentityKey", "IdentityVerifier"]

IdentityKey = tuple[str, str, str]  # (coordinator, kind, subject)


@dataclass(frozen=True, slots=True)
class CheckedIdentity:
    """The result of a successful verification."""

    verdict: IdentityVerdict
    key: IdentityKey
    kid: str  # the coordinator key that signed it
    envelope_exp_ms: int
    issued_ms: int  # the envelope's iat (= the verdict's issued_ms)
    duplicate: bool  # exactly the last accepted message for ``key`` again

    @property
    def valid_until_ms(self) -> int:
        return min(self.envelope_exp_ms, self.verdict.expires_ms)


class IdentityVerifier:
    """Verifies signed identity verdicts; keeps the rollback and bundle-sequence floors."""

    def __init__(
        self,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        region: str | None = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        time_policy: TimePolicy = TimePolicy(),  # noqa: B008 - frozen, immutable
        times: VerdictTimes = VerdictTimes(),  # noqa: B008 - frozen, immutable
    ) -> None:
        self.trust = trust
        self.clock = clock
        self.policy = policy
        self.region = None if region is None else check_id(region, "region")
        self.time_policy = time_policy
        self.times = times
        self._last: SeqMemory[IdentityKey] = SeqMemory(capacity)
        self._capacity = capacity
        self._bundle_floor: OrderedDict[str, int] = OrderedDict()  # trust domain -> sequence

    def last_seq(self, coordinator: str, kind: str, subject: str) -> int | None:
        return self._last.last_seq((coordinator, kind, subject))

    def bundle_sequence(self, trust_domain: str) -> int | None:
        """The ``spiffe_sequence`` of the last TRUSTED bundle verdict accepted for a trust domain."""
        return self._bundle_floor.get(trust_domain)

    def verify(self, data: bytes, subject: str) -> IdentityVerdict:
        return self.check(data, subject).verdict

    def check(self, data: bytes, subject: str, *, max_age_ms: int | None = None) -> CheckedIdentity:
        """Verify ``data`` received on ``subject`` (steps 1–17); raises :class:`Rejected`."""
        now = self.clock.now_ms()
        opened = open_pinned(  # 1-9 (and 9, pinning)
            data,
            subject,
            expected_type=MessageType.IDENTITY,
            trust=self.trust,
            policy=self.policy,
            now_ms=now,
            time_policy=self.time_policy,
            region=self.region,
        )
        env, signer, parsed = opened.envelope, opened.signer, opened.subject
        try:  # 10
            v = decode_identity_verdict(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        try:  # 11
            token = identity_token(v.kind, v.subject)
        except SubjectError as exc:
            raise Rejected(Reason.MALFORMED, f"identity verdict subject: {exc}") from None
        if token != parsed.token or v.kind != parsed.identity_kind:
            raise Rejected(
                Reason.SUBJECT,
                f"identity verdict for {v.kind} {v.subject[:200]!r} on another subject "
                f"({parsed.identity_kind})",
            )
        if v.coordinator != signer.principal:  # 12
            raise Rejected(
                Reason.PRINCIPAL,
                f"identity verdict coordinator {v.coordinator} signed by {signer.principal}'s key",
            )
        if parsed.coordinator is not None and parsed.coordinator != signer.principal:
            raise Rejected(
                Reason.PRINCIPAL,
                f"identity verdict of {signer.principal} on {parsed.coordinator}'s subject",
            )
        try:  # 13
            check_identity_verdict(v)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        check_times(v, env, now, self.time_policy.max_skew_ms, self.times)  # 14
        if max_age_ms is not None:  # 15
            check_age(env.iat, now, max_age_ms)
        key: IdentityKey = (v.coordinator, v.kind.value, v.subject)  # 16
        digest = hashlib.sha256(data).digest()
        what = f"{v.kind} {v.subject[:200]} from {v.coordinator}"
        duplicate = self._last.check(key, v.seq, digest, what)
        trusted_bundle = v.kind is IdentityKind.BUNDLE and v.outcome is Outcome.TRUSTED
        floor = self._bundle_floor.get(v.subject) if trusted_bundle else None
        if floor is not None and v.facts.sequence < floor:  # 17
            raise Rejected(
                Reason.BUNDLE_ROLLBACK,
                f"bundle of {v.subject[:200]} at sequence {v.facts.sequence}, below the "
                f"accepted {floor}",
            )
        self._last.record(key, v.seq, digest)  # every step passed: update the state
        if trusted_bundle:
            self._bundle_floor[v.subject] = max(v.facts.sequence, floor or 0)
            self._bundle_floor.move_to_end(v.subject)
            while len(self._bundle_floor) > self._capacity:
                self._bundle_floor.popitem(last=False)
        return CheckedIdentity(v, key, env.kid, env.exp, env.iat, duplicate)
