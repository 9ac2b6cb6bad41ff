"""Control messages: safe-mode announcements (coordinator) and safe-mode commands (operator).

Both travel in the standard envelope (:mod:`cctf.bus_schemas.envelope`) and are MessagePack arrays in
field order, documented in ``docs/wire-protocol.md`` §5.9 and §5.10::

    SafeModeAnnouncement (type "safemode", subject cctf.v1.control.<region>, signer: coordinator)
      = [region, scope, state, cause, rule, reason, round, active, issued_ms, expires_ms,
         coordinator, seq]
    SafeModeCommand (type "safemode-command", subject cctf.v1.operator.<region>, signer: operator)
      = [operator, region, scope, action, reason, issued_ms]

``scope`` is ``""`` (the whole region), a normalised DNS name or a workload SPIFFE ID
(:func:`check_scope`); ``active`` lists every scope in safe mode in that region after the
announcement, sorted and distinct, so the last announcement of a region is its whole state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

import msgspec

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.messages import Id, PayloadError, Uint
from cctf.bus_schemas.subjects import SubjectError, normalize_name

__all__ = [
    "MAX_ACTIVE_SCOPES",
    "MAX_REASON_CHARS",
    "MAX_SCOPE_CHARS",
    "Action",
    "SafeModeAnnouncement",
    "SafeModeCause",
    "SafeModeCommand",
    "SafeModeState",
    "check_scope",
    "decode_announcement",
    "decode_command",
]

#: A scope: "" (the region), a DNS name (≤ 254 chars normalised) or a SPIFFE ID (≤ 2048 bytes is
#: SPIFFE's own bound; CCTF keeps scopes to 512 characters).
MAX_SCOPE_CHARS: Final = 512
MAX_REASON_CHARS: Final = 512
MAX_RULE_CHARS: Final = 32
#: Scopes listed in one announcement's ``active`` (the coordinator escalates to the region scope
#: before it would list more).
MAX_ACTIVE_SCOPES: Final = 256
SPIFFE_PREFIX: Final = "spiffe://"

ScopeStr = Annotated[str, msgspec.Meta(max_length=MAX_SCOPE_CHARS)]
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]
RuleStr = Annotated[str, msgspec.Meta(max_length=MAX_RULE_CHARS)]


class SafeModeState(StrEnum):
    ENTERED = "entered"  # ``scope`` entered safe mode
    LEFT = "left"  # ``scope`` left safe mode
    STATUS = "status"  # no change: the region's state again (periodic, or at start)


class SafeModeCause(StrEnum):
    ALARM = "alarm"  # a detector (``rule`` names it)
    OPERATOR = "operator"  # an operator's command
    QUIET = "quiet"  # ``quiet_rounds`` rounds without an alarm
    START = "start"  # the coordinator (re)started: nothing in safe mode
    REFRESH = "refresh"  # periodic re-announcement of the state


class Action(StrEnum):
    ENTER = "enter"
    LEAVE = "leave"


class SafeModeAnnouncement(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True
):
    region: Id
    scope: ScopeStr
    state: SafeModeState
    cause: SafeModeCause
    rule: RuleStr  # the detector's rule for cause "alarm", else ""
    reason: Reason  # the alarm's one-line why, the operator's reason, ...
    round: Uint  # the coordinator's round when it happened
    active: Annotated[list[ScopeStr], msgspec.Meta(max_length=MAX_ACTIVE_SCOPES)]
    issued_ms: Uint
    expires_ms: Uint
    coordinator: Id
    seq: Uint


class SafeModeCommand(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    operator: Id
    region: Id
    scope: ScopeStr
    action: Action
    reason: Reason
    issued_ms: Uint


_ANN_DECODER: Final = msgspec.msgpack.Decoder(SafeModeAnnouncement)
_CMD_DECODER: Final = msgspec.msgpack.Decoder(SafeModeCommand)


def _decode(decoder: msgspec.msgpack.Decoder[object], data: bytes, what: str) -> object:
    if len(data) > L.MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what} payload too large")
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed {what}: {exc}") from None


def decode_announcement(data: bytes) -> SafeModeAnnouncement:
    out = _decode(_ANN_DECODER, data, "safe-mode announcement")  # type: ignore[arg-type]
    assert isinstance(out, SafeModeAnnouncement)
    return out


def decode_command(data: bytes) -> SafeModeCommand:
    out = _decode(_CMD_DECODER, data, "safe-mode command")  # type: ignore[arg-type]
    assert isinstance(out, SafeModeCommand)
    return out


def check_scope(scope: str) -> str:
    """A valid scope: ``""``, a DNS name in normalised form, or ``spiffe://`` followed by a trust
    domain and path of printable ASCII without white space. Raises :class:`SubjectError`."""
    if scope == "":
        return scope
    if len(scope) > MAX_SCOPE_CHARS:
        raise SubjectError(f"scope longer than {MAX_SCOPE_CHARS} characters")
    if scope.startswith(SPIFFE_PREFIX):
        rest = scope[len(SPIFFE_PREFIX) :]
        if not rest or not all("!" <= ch <= "~" for ch in rest):
            raise SubjectError(f"scope {scope[:80]!r} is not a SPIFFE ID")
        return scope
    if normalize_name(scope) != scope:
        raise SubjectError(f"scope {scope[:80]!r} is not a normalised DNS name")
    return scope


def scope_of(name: str) -> str:
    """The scope string for a user-given name: ``""`` stays, a SPIFFE ID stays, a DNS name is
    normalised. Raises :class:`SubjectError`."""
    if name == "" or name.startswith(SPIFFE_PREFIX):
        return check_scope(name)
    return check_scope(normalize_name(name))
