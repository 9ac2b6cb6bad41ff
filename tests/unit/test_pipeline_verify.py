"""Verify stage with real keys: names normalised once and filtered by the configured set; a split
ballot (several signed ballots of one agent and round) tallies as one."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from wirefactories import make_ballot, make_vote, make_world, seal_ballot

from cctf.bus_schemas.messages import DnssecState, VoteStatus, dnssec_states_for, vote_digest
from cctf.bus_schemas.subjects import SubjectError, normalize_name
from cctf.coordinator.config import NameSet
from cctf.coordinator.pipeline.verify import (
    BAD_QNAME,
    UNCONFIGURED,
    Checked,
    Refused,
    VerifyStage,
    vote_input,
)
from cctf.coordinator.tally import AddResult, Outcome, QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook

EAST, WEST, NORTH = "us-east", "eu-west", "ap-north"


def test_unconfigured_and_bad_names_are_refused_and_counted() -> None:
    world = make_world((EAST, WEST))
    stage = VerifyStage(world.verifier(), NameSet([("Example.COM", "A")]))
    agent = world.agents[EAST]
    r = world.round
    votes = [
        make_vote(agent.principal, EAST, r, qname="EXAMPLE.com."),
        make_vote(agent.principal, EAST, r, qname="other.test.", resolver_id="r2"),
        make_vote(agent.principal, EAST, r, qname="a..b", resolver_id="r3"),
        make_vote(agent.principal, EAST, r, qname="example.com.", qtype="AAAA", resolver_id="r4"),
    ]
    data = seal_ballot(agent, make_ballot(agent.principal, EAST, r, votes=votes), now_ms=r * 1000)
    checked = stage.check(data, agent.subject)
    assert isinstance(checked, Checked)
    assert [key.qname for key, _ in checked.votes] == ["example.com."]  # normalised once
    assert checked.ignored == {UNCONFIGURED: 2, BAD_QNAME: 1}

    only_others = [make_vote(agent.principal, EAST, r, qname=f"n{i}.evil.") for i in range(50)]
    data = seal_ballot(
        agent, make_ballot(agent.principal, EAST, r, votes=only_others), now_ms=r * 1000
    )
    refused = stage.check(data, agent.subject)
    assert isinstance(refused, Refused) and refused.reason == UNCONFIGURED
    assert refused.ignored == {UNCONFIGURED: 50}


def test_the_agents_votes_for_a_name_share_one_key_and_refusals_are_counted_each_time() -> None:
    world = make_world((EAST, WEST))
    stage = VerifyStage(world.verifier(), NameSet([("example.com.", "A")]))
    r = world.round
    checked = []
    for region in (EAST, WEST):
        agent = world.agents[region]
        votes = [
            make_vote(agent.principal, region, r, qname="EXAMPLE.com."),
            make_vote(agent.principal, region, r, qname="other.test.", resolver_id="r2"),
        ]
        data = seal_ballot(
            agent, make_ballot(agent.principal, region, r, votes=votes), now_ms=r * 1000
        )
        got = stage.check(data, agent.subject)
        assert isinstance(got, Checked)
        assert got.ignored == {UNCONFIGURED: 1}  # the second ballot's too: refusals are not cached
        checked.append(got)
    (east_key, _), (west_key, _) = checked[0].votes[0], checked[1].votes[0]
    assert east_key == TallyKey("example.com.", "A", r) and west_key is east_key
    # bounded: the highest rounds only, each a key of its own
    for round_ in range(r + 1, r + 10):
        stage.keys_of(round_)
    assert sorted(stage._keys) == list(range(r + 6, r + 10))
    assert stage.keys_of(r) == {}  # a late round below them: keys of its own, not kept
    assert sorted(stage._keys) == list(range(r + 6, r + 10))


def test_garbage_and_replays_are_refused_with_the_verifier_reason() -> None:
    world = make_world((EAST,))
    stage = VerifyStage(world.verifier(), NameSet([("example.com.", "A")]))
    agent = world.agents[EAST]
    assert stage.check(b"\x00garbage", agent.subject) == Refused(
        "malformed",
        stage.check(b"\x00garbage", agent.subject).detail,  # type: ignore[union-attr]
    )
    data = world.sealed(EAST)
    assert isinstance(stage.check(data, agent.subject), Checked)
    replay = stage.check(data, agent.subject)
    assert isinstance(replay, Refused) and replay.reason == "duplicate"  # the same bytes again


def test_a_split_ballot_tallies_as_one_with_real_keys() -> None:
    """Three agents, names beyond one ballot's cap: each agent sends two ballots for the same round
    (disjoint names, as an agent splitting at MAX_VOTES_PER_BALLOT does); nothing refuses the second, and every name is decided TRUSTED."""
    world = make_world((EAST, WEST, NORTH))
    half = 2_000  # votes per ballot; two ballots per agent (a full 4096-vote ballot exceeds bytes)
    total = 2 * half
    names = [f"n{i}.split.test." for i in range(total)]
    stage = VerifyStage(world.verifier(), NameSet([("*.split.test.", "A")]))
    voters = [f"agent-{r}/r1" for r in (EAST, WEST, NORTH)]
    book = TallyBook(QuorumRule(2, 3), voters, max_open=2 * total)
    r = world.round
    decided = 0
    for region in (EAST, WEST, NORTH):
        agent = world.agents[region]
        for part in (names[:half], names[half:]):
            votes = [make_vote(agent.principal, region, r, qname=n) for n in part]
            ballot = make_ballot(agent.principal, region, r, votes=votes)
            checked = stage.check(seal_ballot(agent, ballot, now_ms=r * 1000), agent.subject)
            assert isinstance(checked, Checked), checked
            for key, vote in checked.votes:
                result, decision = book.add(key.qname, key.qtype, key.round, vote)
                assert result in (AddResult.COUNTED, AddResult.CLOSED)
                if decision is not None:
                    assert decision.outcome is Outcome.TRUSTED and decision.winner is not None
                    decided += 1
    assert decided == total


# ---- the hot path, restructured (one cached lookup per (name, qtype), vote_input inlined) -------

_labels = st.sampled_from(["a", "b", "zone", "test", "x-y", "", "A"])
_raw_names = st.lists(_labels, min_size=1, max_size=5).map(".".join) | st.sampled_from(
    [".", "..", "a..b", "zone.test.", "*.zone.test.", "x" * 300]
)
_qtypes = st.sampled_from(["A", "AAAA", "TXT"])


def _admits_reference(names: NameSet, qname: str, qtype: str) -> bool:
    """``NameSet.admits`` as it was (fe7c6bd): every dot position scanned."""
    if (qname, qtype) in names._exact:
        return True
    zones = names._zones.get(qtype)
    if not zones:
        return False
    for i, ch in enumerate(qname):
        if ch == "." and i + 1 < len(qname) and qname[i:] in zones:
            return True
    return "." in zones and qname != "."


_configs = st.lists(
    st.tuples(
        st.sampled_from(["zone.test.", "*.zone.test.", "*.test.", "*.", "a.b.", "*.a.zone.test."]),
        _qtypes,
    ),
    min_size=1,
    max_size=4,
)


@given(_configs, st.lists(st.tuples(_raw_names, _qtypes), max_size=30))
@settings(max_examples=200, deadline=None)
def test_admitted_equals_normalise_then_admits(
    pairs: list[tuple[str, str]], queries: list[tuple[str, str]]
) -> None:
    names = NameSet(pairs)
    stage = VerifyStage(make_world((EAST,)).verifier(), names)
    for raw, qtype in queries + queries:  # the second pass answers from the cache
        try:
            qname: str | None = normalize_name(raw)
        except SubjectError:
            qname = None
        if qname is not None:
            assert names.admits(qname, qtype) == _admits_reference(names, qname, qtype)
        expected = (
            "" if qname is None else qname if _admits_reference(names, qname, qtype) else None
        )
        assert stage.admitted(raw, qtype) == expected


@given(st.lists(st.sampled_from(list(DnssecState)), min_size=1, max_size=6), st.data())
@settings(max_examples=50, deadline=None)
def test_checked_votes_are_the_vote_inputs(dnssec: list[DnssecState], data: st.DataObject) -> None:
    world = make_world((EAST,))
    stage = VerifyStage(world.verifier(), NameSet([("*.test.", "A")]))
    agent, r = world.agents[EAST], world.round
    votes = []
    for i, state in enumerate(dnssec):
        status = data.draw(st.sampled_from(list(VoteStatus)))
        if state not in dnssec_states_for(status):
            status = VoteStatus.ANSWER
        votes.append(
            make_vote(
                agent.principal,
                EAST,
                r,
                qname=f"n{i}.test.",
                resolver_id="r1",
                status=status,
                dnssec=state,
            )
        )
    data_ = seal_ballot(agent, make_ballot(agent.principal, EAST, r, votes=votes), now_ms=r * 1000)
    checked = stage.check(data_, agent.subject)
    assert isinstance(checked, Checked)
    assert [vi for _k, vi in checked.votes] == [vote_input(v) for v in votes]
    # the vote digest is left to the tally (computed only for a counted vote): the same digest
    assert [vi.resolved().vote_digest for _k, vi in checked.votes] == [
        vote_digest(v) for v in votes
    ]
    assert [k for k, _vi in checked.votes] == [TallyKey(v.qname, v.qtype, r) for v in votes]


def test_the_callers_envelope_digest_stands_for_the_one_step_10_computes() -> None:
    """Intake passes the SHA-256 it computed for the duplicate index: the same checked votes, and
    the replay cache tells the other copy (a duplicate) from a replay just as without it."""
    world = make_world((EAST,))
    agent = world.agents[EAST]
    data = world.sealed(EAST)
    digest = hashlib.sha256(data).digest()
    results = []
    for known in (None, digest):
        stage = VerifyStage(world.verifier(), NameSet([("example.com.", "A")]))
        first = stage.check(data, agent.subject, known)
        again = stage.check(data, agent.subject, known)
        assert isinstance(first, Checked)
        assert isinstance(again, Refused) and again.reason == "duplicate"
        results.append([(k, vi.resolved()) for k, vi in first.votes])
    assert results[0] == results[1]
