"""The agents' parsed-question plan (cctf.agents.udpfast.AnswerMemo.plan, used by query_all): built
once per name list and DO bit, reused every round, never cached for an invalid list; the memo keys
of distinct questions are distinct."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctf.agents.dnsquery import _parse
from cctf.agents.udpfast import AnswerMemo

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
