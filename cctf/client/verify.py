"""Verdict verification: the subscriber's numbered checks (pure, no I/O).

Steps 1–9 are :func:`open_pinned`, the shared :func:`cctf.bus_schemas.opening.open_signed` with
``expected_type=verdict`` and ``role=coordinator`` (size, decode, version, type, suite policy, known
coordinator key; 7, the signature over bytes that bind the subject, or for a batch-signed verdict
(``"tlog"``) the inclusion proof of its log entry under a head verified once by the injected
``heads`` (:class:`cctf.client.heads.HeadCache`) [``subject``, ``head_unknown``, ``head_mismatch``,
``proof``]; envelope time window; 9, the subject is a verdict subject
``cctf.v1.verdict.<region>.<name-token>.<qtype>``). Then:

9.  (continued) when the verifier is pinned to a region, the subject's region must equal it
    (:attr:`Reason.REGION`)
10. payload: strict verdict decoding (:attr:`Reason.MALFORMED`)
11. the payload's (normalized) qname and its qtype equal the subject's (:attr:`Reason.SUBJECT`)
12. the payload's coordinator equals the signing key's principal, and so does the subject's
    coordinator token of a per-coordinator subject (:attr:`Reason.PRINCIPAL`)
13. structure (:attr:`Reason.MALFORMED`): ``2k > n`` (so ``k ≤ n``), ``len(voters) == n`` with
    distinct voter ids, ``issued_ms < expires_ms``; TRUSTED ⇒ ``answer_digest`` equals
    ``answer_digest(rcode, answer)`` and at least ``k`` voters are ``agree`` (none of them with
    another digest); DISPUTED or
    UNAVAILABLE ⇒ ``rcode == 0`` and an empty answer (the wire contract), so no answer can be read
    out of a verdict that does not vouch for it. DNSSEC: a TRUSTED verdict is never ``bogus``; any
    other verdict is ``indeterminate``. Basis (LKG): ``basis_round ≤ round`` and
    ``basis_ms ≤ issued_ms``, both equal (a fresh verdict) or both lower (an LKG attestation, which
    is TRUSTED)
14. time (:func:`check_times`), with ``T`` the envelope's ``iat``, ``S`` the allowed skew
    (``TimePolicy.max_skew_ms``), ``R`` the deployment's ``round_ms`` and ``M`` the
    ``max_decision_delay_ms`` of :class:`VerdictTimes`:

    a. ``issued_ms == T`` and ``expires_ms ≤ exp``: the payload's validity lies inside the
       envelope's, so no verdict is ever reported valid beyond its envelope (:attr:`Reason.LIFETIME`)
    b. ``now < expires_ms`` (:attr:`Reason.EXPIRED`; fail closed)
    c. ``T·1000 ≤ seq < (min(T, now) + S)·1000``: the sequence number is the issue time in µs-sized
       steps (the coordinator's ``max(last + 1, now_ms·1000)``), ahead of neither the issue time nor
       the subscriber's clock by the skew or more (:attr:`Reason.SEQUENCE`)
    d. ``round·R ≤ min(T, now) + S`` (the round had begun) and ``T < (round + 1)·R + M`` (it was
       decided at most ``M`` after it ended) (:attr:`Reason.ROUND`)
    e. an LKG attestation (:func:`check_lkg`; ``L`` and ``C`` the ``max_lkg_lifetime_ms`` and
       ``max_lkg_staleness_ms`` of :class:`VerdictTimes`): ``expires_ms − issued_ms ≤ L``
       (:attr:`Reason.LIFETIME`); ``expires_ms − basis_ms ≤ C``: usable at most ``C`` after its
       evidence (:attr:`Reason.STALE`); ``basis_round·R ≤ basis_ms + S`` and
       ``basis_ms < (basis_round + 1)·R + M``: the basis was decided in its round's window, like d
       (:attr:`Reason.ROUND`)

15. optional, for one-shot look-ups (``max_age_ms`` given to :meth:`VerdictVerifier.check`):
    ``now − T ≤ max_age_ms`` — an older verdict is not the current answer (:attr:`Reason.STALE`)
    (b) policy: a verifier built with ``accept_lkg=False`` refuses every LKG attestation
    (:attr:`Reason.LKG`)
16. rollback (:attr:`Reason.ROLLBACK`): per ``(coordinator, qname, qtype)`` the ``seq`` must be
    strictly greater than the last accepted one

Clock jumps. Step 14c bounds how far ahead of the subscriber's clock an accepted ``seq`` can be, so
a verdict from a coordinator whose clock jumped ahead (or whose sequence ran ahead after its clock
stepped back) is refused instead of raising the rollback floor: later genuine verdicts are accepted
again at most ``S`` after the highest accepted ``seq``'s time.

Duplicates. A message whose ``seq`` equals the last accepted one *and* whose bytes are identical to
the accepted message (compared by SHA-256 of the whole envelope) is the same signed statement seen
again — e.g. :meth:`TrustClient.check` fetching the latest verdict twice. It is accepted again (it
passes every other step, including expiry, afresh) and reported as ``duplicate=True`` by
:meth:`VerdictVerifier.check`; the state does not change. Any *other* message with an equal or lower
``seq`` — a different nonce, payload or signature — is a rollback.

Bounded state. The last accepted ``(seq, envelope digest)`` is kept per key in an LRU of
``capacity`` keys (100 000 by default). When a key is evicted its rollback protection is forgotten;
a replay of an older verdict for it then still has to pass the envelope and verdict expiry checks, so
the exposure is limited to verdicts that are still within their lifetime (and, for one-shot
look-ups, within ``max_age_ms``).

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
from typing import Generic, Protocol, TypeVar

import msgspec

from cctf.bus_schemas.envelope import Envelope, Reason, Rejected, TimePolicy
from cctf.bus_schemas.messages import (
    DnssecState,
    MessageType,
    Outcome,
    PayloadError,
    Verdict,
    VoterState,
    answer_digest,
    decode_verdict,
)
from cctf.bus_schemas.opening import OpenedMessage, open_signed
from cctf.bus_schemas.subjects import ParsedSubject, SubjectError, name_token, normalize_name
from cctf.bus_schemas.tlog import HeadLookup, LogPosition
from cctf.clock import Clock
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig
from cctf.ids import check_id

#: Default number of (coordinator, qname, qtype) keys whose last sequence number is remembered.
DEFAULT_CAPACITY = 100_000

VerdictKey = tuple[str, str, str]  # (coordinator, normalized qname, qtype)
K = TypeVar("K")


class Timed(Protocol):
    """What step 14 reads of a verdict (DNS ``Verdict`` and ``IdentityVerdict`` alike)."""

    @property
    def round(self) -> int: ...
    @property
    def issued_ms(self) -> int: ...
    @property
    def expires_ms(self) -> int: ...
    @property
    def seq(self) -> int: ...


#: Sequence numbers per millisecond of issue time (the coordinator's ``now_ms * 1000`` seed).
SEQ_PER_MS = 1000
#: Default round length of a deployment (agents, coordinators and subscribers must agree on it).
DEFAULT_ROUND_MS = 1_000
#: Default bound on how long after its round's end a verdict may be issued.
DEFAULT_MAX_DECISION_DELAY_MS = 60_000
#: Default bounds on an LKG attestation (step 14e): its lifetime, and how long after its evidence
#: it may be used (the coordinator's defaults; a deployment with longer per-name caps sets both).
DEFAULT_MAX_LKG_LIFETIME_MS = 30_000
DEFAULT_MAX_LKG_STALENESS_MS = 15 * 60_000


@dataclass(frozen=True, slots=True)
class VerdictTimes:
    """What a subscriber knows of the deployment's rounds (step 14; all in ms)."""

    round_ms: int = DEFAULT_ROUND_MS
    max_decision_delay_ms: int = DEFAULT_MAX_DECISION_DELAY_MS
    max_lkg_lifetime_ms: int = DEFAULT_MAX_LKG_LIFETIME_MS
    max_lkg_staleness_ms: int = DEFAULT_MAX_LKG_STALENESS_MS

    def __post_init__(self) -> None:
        if self.round_ms < 1 or self.max_decision_delay_ms < 0:
            raise ValueError("round_ms must be positive and max_decision_delay_ms non-negative")
        if self.max_lkg_lifetime_ms < 1 or self.max_lkg_staleness_ms < 1:
            raise ValueError("max_lkg_lifetime_ms and max_lkg_staleness_ms must be positive")

    def default_max_age_ms(self) -> int:
        """The default maximum age of a one-shot answer: two rounds."""
        return 2 * self.round_ms


