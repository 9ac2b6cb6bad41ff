"""Test factories and hypothesis strategies for identity evidence and identity verdicts.

The identity counterpart of :mod:`tests.support.wirefactories` (whose keys, identities and clock it
uses): honest observations per kind, evidence ballots, identity verdicts, sealing on the right subject.

Typical use::

    world = make_world()
    agent = world.agent("us-east")
    obs = ok_bundle(agent.principal, agent.region, world.round, "example.org", digest=b"\\x01" * 32)
    data = seal_evidence(agent, make_evidence_ballot(agent, world.round, [obs]), now_ms=...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from hypothesis import strategies as st
from wirefactories import LIFETIME_MS, Identity, ids

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceBallot,
    EvidenceStatus,
    Facts,
    IdentityKind,
    IdentityVerdict,
    Observation,
    encode,
    facts_digest,
    observation_digest,
)
from cctf.bus_schemas.messages import MessageType, Outcome, VoterRecord, VoterState
from cctf.bus_schemas.subjects import evidence_subject, identity_verdict_subject

__all__ = [
    "DIGEST_A",
    "DIGEST_B",
    "evidence_ballots",
    "facts_for",
    "identity_subjects",
    "identity_verdicts",
    "make_evidence_ballot",
    "make_identity_verdict",
    "make_observation",
    "observations",
    "seal_evidence",
    "seal_identity_verdict",
]

DIGEST_A: Final = bytes(range(32))
DIGEST_B: Final = bytes(range(32, 64))

#: Default subject per kind.
SUBJECTS: Final = {
    IdentityKind.BUNDLE: "example.org",
    IdentityKind.JWKS: "https://issuer.example.org",
    IdentityKind.MTLS: "spiffe://example.org/web",
}


def facts_for(
    kind: IdentityKind,
    subject: str,
    *,
    digest: bytes = DIGEST_A,
    bundle_digest: bytes = DIGEST_B,
    sequence: int = 1,
    keys: int = 1,
    not_before_ms: int = 1_699_999_000_000,
    not_after_ms: int = 1_700_003_600_000,
) -> Facts:
    """The facts an honest agent states for an ``ok`` observation of ``kind`` (check_facts holds)."""
    if kind is IdentityKind.BUNDLE:
        return Facts("", digest, b"", sequence, 0, 0, keys)
    if kind is IdentityKind.JWKS:
        return Facts("", digest, b"", 0, 0, 0, keys)
    return Facts(subject, digest, bundle_digest, 0, not_before_ms, not_after_ms, 0)


def make_observation(
    agent: str,
    region: str,
    round_: int,
    kind: IdentityKind = IdentityKind.BUNDLE,
    subject: str | None = None,
    status: EvidenceStatus = EvidenceStatus.OK,
    *,
    facts: Facts | None = None,
    detail: str | None = None,
    observed_ms: int = 0,
    **fact_args: int | bytes,
) -> Observation:
    """An honest observation: for ``ok`` the facts of :func:`facts_for` and their digest; otherwise
    empty facts (or ``facts`` for ``invalid``), no digest and a reason code."""
    subject = SUBJECTS[kind] if subject is None else subject
    if status is EvidenceStatus.OK:
        facts = facts_for(kind, subject, **fact_args) if facts is None else facts  # type: ignore[arg-type]
        digest = facts_digest(kind, subject, facts)
        detail = "" if detail is None else detail
    else:
        facts = EMPTY_FACTS if facts is None else facts
        digest = b""
        detail = status.value if detail is None else detail
    return Observation(
        agent, region, round_, kind, subject, status, facts, digest, detail, observed_ms
    )


def make_evidence_ballot(
    signer: Identity, round_: int, observations: Sequence[Observation], *, issued_ms: int = 0
) -> EvidenceBallot:
    return EvidenceBallot(signer.principal, signer.region, round_, issued_ms, list(observations))


def seal_evidence(
    signer: Identity,
    ballot: EvidenceBallot,
    *,
    now_ms: int,
    subject: str | None = None,
    lifetime_ms: int = LIFETIME_MS,
    nonce: bytes | None = None,
) -> bytes:
    """Seal ``ballot`` as type ``evidence`` on ``subject`` (default: the signer's evidence subject)."""
    subject = evidence_subject(signer.region, signer.principal) if subject is None else subject
    return seal(
        signer.key,
        subject,
        MessageType.EVIDENCE,
        encode(ballot),
        now_ms=now_ms,
        lifetime_ms=lifetime_ms,
        nonce=nonce,
    )


def make_identity_verdict(
    coordinator: str,
    observations: Sequence[Observation],
    *,
    kind: IdentityKind | None = None,
    subject: str | None = None,
    round_: int | None = None,
    k: int | None = None,
    outcome: Outcome | None = None,
    issued_ms: int,
    expires_ms: int,
    seq: int | None = None,
) -> IdentityVerdict:
    """The verdict an honest coordinator would issue over ``observations`` (all for one kind and
    subject, one per agent): TRUSTED on the majority digest when it has ``k`` (default majority of
    the observers), else UNAVAILABLE. Pass ``outcome`` to force one."""
    kind = observations[0].kind if kind is None else kind
    subject = observations[0].subject if subject is None else subject
    round_ = observations[0].round if round_ is None else round_
    n = len(observations)
    k = n // 2 + 1 if k is None else k
    counts: dict[bytes, int] = {}
    for o in observations:
        if o.facts_digest:
            counts[o.facts_digest] = counts.get(o.facts_digest, 0) + 1
    best = max(counts, key=lambda d: counts[d], default=b"")
    trusted = counts.get(best, 0) >= k if outcome is None else outcome is Outcome.TRUSTED
    if outcome is None:
        outcome = Outcome.TRUSTED if trusted else Outcome.UNAVAILABLE
    records = []
    winning = next((o.facts for o in observations if o.facts_digest == best), EMPTY_FACTS)
    for o in sorted(observations, key=lambda o: o.agent):
        if not o.facts_digest:
            state = (
                VoterState.DISAGREE
                if o.status is EvidenceStatus.INVALID
                else VoterState.UNAVAILABLE
            )
        elif trusted and o.facts_digest == best:
            state = VoterState.AGREE
        else:
            state = VoterState.DISAGREE
        records.append(VoterRecord(o.agent, state, o.facts_digest))
    return IdentityVerdict(
        kind=kind,
        subject=subject,
        round=round_,
        outcome=outcome,
        facts=winning if trusted else EMPTY_FACTS,
        facts_digest=best if trusted else b"",
        voters=records,
        k=k,
        n=n,
        observation_digests=[observation_digest(o) for o in observations],
        decided_early=False,
        issued_ms=issued_ms,
        expires_ms=expires_ms,
        coordinator=coordinator,
        seq=issued_ms * 1000 if seq is None else seq,
    )


def seal_identity_verdict(
    signer: Identity,
    verdict: IdentityVerdict,
    *,
    subject: str | None = None,
    region: str | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Seal ``verdict`` as type ``identity`` with ``iat = issued_ms`` and ``exp = expires_ms`` on its
    identity verdict subject (in ``region``, default the signer's)."""
    if subject is None:
        subject = identity_verdict_subject(
            signer.region if region is None else region, verdict.kind, verdict.subject
        )
    return seal(
        signer.key,
        subject,
        MessageType.IDENTITY,
        encode(verdict),
        now_ms=verdict.issued_ms,
        lifetime_ms=verdict.expires_ms - verdict.issued_ms,
        nonce=nonce,
    )


# ------------------------------------------------------------------------------ hypothesis strategies

_uints = st.integers(0, 2**63 - 1)
_opt_digests = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32), st.binary(max_size=32))
_visible = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
#: Any string an identity subject field accepts (printable ASCII, 1..2048; mostly short).
identity_subjects = st.one_of(
    st.text(_visible, min_size=1, max_size=40),
    st.sampled_from(list(SUBJECTS.values())),
    st.text(_visible, min_size=L.MAX_IDENTITY_SUBJECT_CHARS, max_size=L.MAX_IDENTITY_SUBJECT_CHARS),
)
_details = st.one_of(
    st.just(""), st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True), st.just("timeout")
)
_facts = st.builds(
    Facts,
    spiffe_id=st.one_of(st.just(""), identity_subjects),
    key_digest=_opt_digests,
    bundle_digest=_opt_digests,
    sequence=_uints,
    not_before_ms=_uints,
    not_after_ms=_uints,
    keys=st.integers(0, L.MAX_IDENTITY_KEYS),
)


