"""Verdict verification: the subscriber's numbered checks (pure, no I/O).

Steps 1–8 are :func:`cctf.bus_schemas.envelope.verify_envelope` with ``expected_type=verdict`` and
``role=coordinator`` (size, decode, version, type, suite policy, known coordinator key, signature over
bytes that bind the subject, envelope time window). Then:

9.  subject: ``cctf.v1.verdict.<region>.<name-token>.<qtype>``; when the verifier is pinned to a
    region, the subject's region must equal it (:attr:`Reason.REGION`)
10. payload: strict verdict decoding (:attr:`Reason.MALFORMED`)
11. the payload's (normalized) qname and its qtype equal the subject's (:attr:`Reason.SUBJECT`)
12. the payload's coordinator equals the signing key's principal (:attr:`Reason.PRINCIPAL`)
13. structure (:attr:`Reason.MALFORMED`): ``2k > n`` (so ``k ≤ n``), ``len(voters) == n`` with
    distinct voter ids, ``issued_ms < expires_ms``; TRUSTED ⇒ ``answer_digest`` equals
    ``answer_digest(rcode, answer)`` and at least ``k`` voters are ``agree`` (none of them with
    another digest); DISPUTED or
    UNAVAILABLE ⇒ ``rcode == 0`` and an empty answer (the wire contract), so no answer can be read
    out of a verdict that does not vouch for it
14. the verdict itself is not expired: ``now < expires_ms`` (:attr:`Reason.EXPIRED`; fail closed)
15. rollback (:attr:`Reason.ROLLBACK`): per ``(coordinator, qname, qtype)`` the ``seq`` must be
    strictly greater than the last accepted one

Duplicates. A message whose ``seq`` equals the last accepted one *and* whose bytes are identical to
the accepted message (compared by SHA-256 of the whole envelope) is the same signed statement seen
again — e.g. :meth:`TrustClient.check` fetching the latest verdict twice. It is accepted again (it
passes every other step, including expiry, afresh) and reported as ``duplicate=True`` by
:meth:`VerdictVerifier.check`; the state does not change. Any *other* message with an equal or lower
``seq`` — a different nonce, payload or signature — is a rollback.

Bounded state. The last accepted ``(seq, envelope digest)`` is kept per key in an LRU of
``capacity`` keys (100 000 by default). When a key is evicted its rollback protection is forgotten;
a replay of an older verdict for it then still has to pass the envelope and verdict expiry checks, so
the exposure is limited to verdicts that are still within their lifetime.

Nothing is recorded for a rejected message: state only changes when every step passed.

Regions. A coordinator key's own region is not compared with the subject's: one coordinator may sign
verdicts for several regions. The signature binds the subject (so a verdict cannot be moved to another
region's subject), and a verifier pinned to a region accepts only that region's subjects. Sequence
numbers are per verifier, so keep one verifier per region (``TrustClient`` does).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from cctf.bus_schemas.envelope import Reason, Rejected, TimePolicy, verify_envelope
from cctf.bus_schemas.messages import (
    MessageType,
    Outcome,
    PayloadError,
    Verdict,
    VoterState,
    answer_digest,
    decode_verdict,
)
from cctf.bus_schemas.subjects import Kind, SubjectError, name_token, normalize_name, parse_subject
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig
from cctf.ids import check_id

#: Default number of (coordinator, qname, qtype) keys whose last sequence number is remembered.
DEFAULT_CAPACITY = 100_000

VerdictKey = tuple[str, str, str]  # (coordinator, normalized qname, qtype)


@dataclass(frozen=True, slots=True)
class CheckedVerdict:
    """The result of a successful verification."""

    verdict: Verdict
    key: VerdictKey
    kid: str  # the coordinator key that signed it
    envelope_exp_ms: int  # the envelope's own expiry (the verdict is usable until the earlier one)
    duplicate: bool  # exactly the last accepted message for ``key`` again

    @property
    def valid_until_ms(self) -> int:
        return min(self.envelope_exp_ms, self.verdict.expires_ms)


def verdict_key(v: Verdict) -> VerdictKey:
    """The rollback key of a (decoded, verified) verdict."""
    return (v.coordinator, normalize_name(v.qname), v.qtype)


class VerdictVerifier:
    """Verifies signed verdicts and enforces per-key sequence monotonicity. Raises :class:`Rejected`."""

    def __init__(
        self,
        trust: TrustConfig,
        clock: Clock,
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        region: str | None = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        time_policy: TimePolicy = TimePolicy(),  # noqa: B008 - frozen, immutable
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.trust = trust
        self.clock = clock
        self.policy = policy
        self.region = None if region is None else check_id(region, "region")
        self.time_policy = time_policy
        self._capacity = capacity
        self._last: OrderedDict[VerdictKey, tuple[int, bytes]] = OrderedDict()

    def __len__(self) -> int:
        """Number of keys whose last accepted sequence number is remembered."""
        return len(self._last)

    def last_seq(self, coordinator: str, qname: str, qtype: str) -> int | None:
        """The last accepted ``seq`` for a key, if remembered (does not refresh the LRU)."""
        entry = self._last.get((coordinator, normalize_name(qname), qtype))
        return None if entry is None else entry[0]

    def verify(self, data: bytes, subject: str) -> Verdict:
        """Verify ``data`` received on ``subject``; return the verdict or raise :class:`Rejected`."""
        return self.check(data, subject).verdict

    def check(self, data: bytes, subject: str) -> CheckedVerdict:
        """Like :meth:`verify`, with the details (rollback key, signing key, duplicate flag)."""
        now = self.clock.now_ms()
        checked = verify_envelope(  # 1-8
            data,
            subject,
            expected_type=MessageType.VERDICT,
            role=Role.COORDINATOR,
            trust=self.trust,
            policy=self.policy,
            now_ms=now,
            time_policy=self.time_policy,
        )
        env, signer = checked.envelope, checked.signer
        try:  # 9
            parsed = parse_subject(subject)
        except SubjectError as exc:
            raise Rejected(Reason.SUBJECT, str(exc)) from None
        if parsed.kind is not Kind.VERDICT or parsed.token is None or parsed.qtype is None:
            raise Rejected(Reason.SUBJECT, f"{subject!r} is not a verdict subject")
        if self.region is not None and parsed.region != self.region:
            raise Rejected(
                Reason.REGION, f"subject region {parsed.region} is not the expected {self.region}"
            )
        try:  # 10
            verdict = decode_verdict(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        try:  # 11
            qname = normalize_name(verdict.qname)
        except SubjectError as exc:
            raise Rejected(Reason.MALFORMED, f"verdict qname: {exc}") from None
        if qname != verdict.qname:
            raise Rejected(Reason.MALFORMED, f"verdict qname {verdict.qname!r} is not normalised")
        if name_token(qname) != parsed.token or verdict.qtype != parsed.qtype:
            raise Rejected(
                Reason.SUBJECT,
                f"verdict for {verdict.qname} {verdict.qtype} on the subject of "
                f"{parsed.qname or parsed.token} {parsed.qtype}",
            )
        if verdict.coordinator != signer.principal:  # 12
            raise Rejected(
                Reason.PRINCIPAL,
                f"verdict coordinator {verdict.coordinator} signed by {signer.principal}'s key",
            )
        _check_structure(verdict)  # 13
        if now >= verdict.expires_ms:  # 14
            raise Rejected(Reason.EXPIRED, f"verdict expired {now - verdict.expires_ms} ms ago")
        key: VerdictKey = (verdict.coordinator, qname, verdict.qtype)  # 15
        digest = hashlib.sha256(data).digest()
        last = self._last.get(key)
        duplicate = False
        if last is not None:
            last_seq, last_digest = last
            if verdict.seq == last_seq and digest == last_digest:
                duplicate = True
            elif verdict.seq <= last_seq:
                raise Rejected(
                    Reason.ROLLBACK,
                    f"seq {verdict.seq} for {qname} {verdict.qtype} from {verdict.coordinator} "
                    f"is not above the accepted {last_seq}",
                )
        if not duplicate:
            self._last[key] = (verdict.seq, digest)
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
        return CheckedVerdict(verdict, key, env.kid, env.exp, duplicate)


def _check_structure(v: Verdict) -> None:
    """Step 13: internal consistency of a decoded verdict; raises :class:`Rejected` (malformed)."""

    def bad(detail: str) -> Rejected:
        return Rejected(Reason.MALFORMED, f"verdict for {v.qname} {v.qtype}: {detail}")

    if not (v.k <= v.n < 2 * v.k):
        raise bad(f"quorum k={v.k} of n={v.n} violates 2k > n, k <= n")
    if len(v.voters) != v.n:
        raise bad(f"{len(v.voters)} voters listed, n={v.n}")
    if len({r.voter for r in v.voters}) != len(v.voters):
        raise bad("a voter is listed twice")
    if v.issued_ms >= v.expires_ms:
        raise bad(f"issued_ms {v.issued_ms} is not before expires_ms {v.expires_ms}")
    if v.outcome is Outcome.TRUSTED:
        if v.answer_digest != answer_digest(v.rcode, v.answer):
            raise bad("answer digest does not match the answer")
        agreeing = [r for r in v.voters if r.state is VoterState.AGREE]
        if any(r.answer_digest not in (b"", v.answer_digest) for r in agreeing):
            raise bad("an agreeing voter carries another answer digest")
        if (agree := len(agreeing)) < v.k:
            raise bad(f"TRUSTED with only {agree} agreeing voters, k={v.k}")
    elif v.answer or v.rcode != 0 or v.answer_digest:
        raise bad(f"{v.outcome.value} verdict carries an answer")
