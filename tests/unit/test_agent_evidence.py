"""Agent evidence, the pure part: results -> observations (with reason codes), ballots, message ids."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_key

from cctf.agents.ballot import ballot_id_secret, ballot_msg_id
from cctf.agents.evidence import (
    ERROR_REASONS,
    EvidenceError,
    Failure,
    build_evidence_ballots,
    evidence_id_secret,
    evidence_msg_id,
    failure_of,
    observation,
)
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.evidence import (
    EMPTY_FACTS,
    EvidenceBallot,
    EvidenceStatus,
    IdentityKind,
    check_observation,
    decode_evidence,
    encode,
    facts_digest,
    first_bad_observation,
)
from cctf.devfabric.identity import IdentityFabric
from cctf.devfabric.identity_pki import encode_json
from cctf.identity.bundle import parse_bundle
from cctf.identity.errors import IdentityError, Reason
from cctf.identity.fetch import FetchError, FetchReason
from cctf.identity.oidc import parse_jwks
from cctf.identity.spiffeid import parse_spiffe_id
from cctf.identity.x509svid import X509Svid

AGENT, REGION, ROUND = "agent-a", "us-east", 1_700_000_000
TD = "demo.test"
SID = "spiffe://demo.test/api"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> IdentityFabric:
    """The fabric's key material, no servers (nothing is started)."""
    return IdentityFabric(Path(tmp_path_factory.mktemp("idf")))


def svid(spiffe_id: str = SID, nb: int = 1_000, na: int = 2_000) -> X509Svid:
    return X509Svid(parse_spiffe_id(spiffe_id), b"\x01" * 32, nb, na, b"\x02" * 32)


def test_ok_observations_carry_the_facts_of_each_kind(fabric: IdentityFabric) -> None:
    bundle = parse_bundle(TD, encode_json(fabric.trust_domain.document()))
    obs = observation(AGENT, REGION, ROUND, IdentityKind.BUNDLE, TD, bundle, 5)
    assert obs.status is EvidenceStatus.OK and obs.detail == ""
    assert obs.facts.key_digest == bundle.digest
    assert obs.facts.sequence == bundle.sequence and obs.facts.keys == bundle.authority_count
    assert obs.facts_digest == facts_digest(IdentityKind.BUNDLE, TD, obs.facts)
    check_observation(obs)

    keys = parse_jwks(encode_json(fabric.issuer.jwks()))
    issuer = "https://127.0.0.1:8444"
    obs = observation(AGENT, REGION, ROUND, IdentityKind.JWKS, issuer, keys, 6)
    assert obs.facts.key_digest == keys.digest and obs.facts.keys == len(keys.keys)
    check_observation(obs)

    obs = observation(AGENT, REGION, ROUND, IdentityKind.MTLS, SID, svid(), 7)
    assert obs.facts.spiffe_id == SID and obs.facts.key_digest == b"\x01" * 32
    assert (obs.facts.not_before_ms, obs.facts.not_after_ms) == (1_000, 2_000)
    assert obs.facts.bundle_digest == b"\x02" * 32
    check_observation(obs)


def test_failures_become_reason_coded_observations() -> None:
    cases = [
        (FetchError(FetchReason.TIMEOUT, "x"), EvidenceStatus.TIMEOUT, "timeout"),
        (FetchError(FetchReason.TLS_FAILED, "x"), EvidenceStatus.ERROR, "tls_failed"),
        (FetchError(FetchReason.REDIRECT_REFUSED, "x"), EvidenceStatus.ERROR, "redirect_refused"),
        (IdentityError(Reason.BUNDLE_MALFORMED, "x"), EvidenceStatus.ERROR, "bundle_malformed"),
        (IdentityError(Reason.EMPTY_BUNDLE, "x"), EvidenceStatus.INVALID, "empty_bundle"),
        (IdentityError(Reason.SEQUENCE_ROLLBACK, "x"), EvidenceStatus.INVALID, "sequence_rollback"),
        (IdentityError(Reason.WRONG_SPIFFE_ID, "x"), EvidenceStatus.INVALID, "wrong_spiffe_id"),
        (IdentityError(Reason.UNKNOWN_ISSUER, "x"), EvidenceStatus.INVALID, "unknown_issuer"),
        (IdentityError(Reason.ISSUER_MISMATCH, "x"), EvidenceStatus.INVALID, "issuer_mismatch"),
        (TimeoutError(), EvidenceStatus.TIMEOUT, "timeout"),
        (RuntimeError("secret-looking text eyJhbGc"), EvidenceStatus.ERROR, "internal"),
    ]
    for exc, status, detail in cases:
        f = failure_of(exc)
        assert (f.status, f.detail) == (status, detail), exc
        obs = observation(AGENT, REGION, ROUND, IdentityKind.JWKS, "https://i.example", f, 1)
        assert (obs.status, obs.detail, obs.facts, obs.facts_digest) == (status, detail,
                                                                          EMPTY_FACTS, b"")  # fmt: skip
        check_observation(obs)
    assert all(
        failure_of(IdentityError(r, "x")).status is EvidenceStatus.ERROR for r in ERROR_REASONS
    )


