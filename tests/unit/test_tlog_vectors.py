"""docs/test-vectors/translog/tlog-verdicts.json: batch-signed verdicts (the ``"tlog"`` authenticator,
wire-protocol.md §3.2) and their heads (§7), produced by ``cctf.coordinator.pipeline.batchsign``.

Checked here against the producer (everything but the randomised ML-DSA-65 signatures is re-derived)
and against a computation from the specification that calls neither the producer nor the module's
proof code: the entry bytes with plain msgpack, the leaf hash with hashlib, the inclusion proof
against the clean-room RFC 9162 recursion of ``tests/support/independent_merkle.py``, the checkpoint
note against both signatures. The verifier side (``batchclient``) checks the same file with its
clean-room verifier. Regenerate after an intended change::

    CCTF_REGEN_VECTORS=1 .venv/bin/pytest -q tests/unit/test_tlog_vectors.py -k regenerate
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import independent_merkle as ref
import msgspec
import pytest
from wirefactories import START_MS, make_verdict

from cctf.bus_schemas.envelope import (
    Envelope,
    TlogAuth,
    TlogHead,
    decode_envelope,
    encode_envelope,
    envelope_log_entry,
)
from cctf.bus_schemas.heads import head_subject, log_origin, parse_head_subject
from cctf.bus_schemas.messages import MessageType, Outcome, decode_verdict, encode
from cctf.bus_schemas.subjects import verdict_subject
from cctf.coordinator.pipeline.batchsign import BatchItem, BatchLog
from cctf.crypto.keys import PublicKeySet, SigningKey
from cctf.crypto.suites import COMPONENTS, SuiteId
from cctf.translog.merkle import leaf_hash
from cctf.translog.note import NoteVerifier, open_checkpoint

FILE = (
    Path(__file__).resolve().parents[2]
    / "docs"
    / "test-vectors"
    / "translog"
    / "tlog-verdicts.json"
)
SUITE = SuiteId.HYBRID
REGIONS = ("us-east", "eu-west")
COORDINATOR = "coord-us-east"
ROUND_MS = 1000
NOW = START_MS
NAMES = ["a.demo.test.", "b.demo.test.", "c.demo.test.", "d.demo.test.", "e.demo.test."]
BATCHES = (2, 3)  # two batches: heads of size 2 and 5
TTL_MS = 30_000


def _seeds() -> tuple[bytes, ...]:
    return tuple(
        hashlib.sha256(f"cctf-test-vector/coordinator/{c.value}".encode()).digest()
        for c in COMPONENTS[SUITE]
    )


KEY = SigningKey(SUITE, _seeds())


def _nonce(i: int) -> bytes:
    return hashlib.sha256(f"cctf-test-vector/tlog-nonce/{i}".encode()).digest()[:16]


def _verdict_item(i: int) -> BatchItem:
    round_ = NOW // ROUND_MS
    issued = NOW + 10 + i
    v = make_verdict(
        NAMES[i],
        "A",
        round_,
        outcome=Outcome.TRUSTED if i % 2 == 0 else Outcome.UNAVAILABLE,
        answer=(f"{NAMES[i]} A 192.0.2.{i + 1}",) if i % 2 == 0 else None,
        k=2,
        n=3,
        issued_ms=issued,
        expires_ms=issued + TTL_MS,
        coordinator=COORDINATOR,
        seq=issued * 1000,
        decided_early=True,
    )
    subjects = tuple(verdict_subject(r, v.qname, v.qtype) for r in REGIONS)
    return BatchItem(MessageType.VERDICT, subjects, encode(v), issued, issued + TTL_MS, _nonce(i))


def _mutate(data: bytes, **fields: Any) -> bytes:
    env = decode_envelope(data)
    auth = env.auth
    assert isinstance(auth, TlogAuth)
    auth_fields = {k: fields.pop(k) for k in ("subjects", "index", "proof", "head") if k in fields}
    if auth_fields:
        auth = msgspec.structs.replace(auth, **auth_fields)
    return encode_envelope(msgspec.structs.replace(env, auth=auth, **fields))


def _raw(data: bytes, auth: list[Any]) -> bytes:
    """The envelope with its auth array replaced verbatim (to build malformed ones)."""
    fields = msgspec.msgpack.decode(data)
    fields[8] = auth
    return msgspec.msgpack.encode(fields)


def build() -> dict[str, Any]:
    log = BatchLog(KEY)
    batches: list[dict[str, Any]] = []
    envelopes: list[bytes] = []
    i = 0
    for count in BATCHES:
        items = [_verdict_item(i + j) for j in range(count)]
        sealed = log.seal(items)
        msgs = []
        for j, (item, data) in enumerate(zip(items, sealed.envelopes, strict=True)):
            env = decode_envelope(data)
            assert isinstance(env.auth, TlogAuth)
            entry = sealed.entries[j]
            msgs.append(
                {
                    "subjects": list(item.subjects),
                    "envelope_hex": data.hex(),
                    "entry_hex": entry.hex(),
                    "leaf_hash_hex": leaf_hash(entry).hex(),
                    "index": env.auth.index,
                    "proof_hex": [h.hex() for h in env.auth.proof],
                    "payload_hex": item.payload.hex(),
                    "nonce_hex": (item.nonce or b"").hex(),
                    "iat": item.iat,
                    "exp": item.exp,
                }
            )
            envelopes.append(data)
        batches.append(
            {
                "first_index": sealed.first_index,
                "head": {
                    "size": sealed.size,
                    "root_hex": sealed.root.hex(),
                    "checkpoint_note": sealed.checkpoint,
                    "subjects": [head_subject(r, COORDINATOR, sealed.size) for r in REGIONS],
                },
                "messages": msgs,
            }
        )
        i += count
    last = envelopes[-1]
    first = envelopes[0]
    env_last = decode_envelope(last)
    assert isinstance(env_last.auth, TlogAuth)
    proof = env_last.auth.proof
    wrong_root = hashlib.sha256(b"not the root").digest()
    flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    other = verdict_subject("ap-south", NAMES[4], "A")
    s_first = verdict_subject(REGIONS[0], NAMES[0], "A")
    invalid = [
        ("published on a subject the message does not list", last, other, "subject"),
        (
            "a head of a size no checkpoint was signed for",
            _mutate(last, head=TlogHead(4, env_last.auth.head.root)),
            None,
            "head_unknown",
        ),
        (
            "the head's root differs from the signed checkpoint of that size",
            _mutate(last, head=TlogHead(5, wrong_root)),
            None,
            "head_mismatch",
        ),
        ("a proof hash changed", _mutate(last, proof=[flipped, *proof[1:]]), None, "proof"),
        ("the proof truncated", _mutate(last, proof=proof[:-1]), None, "proof"),
        ("the proof extended", _mutate(last, proof=[*proof, wrong_root]), None, "proof"),
        ("another index", _mutate(last, index=env_last.auth.index - 1), None, "proof"),
        ("an index not below the head size", _mutate(last, index=5), None, "proof"),
        (
            "the payload changed (another leaf)",
            _mutate(first, iat=decode_envelope(first).iat + 1),
            s_first,
            "proof",
        ),
        (
            "a subject dropped from the list (another leaf)",
            _mutate(last, subjects=[env_last.auth.subjects[0]]),
            None,
            "proof",
        ),
        (
            "a subject listed twice",
            _mutate(last, subjects=[env_last.auth.subjects[0]] * 2),
            None,
            "malformed",
        ),
        (
            "no subject",
            _raw(last, ["tlog", [], 4, [h for h in proof], [5, env_last.auth.head.root]]),
            None,
            "malformed",
        ),
        (
            "17 subjects",
            _raw(
                last,
                [
                    "tlog",
                    [f"cctf.v1.x.{n}" for n in range(17)],
                    4,
                    list(proof),
                    [5, env_last.auth.head.root],
                ],
            ),
            None,
            "malformed",
        ),
        (
            "a head of size 0",
            _raw(last, ["tlog", env_last.auth.subjects, 0, [], [0, env_last.auth.head.root]]),
            None,
            "malformed",
        ),
        (
            "a proof hash of 31 bytes",
            _raw(
                last,
                ["tlog", env_last.auth.subjects, 4, [proof[0][:31]], [5, env_last.auth.head.root]],
            ),
            None,
            "malformed",
        ),
        (
            "a 65-hash proof",
            _raw(
                last,
                [
                    "tlog",
                    env_last.auth.subjects,
                    4,
                    [wrong_root] * 65,
                    [5, env_last.auth.head.root],
                ],
            ),
            None,
            "malformed",
        ),
        (
            "an extra authenticator element",
            _raw(
                last,
                ["tlog", env_last.auth.subjects, 4, list(proof), [5, env_last.auth.head.root], 0],
            ),
            None,
            "malformed",
        ),
        (
            "another authenticator kind",
            _raw(
                last, ["tree", env_last.auth.subjects, 4, list(proof), [5, env_last.auth.head.root]]
            ),
            None,
            "auth_kind",
        ),
    ]
    pub = KEY.public
    return {
        "description": 'Batch-signed verdicts (auth kind "tlog", wire-protocol.md §3.2) of one '
        "coordinator log: two batches (heads of size 2 and 5), each verdict published on the verdict "
        "subject of two regions; and invalid variants with the reason a receiver reports.",
        "note": "ML-DSA-65 signing is randomised: verify the stored checkpoint notes, never compare "
        "a re-signed one. Everything else (entries, leaf hashes, roots, proofs, envelopes) is "
        "deterministic. bin values are lower-case hex.",
        "receiver": {
            "now_ms": NOW + 1_000,
            "round_ms": ROUND_MS,
            "minimum_suite": SUITE.value,
            "verdict_region": REGIONS[0],
            "known_heads": "every head listed under batches (its note verified with the "
            "coordinator's key), no other",
        },
        "coordinator": {
            "role": "coordinator",
            "principal": COORDINATOR,
            "region": REGIONS[0],
            "suite": SUITE.value,
            "kid": KEY.kid,
            "public_keys_base64": {
                c.value: base64.b64encode(raw).decode()
                for c, raw in zip(COMPONENTS[SUITE], pub.raw, strict=True)
            },
            "test_only_seeds_hex": {
                c.value: s.hex() for c, s in zip(COMPONENTS[SUITE], _seeds(), strict=True)
            },
        },
        "log": {"origin": log_origin(KEY.kid), "key_name": log_origin(KEY.kid)},
        "batches": batches,
        "consistency": {
            "size1": 2,
            "size2": 5,
            "proof_hex": [h.hex() for h in log.tree.consistency_proof(2, 5)],
        },
        "invalid": [
            {
                "description": d,
                "subject": s if s is not None else verdict_subject(REGIONS[0], NAMES[4], "A"),
                "envelope_hex": data.hex(),
                "reason": r,
            }
            for d, data, s, r in invalid
        ],
    }


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return json.loads(FILE.read_text())


@pytest.mark.skipif(not os.environ.get("CCTF_REGEN_VECTORS"), reason="set CCTF_REGEN_VECTORS=1")
def test_regenerate() -> None:
    FILE.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")


def _verifier(vectors: dict[str, Any]) -> NoteVerifier:
    c = vectors["coordinator"]
    raw = tuple(base64.b64decode(c["public_keys_base64"][comp.value]) for comp in COMPONENTS[SUITE])
    pub = PublicKeySet(SUITE, raw)
    assert pub.kid == c["kid"]
    return NoteVerifier(vectors["log"]["key_name"], pub)


def test_heads_verify_and_match_the_tree(vectors: dict[str, Any]) -> None:
    verifier = _verifier(vectors)
    entries = [bytes.fromhex(m["entry_hex"]) for b in vectors["batches"] for m in b["messages"]]
    for batch in vectors["batches"]:
        head = batch["head"]
        cp = open_checkpoint(head["checkpoint_note"], verifier, vectors["log"]["origin"])
        assert (cp.size, cp.root_hash.hex()) == (head["size"], head["root_hex"])
        assert cp.root_hash == ref.mth(entries[: cp.size])  # clean-room RFC 9162 root
        assert len(head["checkpoint_note"].encode()) <= 16 * 1024
        for subject in head["subjects"]:
            parsed = parse_head_subject(subject)
            assert (parsed.coordinator, parsed.size) == (COORDINATOR, head["size"])
    c = vectors["consistency"]
    assert [h.hex() for h in ref.proof(c["size1"], entries[: c["size2"]])] == c["proof_hex"]


def test_messages_from_the_spec(vectors: dict[str, Any]) -> None:
    """Entry, leaf and proof recomputed from §3.2 alone (plain msgpack, hashlib, the RFC recursion)."""
    entries = [bytes.fromhex(m["entry_hex"]) for b in vectors["batches"] for m in b["messages"]]
    kid = vectors["coordinator"]["kid"]
    for batch in vectors["batches"]:
        size = batch["head"]["size"]
        for m in batch["messages"]:
            env = msgspec.msgpack.decode(bytes.fromhex(m["envelope_hex"]))
            v, type_, suite, env_kid, iat, exp, nonce, payload, auth = env
            assert (v, type_, suite, env_kid) == (1, "verdict", SUITE.value, kid)
            kind, subjects, index, proof, head = auth
            assert kind == "tlog" and subjects == m["subjects"] and index == m["index"]
            assert head == [size, bytes.fromhex(batch["head"]["root_hex"])]
            entry = msgspec.msgpack.encode(
                ["CCTF-LOG-ENTRY-v1", v, type_, subjects, suite, env_kid, iat, exp, nonce, payload]
            )
            assert entry.hex() == m["entry_hex"] == entries[index].hex()
            assert hashlib.sha256(b"\x00" + entry).hexdigest() == m["leaf_hash_hex"]
            assert proof == ref.path(index, entries[:size])
            assert [h.hex() for h in proof] == m["proof_hex"]
            verdict = decode_verdict(payload)
            for region, subject in zip(REGIONS, subjects, strict=True):
                assert subject == verdict_subject(region, verdict.qname, verdict.qtype)


def test_producer_reproduces_every_deterministic_byte(vectors: dict[str, Any]) -> None:
    fresh = build()
    for old, new in zip(vectors["batches"], fresh["batches"], strict=True):
        assert old["messages"] == new["messages"]
        assert {k: v for k, v in old["head"].items() if k != "checkpoint_note"} == {
            k: v for k, v in new["head"].items() if k != "checkpoint_note"
        }
    assert [(x["description"], x["reason"]) for x in vectors["invalid"]] == [
        (x["description"], x["reason"]) for x in fresh["invalid"]
    ]
    assert fresh["consistency"] == vectors["consistency"]


def test_invalid_variants_fail_where_the_spec_says(vectors: dict[str, Any]) -> None:
    """What the producer-side code can decide alone: decoding (``malformed``, ``auth_kind``); the
    other reasons are the verifier's step 7 (``subject``, ``head_unknown``, ``head_mismatch``,
    ``proof``), checked here by a minimal step 7 written from §3.2."""
    from cctf.bus_schemas.envelope import Rejected

    verifier = _verifier(vectors)
    heads = {}
    for b in vectors["batches"]:
        cp = open_checkpoint(b["head"]["checkpoint_note"], verifier)
        heads[cp.size] = cp.root_hash
    for case in vectors["invalid"]:
        data = bytes.fromhex(case["envelope_hex"])
        try:
            env = decode_envelope(data)
        except Rejected as exc:
            assert exc.reason.value == case["reason"], case["description"]
            continue
        assert isinstance(env.auth, TlogAuth)
        got = _step7(env, case["subject"], heads)
        assert got == case["reason"], case["description"]


def _step7(env: Envelope, subject: str, heads: dict[int, bytes]) -> str:
    assert isinstance(env.auth, TlogAuth)
    auth = env.auth
    if subject not in auth.subjects:
        return "subject"
    root = heads.get(auth.head.size)
    if root is None:
        return "head_unknown"
    if root != auth.head.root:
        return "head_mismatch"
    from cctf.translog.errors import ProofError
    from cctf.translog.merkle import verify_inclusion

    try:
        verify_inclusion(
            leaf_hash(envelope_log_entry(env)), auth.index, auth.head.size, auth.proof, root
        )
    except ProofError:
        return "proof"
    return "ok"


def test_valid_messages_pass_the_minimal_step7(vectors: dict[str, Any]) -> None:
    verifier = _verifier(vectors)
    heads = {}
    for b in vectors["batches"]:
        cp = open_checkpoint(b["head"]["checkpoint_note"], verifier)
        heads[cp.size] = cp.root_hash
    for b in vectors["batches"]:
        for m in b["messages"]:
            env = decode_envelope(bytes.fromhex(m["envelope_hex"]))
            for subject in m["subjects"]:
                assert _step7(env, subject, heads) == "ok"
