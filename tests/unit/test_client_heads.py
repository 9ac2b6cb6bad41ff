"""The subscriber's head cache: notes verified once, refusals by reason, consistency tracking
between heads and the split-view alarm (fork and inconsistent heads), with real trees and real
hybrid note signatures."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tlogfactories import TestLog
from wirefactories import make_identity, make_trust, make_world

from cctf.bus_schemas.envelope import Reason
from cctf.bus_schemas.heads import log_origin
from cctf.client.heads import HeadCache, HeadError, SplitView, SplitViewError
from cctf.crypto.trust import Role
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.note import Note, parse_note, sign_checkpoint

WORLD = make_world()
COORD = WORLD.coordinator
KID = COORD.kid


def _log(n: int, tag: str = "a") -> TestLog:
    log = TestLog(COORD)
    for i in range(n):
        log.tree.append(f"{tag}-{i}".encode())
    return log


LOG = _log(12)


def _reason(fn: object) -> str:
    with pytest.raises(HeadError) as info:
        fn()  # type: ignore[operator]
    return info.value.reason


def test_a_head_is_verified_once_and_answers_step_7() -> None:
    cache = HeadCache(WORLD.trust)
    head = cache.add_note(LOG.head_note(5), coordinator=COORD.principal, size=5)
    assert head is not None and (head.kid, head.size, head.coordinator) == (KID, 5, COORD.principal)
    assert cache.verified_root(KID, 5) == LOG.tree.root(5)
    assert cache.verified_root(KID, 6) is None and cache.verified_root("other", 5) is None
    assert cache.add_note(LOG.head_note(5)) is None  # the same note again: nothing to verify
    assert cache.verified == 1
    assert cache.anchor(KID) == head


def test_bad_heads_are_refused_by_reason() -> None:
    cache = HeadCache(WORLD.trust)
    note = LOG.head_note(5)
    assert _reason(lambda: cache.add_note(b"not a note")) == "malformed"
    assert _reason(lambda: cache.add_note(b"x" * (16 * 1024 + 1))) == "malformed"
    assert _reason(lambda: cache.add_note(note, coordinator="coord-b")) == "wrong_log"
    assert _reason(lambda: cache.add_note(note, size=6)) == "wrong_size"
    stranger = make_identity("coord-x", "us-east", role=Role.COORDINATOR)
    assert _reason(lambda: cache.add_note(TestLog(stranger).head_note(0))) == "unknown_log"
    agent = WORLD.agent("us-east")  # a trusted key, but an agent's
    assert _reason(lambda: cache.add_note(TestLog(agent).head_note(0))) == "unknown_log"
    parsed = parse_note(note)
    for half in parsed.signatures:  # anti-downgrade: one half alone is refused
        one = Note(parsed.text, (half,)).encode().encode()
        assert _reason(lambda one=one: cache.add_note(one)) == "signature"
    tampered = note.replace(b"\n5\n", b"\n6\n", 1)
    assert _reason(lambda: cache.add_note(tampered)) == "signature"
    # validly signed by the right key, but the origin is not the key name
    wrong_origin = sign_checkpoint(
        Checkpoint("example.org/log", 5, LOG.tree.root(5)), log_origin(KID), COORD.key
    )
    assert _reason(lambda: cache.add_note(wrong_origin)) == "malformed"
    assert len(cache) == 0 and cache.verified == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_only_ever_raise_head_error(data: bytes) -> None:
    cache = HeadCache(WORLD.trust)
    with contextlib.suppress(HeadError):
        cache.add_note(data)
    note = LOG.head_note(3)
    with contextlib.suppress(HeadError):
        cache.add_note(note[: len(data) % len(note)] + data)


def test_a_fork_is_a_split_view_counted_and_raised_on_demand() -> None:
    views: list[SplitView] = []
    cache = HeadCache(WORLD.trust, on_split_view=views.append)
    cache.add_note(LOG.head_note(5))
    cache.raise_for_split_view()  # nothing yet
    fork = _log(5, tag="b")  # same key, same size, other entries
    assert cache.add_note(fork.head_note(5)) is None
    assert [v.kind for v in views] == ["fork"]
    assert views[0].root1 == LOG.tree.root(5) and views[0].root2 == fork.tree.root(5)
    assert cache.verified_root(KID, 5) == LOG.tree.root(5)  # the first root stays
    with pytest.raises(SplitViewError) as info:
        cache.raise_for_split_view()
    assert info.value.reason is Reason.SPLIT_VIEW
    assert "fork" in str(info.value)


def test_consistency_advances_the_anchor_and_checks_older_heads() -> None:
    cache = HeadCache(WORLD.trust)
    cache.add_note(LOG.head_note(5))
    cache.add_note(LOG.head_note(9))
    cache.add_note(LOG.head_note(3))
    assert sorted(cache.pending()) == [(KID, 3, 5), (KID, 5, 9)]
    assert cache.add_consistency(KID, 5, 9, LOG.tree.consistency_proof(5, 9))
    assert cache.anchor(KID).size == 9  # type: ignore[union-attr]
    assert cache.pending() == [(KID, 3, 9)]  # now against the new anchor
    assert not cache.add_consistency(KID, 3, 5, LOG.tree.consistency_proof(3, 5))  # stale
    assert cache.add_consistency(KID, 3, 9, LOG.tree.consistency_proof(3, 9))
    assert cache.pending() == [] and cache.consistency_checked == 2 and not cache.split_views


def test_a_head_not_consistent_with_an_earlier_one_is_a_split_view() -> None:
    views: list[SplitView] = []
    cache = HeadCache(WORLD.trust, on_split_view=views.append)
    cache.add_note(LOG.head_note(5))
    rewritten = _log(12, tag="b")  # the log shows another history at a later size
    cache.add_note(rewritten.head_note(9))
    (pending,) = cache.pending()
    assert pending == (KID, 5, 9)
    # whatever proof the log API serves: the true one of either tree cannot link both roots
    assert cache.add_consistency(KID, 5, 9, rewritten.tree.consistency_proof(5, 9))
    assert [v.kind for v in views] == ["inconsistent"]
    assert (views[0].size1, views[0].size2) == (5, 9)
    assert cache.anchor(KID).size == 5  # type: ignore[union-attr]
    with pytest.raises(SplitViewError):
        cache.raise_for_split_view()


def test_state_is_bounded() -> None:
    cache = HeadCache(WORLD.trust, capacity=4, max_unchecked=2)
    for size in range(1, 9):
        cache.add_note(LOG.head_note(size))
    assert len(cache) == 4
    assert cache.verified_root(KID, 1) is None and cache.verified_root(KID, 8) is not None
    assert len(cache.pending(limit=100)) == 2 and cache.unchecked_dropped == 5


def test_two_coordinators_logs_are_tracked_apart() -> None:
    other = make_identity("coord-b", "us-east", role=Role.COORDINATOR)
    trust = make_trust(*WORLD.agents.values(), COORD, other)
    cache = HeadCache(trust)
    theirs = TestLog(other)
    for i in range(5):
        theirs.tree.append(f"b-{i}".encode())
    cache.add_note(LOG.head_note(5))
    cache.add_note(theirs.head_note(5))  # same size, another log: no fork
    assert not cache.split_views
    assert cache.verified_root(other.kid, 5) == theirs.tree.root(5)


class _Source:
    """A log API stand-in answering from a real tree (or failing), as ``ConsistencySource``."""

    def __init__(self, log: TestLog | None) -> None:
        self.log = log
        self.asked: list[tuple[str, int, int]] = []

    async def consistency(self, coordinator: str, size1: int, size2: int) -> list[bytes]:
        self.asked.append((coordinator, size1, size2))
        if self.log is None:
            raise RuntimeError("no responder")
        return self.log.tree.consistency_proof(size1, size2)


async def test_the_feed_asks_for_pending_consistency_proofs() -> None:
    from cctf import telemetry
    from cctf.client.headfeed import HeadFeed

    logs = io.StringIO()
    telemetry.configure_logging(json=True, level="info", stream=logs)
    try:
        source = _Source(None)
        feed = HeadFeed(None, WORLD.trust, gossip=False, consistency=source)  # type: ignore[arg-type]
        feed.add(LOG.head_note(5), "test")
        feed.add(LOG.head_note(9), "test")
        await feed.tick()
        await feed.tick()
    finally:
        telemetry.configure_logging()
    assert feed.consistency_unavailable == 2 and feed.cache.pending() == [(KID, 5, 9)]
    assert logs.getvalue().count("consistency_unavailable") == 1  # one line per outage
    source.log = LOG
    await feed.tick()
    assert source.asked[-1] == (COORD.principal, 5, 9)
    assert feed.cache.pending() == [] and feed.cache.anchor(KID).size == 9  # type: ignore[union-attr]
    # a log API serving another history: the alarm, counted as split views
    feed.add(_log(12, tag="b").head_note(12), "test")
    source.log = _log(12, tag="b")
    await feed.tick()
    assert [v.kind for v in feed.cache.split_views] == ["inconsistent"]


class _Refused(Exception):
    reason = "unknown-head"


async def test_a_proof_the_log_api_refuses_does_not_block_the_others() -> None:
    from cctf import telemetry
    from cctf.client.headfeed import PROOF_TRIES, HeadFeed

    class Picky(_Source):
        async def consistency(self, coordinator: str, size1: int, size2: int) -> list[bytes]:
            if 7 in (size1, size2):
                self.asked.append((coordinator, size1, size2))
                raise _Refused("no stored head of size 7")
            return await super().consistency(coordinator, size1, size2)

    source = Picky(LOG)
    feed = HeadFeed(None, WORLD.trust, gossip=False, consistency=source)  # type: ignore[arg-type]
    telemetry.configure_logging(json=True, level="info", stream=io.StringIO())
    try:
        for size in (5, 7, 9):
            feed.add(LOG.head_note(size), "test")
        feed.add(LOG.head_note(0), "test")  # the empty tree proves nothing: not tracked
        for _ in range(PROOF_TRIES + 2):
            await feed.tick()
    finally:
        telemetry.configure_logging()
    assert feed.cache.pending() == [] and feed.cache.anchor(KID).size == 9  # type: ignore[union-attr]
    assert feed.cache.unchecked_dropped == 1 and feed.consistency_unavailable >= PROOF_TRIES
    assert not feed.cache.split_views  # a refusal is not evidence of a split view