def test_every_identity_reason_is_a_valid_detail() -> None:
    for reason in Reason:
        obs = observation(
            AGENT, REGION, ROUND, IdentityKind.BUNDLE, TD, failure_of(IdentityError(reason, "x")), 1
        )
        assert obs.detail == reason.value
        check_observation(obs)
    for reason in FetchReason:
        obs = observation(
            AGENT, REGION, ROUND, IdentityKind.BUNDLE, TD, failure_of(FetchError(reason, "x")), 1
        )
        assert obs.detail == reason.value and obs.status is not EvidenceStatus.OK


def test_a_wrong_identity_is_invalid_and_names_what_was_presented() -> None:
    obs = observation(AGENT, REGION, ROUND, IdentityKind.MTLS, SID, svid("spiffe://demo.test/x"), 1)
    assert obs.status is EvidenceStatus.INVALID and obs.detail == "wrong_spiffe_id"
    assert obs.facts.spiffe_id == "spiffe://demo.test/x" and obs.facts_digest == b""
    check_observation(obs)
    # an outcome of the wrong kind is an internal error, never an ok observation
    obs = observation(AGENT, REGION, ROUND, IdentityKind.BUNDLE, TD, svid(), 1)
    assert (obs.status, obs.detail) == (EvidenceStatus.ERROR, "internal")
    # a bundle of another trust domain
    other = observation(AGENT, REGION, ROUND, IdentityKind.MTLS, SID, svid(nb=-5), 1)
    assert other.status is EvidenceStatus.OK and other.facts.not_before_ms == 0  # clamped


def test_out_of_range_values_become_unrepresentable_errors(fabric: IdentityFabric) -> None:
    bundle = parse_bundle(TD, encode_json(fabric.trust_domain.document()))
    big = dataclasses.replace(bundle, sequence=2**64 - 1)
    obs = observation(AGENT, REGION, ROUND, IdentityKind.BUNDLE, TD, big, 1)
    assert (obs.status, obs.detail) == (EvidenceStatus.INVALID, "sequence_out_of_range")
    bad_time = observation(AGENT, REGION, ROUND, IdentityKind.MTLS, SID, svid(nb=5, na=1), 1)
    # not_before after not_after cannot pass the coordinator's shape rule: an error, not an ok
    assert (bad_time.status, bad_time.detail) == (EvidenceStatus.ERROR, "unrepresentable")
    with pytest.raises(EvidenceError):
        observation("Bad Agent", REGION, ROUND, IdentityKind.BUNDLE, TD, Failure(
            EvidenceStatus.ERROR, "x"), 1)  # fmt: skip


_outcomes = st.one_of(
    st.builds(
        Failure,
        st.sampled_from([EvidenceStatus.TIMEOUT, EvidenceStatus.ERROR, EvidenceStatus.INVALID]),
        st.sampled_from([r.value for r in Reason] + [r.value for r in FetchReason]),
        st.sampled_from(["", "spiffe://demo.test/x"]),
    ),
    st.builds(
        svid,
        st.sampled_from([SID, "spiffe://demo.test/other"]),
        st.integers(-(2**40), 2**45),
        st.integers(-(2**40), 2**45),
    ),
)


@settings(max_examples=300)
@given(st.sampled_from(IdentityKind), _outcomes, st.integers(-5, 2**64))
def test_every_observation_passes_the_coordinator_checks(
    kind: IdentityKind, outcome: object, observed_ms: int
) -> None:
    subject = {
        IdentityKind.BUNDLE: TD,
        IdentityKind.JWKS: "https://i.example",
        IdentityKind.MTLS: SID,
    }[kind]
    obs = observation(AGENT, REGION, ROUND, kind, subject, outcome, observed_ms)  # type: ignore[arg-type]
    check_observation(obs)
    [ballot] = build_evidence_ballots(AGENT, REGION, ROUND, [obs], 0)
    assert decode_evidence(encode(ballot)) == ballot
    assert first_bad_observation(ballot) is None


def test_ballots_are_split_in_parts_of_64() -> None:
    obs = [
        observation(AGENT, REGION, ROUND, IdentityKind.MTLS, f"spiffe://demo.test/w{i}",
                    Failure(EvidenceStatus.TIMEOUT, "timeout"), i)
        for i in range(150)
    ]  # fmt: skip
    parts = build_evidence_ballots(AGENT, REGION, ROUND, obs, 9)
    assert [len(p.observations) for p in parts] == [64, 64, 22]
    assert [o for p in parts for o in p.observations] == obs
    assert all(isinstance(p, EvidenceBallot) and p.issued_ms == 9 for p in parts)
    assert build_evidence_ballots(AGENT, REGION, ROUND, [], 9) == []
    with pytest.raises(EvidenceError):
        build_evidence_ballots(AGENT, REGION, ROUND, [obs[0], obs[0]], 9)
    with pytest.raises(EvidenceError):
        build_evidence_ballots("agent-b", REGION, ROUND, obs[:1], 9)
    with pytest.raises(EvidenceError):
        build_evidence_ballots(AGENT, REGION, ROUND + 1, obs[:1], 9)
    too_many = L.MAX_OBSERVATIONS_PER_BALLOT * L.MAX_EVIDENCE_BALLOTS_PER_ROUND + 1
    with pytest.raises(EvidenceError):
        build_evidence_ballots(AGENT, REGION, ROUND, obs[:1] * too_many, 9)


