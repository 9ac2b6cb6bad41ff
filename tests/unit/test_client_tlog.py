"""Batch-signed verdicts (the ``"tlog"`` authenticator): envelope step 7 with the head cache, and
every mutation of the authenticator (and of the entry it proves) rejected with its reason."""

from __future__ import annotations

import msgspec
import pytest
from clientcases import NAME, REGION, reason_of, sealed, verdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlogfactories import TestLog
from wirefactories import START_MS, make_identity, make_trust, make_world, raw_envelope

from cctf.bus_schemas.envelope import (
    Reason,
    Rejected,
    TlogAuth,
    TlogHead,
    decode_envelope,
    encode_envelope,
    tlog_head_of,
)
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.opening import open_signed
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.heads import HeadCache, HeadError
from cctf.client.verify import VerdictVerifier
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role

WORLD = make_world()
SUBJECTS = [verdict_subject(r, NAME, "A") for r in ("us-east", "eu-west")]


def _batch(n: int = 5, *, log: TestLog | None = None) -> tuple[TestLog, list[bytes], bytes]:
    """A log with one batch of ``n`` verdicts (names n0..), each on both regions' subjects."""
    log = TestLog(WORLD.coordinator) if log is None else log
    items = [
        (
            [verdict_subject(r, f"n{i}.example.", "A") for r in ("us-east", "eu-west")],
            verdict(WORLD, qname=f"n{i}.example."),
        )
        for i in range(n)
    ]
    items[0] = (SUBJECTS, verdict(WORLD))
    b = log.batch(items, now_ms=WORLD.clock.now_ms())
    return log, b.envelopes, b.note


LOG, ENVELOPES, NOTE = _batch()
DATA = ENVELOPES[0]


def _cache(*notes: bytes) -> HeadCache:
    cache = HeadCache(WORLD.trust)
    for note in notes:
        cache.add_note(note)
    return cache


CACHE = _cache(NOTE)


def _open(data: bytes, subject: str = SUBJECTS[0], heads: HeadCache | None = CACHE) -> object:
    return open_signed(
        data,
        subject,
        expected_type=MessageType.VERDICT,
        role=Role.COORDINATOR,
        trust=WORLD.trust,
        policy=SuitePolicy(),
        now_ms=WORLD.clock.now_ms(),
        heads=heads,
    )


def test_a_batch_signed_verdict_verifies_on_every_listed_subject_with_its_log_position() -> None:
    for region, subject in zip(("us-east", "eu-west"), SUBJECTS, strict=True):
        checked = VerdictVerifier(WORLD.trust, WORLD.clock, region=region, heads=CACHE).check(
            DATA, subject
        )
        assert checked.verdict.qname == NAME
        assert checked.log is not None
        assert (checked.log.kid, checked.log.index, checked.log.size) == (
            WORLD.coordinator.kid,
            0,
            5,
        )
        assert checked.log.root == LOG.tree.root()
        assert checked.log.to_json()["origin"] == f"cctf/v1/log/{WORLD.coordinator.kid}"
    for i, data in enumerate(ENVELOPES):
        subject = verdict_subject(REGION, NAME if i == 0 else f"n{i}.example.", "A")
        assert VerdictVerifier(WORLD.trust, WORLD.clock, heads=CACHE).check(data, subject).log


def test_a_signed_verdict_still_verifies_and_has_no_log_position() -> None:
    subject, data = sealed(WORLD, verdict(WORLD))
    assert VerdictVerifier(WORLD.trust, WORLD.clock, heads=CACHE).check(data, subject).log is None


def test_without_a_head_lookup_a_batch_signed_message_is_refused_as_auth_kind() -> None:
    """The coordinator's ballot path injects no head lookup: a "tlog" ballot is never accepted."""
    assert reason_of(lambda: _open(DATA, heads=None)) is Reason.AUTH_KIND
    agent = WORLD.agent(REGION)
    ballot_log = TestLog(agent)
    b = ballot_log.batch([([agent.subject], b"\x90")], now_ms=START_MS, msg_type="ballot")
    cache = HeadCache(make_trust(agent))
    with pytest.raises(HeadError, match="unknown_log"):  # an agent key names no log
        cache.add_note(b.note)
    assert reason_of(lambda: WORLD.verifier().verify(b.envelopes[0], agent.subject)) is (
        Reason.AUTH_KIND
    )


