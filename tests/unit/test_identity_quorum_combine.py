"""k-of-m for identity verdicts at the subscriber (cctf.client.identity_quorum), against a brute
force reference of steps C1-C4."""

from __future__ import annotations

import msgspec
import pytest
from evidencefactories import DIGEST_A, DIGEST_B, make_identity_verdict, make_observation
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.evidence import IdentityKind, IdentityVerdict
from cctf.bus_schemas.messages import Outcome
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.client.identity_quorum import combine_identity

POLICY = CoordinatorPolicy(2, ("c1", "c2", "c3"))


def base(digest: bytes = DIGEST_A, round_: int = 7) -> IdentityVerdict:
    obs = [
        make_observation(
            f"agent-{i}", "us-east", round_, IdentityKind.BUNDLE, "example.org", digest=digest
        )
        for i in range(3)
    ]
    return make_identity_verdict("c1", obs, issued_ms=1_000, expires_ms=31_000)


def by(coord: str, v: IdentityVerdict, expires: int = 31_000) -> IdentityVerdict:
    return msgspec.structs.replace(v, coordinator=coord, expires_ms=expires)


def test_two_agreeing_are_used_one_rogue_never() -> None:
    a, b = base(DIGEST_A), base(DIGEST_B)
    used = combine_identity(POLICY, [by("c1", a, 40_000), by("c2", a, 35_000), by("c3", b)])
    assert used.signers == ("c1", "c2") and used.verdict.facts_digest == a.facts_digest != b""
    assert used.verdict.expires_ms == 35_000  # the representative expires first
    for alone in ([by("c3", b)], [by("c1", a), by("c2", b)], [by("x9", a), by("c1", a)], []):
        with pytest.raises(Rejected) as info:
            combine_identity(POLICY, alone)
        assert info.value.reason is Reason.COORDINATOR_QUORUM
    # an equivocating coordinator counts for nothing on that key
    with pytest.raises(Rejected):
        combine_identity(POLICY, [by("c2", a), by("c2", b), by("c3", a)])
    # the latest round that reaches k wins
    newer = base(DIGEST_B, round_=8)
    used = combine_identity(
        POLICY, [by(c, a) for c in ("c1", "c2")] + [by(c, newer) for c in ("c2", "c3")]
    )
    assert used.verdict.round == 8 and used.signers == ("c2", "c3")


_coords = st.sampled_from(("c1", "c2", "c3", "x9"))
_stmts = st.sampled_from(
    ((Outcome.TRUSTED, DIGEST_A), (Outcome.TRUSTED, DIGEST_B), (Outcome.UNAVAILABLE, b""))
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_coords, st.integers(7, 8), _stmts), max_size=10))
def test_agrees_with_brute_force(items: list[tuple[str, int, tuple[Outcome, bytes]]]) -> None:
    templates = {
        (r, s): (
            base(s[1], r)
            if s[0] is Outcome.TRUSTED
            else msgspec.structs.replace(
                base(DIGEST_A, r), outcome=Outcome.UNAVAILABLE, facts_digest=b""
            )
        )
        for r in (7, 8)
        for s in (
            (Outcome.TRUSTED, DIGEST_A),
            (Outcome.TRUSTED, DIGEST_B),
            (Outcome.UNAVAILABLE, b""),
        )
    }
    verdicts = [by(c, templates[(r, s)]) for c, r, s in items]
    # reference: per round, coordinators in `of` with exactly one statement; groups of >= k
    best: tuple[int, tuple[str, ...]] | None = None
    for r in (7, 8):
        stmts: dict[str, set[tuple[Outcome, bytes]]] = {}
        for c, rr, s in items:
            if rr == r and c in POLICY.of:
                stmts.setdefault(c, set()).add(s)
        groups: dict[tuple[Outcome, bytes], list[str]] = {}
        for c, ss in stmts.items():
            if len(ss) == 1:
                groups.setdefault(next(iter(ss)), []).append(c)
        for g in groups.values():
            if len(g) >= POLICY.k and (best is None or r > best[0]):
                best = (r, tuple(sorted(g)))
    try:
        used = combine_identity(POLICY, verdicts)
    except Rejected as exc:
        assert exc.reason is Reason.COORDINATOR_QUORUM
        assert best is None
        return
    assert best == (used.verdict.round, used.signers)
