"""The agents' parsed-question plan (cctf.agents.udpfast.AnswerMemo.plan, used by query_all): built
once per name list and DO bit, reused every round, never cached for an invalid list; the memo keys
of distinct questions are distinct; a memo hit's copy (Observation.with_latency) is
dataclasses.replace."""

from __future__ import annotations

import dataclasses

import dns.message
import dns.name
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.agents.canonical import Observation, Transport, VoteStatus
from cctf.agents.roundquery import _parse
from cctf.agents.udpfast import AnswerMemo
from cctf.bus_schemas.messages import DnssecState

NAMES = (("www.demo.test.", "A"), ("api.demo.test", "AAAA"), ("WWW.demo.test.", "TXT"))


def test_the_plan_is_built_once_per_name_list_and_do_bit() -> None:
    memo = AnswerMemo()
    calls: list[bool] = []

    def build(dnssec: bool) -> object:
        calls.append(dnssec)
        return _parse(NAMES, dnssec)

    first = memo.plan(NAMES, True, lambda: build(True))
    assert memo.plan(NAMES, True, lambda: build(True)) is first  # reused: parsed once
    assert memo.plan([list(q) for q in NAMES], True, lambda: build(True)) is first  # same names
    other = memo.plan(NAMES, False, lambda: build(False))  # the DO bit is part of the question
    assert other is not first and calls == [True, False]
    assert [(n, t) for n, t, _k in first] == [  # type: ignore[attr-defined]
        (dns.name.from_text("www.demo.test."), dns.rdatatype.A),
        (dns.name.from_text("api.demo.test."), dns.rdatatype.AAAA),
        (dns.name.from_text("www.demo.test."), dns.rdatatype.TXT),
    ]


def test_an_invalid_name_raises_every_time_and_caches_nothing() -> None:
    memo = AnswerMemo()
    bad = (("www.demo.test.", "A"), ("a..b.", "A"))
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid query name"):
            memo.plan(bad, True, lambda: _parse(bad, True))


@given(
    st.lists(
        st.tuples(
            st.lists(st.from_regex(r"[a-zA-Z0-9-]{1,12}", fullmatch=True), min_size=1, max_size=3),
            st.sampled_from(["A", "AAAA", "TXT", "MX"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_memo_keys_are_equal_exactly_when_the_questions_are(
    questions: list[tuple[list[str], str, bool]],
) -> None:
    keyed = []
    for labels, qtype, dnssec in questions:
        ((name, rdtype, key),) = _parse([(".".join(labels) + ".", qtype)], dnssec)
        keyed.append(((name, rdtype, dnssec), key))  # dns.name compares case-insensitively
    for q1, k1 in keyed:
        for q2, k2 in keyed:
            assert (q1 == q2) == (k1 == k2)


@given(st.floats(min_value=0, max_value=1e6), st.sampled_from(list(VoteStatus)))
def test_with_latency_is_dataclasses_replace(latency: float, status: VoteStatus) -> None:
    response = dns.message.make_query("www.demo.test.", "A")
    obs = Observation(
        resolver_id="r1",
        transport=Transport.UDP,
        status=status,
        rcode=0,
        answer=("www.demo.test. 300 IN A 192.0.2.1",),
        ttl=300,
        ad=True,
        ede=(3,),
        latency_ms=1.5,
        detail="",
        dnssec=DnssecState.SECURE,
        response=response,
    )
    fast, slow = obs.with_latency(latency), dataclasses.replace(obs, latency_ms=latency)
    assert fast == slow and repr(fast) == repr(slow) and fast.response is response
    assert obs.latency_ms == 1.5 and type(fast) is Observation