def test_step_7_reasons() -> None:
    assert reason_of(lambda: _open(DATA, verdict_subject("ap-south", NAME, "A"))) is Reason.SUBJECT
    assert reason_of(lambda: _open(DATA, heads=HeadCache(WORLD.trust))) is Reason.HEAD_UNKNOWN
    # a verified head of the same size from another tree: the root does not match
    _other, _, other_note = _batch(5, log=TestLog(WORLD.coordinator))
    assert reason_of(lambda: _open(DATA, heads=_cache(other_note))) is Reason.HEAD_MISMATCH
    # the proof of another leaf
    env = decode_envelope(DATA)
    assert isinstance(env.auth, TlogAuth)
    wrong = msgspec.structs.replace(env.auth, proof=LOG.tree.inclusion_proof(1, 5))
    bad = encode_envelope(msgspec.structs.replace(env, auth=wrong))
    assert reason_of(lambda: _open(bad)) is Reason.PROOF


def test_tlog_head_of_names_the_head_to_fetch() -> None:
    assert tlog_head_of(DATA) == (WORLD.coordinator.kid, 5)
    assert tlog_head_of(sealed(WORLD, verdict(WORLD))[1]) is None
    assert tlog_head_of(b"\x00garbage") is None


# ------------------------------------------------------------------- mutations (hypothesis)

ENV = decode_envelope(DATA)
assert isinstance(ENV.auth, TlogAuth)
AUTH: TlogAuth = ENV.auth
BIG_CACHE = _cache(NOTE, LOG.head_note(3), LOG.head_note(4))  # other sizes verified too


def _with_auth(**changes: object) -> bytes:
    return encode_envelope(
        msgspec.structs.replace(ENV, auth=msgspec.structs.replace(AUTH, **changes))
    )


def _rejected(data: bytes, subject: str = SUBJECTS[0]) -> Reason:
    with pytest.raises(Rejected) as info:
        _open(data, subject, BIG_CACHE)
    return info.value.reason


_hashes = st.binary(min_size=32, max_size=32)
_fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fast
@given(st.integers(0, 2**63 - 1).filter(lambda i: i != AUTH.index))
def test_any_other_index_is_refused(index: int) -> None:
    reason = _rejected(_with_auth(index=index))
    assert reason in (Reason.PROOF, Reason.MALFORMED)  # malformed: index >= head size


@_fast
@given(st.data())
def test_any_changed_proof_is_refused(data: st.DataObject) -> None:
    proof = list(AUTH.proof)
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "swap", "replace", "empty"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[i] = bytes(
            b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(proof[i])
        )
    elif how == "truncate":
        proof = proof[: data.draw(st.integers(0, len(proof) - 1))]
    elif how == "extend":
        proof += data.draw(st.lists(_hashes, min_size=1, max_size=64 - len(proof)))
    elif how == "swap":
        proof = proof[::-1]
    elif how == "replace":
        proof = data.draw(st.lists(_hashes, max_size=64).filter(lambda p: p != AUTH.proof))
    else:
        proof = []
    if proof == AUTH.proof:
        return
    assert _rejected(_with_auth(proof=proof)) is Reason.PROOF


@_fast
@given(st.integers(1, 2**63 - 1).filter(lambda s: s != AUTH.head.size), st.booleans())
def test_any_other_head_size_is_refused(size: int, keep_root: bool) -> None:
    root = AUTH.head.root if keep_root else LOG.tree.root(size) if size <= 5 else AUTH.head.root
    reason = _rejected(_with_auth(head=TlogHead(size, root)))
    # sizes 3 and 4 are verified heads: their root differs, or the proof is for size 5
    assert reason in (Reason.HEAD_UNKNOWN, Reason.HEAD_MISMATCH, Reason.PROOF, Reason.MALFORMED)
    if size > 5:
        assert reason is Reason.HEAD_UNKNOWN


@_fast
@given(_hashes.filter(lambda r: r != AUTH.head.root))
def test_any_other_head_root_is_refused(root: bytes) -> None:
    assert _rejected(_with_auth(head=TlogHead(AUTH.head.size, root))) is Reason.HEAD_MISMATCH


