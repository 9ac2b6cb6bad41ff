"""The shared "open a signed message" step (``open_signed``): steps 1-9 for ballots and verdicts."""

from __future__ import annotations

import pytest
from clientcases import NAME, REGION, sealed, verdict
from wirefactories import make_ballot, make_world, seal_ballot, seal_message

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.opening import open_signed
from cctf.bus_schemas.subjects import Kind, name_token, vote_subject
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role


def test_opens_a_verdict_with_its_parsed_subject() -> None:
    world = make_world()
    subject, data = sealed(world, verdict(world))
    opened = open_signed(
        data,
        subject,
        expected_type=MessageType.VERDICT,
        role=Role.COORDINATOR,
        trust=world.trust,
        policy=SuitePolicy(),
        now_ms=world.clock.now_ms(),
    )
    assert opened.signer.principal == world.coordinator.principal
    assert opened.subject.kind is Kind.VERDICT
    assert (opened.subject.region, opened.subject.token, opened.subject.qtype) == (
        REGION,
        name_token(NAME),
        "A",
    )


def test_opens_a_ballot_with_its_parsed_subject() -> None:
    world = make_world()
    agent = world.agent(REGION)
    now = world.clock.now_ms()
    opened = open_signed(
        seal_ballot(agent, now_ms=now),
        agent.subject,
        expected_type=MessageType.BALLOT,
        role=Role.AGENT,
        trust=world.trust,
        policy=SuitePolicy(),
        now_ms=now,
    )
    assert (opened.subject.kind, opened.subject.agent) == (Kind.VOTE, agent.principal)


@pytest.mark.parametrize(
    ("msg_type", "role"),
    [(MessageType.BALLOT, Role.AGENT), (MessageType.VERDICT, Role.COORDINATOR)],
)
def test_a_message_signed_for_the_wrong_kind_of_subject_is_refused_at_step_9(
    msg_type: MessageType, role: Role
) -> None:
    """Correctly signed over the subject it arrives on, but the subject is of the other kind."""
    world = make_world()
    now = world.clock.now_ms()
    if msg_type is MessageType.BALLOT:
        agent = world.agent(REGION)
        subject, _ = sealed(world, verdict(world))  # a verdict subject
        data = seal_message(agent.key, subject, make_ballot(agent.principal, REGION), now_ms=now)
    else:
        subject = vote_subject(REGION, world.coordinator.principal)
        data = seal_message(world.coordinator.key, subject, verdict(world), now_ms=now)
    with pytest.raises(Rejected) as info:
        open_signed(
            data,
            subject,
            expected_type=msg_type,
            role=role,
            trust=world.trust,
            policy=SuitePolicy(),
            now_ms=now,
        )
    assert info.value.reason is Reason.SUBJECT
    # steps 1-8 come first: the same bytes on the same subject but too late are expired
    with pytest.raises(Rejected) as info:
        open_signed(
            data,
            subject,
            expected_type=msg_type,
            role=role,
            trust=world.trust,
            policy=SuitePolicy(),
            now_ms=now + 10 * 60_000,
        )
    assert info.value.reason is Reason.EXPIRED
