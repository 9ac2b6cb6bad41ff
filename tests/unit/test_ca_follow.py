"""The CA log follower's two paths without a server (records handed over as the bus would): a live
record is applied only when it is the next one and passes the mirror's checks; one ahead is held
(bounded); one that fails a check is refused and counted, never applied and never fatal; a live
record's revocations count at once, its certificates once its stored copy is read; a stored record
other than the live one applied at its size is fatal. Plus ``MerkleTree.root_after`` and
``LogMirror.check`` against the mutating paths."""

from __future__ import annotations

import dataclasses
import itertools
from typing import cast

import pytest
from capki import START_MS, CaWorld, make_ca_world
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf import telemetry
from cctf.bus.connect import Connection
from cctf.bus.logstream import StoredRecord
from cctf.ca.entries import RevocationReason, RevokeEntry, encode_entry
from cctf.ca.follow import MAX_HELD, CaLogFollower
from cctf.crypto.keys import SigningKey
from cctf.translog.errors import MirrorError
from cctf.translog.logstate import LogState
from cctf.translog.merkle import MerkleTree, leaf_hash
from cctf.translog.record import LogBatch

EAST = "agent-us-east"
SUBJECT = "cctf.v1.log.ca"


@given(st.integers(0, 70), st.integers(0, 40))
@settings(max_examples=150, deadline=None)
def test_root_after_is_the_root_once_appended_and_leaves_the_tree_alone(n: int, k: int) -> None:
    tree = MerkleTree()
    for i in range(n):
        tree.append(i.to_bytes(4, "big"))
    leaves = [leaf_hash(b"new" + i.to_bytes(4, "big")) for i in range(k)]
    before = tree.root()
    got = tree.root_after(leaves)
    assert tree.size == n and tree.root() == before
    for leaf in leaves:
        tree.append_leaf_hash(leaf)
    assert got == tree.root()


class World:
    def __init__(self) -> None:
        self.ca: CaWorld = make_ca_world(now_ms=START_MS)
        self.key = SigningKey.generate()
        self.log = LogState(self.key)
        self.follower = CaLogFollower(cast(Connection, None), self.ca.registry(), self.key.public)
        self.kid = self.ca.agents[EAST].key.kid
        self.seq = 0

    def cert(self) -> tuple[str, bytes]:
        issued = self.ca.issue(EAST, START_MS, 60_000)
        return issued.cert.serial, issued.entry

    def revoke(self, serial: str, reason: RevocationReason = RevocationReason.SUPERSEDED) -> bytes:
        return encode_entry(RevokeEntry(serial, self.kid, reason, START_MS))

    def stored(self, record: LogBatch) -> None:
        self.seq += 1
        self.follower.on_stored(StoredRecord(self.seq, record))

    def live(self, data: bytes | LogBatch) -> None:
        raw = data.encode() if isinstance(data, LogBatch) else data
        assert self.follower.on_live(SUBJECT, raw)


def test_a_live_revocation_counts_at_once_its_certificates_once_stored() -> None:
    w = World()
    reg = w.follower.registry
    serial1, cert1 = w.cert()
    w.stored(w.log.append([cert1]))
    assert [c.serial for c in reg.certs_of(w.kid)] == [serial1]
    serial2, cert2 = w.cert()
    r2 = w.log.append([w.revoke(serial1), cert2])
    w.live(r2)
    assert reg.is_revoked(w.kid, serial1)  # honoured at once
    assert [c.serial for c in reg.certs_of(w.kid)] == [serial1]  # not logged yet: waits
    assert w.follower.live_applied == 1 and w.follower.mirror.size == 3
    w.live(r2)  # a second live copy (a retried publish): behind the mirror, ignored
    w.stored(r2)
    assert [c.serial for c in reg.certs_of(w.kid)] == [serial1, serial2]
    assert reg.revocations == 1 and reg.certificates == 2 and reg.refused == {}
    w.stored(r2)  # a re-read after a reconnect: the same record, nothing registered twice
    assert reg.revocations == 1 and reg.certificates == 2
    assert w.follower.failed is None and w.follower.live_refused == {}


