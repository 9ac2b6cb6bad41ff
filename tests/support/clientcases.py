"""Verdicts for the subscriber tests (unit and integration): valid ones and one of each bad kind.

``verdict(world, seq=k)`` is issued at the world clock's now with ``seq = issued_ms * 1000 + k``
(the coordinator's sequence rule, see docs/wire-protocol.md §5.4 step 14), so small ``k`` values
order verdicts the way plain counters did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from wirefactories import (
    LIFETIME_MS,
    ROUND_MS,
    World,
    flip_byte,
    forge_envelope,
    make_identity,
    make_verdict,
    seal_message,
    seal_verdict,
)

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import Outcome, Verdict, VoterRecord, VoterState, encode
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.verify import VerdictVerifier
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role

REGION = "us-east"
NAME = "example.com."
OTHER = "other.example."
DAY_MS = 86_400_000


def coordinator_of(world: World) -> str:
    return world.coordinator.principal


def verdict(world: World, qname: str = NAME, seq: int = 1, **kw: Any) -> Verdict:
    """A valid TRUSTED verdict by the world's coordinator, issued now (or at ``issued_ms``), with
    ``seq = issued_ms * 1000 + seq`` and the round of its issue time."""
    issued = kw.setdefault("issued_ms", world.clock.now_ms())
    kw.setdefault("expires_ms", issued + LIFETIME_MS)
    kw.setdefault("round", issued // ROUND_MS)
    return make_verdict(qname, coordinator=coordinator_of(world), seq=issued * 1000 + seq, **kw)


def sealed(
    world: World, v: Verdict, *, region: str = REGION, now_ms: int | None = None, **kw: Any
) -> tuple[str, bytes]:
    """``(subject, envelope)``: ``v`` sealed at its ``issued_ms`` for its own lifetime (as the
    coordinator seals), unless ``now_ms`` / ``lifetime_ms`` say otherwise."""
    subject = verdict_subject(region, v.qname, v.qtype)
    kw.setdefault("lifetime_ms", v.expires_ms - v.issued_ms)
    return subject, seal_verdict(
        world.coordinator,
        v,
        now_ms=v.issued_ms if now_ms is None else now_ms,
        subject=subject,
        **kw,
    )


def verifier(world: World, **kw: Any) -> VerdictVerifier:
    return VerdictVerifier(world.trust, world.clock, region=REGION, **kw)


def reason_of(fn: Callable[[], object]) -> Reason:
    with pytest.raises(Rejected) as info:
        fn()
    return info.value.reason


def bad_messages(world: World) -> dict[str, tuple[str, bytes, Reason]]:
    """Bad verdict messages (subject, bytes, expected reason), each for ``NAME``/A in REGION."""
    now = world.clock.now_ms()
    good = verdict(world, seq=100)
    subject, data = sealed(world, good)
    stranger = make_identity("coord-x", REGION, role=Role.COORDINATOR)  # not in trust
    agent = world.agent(REGION)  # trusted, but as an agent
    ed_coord = make_identity(
        coordinator_of(world), REGION, role=Role.COORDINATOR, suite=SuiteId.ED25519
    )
    world.extra.append(ed_coord)  # a trusted coordinator key, but below the hybrid policy
    other_subject, other_data = sealed(world, verdict(world, OTHER, seq=100))

    def by(key: Any, v: Verdict = good, subj: str = subject, **kw: Any) -> bytes:
        kw.setdefault("now_ms", v.issued_ms)
        kw.setdefault("lifetime_ms", v.expires_ms - v.issued_ms)
        return seal_message(key, subj, v, **kw)

    def replaced(**changes: Any) -> bytes:
        return by(world.coordinator.key, msgspec.structs.replace(good, **changes))

    return {
        "tampered": (subject, flip_byte(data, len(data) - 5), Reason.SIGNATURE),
        "unknown_key": (subject, by(stranger.key), Reason.UNKNOWN_KEY),
        "agent_key": (subject, by(agent.key), Reason.UNKNOWN_KEY),
        "ed25519_only": (subject, by(ed_coord.key), Reason.SUITE),
        "expired_verdict": (
            subject,
            by(
                world.coordinator.key,
                verdict(world, seq=100, issued_ms=now - 1_000, expires_ms=now),
                lifetime_ms=LIFETIME_MS,
            ),
            Reason.EXPIRED,
        ),
        "expired_envelope": (
            subject,
            forge_envelope(
                world.coordinator.key,
                subject,
                encode(good),
                now_ms=now,
                msg_type="verdict",
                iat=now - 2_000,
                exp=now,
            ),
            Reason.EXPIRED,
        ),
        "moved_subject": (subject, other_data, Reason.SIGNATURE),
        "garbage": (subject, b"\x93garbage\x00\xff", Reason.MALFORMED),
        "empty": (subject, b"", Reason.MALFORMED),
        "payload_for_other_name": (
            subject,
            by(world.coordinator.key, verdict(world, OTHER, seq=100)),
            Reason.SUBJECT,
        ),
        "other_coordinator_field": (subject, replaced(coordinator="coord-z"), Reason.PRINCIPAL),
        "other_region": (
            verdict_subject("eu-west", NAME, "A"),
            by(world.coordinator.key, good, verdict_subject("eu-west", NAME, "A")),
            Reason.REGION,
        ),
        "ballot_type": (
            subject,
            forge_envelope(
                world.coordinator.key, subject, encode(good), now_ms=now, msg_type="ballot"
            ),
            Reason.TYPE,
        ),
        "trusted_wrong_digest": (subject, replaced(answer=["10.0.0.1"]), Reason.MALFORMED),
        "voters_not_n": (subject, replaced(n=2, k=2), Reason.MALFORMED),
        "k_above_n": (subject, replaced(k=4), Reason.MALFORMED),
        "no_majority_quorum": (subject, replaced(k=1), Reason.MALFORMED),
        "too_few_agree": (
            subject,
            replaced(
                voters=[
                    good.voters[0],
                    VoterRecord("agent-a/r2", VoterState.DISAGREE, b"\x01" * 32),
                    VoterRecord("agent-a/r3", VoterState.UNAVAILABLE, b""),
                ]
            ),
            Reason.MALFORMED,
        ),
        "disputed_with_answer": (subject, replaced(outcome=Outcome.DISPUTED), Reason.MALFORMED),
        "other_subject_garbage": (other_subject, b"\x00" * 40, Reason.MALFORMED),
        # step 14: times, seq and round
        "valid_beyond_envelope": (
            subject,
            by(
                world.coordinator.key,
                msgspec.structs.replace(good, expires_ms=now + 365 * DAY_MS),
                lifetime_ms=10 * 60_000,
            ),
            Reason.LIFETIME,
        ),
        "issued_not_iat": (
            subject,
            by(
                world.coordinator.key,
                msgspec.structs.replace(good, issued_ms=now - 1, basis_ms=now - 1),
                now_ms=now,
                lifetime_ms=LIFETIME_MS,
            ),
            Reason.LIFETIME,
        ),
        "seq_far_future": (subject, replaced(seq=(now + 10 * DAY_MS) * 1000), Reason.SEQUENCE),
        "seq_behind_issue": (subject, replaced(seq=now * 1000 - 1), Reason.SEQUENCE),
        "round_far_future": (
            subject,
            replaced(
                round=(now + 10 * DAY_MS) // ROUND_MS,
                basis_round=(now + 10 * DAY_MS) // ROUND_MS,
            ),
            Reason.ROUND,
        ),
        "round_long_ago": (
            subject,
            replaced(round=(now - DAY_MS) // ROUND_MS, basis_round=(now - DAY_MS) // ROUND_MS),
            Reason.ROUND,
        ),
    }
