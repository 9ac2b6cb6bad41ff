"""LogBatch codec, LogMirror and LogState (issue #9 scope 1, D4): pure, real crypto."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from independent_merkle import mth

from cctf.crypto.keys import SigningKey
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.errors import LogWriteError, MirrorError, RecordError, RecordTooLargeError
from cctf.translog.logstate import LogState, log_origin
from cctf.translog.merkle import leaf_hash, verify_consistency, verify_inclusion
from cctf.translog.mirror import LogMirror
from cctf.translog.note import NoteVerifier, sign_checkpoint
from cctf.translog.record import (
    MAX_BATCH_ENTRIES,
    MAX_RECORD_BYTES,
    LogBatch,
    decode_batch,
)

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
ORIGIN = log_origin(KEY.kid)


def _mirror(key: SigningKey = KEY) -> LogMirror:
    origin = log_origin(key.kid)
    return LogMirror(origin, NoteVerifier(origin, key.public))


def _records(state: LogState, batches: list[list[bytes]]) -> list[LogBatch]:
    return [state.append(b) for b in batches]


entries_st = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.integers(0, 2**40), entries=entries_st, note=st.text(min_size=1, max_size=80))
def test_record_round_trip(first: int, entries: list[bytes], note: str) -> None:
    batch = LogBatch(ORIGIN, first, tuple(entries), note)
    data = batch.encode()
    assert decode_batch(data) == batch
    assert msgspec.msgpack.decode(data) == [ORIGIN, first, entries, note]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), pos=st.integers(0, 200), byte=st.integers(0, 255))
def test_record_decoder_raises_only_record_error(data: bytes, pos: int, byte: int) -> None:
    with contextlib.suppress(RecordError):
        decode_batch(data)
    good = bytearray(LogBatch(ORIGIN, 7, (b"ab", b""), "note\n").encode())
    good[pos % len(good)] = byte
    with contextlib.suppress(RecordError):  # a mutated record decodes to a valid one, or refuses
        assert decode_batch(bytes(good)).encode() == bytes(good)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([ORIGIN, 0, [b"a"]], "malformed"),  # three fields
        ([ORIGIN, 0, [b"a"], "n", "x"], "malformed"),  # five fields
        ([ORIGIN, -1, [b"a"], "n"], "bad-index"),
        ([ORIGIN, 2**63, [b"a"], "n"], "bad-index"),
        ([ORIGIN, 0, [], "n"], "bad-entries"),
        ([ORIGIN, 0, ["a"], "n"], "malformed"),  # entry as str, not bin
        ([ORIGIN, 0, [b"a"], b"n"], "malformed"),  # note as bin
        ([ORIGIN, 0, [b"a"], ""], "bad-checkpoint"),
        ([ORIGIN, 0, [b"a"], "x" * 20000], "bad-checkpoint"),
        (["", 0, [b"a"], "n"], "bad-origin"),
        ([" o", 0, [b"a"], "n"], "bad-origin"),
        (["o\n", 0, [b"a"], "n"], "bad-origin"),
        ([ORIGIN, 0, [b"a"] * (MAX_BATCH_ENTRIES + 1), "n"], "bad-entries"),
        ({"origin": ORIGIN}, "malformed"),
    ],
)
def test_record_refusals(value: object, reason: str) -> None:
    with pytest.raises(RecordError) as err:
        decode_batch(msgspec.msgpack.encode(value))
    assert err.value.reason == reason


def test_record_not_canonical_and_too_large() -> None:
    good = LogBatch(ORIGIN, 5, (b"a",), "n").encode()
    # the same record with first_index as a uint64 (0xcf) instead of a fixint: not canonical
    pos = good.index(b"\x05")
    longer = good[:pos] + b"\xcf" + (5).to_bytes(8, "big") + good[pos + 1 :]
    assert msgspec.msgpack.decode(longer) == msgspec.msgpack.decode(good)
    with pytest.raises(RecordError) as err:
        decode_batch(longer)
    assert err.value.reason == "not-canonical"
    with pytest.raises(RecordError) as err:
        decode_batch(b"\x00" * (MAX_RECORD_BYTES + 1))
    assert err.value.reason == "too-large"
    big = LogBatch(ORIGIN, 0, (b"x" * 400_000,) * 3, "n")
    with pytest.raises(RecordError) as err:
        big.encode()
    assert err.value.reason == "too-large"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(entries_st, min_size=1, max_size=5), cut=st.integers(0, 5))
def test_state_resume_mirror_and_proofs(batches: list[list[bytes]], cut: int) -> None:
    state = LogState(KEY)
    records = _records(state, batches[:cut])
    resumed = LogState.resume(KEY, records)
    assert (resumed.size, resumed.root) == (state.size, state.root)
    records += _records(resumed, batches[cut:])
    every = [e for b in batches for e in b]
    assert resumed.size == len(every)
    assert resumed.root == mth(every)  # the clean-room RFC 9162 recursion
    mirror = _mirror()
    for record in records:
        checkpoint = mirror.apply(record)
        assert checkpoint.size == record.size
        assert checkpoint.root_hash == mth(every[: record.size])
    assert [h.size for h in mirror.heads] == [r.size for r in records]
    last = mirror.heads[-1]
    for i, entry in enumerate(every):
        proof = resumed.inclusion_proof(i, last.size)
        verify_inclusion(leaf_hash(entry), i, last.size, proof, last.root)
    first = mirror.heads[0]
    proof = mirror.check_consistency(first.size, last.size)
    verify_consistency(first.size, last.size, proof, first.root, last.root)


def test_mirror_refuses_every_bad_record() -> None:
    state = LogState(KEY)
    r1 = state.append([b"a", b"b"])
    r2 = state.append([b"c"])
    r3 = state.append([b"d", b"e", b"f"])

    def refused(records: list[LogBatch], reason: str, key: SigningKey = KEY) -> None:
        mirror = _mirror(key)
        with pytest.raises(MirrorError) as err:
            for record in records:
                mirror.apply(record)
        assert err.value.reason == reason, err.value
        assert mirror.failed is not None
        with pytest.raises(MirrorError) as again:  # fail closed: nothing more is applied
            mirror.apply(r1)
        assert again.value.reason == "failed"

    refused([r2], "gap")
    refused([r1, r3], "gap")
    refused([r1, r1], "overlap")
    refused([r1], "wrong-origin", OTHER)
    # a record with other entries than its head was signed over
    refused([LogBatch(ORIGIN, 0, (b"a", b"X"), r1.checkpoint)], "root-mismatch")
    # a record with one entry less than its head says
    refused([LogBatch(ORIGIN, 0, (b"a",), r1.checkpoint)], "size-mismatch")
    # a head signed by another key under our origin
    forged = sign_checkpoint(Checkpoint(ORIGIN, 2, r1_root(r1)), ORIGIN, OTHER)
    refused([LogBatch(ORIGIN, 0, r1.entries, forged)], "checkpoint")
    # a head with one hybrid half stripped (anti-downgrade)
    stripped = r1.checkpoint.rsplit("\u2014", 1)[0]
    refused([LogBatch(ORIGIN, 0, r1.entries, stripped)], "checkpoint")
    # a validly signed head whose root is not the entries' (a split view written to the log)
    other_root = sign_checkpoint(Checkpoint(ORIGIN, 3, b"\x11" * 32), ORIGIN, KEY)
    refused([r1, LogBatch(ORIGIN, 2, r2.entries, other_root)], "root-mismatch")


def r1_root(record: LogBatch) -> bytes:
    return mth(list(record.entries))


def test_state_bounds_and_poison() -> None:
    state = LogState(KEY)
    with pytest.raises(RecordTooLargeError):
        state.append([b"x" * 400_000] * 3)
    assert state.size == 0  # untouched
    assert not state.fits([])
    with pytest.raises(RecordTooLargeError):
        state.append([])
    record = state.append([b"x" * 400_000, b"y" * 400_000])
    assert decode_batch(record.encode()) == record
    state.poison("fenced")
    with pytest.raises(LogWriteError) as err:
        state.append([b"z"])
    assert err.value.reason == "poisoned"


def test_resume_refuses_another_keys_log() -> None:
    records = [LogState(OTHER).append([b"a"])]
    with pytest.raises(MirrorError) as err:
        LogState.resume(KEY, records)
    assert err.value.reason == "wrong-origin"


def test_log_origin() -> None:
    assert "cctf/v1/log/" + KEY.kid == ORIGIN
    with pytest.raises(ValueError):
        log_origin("k/../x")