def test_live_records_in_any_order_end_as_the_stored_log() -> None:
    w = World()
    records = [w.log.append([w.cert()[1]]) for _ in range(4)]
    for order in itertools.permutations(range(4)):
        f = CaLogFollower(cast(Connection, None), w.ca.registry(), w.key.public)
        for i in order:
            assert f.on_live(SUBJECT, records[i].encode())
        assert f.mirror.size == 4 and f.held == 0 and f.live_applied == 4
        assert f.mirror.root == w.log.mirror.root and f.live_refused == {}
        for seq, r in enumerate(records, 1):
            f.on_stored(StoredRecord(seq, r))
        assert f.registry.certificates == 4 and f.failed is None


def test_a_live_record_failing_a_check_is_refused_and_counted_never_applied() -> None:
    w = World()
    serial, cert = w.cert()
    w.stored(w.log.append([cert]))
    real = w.log.append([w.revoke(serial, RevocationReason.KEY_COMPROMISE)])
    other_log = LogState(SigningKey.generate())  # another key's log, at the same index
    other_log.append([cert])
    other = other_log.append([cert])
    bad = {
        "decode": b"\x93garbage",
        "wrong-origin": other.encode(),
        # the real next checkpoint with other entries: the root does not re-derive
        "root-mismatch": dataclasses.replace(real, entries=(cert,)).encode(),
        "checkpoint": dataclasses.replace(
            real, checkpoint=real.checkpoint.replace("\u2014 ", "\u2014 x", 1)
        ).encode(),
    }
    before = telemetry.prometheus_text()
    for data in bad.values():
        w.live(data)
    assert w.follower.live_refused == dict.fromkeys(bad, 1)
    after = telemetry.prometheus_text()  # the same counts as an OTel metric, by reason
    for reason in bad:
        label = f'reason="{reason}"'
        assert _value(after, label) == _value(before, label) + 1
    f = w.follower
    assert f.failed is None and f.mirror.failed is None and f.mirror.size == 1
    assert not f.registry.is_blocked(w.kid)
    w.live(real)  # the real record still applies
    assert f.registry.is_blocked(w.kid) and f.mirror.size == 2 and f.failed is None


def test_records_ahead_are_held_bounded_and_checked_when_their_turn_comes() -> None:
    w = World()
    first = w.log.append([w.cert()[1]])
    nxt = w.log.append([w.cert()[1]])
    f = w.follower
    fake = dataclasses.replace(nxt, entries=(b"forged",))  # held unchecked, refused later
    w.live(fake)
    for i in range(MAX_HELD):
        w.live(dataclasses.replace(nxt, first_index=10 + i))
    assert f.held == MAX_HELD and f.live_refused == {"held-full": 1}
    w.live(first)  # applies, then the held record at 1 is checked: refused
    assert f.mirror.size == 1 and f.live_refused == {"held-full": 1, "root-mismatch": 1}
    w.stored(first)
    w.stored(nxt)  # the durable path is unaffected
    assert f.mirror.size == 2 and f.failed is None and f.registry.certificates == 2


def test_a_stored_record_other_than_the_live_one_applied_is_fatal() -> None:
    w = World()
    twin = LogState(w.key)  # the same log key signing another tree of the same size
    w.live(w.log.append([w.cert()[1]]))
    with pytest.raises(MirrorError, match="two different trees") as info:
        w.stored(twin.append([w.cert()[1]]))
    assert info.value.reason == "diverged"
    assert w.follower.registry.certificates == 0  # the live record's certificate never counted


def _value(text: str, label: str) -> float:
    """The value of ``cctf_ca_live_records_refused_total`` with ``label`` in ``text`` (0 when
    absent)."""
    for row in text.splitlines():
        if row.startswith("cctf_ca_live_records_refused_total{") and label in row:
            return float(row.split()[-1])
    return 0.0
