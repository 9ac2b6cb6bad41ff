"""Opening a signed message (pure): steps 1–8 of :func:`cctf.bus_schemas.envelope.verify_envelope`,
then step 9, the subject (wire-protocol.md §3.3). Both verifiers (the coordinator's and the
subscriber's) start here.
"""

from __future__ import annotations

from typing import Final

import msgspec

from cctf.bus_schemas.envelope import (
    Envelope,
    Reason,
    Rejected,
    TimePolicy,
    verify_envelope,
)
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.subjects import Kind, ParsedSubject, SubjectError, parse_subject
from cctf.bus_schemas.tlog import HeadLookup, LogPosition
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

__all__ = ["SUBJECT_KIND", "OpenedMessage", "open_signed"]

_DEFAULT_TIMES: Final = TimePolicy()


#: The subject kind each message type travels on (step 9).
SUBJECT_KIND: Final[dict[MessageType, Kind]] = {
    MessageType.BALLOT: Kind.VOTE,
    MessageType.VERDICT: Kind.VERDICT,
    MessageType.EVIDENCE: Kind.EVIDENCE,
    MessageType.IDENTITY: Kind.VERDICT,
    MessageType.SAFEMODE: Kind.CONTROL,
    MessageType.SAFEMODE_COMMAND: Kind.OPERATOR,
}


class OpenedMessage(msgspec.Struct, frozen=True, gc=False):
    """A message that passed :func:`open_signed`: its envelope, signer and parsed subject."""

    envelope: Envelope
    signer: TrustEntry
    subject: ParsedSubject
    log: LogPosition | None = None  # a batch-signed ("tlog") message's place in the log


def open_signed(
    data: bytes,
    subject: str,
    *,
    expected_type: MessageType,
    role: Role,
    trust: TrustConfig,
    policy: SuitePolicy,
    now_ms: int,
    time_policy: TimePolicy = _DEFAULT_TIMES,
    heads: HeadLookup | None = None,
) -> OpenedMessage:
    """Open a signed message received on ``subject``: steps 1–8 (:func:`verify_envelope`), then

    9. ``subject`` parses (§2) and is of the kind ``expected_type`` travels on (ballots and evidence
       carry an agent, verdicts a name token and a qtype, identity verdicts a subject token and an
       identity kind) [``subject``].

    The payload is not decoded: that and every type-specific step is the caller's. ``heads``:
    the verified checkpoints ``"tlog"`` messages are checked against (none: ``"tlog"`` is refused,
    ``auth_kind``).
    """
    checked = verify_envelope(  # 1-8
        data,
        subject,
        expected_type=expected_type,
        role=role,
        trust=trust,
        policy=policy,
        now_ms=now_ms,
        time_policy=time_policy,
        heads=heads,
    )
    try:  # 9
        parsed = parse_subject(subject)
    except SubjectError as exc:
        raise Rejected(Reason.SUBJECT, str(exc)) from None
    kind = SUBJECT_KIND[expected_type]
    if kind is Kind.VOTE or kind is Kind.EVIDENCE:
        complete = parsed.agent is not None
    elif expected_type is MessageType.IDENTITY:
        complete = parsed.token is not None and parsed.identity_kind is not None
    elif kind is Kind.VERDICT:
        complete = parsed.token is not None and parsed.qtype is not None
    else:  # control / operator subjects carry only the region
        complete = True
    if parsed.kind is not kind or not complete:
        raise Rejected(Reason.SUBJECT, f"{subject!r} is not a {kind.value} subject")
    return OpenedMessage(checked.envelope, checked.signer, parsed, checked.log)
