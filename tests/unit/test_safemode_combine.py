"""k-of-m for safe-mode announcements at the subscriber (cctf.client.safemode_quorum)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.control import SafeModeAnnouncement, SafeModeCause, SafeModeState
from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.safemode_quorum import combine_safe_mode

POLICY = CoordinatorPolicy(2, ("c1", "c2", "c3"))
SCOPES = ("", "www.demo.test.", "api.demo.test.")


def ann(coord: str, active: list[str], issued: int = 1_000) -> SafeModeAnnouncement:
    return SafeModeAnnouncement(
        region="us-east",
        scope="",
        state=SafeModeState.STATUS,
        cause=SafeModeCause.REFRESH,
        rule="",
        reason="",
        round=1,
        active=sorted(active),
        issued_ms=issued,
        expires_ms=issued + 300_000,
        coordinator=coord,
        seq=issued * 1000,
    )


def test_a_scope_needs_k_coordinators_and_the_state_needs_k_announcements() -> None:
    www = "www.demo.test."
    c = combine_safe_mode(POLICY, [ann("c1", [www]), ann("c2", [www], 2_000), ann("c3", [])])
    assert c.active == (www,) and c.signers == ("c1", "c2", "c3")
    assert c.announcement.coordinator == "c2"  # the newest
    # a rogue coordinator alone neither enters a scope for its clients ...
    assert combine_safe_mode(POLICY, [ann("c1", []), ann("c2", []), ann("c3", [""])]).active == ()
    # ... nor takes one out while two others report it
    assert combine_safe_mode(POLICY, [ann("c1", [""]), ann("c2", [""]), ann("c3", [])]).active == (
        "",
    )
    for short in ([ann("c1", [])], [ann("c1", []), ann("x9", [])], []):
        with pytest.raises(Rejected) as info:
            combine_safe_mode(POLICY, short)
        assert info.value.reason is Reason.COORDINATOR_QUORUM
    with pytest.raises(Rejected):  # two of one coordinator: the caller's bug, fail closed
        combine_safe_mode(POLICY, [ann("c1", []), ann("c1", [www])])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(("c1", "c2", "c3", "x9")), st.sets(st.sampled_from(SCOPES)), max_size=4
    )
)
def test_agrees_with_counting(views: dict[str, set[str]]) -> None:
    anns = [ann(c, list(s)) for c, s in views.items()]
    counted = {c: s for c, s in views.items() if c in POLICY.of}
    try:
        got = combine_safe_mode(POLICY, anns)
    except Rejected:
        assert len(counted) < POLICY.k
        return
    assert len(counted) >= POLICY.k
    expect = {s for s in SCOPES if sum(s in v for v in counted.values()) >= POLICY.k}
    assert set(got.active) == expect and list(got.active) == sorted(got.active)
    assert msgspec.structs.asdict(got.announcement)["coordinator"] in counted