class CheckedVerdict(msgspec.Struct, frozen=True, gc=False):
    """The result of a successful verification (a struct built in C; the client keeps one per cached
    verdict, untracked by the cyclic GC: issue #9)."""

    verdict: Verdict
    key: VerdictKey
    kid: str  # the coordinator key that signed it
    envelope_exp_ms: int  # the envelope's own expiry (the verdict is usable until the earlier one)
    issued_ms: int  # the envelope's issue time (= the verdict's ``issued_ms``)
    duplicate: bool  # exactly the last accepted message for ``key`` again
    log: LogPosition | None = None  # a batch-signed verdict's place in its coordinator's log

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
        times: VerdictTimes = VerdictTimes(),
        accept_lkg: bool = True,
        heads: HeadLookup | None = None,
    ) -> None:
        """``heads``: the verified log heads batch-signed (``"tlog"``) verdicts are checked
        against; without it such verdicts are refused (``auth_kind``)."""
        self.trust = trust
        self.heads = heads
        self.accept_lkg = accept_lkg
        self.clock = clock
        self.policy = policy
        self.region = None if region is None else check_id(region, "region")
        self.time_policy = time_policy
        self.times = times
        self._last: SeqMemory[VerdictKey] = SeqMemory(capacity)

    def __len__(self) -> int:
        """Number of keys whose last accepted sequence number is remembered."""
        return len(self._last)

    def last_seq(self, coordinator: str, qname: str, qtype: str) -> int | None:
        """The last accepted ``seq`` for a key, if remembered (does not refresh the LRU)."""
        return self._last.last_seq((coordinator, normalize_name(qname), qtype))

    def verify(self, data: bytes, subject: str) -> Verdict:
        """Verify ``data`` received on ``subject``; return the verdict or raise :class:`Rejected`."""
        return self.check(data, subject).verdict

    def check(self, data: bytes, subject: str, *, max_age_ms: int | None = None) -> CheckedVerdict:
        """Like :meth:`verify`, with the details (rollback key, signing key, duplicate flag).

        ``max_age_ms``: refuse a verdict issued longer ago than this (step 15, one-shot look-ups).
        """
        now = self.clock.now_ms()
        opened = open_pinned(  # 1-9
            data,
            subject,
            expected_type=MessageType.VERDICT,
            trust=self.trust,
            policy=self.policy,
            now_ms=now,
            time_policy=self.time_policy,
            region=self.region,
            heads=self.heads,
        )
        env, signer, parsed = opened.envelope, opened.signer, opened.subject
        try:  # 10
            verdict = decode_verdict(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        if parsed.qname is not None and verdict.qname == parsed.qname:  # 11
            # the subject's name is normalised (its token is canonical), so this one is, and the
            # subject's token is this name's: the checks below, without re-encoding the name
            qname = verdict.qname
        else:
            qname = _normalised_qname(verdict.qname)
            if name_token(qname) != parsed.token:
                raise _subject_mismatch(verdict, parsed)
        if verdict.qtype != parsed.qtype:
            raise _subject_mismatch(verdict, parsed)
        if verdict.coordinator != signer.principal:  # 12
            raise Rejected(
                Reason.PRINCIPAL,
                f"verdict coordinator {verdict.coordinator} signed by {signer.principal}'s key",
            )
        if parsed.coordinator is not None and parsed.coordinator != signer.principal:  # 12
            raise Rejected(
                Reason.PRINCIPAL,
                f"verdict of {signer.principal} on the subject of coordinator {parsed.coordinator}",
            )
        _check_structure(verdict)  # 13
        check_times(verdict, env, now, self.time_policy.max_skew_ms, self.times)  # 14
        check_lkg(verdict, self.time_policy.max_skew_ms, self.times)  # 14e
        if max_age_ms is not None:  # 15
            check_age(env.iat, now, max_age_ms)
        if verdict.is_lkg and not self.accept_lkg:  # 15 (b)
            raise Rejected(
                Reason.LKG,
                f"LKG attestation of round {verdict.basis_round} "
                f"({verdict.staleness_ms} ms old) refused by policy",
            )
        key: VerdictKey = (verdict.coordinator, qname, verdict.qtype)  # 16
        digest = hashlib.sha256(data).digest()
        what = f"{qname} {verdict.qtype} from {verdict.coordinator}"
        duplicate = self._last.check(key, verdict.seq, digest, what)
        self._last.record(key, verdict.seq, digest)
        return CheckedVerdict(verdict, key, env.kid, env.exp, env.iat, duplicate, opened.log)


def _normalised_qname(qname: str) -> str:
    """Step 11: a verdict's qname must be in normalised form [``malformed``]."""
    try:
        normal = normalize_name(qname)
    except SubjectError as exc:
        raise Rejected(Reason.MALFORMED, f"verdict qname: {exc}") from None
    if normal != qname:
        raise Rejected(Reason.MALFORMED, f"verdict qname {qname!r} is not normalised")
    return normal


def _subject_mismatch(verdict: Verdict, parsed: ParsedSubject) -> Rejected:
    return Rejected(
        Reason.SUBJECT,
        f"verdict for {verdict.qname} {verdict.qtype} on the subject of "
        f"{parsed.qname or parsed.token} {parsed.qtype}",
    )


def open_pinned(
    data: bytes,
    subject: str,
    *,
    expected_type: MessageType,
    trust: TrustConfig,
    policy: SuitePolicy,
    now_ms: int,
    time_policy: TimePolicy,
    region: str | None,
    heads: HeadLookup | None = None,
) -> OpenedMessage:
    """Steps 1–9 of every subscriber verifier (DNS, identity and safe-mode): the shared
    :func:`open_signed` for a coordinator-signed message of ``expected_type`` (``heads``: the
    verified log heads of batch-signed messages), then, when the verifier is pinned to ``region``,
    the subject's region equals it [``region_mismatch``]."""
    opened = open_signed(
        data,
        subject,
        expected_type=expected_type,
        role=Role.COORDINATOR,
        trust=trust,
        policy=policy,
        now_ms=now_ms,
        time_policy=time_policy,
        heads=heads,
    )
    if region is not None and opened.subject.region != region:
        raise Rejected(
            Reason.REGION, f"subject region {opened.subject.region} is not the expected {region}"
        )
    return opened


class SeqMemory(Generic[K]):
    """Step 16 (rollback) state: the last accepted ``(seq, envelope digest)`` per key, in an LRU of
    ``capacity`` keys. :meth:`check` raises, :meth:`record` changes state: a verifier calls
    :meth:`record` only once every step has passed."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._last: OrderedDict[K, tuple[int, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last_seq(self, key: K) -> int | None:
        """The last accepted ``seq`` for ``key``, if remembered (does not refresh the LRU)."""
        entry = self._last.get(key)
        return None if entry is None else entry[0]

    def check(self, key: K, seq: int, digest: bytes, what: str) -> bool:
        """``True``: exactly the last accepted message again (a duplicate); ``False``: a newer one.
        Raises :class:`Rejected` (``rollback``) for any other message with ``seq`` not above the
        last accepted one for ``key``."""
        last = self._last.get(key)
        if last is None:
            return False
        last_seq, last_digest = last
        if seq == last_seq and digest == last_digest:
            return True
        if seq <= last_seq:
            raise Rejected(
                Reason.ROLLBACK, f"seq {seq} for {what} is not above the accepted {last_seq}"
            )
        return False

    def record(self, key: K, seq: int, digest: bytes) -> None:
        """Remember ``(seq, digest)`` as the last accepted for ``key`` (a duplicate keeps it)."""
        self._last[key] = (seq, digest)
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)


def seq_bounds(iat_ms: int, now_ms: int, max_skew_ms: int) -> tuple[int, int]:
    """Step 14c: the accepted ``seq`` range ``[low, high)`` for a verdict issued at ``iat_ms``."""
    return iat_ms * SEQ_PER_MS, (min(iat_ms, now_ms) + max_skew_ms) * SEQ_PER_MS


def check_times(
    v: Timed, env: Envelope, now_ms: int, max_skew_ms: int, times: VerdictTimes
) -> None:
    """Step 14: the verdict's times, ``seq`` and round agree with its envelope and the clock.

    Raises :class:`Rejected` (``lifetime``, ``expired``, ``sequence`` or ``round``)."""
    if v.issued_ms != env.iat or v.expires_ms > env.exp:  # a
        raise Rejected(
            Reason.LIFETIME,
            f"verdict valid {v.issued_ms}..{v.expires_ms} is not inside its envelope's "
            f"{env.iat}..{env.exp}",
        )
    if now_ms >= v.expires_ms:  # b
        raise Rejected(Reason.EXPIRED, f"verdict expired {now_ms - v.expires_ms} ms ago")
    low, high = seq_bounds(env.iat, now_ms, max_skew_ms)  # c
    if not low <= v.seq < high:
        ahead = v.seq >= high
        raise Rejected(
            Reason.SEQUENCE,
            f"seq {v.seq} is {'ahead of' if ahead else 'behind'} its issue time {env.iat} "
            f"(accepted: {low} <= seq < {high})",
        )
    start = v.round * times.round_ms  # d
    if start > min(env.iat, now_ms) + max_skew_ms:
        raise Rejected(
            Reason.ROUND,
            f"round {v.round} starts {start - min(env.iat, now_ms)} ms after its issue time or "
            f"the clock (round_ms={times.round_ms}: is it the deployment's?)",
        )
    if env.iat >= start + times.round_ms + times.max_decision_delay_ms:
        raise Rejected(
            Reason.ROUND,
            f"round {v.round} ended {env.iat - start - times.round_ms} ms before its issue time "
            f"(round_ms={times.round_ms}: is it the deployment's?)",
        )


def check_lkg(v: Verdict, max_skew_ms: int, times: VerdictTimes) -> None:
    """Step 14e: the bounds of an LKG attestation (a fresh verdict passes). Raises
    :class:`Rejected` (``lifetime``, ``stale`` or ``round``)."""
    if not v.is_lkg:
        return
    if v.expires_ms - v.issued_ms > times.max_lkg_lifetime_ms:
        raise Rejected(
            Reason.LIFETIME,
            f"LKG attestation valid {v.expires_ms - v.issued_ms} ms, more than "
            f"{times.max_lkg_lifetime_ms} ms",
        )
    if v.expires_ms - v.basis_ms > times.max_lkg_staleness_ms:
        raise Rejected(
            Reason.STALE,
            f"LKG attestation usable until {v.expires_ms - v.basis_ms} ms after its evidence, "
            f"more than the cap {times.max_lkg_staleness_ms} ms",
        )
    start = v.basis_round * times.round_ms
    if start > v.basis_ms + max_skew_ms or v.basis_ms >= (
        start + times.round_ms + times.max_decision_delay_ms
    ):
        raise Rejected(
            Reason.ROUND,
            f"LKG basis round {v.basis_round} does not fit its decision time {v.basis_ms}",
        )


def check_age(iat_ms: int, now_ms: int, max_age_ms: int) -> None:
    """Step 15: a verdict issued more than ``max_age_ms`` ago is not the current answer."""
    if now_ms - iat_ms > max_age_ms:
        raise Rejected(
            Reason.STALE,
            f"issued {now_ms - iat_ms} ms ago, more than the maximum age {max_age_ms} ms",
        )


def _check_structure(v: Verdict) -> None:
    """Step 13: internal consistency of a decoded verdict; raises :class:`Rejected` (malformed)."""

    def bad(detail: str) -> Rejected:
        return Rejected(Reason.MALFORMED, f"verdict for {v.qname} {v.qtype}: {detail}")

    if not (v.k <= v.n < 2 * v.k):
        raise bad(f"quorum k={v.k} of n={v.n} violates 2k > n, k <= n")
    voters = v.voters
    if len(voters) != v.n:
        raise bad(f"{len(voters)} voters listed, n={v.n}")
    # one pass over the voters: their ids, and the agreeing ones' count and digests (read below)
    ids = set()
    agree = 0
    other_digest = False
    digest = v.answer_digest
    for r in voters:
        ids.add(r.voter)
        if r.state is VoterState.AGREE:
            agree += 1
            if r.answer_digest != digest and r.answer_digest:
                other_digest = True
    if len(ids) != len(voters):
        raise bad("a voter is listed twice")
    if v.issued_ms >= v.expires_ms:
        raise bad(f"issued_ms {v.issued_ms} is not before expires_ms {v.expires_ms}")
    if v.outcome is Outcome.TRUSTED:
        if digest != answer_digest(v.rcode, v.answer):
            raise bad("answer digest does not match the answer")
        if other_digest:
            raise bad("an agreeing voter carries another answer digest")
        if agree < v.k:
            raise bad(f"TRUSTED with only {agree} agreeing voters, k={v.k}")
        if v.dnssec is DnssecState.BOGUS:
            raise bad("TRUSTED verdict with DNSSEC state bogus")
    elif v.answer or v.rcode != 0 or v.answer_digest:
        raise bad(f"{v.outcome.value} verdict carries an answer")
    elif v.dnssec is not DnssecState.INDETERMINATE:
        raise bad(f"{v.outcome.value} verdict with DNSSEC state {v.dnssec.value}")
    fresh = (v.basis_round, v.basis_ms) == (v.round, v.issued_ms)
    if not fresh and not (v.basis_round < v.round and v.basis_ms < v.issued_ms):
        raise bad(
            f"basis round {v.basis_round} at {v.basis_ms} is neither the verdict's own "
            f"(round {v.round} at {v.issued_ms}) nor older in both"
        )
    if not fresh and v.outcome is not Outcome.TRUSTED:
        raise bad(f"an LKG attestation must be TRUSTED, not {v.outcome.value}")