@st.composite
def observations(draw: st.DrawFn, *, consistent: bool = False) -> Observation:
    """Any observation strict decoding accepts; ``consistent=True``: one an honest agent sends."""
    kind = draw(st.sampled_from(IdentityKind))
    status = draw(st.sampled_from(EvidenceStatus))
    subject = draw(identity_subjects)
    if consistent:
        return make_observation(
            draw(ids),
            draw(ids),
            draw(_uints),
            kind,
            subject,
            status,
            observed_ms=draw(_uints),
            digest=draw(st.binary(min_size=32, max_size=32)),
            keys=draw(st.integers(1, 9)),
        )
    return Observation(
        agent=draw(ids),
        region=draw(ids),
        round=draw(_uints),
        kind=kind,
        subject=subject,
        status=status,
        facts=draw(_facts),
        facts_digest=draw(_opt_digests),
        detail=draw(_details),
        observed_ms=draw(_uints),
    )


@st.composite
def evidence_ballots(draw: st.DrawFn, *, max_observations: int = 4) -> EvidenceBallot:
    return EvidenceBallot(
        agent=draw(ids),
        region=draw(ids),
        round=draw(_uints),
        issued_ms=draw(_uints),
        observations=draw(st.lists(observations(), max_size=max_observations)),
    )


@st.composite
def identity_verdicts(draw: st.DrawFn, *, max_voters: int = 5) -> IdentityVerdict:
    records = st.builds(
        VoterRecord,
        voter=st.text(max_size=2 * L.MAX_ID_CHARS + 1),
        state=st.sampled_from(VoterState),
        answer_digest=_opt_digests,
    )
    return IdentityVerdict(
        kind=draw(st.sampled_from(IdentityKind)),
        subject=draw(identity_subjects),
        round=draw(_uints),
        outcome=draw(st.sampled_from(Outcome)),
        facts=draw(_facts),
        facts_digest=draw(_opt_digests),
        voters=draw(st.lists(records, max_size=max_voters)),
        k=draw(st.integers(1, L.MAX_VOTERS)),
        n=draw(st.integers(1, L.MAX_VOTERS)),
        observation_digests=draw(
            st.lists(st.binary(min_size=32, max_size=32), max_size=max_voters)
        ),
        decided_early=draw(st.booleans()),
        issued_ms=draw(_uints),
        expires_ms=draw(_uints),
        coordinator=draw(ids),
        seq=draw(_uints),
    )
