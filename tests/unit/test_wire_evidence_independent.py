"""The identity wire (docs/wire-protocol.md §2, §5.5–§5.8) against a clean-room implementation.

``tests/support/independent_evidence.py`` is written from the document alone (no ``cctf`` imports, no
msgspec). These tests check that it and the reference code agree on codecs, digests, subject tokens,
the coordinator's §5.6 step 14 and the subscriber's §5.8 step 13, and that the stored vectors in
``docs/test-vectors/identity/`` verify with both. Regenerate the vectors after an intended change with
``CCTF_REGEN_VECTORS=1 .venv/bin/pytest -q tests/unit/test_wire_evidence_independent.py -k regenerate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import independent_evidence as ie
import independent_verifier as iv
import msgspec
import pytest
from evidencefactories import (
    evidence_ballots,
    identity_subjects,
    identity_verdicts,
    make_identity_verdict,
    make_observation,
    observations,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wirefactories import START_MS, Identity, flip_byte, ids, make_identity

from cctf.bus_schemas.envelope import decode_envelope, envelope_tbs, seal
from cctf.bus_schemas.evidence import (
    EvidenceBallot,
    EvidenceStatus,
    IdentityKind,
    IdentityVerdict,
    Observation,
    check_identity_verdict,
    decode_evidence,
    decode_identity_verdict,
    encode,
    facts_digest,
    first_bad_observation,
    observation_digest,
)
from cctf.bus_schemas.messages import MessageType, Outcome, PayloadError
from cctf.bus_schemas.subjects import (
    SubjectError,
    evidence_subject,
    identity_token,
    identity_verdict_subject,
    parse_subject,
)
from cctf.crypto.suites import COMPONENTS, SuiteId
from cctf.crypto.trust import Role, TrustEntry

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "identity"
NOW = START_MS
ROUND = NOW // 1000


def plain(obj: Any) -> Any:
    if isinstance(obj, msgspec.Struct):
        return msgspec.msgpack.decode(encode(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    if isinstance(obj, list | tuple):
        return [plain(x) for x in obj]
    return obj


def named(obj: Any) -> Any:
    if isinstance(obj, msgspec.Struct):
        return {f: named(getattr(obj, f)) for f in obj.__struct_fields__}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: named(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [named(x) for x in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, str):
        return str(obj)
    return obj


def iv_key(ident: Identity | TrustEntry) -> iv.Key:
    entry = ident.entry if isinstance(ident, Identity) else ident
    return iv.Key(entry.keys.suite.value, entry.keys.raw, entry.role.value, entry.principal,
                  entry.region)  # fmt: skip


# ------------------------------------------------------------------------------------------- codecs


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(evidence_ballots(max_observations=3))
def test_evidence_codec_and_digests_agree(ballot: EvidenceBallot) -> None:
    payload = encode(ballot)
    mine = ie.decode_evidence(payload)
    assert plain(mine) == plain(ballot)
    for real, indep in zip(ballot.observations, mine.observations, strict=True):
        assert ie.observation_digest(indep) == observation_digest(real)
        assert ie.facts_digest(indep.kind, indep.subject, indep.facts) == facts_digest(
            real.kind, real.subject, real.facts
        )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(identity_verdicts())
def test_identity_verdict_codec_agrees(verdict: IdentityVerdict) -> None:
    payload = encode(verdict)
    assert plain(ie.decode_identity_verdict(payload)) == plain(verdict)


def _both(data: bytes) -> None:
    for real_dec, my_dec in (
        (decode_evidence, ie.decode_evidence),
        (decode_identity_verdict, ie.decode_identity_verdict),
    ):
        try:
            real: Any = plain(real_dec(data))
        except PayloadError:
            real = None
        try:
            mine: Any = plain(my_dec(data))
        except iv.Reject as exc:
            assert exc.reason == "malformed"
            mine = None
        assert real == mine, data.hex()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(evidence_ballots(max_observations=2), identity_verdicts(max_voters=2)), st.data())
def test_decoders_agree_on_mutations(msg: Any, data: st.DataObject) -> None:
    raw = encode(msg)
    pos = data.draw(st.integers(0, len(raw) - 1))
    _both(flip_byte(raw, pos, data.draw(st.integers(1, 255))))
    _both(raw[:pos])


@settings(max_examples=200)
@given(st.binary(max_size=200))
@example(b"\x95\xa1a\xa1b\x00\x00\x90")  # array of 5, bad ids
def test_decoders_agree_on_garbage(data: bytes) -> None:
    _both(data)


# ------------------------------------------------------------------------------------------ subjects


@settings(max_examples=300)
@given(st.sampled_from(["bundle", "jwks", "mtls", "MTLS", "x", ""]), identity_subjects)
@example("mtls", "spiffe://example.org/web")
def test_identity_tokens_agree(kind: str, subject: str) -> None:
    try:
        real: Any = identity_token(kind, subject)
    except SubjectError:
        real = None
    try:
        mine: Any = ie.identity_token(kind, subject)
    except ValueError:
        mine = None
    assert real == mine
    if real is not None:
        assert identity_verdict_subject("us-east", kind, subject) == ie.identity_verdict_subject(
            "us-east", kind, subject
        )


_parts = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "cctf",
                "v1",
                "verdict",
                "evidence",
                "us-east",
                "mtls",
                "jwks",
                "bundle",
                "A",
                identity_token("mtls", "spiffe://example.org/web"),
                "=" + "a" * 52,
                "~2e",
            ]
        ),
        st.text(alphabet="aZ0-_~=*>", max_size=6),
    ),
    min_size=1,
    max_size=7,
).map(".".join)


@settings(max_examples=400)
@given(st.one_of(_parts, st.tuples(ids, ids).map(lambda t: f"cctf.v1.evidence.{t[0]}.{t[1]}")))
@example("cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls")
@example("cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.c1")
@example("cctf.v1.verdict.us-east.=" + "a" * 52 + ".mtls.C1")
def test_subject_parsing_agrees(subject: str) -> None:
    try:
        p = parse_subject(subject)
    except SubjectError:
        p = None
    evidence = None if p is None or p.kind.value != "evidence" else (p.region, p.agent)
    identity = (
        None
        if p is None or p.identity_kind is None
        else (p.region, p.token, p.identity_kind.value, p.coordinator)
    )
    assert evidence == ie.parse_evidence_subject(subject)
    assert identity == ie.parse_identity_verdict_subject(subject)


# -------------------------------------------------------------------------------- receiver steps


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(observations(), observations(consistent=True)), max_size=3), st.data())
def test_step_14_agrees(obs: list[Observation], data: st.DataObject) -> None:
    # most observations share the ballot's header, so the later rules are reached
    agent, region, round_ = "agent-a", "us-east", ROUND
    fixed = [
        msgspec.structs.replace(o, agent=agent, region=region, round=round_)
        if data.draw(st.booleans()) or data.draw(st.booleans())
        else o
        for o in obs
    ]
    fixed = [
        make_observation(agent, region, round_, o.kind, o.subject, o.status, facts=o.facts,
                         detail=o.detail or None)
        if o.status is EvidenceStatus.OK and data.draw(st.booleans()) else o
        for o in fixed
    ]  # fmt: skip
    if fixed and data.draw(st.booleans()):
        fixed.append(fixed[0])  # a repeated subject
    ballot = EvidenceBallot(agent, region, round_, NOW, fixed)
    real = first_bad_observation(ballot)
    try:
        ie.check_observations(ie.decode_evidence(encode(ballot)))
        mine = None
    except iv.Reject as exc:
        mine = exc.reason
    assert (None if real is None else real[0]) == mine


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(identity_verdicts(max_voters=3))
def test_verdict_structure_agrees_on_arbitrary_verdicts(v: IdentityVerdict) -> None:
    _structure_agrees(v)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(observations(consistent=True), min_size=1, max_size=4),
    st.sampled_from(IdentityKind),
    st.data(),
)
def test_verdict_structure_agrees_on_honest_verdicts(
    obs: list[Observation], kind: IdentityKind, data: st.DataObject
) -> None:
    subject = obs[0].subject
    same = [
        make_observation(f"agent-{i}", "us-east", ROUND, kind, subject, o.status)
        for i, o in enumerate(obs)
    ]
    v = make_identity_verdict("coord-a", same, issued_ms=NOW, expires_ms=NOW + 1000)
    _structure_agrees(v)
    if data.draw(st.booleans()):
        field = data.draw(st.sampled_from(["k", "n", "facts_digest", "voters", "outcome"]))
        value = {
            "k": data.draw(st.integers(1, 64)),
            "n": data.draw(st.integers(1, 64)),
            "facts_digest": data.draw(st.binary(max_size=32)),
            "voters": v.voters[:-1],
            "outcome": data.draw(st.sampled_from(Outcome)),
        }[field]
        _structure_agrees(msgspec.structs.replace(v, **{field: value}))


def _structure_agrees(v: IdentityVerdict) -> None:
    try:
        check_identity_verdict(v)
        real = None
    except PayloadError:
        real = "malformed"
    try:
        ie._check_structure(ie.decode_identity_verdict(encode(v)))
        mine = None
    except iv.Reject as exc:
        mine = exc.reason
    assert real == mine


# ------------------------------------------------------------------------------------------ vectors

_SEED_DOMAIN = "cctf-test-vector"


def _identity(role: Role, principal: str, suite: SuiteId) -> Identity:
    from cctf.crypto.keys import SigningKey

    seeds = tuple(
        hashlib.sha256(f"{_SEED_DOMAIN}/{role.value}/{c.value}".encode()).digest()
        for c in COMPONENTS[suite]
    )
    return make_identity(principal, "us-east", role=role, suite=suite, key=SigningKey(suite, seeds))


def _vector_messages() -> tuple[EvidenceBallot, IdentityVerdict]:
    obs = [
        make_observation("agent-a", "us-east", ROUND, IdentityKind.BUNDLE, "example.org",
                         observed_ms=NOW + 100, sequence=12, keys=2),
        make_observation("agent-a", "us-east", ROUND, IdentityKind.JWKS,
                         "https://issuer.example.org", observed_ms=NOW + 150, keys=3),
        make_observation("agent-a", "us-east", ROUND, IdentityKind.MTLS,
                         "spiffe://example.org/web", observed_ms=NOW + 200),
        make_observation("agent-a", "us-east", ROUND, IdentityKind.MTLS,
                         "spiffe://example.org/db", EvidenceStatus.INVALID,
                         detail="wrong_spiffe_id", observed_ms=NOW + 210),
        make_observation("agent-a", "us-east", ROUND, IdentityKind.MTLS,
                         "spiffe://example.org/api", EvidenceStatus.TIMEOUT, observed_ms=NOW + 900),
    ]  # fmt: skip
    ballot = EvidenceBallot("agent-a", "us-east", ROUND, NOW + 950, obs)
    voters = [obs[0]] + [
        msgspec.structs.replace(obs[0], agent=f"agent-{c}", region=r)
        for c, r in (("b", "eu-west"), ("c", "ap-south"))
    ]
    verdict = make_identity_verdict(
        "coord-a", voters, issued_ms=NOW + 1000, expires_ms=NOW + 3000, seq=(NOW + 1000) * 1000
    )
    return ballot, verdict


def _sealed(signer: Identity, msg: Any, subject: str, typ: MessageType, now: int, life: int) -> Any:
    nonce = hashlib.sha256(f"{_SEED_DOMAIN}/nonce/{typ.value}".encode()).digest()[:16]
    data = seal(signer.key, subject, typ, encode(msg), now_ms=now, lifetime_ms=life, nonce=nonce)
    env = decode_envelope(data)
    return {
        "subject": subject,
        "envelope_hex": data.hex(),
        "tbs_hex": envelope_tbs(env, subject).hex(),
        "payload_hex": env.payload.hex(),
        "message": named(msg),
    }


def build_vectors() -> dict[str, Any]:
    ballot, verdict = _vector_messages()
    files: dict[str, Any] = {}
    for suite in SuiteId:
        agent = _identity(Role.AGENT, "agent-a", suite)
        coord = _identity(Role.COORDINATOR, "coord-a", suite)
        files[f"{suite.value}.json"] = {
            "description": f"One sealed evidence ballot and one identity verdict, suite {suite.value}",
            "deterministic": suite is SuiteId.ED25519,
            "keys": "as in ../<suite>.json (the same seeds: agent-a and coord-a, region us-east)",
            "receiver": {
                "now_ms": NOW + 1_500,
                "round_ms": 1000,
                "minimum_suite": suite.value,
                "verdict_region": "us-east",
            },
            "agent_kid": agent.kid,
            "coordinator_kid": coord.kid,
            "evidence": {
                **_sealed(
                    agent,
                    ballot,
                    evidence_subject("us-east", "agent-a"),
                    MessageType.EVIDENCE,
                    NOW + 950,
                    30_000,
                ),
                "facts_digests_hex": [o.facts_digest.hex() for o in ballot.observations],
                "observation_digests_hex": [
                    observation_digest(o).hex() for o in ballot.observations
                ],
            },
            "identity": {
                **_sealed(
                    coord,
                    verdict,
                    identity_verdict_subject("us-east", verdict.kind, verdict.subject),
                    MessageType.IDENTITY,
                    verdict.issued_ms,
                    verdict.expires_ms - verdict.issued_ms,
                ),
                "subject_token": identity_token(verdict.kind, verdict.subject),
            },
        }
    files["identity-tokens.json"] = {
        "description": "Identity verdict subject tokens (§2): kind, subject, token, subject in us-east",
        "valid": [
            {
                "kind": k,
                "subject": s,
                "token": identity_token(k, s),
                "verdict_subject": identity_verdict_subject("us-east", k, s),
            }
            for k, s in (
                ("bundle", "example.org"),
                ("jwks", "https://issuer.example.org"),
                ("mtls", "spiffe://example.org/web"),
                ("mtls", "spiffe://example.org/" + "a" * 2000),
            )
        ],
        "invalid": [
            ["MTLS", "spiffe://example.org/web"],
            ["mtls", ""],
            ["bundle", "a b"],
            ["jwks", "x" * 2049],
            ["x509", "example.org"],
        ],
    }
    return files


@pytest.mark.skipif(os.environ.get("CCTF_REGEN_VECTORS") != "1", reason="set CCTF_REGEN_VECTORS=1")
def test_regenerate_vectors() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    for name, content in build_vectors().items():
        (VECTORS / name).write_text(json.dumps(content, indent=2) + "\n")


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("suite", list(SuiteId))
def test_vectors_verify_independently(suite: SuiteId) -> None:
    vec = _load(f"{suite.value}.json")
    rcv = vec["receiver"]
    agent = _identity(Role.AGENT, "agent-a", suite)
    coord = _identity(Role.COORDINATOR, "coord-a", suite)
    assert (agent.kid, coord.kid) == (vec["agent_kid"], vec["coordinator_kid"])
    trust = iv.trust_of(iv_key(agent), iv_key(coord))
    ev = vec["evidence"]
    data = bytes.fromhex(ev["envelope_hex"])
    assert iv.tbs_bytes(iv.decode_envelope(data), ev["subject"]).hex() == ev["tbs_hex"]
    ballot = ie.EvidenceVerifier(trust, min_suite=rcv["minimum_suite"]).verify(
        data, ev["subject"], rcv["now_ms"]
    )
    assert (
        named(ballot) == ev["message"] == named(decode_evidence(bytes.fromhex(ev["payload_hex"])))
    )
    assert [o.facts_digest.hex() for o in ballot.observations] == ev["facts_digests_hex"]
    assert [ie.observation_digest(o).hex() for o in ballot.observations] == ev[
        "observation_digests_hex"
    ]
    idv = vec["identity"]
    data = bytes.fromhex(idv["envelope_hex"])
    sub = ie.IdentitySubscriber(trust, region=rcv["verdict_region"], min_suite=rcv["minimum_suite"])
    verdict = sub.verify(data, idv["subject"], rcv["now_ms"])
    assert named(verdict) == idv["message"]
    assert ie.identity_token(verdict.kind, verdict.subject) == idv["subject_token"]
    check_identity_verdict(decode_identity_verdict(bytes.fromhex(idv["payload_hex"])))
    # moved or tampered: refused
    with pytest.raises(iv.Reject, match="signature"):
        sub.verify(data, identity_verdict_subject("us-east", "mtls", "spiffe://x/y"), rcv["now_ms"])
    with pytest.raises(iv.Reject, match="signature"):
        ie.EvidenceVerifier(trust, min_suite=rcv["minimum_suite"]).verify(
            flip_byte(bytes.fromhex(ev["envelope_hex"]), -1, 1), ev["subject"], rcv["now_ms"]
        )


def test_identity_token_vectors() -> None:
    vec = _load("identity-tokens.json")
    for ex in vec["valid"]:
        assert identity_token(ex["kind"], ex["subject"]) == ex["token"]
        assert ie.identity_token(ex["kind"], ex["subject"]) == ex["token"]
        assert (
            ie.identity_verdict_subject("us-east", ex["kind"], ex["subject"])
            == ex["verdict_subject"]
        )
        assert parse_subject(ex["verdict_subject"]).token == ex["token"]
    for kind, subject in vec["invalid"]:
        with pytest.raises(SubjectError):
            identity_token(kind, subject)
        with pytest.raises(ValueError):
            ie.identity_token(kind, subject)


def test_vectors_are_what_the_code_would_write() -> None:
    fresh = build_vectors()
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(fresh)
    for name, new in fresh.items():
        stored = _load(name)
        if not new.get("deterministic", True):
            for part in ("evidence", "identity"):
                for side in (stored[part], new[part]):
                    side.pop("envelope_hex")
        assert stored == new, name


def test_subscriber_rules_beyond_structure() -> None:
    """Steps 11, 16 and 17 of §5.8 in the independent subscriber (the reference client verifier is
    the idcoord engineer's, cctf/client/verify_identity.py)."""
    coord = _identity(Role.COORDINATOR, "coord-a", SuiteId.ED25519)
    trust = iv.trust_of(iv_key(coord))
    _, verdict = _vector_messages()
    sub = ie.IdentitySubscriber(trust, min_suite="ed25519")

    def sealed(v: IdentityVerdict, subject: str | None = None) -> tuple[bytes, str]:
        s = subject or identity_verdict_subject("us-east", v.kind, v.subject)
        data = seal(coord.key, s, MessageType.IDENTITY, encode(v), now_ms=v.issued_ms,
                    lifetime_ms=v.expires_ms - v.issued_ms)  # fmt: skip
        return data, s

    now = verdict.issued_ms + 10
    data, s = sealed(verdict)
    sub.verify(data, s, now)
    sub.verify(data, s, now)  # the same statement again
    # another subject's token with this payload: subject
    other = identity_verdict_subject("us-east", "bundle", "example.com")
    with pytest.raises(iv.Reject, match="subject"):
        sub.verify(*sealed(verdict, other), now)
    # a lower seq: rollback
    older = msgspec.structs.replace(verdict, seq=verdict.seq - 1)
    with pytest.raises(iv.Reject, match="sequence"):  # below issued_ms * 1000
        sub.verify(*sealed(older), now)
    # a later verdict with a lower spiffe_sequence: rollback (step 17)
    facts = msgspec.structs.replace(verdict.facts, sequence=verdict.facts.sequence - 1)
    voters = [msgspec.structs.replace(r, answer_digest=b"") for r in verdict.voters]
    later = msgspec.structs.replace(
        verdict,
        facts=facts,
        facts_digest=facts_digest(verdict.kind, verdict.subject, facts),
        voters=voters,
        seq=verdict.seq + 5,
    )
    with pytest.raises(iv.Reject, match=r"^bundle_rollback"):
        sub.verify(*sealed(later), now)


# ------------------------------------------------- the reference receivers agree with the clean room


def _reference(suite: SuiteId, now_ms: int) -> tuple[Any, Any, dict[str, iv.Key]]:
    from wirefactories import make_trust

    from cctf.client.verify_identity import IdentityVerifier
    from cctf.clock import FakeClock
    from cctf.coordinator.verify import BallotVerifier
    from cctf.crypto.policy import SuitePolicy

    agent = _identity(Role.AGENT, "agent-a", suite)
    coord = _identity(Role.COORDINATOR, "coord-a", suite)
    clock = FakeClock(now_ms)
    policy = SuitePolicy(suite)
    trust = make_trust(agent, coord)
    return (
        BallotVerifier(trust=trust, clock=clock, policy=policy),
        IdentityVerifier(trust, clock, policy, region="us-east"),
        iv.trust_of(iv_key(agent), iv_key(coord)),
    )


@pytest.mark.parametrize("suite", list(SuiteId))
def test_vectors_verify_with_the_reference_receivers(suite: SuiteId) -> None:
    vec = _load(f"{suite.value}.json")
    coordinator, subscriber, _ = _reference(suite, vec["receiver"]["now_ms"])
    ev, idv = vec["evidence"], vec["identity"]
    ballot = coordinator.verify_evidence(bytes.fromhex(ev["envelope_hex"]), ev["subject"])
    assert named(ballot) == ev["message"]
    verdict = subscriber.verify(bytes.fromhex(idv["envelope_hex"]), idv["subject"])
    assert named(verdict) == idv["message"]


def _forged_evidence() -> dict[str, tuple[EvidenceBallot, str]]:
    ballot, _ = _vector_messages()
    rep = msgspec.structs.replace
    obs = list(ballot.observations)
    own = evidence_subject("us-east", "agent-a")
    return {
        "genuine": (ballot, own),
        "other region subject": (ballot, evidence_subject("eu-west", "agent-a")),
        "other agent subject": (ballot, evidence_subject("us-east", "agent-b")),
        "ballot claims another region": (rep(ballot, region="eu-west"), own),
        "observation of another agent": (
            rep(ballot, observations=[obs[0], rep(obs[1], agent="agent-b")]),
            own,
        ),
        "observation of another round": (
            rep(ballot, observations=[rep(obs[0], round=ballot.round - 1)]),
            own,
        ),
        "stale round": (
            rep(ballot, round=ballot.round - 5, observations=[]),
            own,
        ),
        "facts digest of other facts": (
            rep(ballot, observations=[rep(obs[0], facts_digest=obs[1].facts_digest)]),
            own,
        ),
        "ok with a reason": (rep(ballot, observations=[rep(obs[0], detail="x")]), own),
        "timeout with facts": (rep(ballot, observations=[rep(obs[4], facts=obs[0].facts)]), own),
        "repeated subject": (rep(ballot, observations=[obs[0], obs[1], obs[0]]), own),
        "mtls naming another id": (
            rep(
                ballot,
                observations=[
                    make_observation(
                        "agent-a",
                        "us-east",
                        ROUND,
                        IdentityKind.MTLS,
                        "spiffe://example.org/web",
                        facts=msgspec.structs.replace(
                            obs[2].facts, spiffe_id="spiffe://example.org/x"
                        ),
                    )
                ],
            ),
            own,
        ),
    }


@pytest.mark.parametrize("case", list(_forged_evidence()))
def test_evidence_reasons_agree_with_the_reference_coordinator(case: str) -> None:
    from cctf.bus_schemas.envelope import Rejected

    ballot, subject = _forged_evidence()[case]
    suite = SuiteId.ED25519
    now = NOW + 1_500
    coordinator, _, trust = _reference(suite, now)
    agent = _identity(Role.AGENT, "agent-a", suite)
    data = seal(agent.key, subject, MessageType.EVIDENCE, encode(ballot), now_ms=NOW + 950,
                lifetime_ms=30_000)  # fmt: skip
    try:
        coordinator.verify_evidence(data, subject)
        real = "ok"
    except Rejected as exc:
        real = exc.reason.value
    try:
        ie.EvidenceVerifier(trust, min_suite=suite.value).verify(data, subject, now)
        mine = "ok"
    except iv.Reject as exc:
        mine = exc.reason
    assert real == mine, case
    assert (real == "ok") == (case == "genuine")
