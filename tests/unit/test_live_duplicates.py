"""Duplicate recognition of the live path (cctf.coordinator.replay, pipeline.live), checked against
plain models with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.coordinator.pipeline.live import LiveIngest, envelope_digest
from cctf.coordinator.replay import Admission, DuplicateIndex, ReplayCache, Seen

_nonces = st.sampled_from([b"n1", b"n2", b"n3"])
_digests = st.sampled_from([b"d1", b"d2"])


@given(st.lists(st.tuples(_nonces, _digests), max_size=30))
def test_replay_cache_admissions_match_a_model(seq: list[tuple[bytes, bytes]]) -> None:
    cache = ReplayCache(capacity=10, slack_ms=0)
    first: dict[bytes, bytes] = {}
    for nonce, digest in seq:
        got = cache.admit(nonce, digest, expires_ms=1_000, now_ms=0)
        if nonce not in first:
            first[nonce] = digest
            assert got is Admission.FRESH
        elif first[nonce] == digest:
            assert got is Admission.DUPLICATE  # the same message again: never a replay
        else:
            assert got is Admission.REPLAY  # another message reusing the nonce


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=40),
    st.integers(1, 4),
)
def test_duplicate_index_matches_a_model(ops: list[tuple[int, int]], capacity: int) -> None:
    ttl = 20
    index: DuplicateIndex[str] = DuplicateIndex(capacity, ttl)
    model: list[tuple[int, int, Seen[str]]] = []  # (digest, until, seen), oldest first
    now = 0
    for digest_n, step in ops:
        now += step % 7
        digest = bytes([digest_n])
        model = [e for e in model if e[1] > now]
        got = index.get(digest, now)
        expected = next((e[2] for e in model if e[0] == digest_n), None)
        assert got == expected
        if expected is None:
            seen: Seen[str] = Seen(keys=(f"k{digest_n}",))
            index.record(digest, seen, now)
            model.append((digest_n, now + ttl, seen))
            model = model[-capacity:]
        assert len(index) <= capacity


def test_record_keeps_the_first_fate() -> None:
    index: DuplicateIndex[str] = DuplicateIndex(4, 100)
    index.record(b"d", Seen(reason="round"), 0)
    index.record(b"d", Seen(keys=("k",)), 1)
    assert index.get(b"d", 2) == Seen(reason="round")
    with pytest.raises(ValueError):
        DuplicateIndex(0, 1)


def test_live_ingest_is_bounded_and_counts_drops() -> None:
    live = LiveIngest(("a", "b"), limit=2, batch=8)
    assert all(live.offer("a", "s", b"%d" % i) for i in range(2))
    assert not live.offer("a", "s", b"x")
    assert live.offer("b", "s", b"y")
    assert live.dropped == 1 and len(live) == 3
    assert sorted(c.data for _r, c in live.take()) == [b"0", b"1", b"y"]
    assert envelope_digest(b"x") != envelope_digest(b"y")
