"""Ballot verification: the coordinator's numbered checks (pure, no I/O).

Steps 1–9 are the shared :func:`cctf.bus_schemas.opening.open_signed` (size, decode, version, type,
suite policy, key, signature, time window; 9, the subject is a vote subject
``cctf.v1.vote.<region>.<agent>``). Then:

10. replay: the (key id, nonce) pair was not seen before (``replay``); seen with the SAME envelope
    digest (SHA-256 of the message bytes) it is the same message again, ``duplicate`` (its live and
    its durable copy, a retried publish): recognised, never a replay and never counted twice
10a. early round freshness: the payload's ``round``, read from its head only
    (:func:`~cctf.bus_schemas.messages.peek_round`: the votes are skipped, not decoded), outside the
    window of step 13 is refused at once (``round``): a stale ballot, signed but too late, costs a
    signature check and no decoding of its votes (a head that does not decode is left to step 11)
11. payload: strict ballot decoding
12. regional pinning: subject region = key region = ballot region (and every vote's), and subject
    agent = key principal = ballot agent (and every vote's)
12a. certificate gate (only with the ``ca:`` config section): the signer's key id holds a logged,
    valid, unrevoked certificate now (:meth:`cctf.ca.registry.CertRegistry.check`)
    [``cert_unlogged``, ``cert_expired``, ``cert_revoked``]
13. round freshness: ``current - max_round_lag ≤ round ≤ current + 1``, every vote in the ballot round
14. every vote's answer digest matches its answer (for ``answer`` votes) or is empty, and its
    DNSSEC state is one its status admits (:func:`~cctf.bus_schemas.messages.dnssec_states_for`:
    any for an answer, ``bogus``/``indeterminate`` for SERVFAIL, ``indeterminate`` otherwise)

Evidence (:meth:`BallotVerifier.verify_evidence`, type ``evidence`` on
``cctf.v1.evidence.<region>.<agent>``) takes the same steps 1-13 (one shared implementation,
:meth:`BallotVerifier._open`); its step 14 checks each observation (region, agent and round are the
ballot's, its consistency, no ``(kind, subject)`` twice: ``first_bad_observation``).

Each failure raises :class:`~cctf.bus_schemas.envelope.Rejected` with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from cctf.bus_schemas.envelope import Reason, Rejected, TimePolicy
from cctf.bus_schemas.evidence import EvidenceBallot, decode_evidence, first_bad_observation
from cctf.bus_schemas.messages import (
    Ballot,
    MessageType,
    PayloadError,
    VoteStatus,
    answer_digest,
    decode_ballot,
    dnssec_states_for,
    peek_round,
)
from cctf.bus_schemas.opening import open_signed
from cctf.clock import Clock
from cctf.coordinator.replay import Admission, ReplayCache, ReplayCacheFull
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig

#: dnssec_states_for, as a table (step 14)
_DNSSEC_STATES: Final = {status: dnssec_states_for(status) for status in VoteStatus}


class CertCheck(Protocol):
    """Step 12a (:class:`cctf.ca.registry.CertRegistry`): raises ``Rejected`` if ``kid`` holds no
    valid certificate at ``now_ms``."""

    def check(self, kid: str, now_ms: int) -> object: ...


class _AgentMessage(Protocol):
    """What steps 12-13 read of a ballot or an evidence ballot."""

    @property
    def agent(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def round(self) -> int: ...


M = TypeVar("M", bound=_AgentMessage)


@dataclass(frozen=True)
class RoundPolicy:
    round_ms: int = 1_000
    max_round_lag: int = 2  # rounds in the past still accepted

    def current(self, now_ms: int) -> int:
        return now_ms // self.round_ms


@dataclass
class BallotVerifier:
    trust: TrustConfig
    clock: Clock
    policy: SuitePolicy = field(default_factory=SuitePolicy)
    rounds: RoundPolicy = field(default_factory=RoundPolicy)
    times: TimePolicy = field(default_factory=TimePolicy)
    replay: ReplayCache = field(default_factory=ReplayCache)
    certs: CertCheck | None = None  # step 12a, with the coordinator's ``ca:`` section

    def _open(
        self,
        data: bytes,
        subject: str,
        msg_type: MessageType,
        decode: Callable[[bytes], M],
        digest: bytes | None,
    ) -> M:
        """Steps 1-13, shared by ballots and evidence (they differ in type, subject kind and
        payload only). ``digest``: SHA-256 of ``data``, if the caller computed it already."""
        now = self.clock.now_ms()
        opened = open_signed(  # 1-9
            data,
            subject,
            expected_type=msg_type,
            role=Role.AGENT,
            trust=self.trust,
            policy=self.policy,
            now_ms=now,
            time_policy=self.times,
        )
        env, signer, parsed = opened.envelope, opened.signer, opened.subject
        try:  # 10
            if digest is None:
                digest = hashlib.sha256(data).digest()
            seen = self.replay.admit(env.kid.encode() + env.nonce, digest, env.exp, now)
        except ReplayCacheFull as exc:
            raise Rejected(Reason.REPLAY, str(exc)) from None
        if seen is Admission.DUPLICATE:
            raise Rejected(Reason.DUPLICATE, "the same message was seen before")
        if seen is Admission.REPLAY:
            raise Rejected(Reason.REPLAY, "nonce already seen with another message")
        current = self.rounds.current(now)
        early = peek_round(env.payload)  # 10a
        if early is not None and not self._in_window(early, current):
            raise Rejected(Reason.ROUND, f"round {early} is outside the window at {current}")
        try:  # 11
            ballot = decode(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        # 12
        if not (parsed.region == signer.region == ballot.region):
            raise Rejected(
                Reason.REGION,
                f"subject region {parsed.region}, key region {signer.region}, "
                f"ballot region {ballot.region} differ",
            )
        if not (parsed.agent == signer.principal == ballot.agent):
            raise Rejected(
                Reason.PRINCIPAL,
                f"subject agent {parsed.agent}, key principal {signer.principal}, "
                f"ballot agent {ballot.agent} differ",
            )
        if self.certs is not None:  # 12a
            self.certs.check(env.kid, now)
        if not self._in_window(ballot.round, current):  # 13
            raise Rejected(Reason.ROUND, f"round {ballot.round} is outside the window at {current}")
        return ballot

    def _in_window(self, round_: int, current: int) -> bool:
        return current - self.rounds.max_round_lag <= round_ <= current + 1

    def verify(self, data: bytes, subject: str, digest: bytes | None = None) -> Ballot:
        """A ballot on a vote subject: steps 1-14 (``digest``: SHA-256 of ``data``, if known)."""
        ballot = self._open(data, subject, MessageType.BALLOT, decode_ballot, digest)  # 1-13
        region, agent, round_ = ballot.region, ballot.agent, ballot.round
        states, answer = _DNSSEC_STATES, VoteStatus.ANSWER
        for vote in ballot.votes:  # the hot path: once per vote
            if vote.region != region:
                raise Rejected(Reason.REGION, f"vote region {vote.region} is not {region}")
            if vote.agent != agent:
                raise Rejected(Reason.PRINCIPAL, f"vote agent {vote.agent} is not {agent}")
            if vote.round != round_:
                raise Rejected(Reason.ROUND, f"vote round {vote.round} is not {round_}")
            status = vote.status
            expected = answer_digest(vote.rcode, vote.answer) if status is answer else b""  # 14
            if vote.answer_digest != expected:
                raise Rejected(Reason.MALFORMED, f"vote for {vote.qname} has a wrong answer digest")
            if vote.dnssec not in states[status]:
                raise Rejected(
                    Reason.MALFORMED,
                    f"vote for {vote.qname} is {vote.status.value} with DNSSEC state "
                    f"{vote.dnssec.value}",
                )
        return ballot

    def verify_evidence(
        self, data: bytes, subject: str, digest: bytes | None = None
    ) -> EvidenceBallot:
        """An evidence ballot on an evidence subject: the same steps 1-13, then step 14 per
        observation (:func:`cctf.bus_schemas.evidence.first_bad_observation`)."""
        ev = self._open(data, subject, MessageType.EVIDENCE, decode_evidence, digest)  # 1-13
        bad = first_bad_observation(ev)  # 14
        if bad is not None:
            raise Rejected(Reason(bad[0]), bad[1])
        return ev