def test_message_ids_are_keyed_stable_and_apart_from_ballot_ids() -> None:
    key, other = make_key(label="ev-a"), make_key(label="ev-b")
    secret = evidence_id_secret(key)
    a = evidence_msg_id(AGENT, ROUND, 0, secret=secret)
    assert a == evidence_msg_id(AGENT, ROUND, 0, secret=evidence_id_secret(key))
    assert a.startswith(f"cctf-evidence.{AGENT}.{ROUND}.0.") and len(a.rsplit(".", 1)[1]) == 24
    assert a != evidence_msg_id(AGENT, ROUND, 1, secret=secret)
    assert a != evidence_msg_id(AGENT, ROUND + 1, 0, secret=secret)
    assert a != evidence_msg_id(AGENT, ROUND, 0, secret=evidence_id_secret(other))
    assert secret != ballot_id_secret(key)
    assert (
        a.split(".", 1)[1]
        != ballot_msg_id(AGENT, ROUND, 0, secret=ballot_id_secret(key)).split(".", 1)[1]
    )
    for bad in (
        lambda: evidence_msg_id(AGENT, -1, secret=secret),
        lambda: evidence_msg_id(AGENT, ROUND, L.MAX_EVIDENCE_BALLOTS_PER_ROUND, secret=secret),
        lambda: evidence_msg_id(AGENT, ROUND, secret=b"short"),
        lambda: evidence_msg_id("A B", ROUND, secret=secret),
    ):
        with pytest.raises(ValueError):
            bad()


def test_observation_of_a_real_svid_is_metadata_only(fabric: IdentityFabric) -> None:
    """The facts of an observation hold digests and times, never the certificate or key bytes."""
    from cctf.identity.x509svid import parse_pem_chain, verify_x509_svid

    w = fabric.workload("api")
    bundle = parse_bundle(TD, encode_json(fabric.trust_domain.document()))
    chain = parse_pem_chain(w.issued().chain_pem())
    got = verify_x509_svid(chain, bundle, int(time.time() * 1000), spiffe_id=w.spiffe_id)
    obs = observation(AGENT, REGION, ROUND, IdentityKind.MTLS, w.spiffe_id, got, 1)
    assert obs.status is EvidenceStatus.OK
    data = encode(obs)
    for der in fabric.certificate_ders():
        assert der not in data
    for secret in fabric.secret_material():
        assert secret not in data


async def test_collector_reads_bundle_files(fabric: IdentityFabric, tmp_path: Path) -> None:
    """A ``bundle_file`` trust domain (no network): read each refresh, through the federation
    state; a missing file is an error observation, an emptied one invalidates the domain."""
    from cctf.agents.evidence_run import EvidenceCollector
    from cctf.identity.targets import identity_targets_from

    path = fabric.write_bundle_file(tmp_path / "bundle.json")
    missing = tmp_path / "nope.json"
    targets = identity_targets_from(
        {
            "trust_domains": [
                {"name": TD, "bundle_file": str(path), "refresh_ms": 1000},
                {"name": "other.test", "bundle_file": str(missing)},
            ]
        }
    )
    collector = EvidenceCollector(targets, agent=AGENT, region=REGION)
    now = int(time.time() * 1000)
    first, absent = await collector.collect(ROUND, now + 500)
    bundle = parse_bundle(TD, path.read_bytes())
    assert (first.status, first.facts.key_digest) == (EvidenceStatus.OK, bundle.digest)
    assert (absent.status, absent.detail) == (EvidenceStatus.ERROR, "bundle_file_unreadable")
    doc = fabric.trust_domain.document(sequence=bundle.sequence + 1)  # type: ignore[operator]
    doc["keys"] = []
    path.write_bytes(encode_json(doc))
    # not due yet: the last result is reported again (cached), for the new round
    again, _ = collector.observations(ROUND + 1)
    assert again.status is EvidenceStatus.OK and again.round == ROUND + 1
    collector.states[TD] = dataclasses.replace(collector.states[TD], next_refresh_ms=0)
    emptied, _ = await collector.collect(ROUND + 2, now + 500)
    assert (emptied.status, emptied.detail) == (EvidenceStatus.INVALID, "empty_bundle")
    assert collector.bundle_of(TD) is None