@_fast
@given(st.data())
def test_any_changed_subjects_list_is_refused(data: st.DataObject) -> None:
    """Dropping, adding or reordering subjects changes the entry (so the proof fails); dropping
    the receiving one fails step 7a first."""
    how = data.draw(st.sampled_from(["drop-other", "drop-own", "add", "reorder"]))
    extra = verdict_subject(data.draw(st.sampled_from(["ap-south", "eu-north"])), NAME, "A")
    subjects = {
        "drop-other": [SUBJECTS[0]],
        "drop-own": [SUBJECTS[1]],
        "add": [*SUBJECTS, extra],
        "reorder": SUBJECTS[::-1],
    }[how]
    reason = _rejected(_with_auth(subjects=subjects))
    assert reason is (Reason.SUBJECT if how == "drop-own" else Reason.PROOF)


@_fast
@given(
    st.sampled_from(["payload", "nonce", "iat", "exp", "type"]),
    st.binary(min_size=1, max_size=8),
)
def test_any_changed_entry_field_is_refused(field: str, noise: bytes) -> None:
    """The envelope fields the entry binds: a change fails the proof (or an earlier step)."""
    if field == "payload":
        env = msgspec.structs.replace(ENV, payload=ENV.payload + noise)
    elif field == "nonce":
        env = msgspec.structs.replace(ENV, nonce=(noise * 16)[:16])
    elif field == "iat":
        env = msgspec.structs.replace(ENV, iat=ENV.iat - 1 - noise[0])
    elif field == "exp":
        env = msgspec.structs.replace(ENV, exp=ENV.exp - 1 - noise[0])
    else:
        env = msgspec.structs.replace(ENV, type="identity")
    if env == ENV:
        return
    reason = _rejected(encode_envelope(env))
    assert reason in (Reason.PROOF, Reason.TYPE)


def test_another_coordinators_kid_is_refused() -> None:
    """The kid selects both the key and the log: another trusted coordinator's kid names another
    log whose head of that size is unknown (or another root)."""
    other = make_identity("coord-b", REGION, role=Role.COORDINATOR)
    trust = make_trust(*WORLD.agents.values(), WORLD.coordinator, other)
    forged = encode_envelope(msgspec.structs.replace(ENV, kid=other.kid))
    cache = HeadCache(trust)
    cache.add_note(NOTE)
    with pytest.raises(Rejected) as info:
        open_signed(
            forged,
            SUBJECTS[0],
            expected_type=MessageType.VERDICT,
            role=Role.COORDINATOR,
            trust=trust,
            policy=SuitePolicy(),
            now_ms=WORLD.clock.now_ms(),
            heads=cache,
        )
    assert info.value.reason is Reason.HEAD_UNKNOWN


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (["tlog", [], 0, [], [1, b"\x00" * 32]], Reason.MALFORMED),  # no subject
        (["tlog", [SUBJECTS[0]] * 2, 0, [], [1, b"\x00" * 32]], Reason.MALFORMED),  # twice
        (["tlog", [SUBJECTS[0]], 0, [], [0, b"\x00" * 32]], Reason.MALFORMED),  # size 0
        (["tlog", [SUBJECTS[0]], 0, [b"\x00" * 31], [1, b"\x00" * 32]], Reason.MALFORMED),
        (["tlog", [SUBJECTS[0]], 0, [b"\x00" * 32] * 65, [9, b"\x00" * 32]], Reason.MALFORMED),
        (["tlog", [SUBJECTS[0]], 0, [], [1, b"\x00" * 33]], Reason.MALFORMED),
        (["tlog", [SUBJECTS[0]], -1, [], [1, b"\x00" * 32]], Reason.MALFORMED),
        (["tlog", [SUBJECTS[0]], 0, []], Reason.MALFORMED),  # no head
        (["tlog", [f"s{i}" for i in range(17)], 0, [], [1, b"\x00" * 32]], Reason.MALFORMED),
        (["tlog"], Reason.MALFORMED),
        (["tlogx", [], 0, [], [1, b"\x00" * 32]], Reason.AUTH_KIND),
    ],
)
def test_malformed_tlog_authenticators(auth: list[object], reason: Reason) -> None:
    assert reason_of(lambda: _open(raw_envelope(DATA, auth=auth))) is reason
