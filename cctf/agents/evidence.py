"""From identity fetch/probe results to evidence observations and ballots (pure: no I/O, no clock).

An agent's identity work of one round (``cctf.agents.evidence_run`` does the I/O) ends in one result
per configured subject:

* ``bundle`` (subject: trust domain): the bundle its :class:`~cctf.identity.bundle.FederationState`
  accepted at the last refresh, or why the last refresh failed;
* ``jwks`` (subject: issuer URL): the issuer's :class:`~cctf.identity.oidc.KeySet`, or a failure;
* ``mtls`` (subject: SPIFFE ID): the validated :class:`~cctf.identity.x509svid.X509Svid` presented by
  the workload's endpoint, or a failure.

:func:`observation` turns one result into an :class:`~cctf.bus_schemas.evidence.Observation`
(metadata only: digests, SPIFFE IDs, validity, counts, a reason code) and :func:`failure_of` maps an
exception to a status and reason code:

* :class:`~cctf.identity.fetch.FetchError`: ``timeout`` when it timed out, else ``error`` (its
  reason: ``connect_failed``, ``tls_failed``, ``http_status``, ``redirect_refused``, ``too_large``...);
* :class:`~cctf.identity.errors.IdentityError`: ``error`` for a document that is not a document
  (:data:`ERROR_REASONS`: malformed / oversized JSON, an undecodable certificate), else ``invalid``
  (empty bundle, ``spiffe_sequence`` rollback or conflict, wrong SPIFFE ID, a chain that does not
  validate, an expired leaf, an issuer mismatch...): fetched, and refused;
* anything else: ``error`` / ``internal``.

:func:`build_evidence_ballots` packs a round's observations into ballots of at most
:data:`~cctf.bus_schemas.limits.MAX_OBSERVATIONS_PER_BALLOT` (every observation fits: 64 of the
largest stay under the payload cap), and :func:`evidence_msg_id` is their keyed ``Nats-Msg-Id``
(``docs/wire-protocol.md`` §5.6).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceBallot,
    EvidenceStatus,
    Facts,
    IdentityKind,
    Observation,
    check_observation,
    facts_digest,
)
from cctf.bus_schemas.messages import PayloadError
from cctf.crypto.keys import SigningKey
from cctf.errors import CctfError
from cctf.identity.bundle import TrustBundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.fetch import FetchError
from cctf.identity.oidc import KeySet
from cctf.identity.x509svid import X509Svid
from cctf.ids import IdError, check_id

__all__ = [
    "ERROR_REASONS",
    "EVIDENCE_MSG_ID_PREFIX",
    "EvidenceError",
    "Failure",
    "Outcome",
    "build_evidence_ballots",
    "evidence_id_secret",
    "evidence_msg_id",
    "failure_of",
    "observation",
]

#: ``Nats-Msg-Id`` of an evidence ballot: ``cctf-evidence.<agent>.<round>.<part>.<tag>``.
EVIDENCE_MSG_ID_PREFIX: Final = "cctf-evidence"
_MAX_UINT: Final = 2**63 - 1

#: Identity refusals that mean "this is not a document" rather than "this document is refused".
ERROR_REASONS: Final = frozenset(
    {
        Reason.BUNDLE_MALFORMED,
        Reason.BUNDLE_TOO_LARGE,
        Reason.DISCOVERY_MALFORMED,
        Reason.JWKS_MALFORMED,
        Reason.JWKS_TOO_LARGE,
        Reason.CERTIFICATE_MALFORMED,
        Reason.CHAIN_EMPTY,
    }
)


class EvidenceError(CctfError, ValueError):
    """Evidence ballots cannot be built (invalid agent, region, round, or too many observations)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A subject observed without success: ``status`` is timeout / error / invalid, ``detail`` a
    reason code; ``spiffe_id`` is what an endpoint presented, when known (``invalid`` only)."""

    status: EvidenceStatus
    detail: str
    spiffe_id: str = ""


#: What one subject's observation is made from.
Outcome = TrustBundle | KeySet | X509Svid | Failure

_OBS_DECODER: Final = msgspec.msgpack.Decoder(Observation)
_ENCODER: Final = msgspec.msgpack.Encoder()


def failure_of(exc: BaseException) -> Failure:
    """The status and reason code of a failed fetch, probe, parse or validation (module doc)."""
    if isinstance(exc, FetchError):
        status = EvidenceStatus.TIMEOUT if exc.timed_out else EvidenceStatus.ERROR
        return Failure(status, exc.reason.value)
    if isinstance(exc, IdentityError):
        status = EvidenceStatus.ERROR if exc.reason in ERROR_REASONS else EvidenceStatus.INVALID
        return Failure(status, exc.reason.value)
    if isinstance(exc, TimeoutError):
        return Failure(EvidenceStatus.TIMEOUT, "timeout")
    return Failure(EvidenceStatus.ERROR, "internal")


def _ms(value: int) -> int:
    return max(0, min(_MAX_UINT, int(value)))


def _facts(kind: IdentityKind, subject: str, outcome: Outcome) -> Facts | Failure:
    if isinstance(outcome, Failure):
        return outcome
    if kind is IdentityKind.BUNDLE and isinstance(outcome, TrustBundle):
        if outcome.trust_domain != subject:
            return Failure(EvidenceStatus.INVALID, Reason.WRONG_TRUST_DOMAIN.value)
        sequence = 0 if outcome.sequence is None else outcome.sequence
        if sequence > _MAX_UINT:
            return Failure(EvidenceStatus.INVALID, "sequence_out_of_range")
        return Facts("", outcome.digest, b"", sequence, 0, 0, outcome.authority_count)
    if kind is IdentityKind.JWKS and isinstance(outcome, KeySet):
        return Facts("", outcome.digest, b"", 0, 0, 0, len(outcome.keys))
    if kind is IdentityKind.MTLS and isinstance(outcome, X509Svid):
        presented = str(outcome.spiffe_id)
        if presented != subject:
            return Failure(EvidenceStatus.INVALID, Reason.WRONG_SPIFFE_ID.value, presented)
        return Facts(
            presented,
            outcome.leaf_key_digest,
            outcome.bundle_digest,
            0,
            _ms(outcome.not_before_ms),
            _ms(outcome.not_after_ms),
            0,
        )
    return Failure(EvidenceStatus.ERROR, "internal")


def observation(
    agent: str,
    region: str,
    round_: int,
    kind: IdentityKind,
    subject: str,
    outcome: Outcome,
    observed_ms: int,
) -> Observation:
    """The observation of one result. Always one the coordinator's strict decoder and §5.6 step 14
    accept: an outcome that cannot be represented (a field out of its wire range) becomes an
    ``error`` observation with reason ``unrepresentable``."""
    facts = _facts(kind, subject, outcome)
    observed = _ms(observed_ms)
    if isinstance(facts, Failure):
        shown_facts = EMPTY_FACTS
        if facts.status is EvidenceStatus.INVALID and facts.spiffe_id:
            shown_facts = msgspec.structs.replace(EMPTY_FACTS, spiffe_id=facts.spiffe_id)
        obs = Observation(
            agent, region, round_, kind, subject, facts.status, shown_facts, b"", facts.detail,
            observed,
        )  # fmt: skip
    else:
        digest = facts_digest(kind, subject, facts)
        obs = Observation(
            agent, region, round_, kind, subject, EvidenceStatus.OK, facts, digest, "", observed
        )
    if _representable(obs):
        return obs
    fallback = Observation(
        agent, region, round_, kind, subject, EvidenceStatus.ERROR, EMPTY_FACTS, b"",
        "unrepresentable", observed,
    )  # fmt: skip
    if not _representable(fallback):  # the subject or header itself is out of range
        raise EvidenceError(f"cannot observe {kind} subject (invalid agent, region or subject)")
    return fallback


def _representable(obs: Observation) -> bool:
    """Whether the coordinator would accept ``obs``: strict decoding and §5.6 step 14."""
    try:
        check_observation(_OBS_DECODER.decode(_ENCODER.encode(obs)))
    except (msgspec.ValidationError, msgspec.DecodeError, PayloadError):
        return False
    return True


def build_evidence_ballots(
    agent: str, region: str, round_: int, observations: Sequence[Observation], issued_ms: int
) -> list[EvidenceBallot]:
    """The round's evidence ballots (parts of at most 64 observations, in the given order); none when
    there is nothing to report. Raises :class:`EvidenceError` for a bad header, an observation of
    another agent, region or round, a repeated ``(kind, subject)`` or more than
    ``MAX_OBSERVATIONS_PER_BALLOT × MAX_EVIDENCE_BALLOTS_PER_ROUND`` observations."""
    try:
        check_id(agent, "agent id")
        check_id(region, "region")
    except IdError as exc:
        raise EvidenceError(str(exc)) from None
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ <= _MAX_UINT:
        raise EvidenceError(f"invalid round {round_!r}")
    per = L.MAX_OBSERVATIONS_PER_BALLOT
    if len(observations) > per * L.MAX_EVIDENCE_BALLOTS_PER_ROUND:
        raise EvidenceError(f"{len(observations)} observations exceed one round's evidence cap")
    seen: set[tuple[str, str]] = set()
    for obs in observations:
        if (obs.agent, obs.region, obs.round) != (agent, region, round_):
            raise EvidenceError("an observation of another agent, region or round")
        key = (obs.kind.value, obs.subject)
        if key in seen:
            raise EvidenceError(f"two {obs.kind} observations of one subject")
        seen.add(key)
    issued = _ms(issued_ms)
    return [
        EvidenceBallot(agent, region, round_, issued, list(observations[i : i + per]))
        for i in range(0, len(observations), per)
    ]


def evidence_msg_id(agent: str, round_: int, part: int = 0, *, secret: bytes) -> str:
    """``cctf-evidence.<agent>.<round>.<part>.<tag>``, ``<tag>`` = hex of the first 12 bytes of
    HMAC-SHA256(``secret``, ``evidence|agent|round|part``) (``secret``: :func:`evidence_id_secret`).
    Stable per (agent key, round, part), unknown to other agents of the region (who share its
    stream's duplicate window), never equal to a ballot's id."""
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ <= _MAX_UINT:
        raise EvidenceError(f"invalid round {round_!r}")
    if (
        isinstance(part, bool)
        or not isinstance(part, int)
        or not 0 <= part < L.MAX_EVIDENCE_BALLOTS_PER_ROUND
    ):
        raise EvidenceError(f"invalid evidence part {part!r}")
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise EvidenceError("an evidence message id needs the agent's id secret (>= 16 bytes)")
    agent = check_id(agent, "agent id")
    tag = hmac.new(secret, f"evidence|{agent}|{round_}|{part}".encode(), "sha256").digest()[:12]
    return f"{EVIDENCE_MSG_ID_PREFIX}.{agent}.{round_}.{part}.{tag.hex()}"


def evidence_id_secret(key: SigningKey) -> bytes:
    """The secret of :func:`evidence_msg_id` for an agent's signing key."""
    return key.derive_secret("evidence-msg-id")
