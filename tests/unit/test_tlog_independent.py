"""The verifier side of batch signing against docs/test-vectors/translog/tlog-verdicts.json and
against a clean-room verifier written from the document (``tests/support/independent_tlog.py``):
the reference (:class:`HeadCache` + :class:`VerdictVerifier`) and the clean-room verifier accept
every vector message with the same log position and refuse every invalid one with the listed
reason; on random batches and random byte flips they agree reason for reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import independent_tlog as it
import independent_verifier as iv
import pytest
from clientcases import verdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlogfactories import TestLog
from wirefactories import FakeClock, flip_byte, make_world

from cctf.bus_schemas.envelope import Rejected, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import parse_head_subject
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.heads import HeadCache
from cctf.client.verify import VerdictVerifier
from cctf.crypto.keys import PublicKeySet
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.translog.merkle import leaf_hash

FILE = (
    Path(__file__).resolve().parents[2]
    / "docs"
    / "test-vectors"
    / "translog"
    / "tlog-verdicts.json"
)
VECTORS: dict[str, Any] = json.loads(FILE.read_text())
C = VECTORS["coordinator"]
RECEIVER = VECTORS["receiver"]
NOW = RECEIVER["now_ms"]
PUBLIC = tuple(base64.b64decode(C["public_keys_base64"][k]) for k in ("ed25519", "ml-dsa-65"))
TRUST = TrustConfig(
    [
        TrustEntry(
            Role.COORDINATOR, C["principal"], C["region"], PublicKeySet(SuiteId.HYBRID, PUBLIC)
        )
    ]
)
IV_KEY = iv.Key(C["suite"], PUBLIC, "coordinator", C["principal"], C["region"])


def _reference() -> tuple[HeadCache, Any]:
    cache = HeadCache(TRUST)
    for batch in VECTORS["batches"]:
        for subject in batch["head"]["subjects"]:
            hs = parse_head_subject(subject)
            cache.add_note(
                batch["head"]["checkpoint_note"].encode(), coordinator=hs.coordinator, size=hs.size
            )
    return cache, FakeClock(NOW)


def _independent(region: str | None) -> it.TlogVerdictSubscriber:
    sub = it.TlogVerdictSubscriber(
        trust=iv.trust_of(IV_KEY), region=region, round_ms=RECEIVER["round_ms"]
    )
    for batch in VECTORS["batches"]:
        hs = parse_head_subject(batch["head"]["subjects"][0])
        sub.add_head(batch["head"]["checkpoint_note"].encode(), hs.coordinator, hs.size)
    return sub


def _region(subject: str) -> str:
    return subject.split(".")[3]


def test_the_coordinator_key_and_log_names_are_the_documented_ones() -> None:
    assert TRUST.get(C["kid"], Role.COORDINATOR).kid == C["kid"] == iv.key_id(C["suite"], PUBLIC)
    assert VECTORS["log"]["origin"] == VECTORS["log"]["key_name"] == f"cctf/v1/log/{C['kid']}"


def test_every_head_note_verifies_under_both_and_the_heads_are_consistent() -> None:
    cache, _ = _reference()
    assert cache.verified == len(VECTORS["batches"])
    for batch in VECTORS["batches"]:
        head = batch["head"]
        cp = it.verify_checkpoint_note(head["checkpoint_note"].encode(), IV_KEY)
        assert (cp.size, cp.root.hex()) == (head["size"], head["root_hex"])
        assert cache.verified_root(C["kid"], head["size"]) == bytes.fromhex(head["root_hex"])
    c = VECTORS["consistency"]
    proof = [bytes.fromhex(h) for h in c["proof_hex"]]
    roots = {b["head"]["size"]: bytes.fromhex(b["head"]["root_hex"]) for b in VECTORS["batches"]}
    assert it.verify_consistency(
        c["size1"], c["size2"], proof, roots[c["size1"]], roots[c["size2"]]
    )
    assert cache.pending() == [(C["kid"], c["size1"], c["size2"])]
    assert cache.add_consistency(C["kid"], c["size1"], c["size2"], proof)
    assert cache.pending() == [] and not cache.split_views
    assert not it.verify_consistency(
        c["size1"], c["size2"], proof[::-1], roots[c["size1"]], roots[c["size2"]]
    )


def test_every_vector_message_is_accepted_by_both_on_each_of_its_subjects() -> None:
    cache, clock = _reference()
    seen = 0
    for batch in VECTORS["batches"]:
        for m in batch["messages"]:
            data = bytes.fromhex(m["envelope_hex"])
            env = decode_envelope(data)
            assert envelope_log_entry(env).hex() == m["entry_hex"]
            assert leaf_hash(envelope_log_entry(env)).hex() == m["leaf_hash_hex"]
            ienv = it.decode_tlog_envelope(data)
            assert it.entry_bytes(ienv).hex() == m["entry_hex"]
            assert it.leaf_hash(it.entry_bytes(ienv)).hex() == m["leaf_hash_hex"]
            for subject in m["subjects"]:
                ref = VerdictVerifier(TRUST, clock, region=_region(subject), heads=cache)
                checked = ref.check(data, subject)
                assert checked.log is not None
                assert (checked.log.index, checked.log.size) == (m["index"], batch["head"]["size"])
                indep = _independent(_region(subject))
                v = indep.verify(data, subject, NOW)
                assert indep.positions == [(C["kid"], m["index"], batch["head"]["size"])]
                assert (v.qname, v.seq) == (checked.verdict.qname, checked.verdict.seq)
                seen += 1
    assert seen == 2 * sum(len(b["messages"]) for b in VECTORS["batches"])


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["description"])
def test_every_invalid_vector_is_refused_by_both_with_its_reason(case: dict[str, Any]) -> None:
    cache, clock = _reference()
    data, subject = bytes.fromhex(case["envelope_hex"]), case["subject"]
    with pytest.raises(Rejected) as info:
        VerdictVerifier(TRUST, clock, heads=cache).check(data, subject)
    assert info.value.reason.value == case["reason"]
    with pytest.raises(iv.Reject) as indep:
        _independent(None).verify(data, subject, NOW)
    assert indep.value.reason == case["reason"]


# ------------------------------------------------------------------------- random batches

WORLD = make_world()
IV_WORLD_KEY = iv.Key(
    WORLD.coordinator.suite.value,
    WORLD.coordinator.key.public.raw,
    "coordinator",
    WORLD.coordinator.principal,
    WORLD.coordinator.region,
)
REGIONS = ("us-east", "eu-west", "ap-south")


def _random_batch(
    sizes: list[int],
) -> tuple[TestLog, list[tuple[bytes, list[str], int]], list[bytes]]:
    log = TestLog(WORLD.coordinator)
    out: list[tuple[bytes, list[str], int]] = []
    notes = []
    for b, n in enumerate(sizes):
        items = []
        for i in range(n):
            name = f"n{b}-{i}.example."
            items.append(
                (
                    [verdict_subject(r, name, "A") for r in REGIONS[: 1 + i % 3]],
                    verdict(WORLD, qname=name),
                )
            )
        batch = log.batch(items, now_ms=WORLD.clock.now_ms())
        out += [
            (data, subjects, batch.size)
            for data, (subjects, _) in zip(batch.envelopes, items, strict=True)
        ]
        notes.append(batch.note)
    return log, out, notes


def _both(notes: list[bytes], data: bytes, subject: str) -> tuple[str, str]:
    cache = HeadCache(WORLD.trust)
    indep = it.TlogVerdictSubscriber(trust=iv.trust_of(IV_WORLD_KEY))
    for note in notes:
        head = cache.add_note(note)
        assert head is not None
        indep.add_head(note, WORLD.coordinator.principal, head.size)
    try:
        VerdictVerifier(WORLD.trust, WORLD.clock, heads=cache).check(data, subject)
        real = "ok"
    except Rejected as exc:
        real = exc.reason.value
    try:
        indep.verify(data, subject, WORLD.clock.now_ms())
        other = "ok"
    except iv.Reject as exc:
        other = exc.reason
    return real, other


BATCHES = _random_batch([1, 6, 17])  # heads of size 1, 7 and 24


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_batches_and_byte_flips_agree(data: st.DataObject) -> None:
    _, messages, notes = BATCHES
    envelope, subjects, _ = data.draw(st.sampled_from(messages))
    subject = data.draw(st.sampled_from(subjects))
    assert _both(notes, envelope, subject) == ("ok", "ok")
    position = data.draw(st.integers(0, len(envelope) - 1))
    mask = data.draw(st.integers(1, 255))
    real, other = _both(notes, flip_byte(envelope, position, mask), subject)
    assert real != "ok" and real == other, (position, mask)


def test_a_head_the_receiver_never_verified_is_unknown_to_both() -> None:
    _, messages, notes = BATCHES
    envelope, subjects, size = messages[-1]
    assert size == 24
    assert _both(notes[:2], envelope, subjects[0]) == ("head_unknown", "head_unknown")
