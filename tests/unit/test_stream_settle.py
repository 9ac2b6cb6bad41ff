"""``cctf.bus.settle.not_settled``: when a replicated stream counts as in place on its nodes."""

from __future__ import annotations

from nats.js.api import ClusterInfo, PeerInfo, StreamConfig, StreamInfo, StreamState

from cctf.bus.settle import not_settled


def _info(cluster: ClusterInfo | None) -> StreamInfo:
    state = StreamState(messages=0, bytes=0, first_seq=0, last_seq=0, consumer_count=0)
    return StreamInfo(config=StreamConfig(name="S"), state=state, cluster=cluster)


def _peer(name: str, *, current: bool = True, offline: bool = False) -> PeerInfo:
    return PeerInfo(name=name, current=current, offline=offline)


def test_one_replica_is_settled_with_or_without_cluster_info() -> None:
    assert not_settled(_info(None), 1) is None
    assert not_settled(_info(ClusterInfo(leader=None)), 1) is None


def test_a_replicated_stream_needs_a_leader_and_every_online_replica_current() -> None:
    assert not_settled(_info(None), 3) == "no leader yet"
    assert not_settled(_info(ClusterInfo(leader="")), 3) == "no leader yet"
    one = ClusterInfo(leader="n1", replicas=[_peer("n2")])
    assert not_settled(_info(one), 3) == "2 of 3 replicas placed"
    lagging = ClusterInfo(leader="n1", replicas=[_peer("n3", current=False), _peer("n2")])
    assert not_settled(_info(lagging), 3) == "replica(s) not current: n3"
    both = ClusterInfo(
        leader="n1", replicas=[_peer("n3", current=False), _peer("n2", current=False)]
    )
    assert not_settled(_info(both), 3) == "replica(s) not current: n2, n3"
    assert (
        not_settled(_info(ClusterInfo(leader="n1", replicas=[_peer("n2"), _peer("n3")])), 3) is None
    )


def test_an_offline_replica_is_not_waited_for() -> None:
    down = ClusterInfo(
        leader="n1", replicas=[_peer("n2"), _peer("n3", current=False, offline=True)]
    )
    assert not_settled(_info(down), 3) is None
