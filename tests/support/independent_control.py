"""Clean-room verifier of §5.9 (SafeModeAnnouncement) and §5.10 (SafeModeCommand) of
docs/wire-protocol.md, written from that text; it reuses only the envelope (§3) and MessagePack (§1)
parts of ``independent_verifier`` (itself clean-room), never ``cctf``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import independent_verifier as iv

_IDENT = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
STATES = ("entered", "left", "status")
CAUSES = ("alarm", "operator", "quiet", "start", "refresh")
ACTIONS = ("enter", "leave")


def parse_region_subject(s: str, kind: str) -> str | None:
    parts = s.split(".")
    if len(s.encode()) > iv.MAX_SUBJECT or len(parts) != 4 or parts[:3] != ["cctf", "v1", kind]:
        return None
    return parts[3] if _IDENT.fullmatch(parts[3]) else None


def parse_control_subject(s: str) -> tuple[str, str | None] | None:
    """(region, coordinator of a per-coordinator subject or None), or None."""
    parts = s.split(".")
    if len(parts) == 5 and len(s.encode()) <= iv.MAX_SUBJECT and _IDENT.fullmatch(parts[4]):
        region = parse_region_subject(".".join(parts[:4]), "control")
        return None if region is None else (region, parts[4])
    region = parse_region_subject(s, "control")
    return None if region is None else (region, None)


def valid_scope(scope: str) -> bool:
    if scope == "":
        return True
    if len(scope) > 512:
        return False
    if scope.startswith("spiffe://"):
        rest = scope[len("spiffe://") :]
        return bool(rest) and all(0x21 <= ord(c) <= 0x7E for c in rest)
    try:
        return iv.normalise_name(scope) == scope
    except Exception:
        return False


@dataclass(frozen=True)
class Announcement:
    region: str
    scope: str
    state: str
    cause: str
    rule: str
    reason: str
    round: int
    active: tuple[str, ...]
    issued_ms: int
    expires_ms: int
    coordinator: str
    seq: int


def decode_announcement(data: bytes) -> Announcement:
    try:
        f = iv._arr(iv.mp_decode(data), 12, "announcement")
        return Announcement(
            iv._str_f(f[0], "region", pattern=_IDENT),
            iv._str_f(f[1], "scope", 512),
            iv._enum_f(f[2], "state", STATES),
            iv._enum_f(f[3], "cause", CAUSES),
            iv._str_f(f[4], "rule", 32),
            iv._str_f(f[5], "reason", 512),
            iv._uint_f(f[6], "round"),
            tuple(iv._str_f(a, "active[]", 512) for a in iv._list_f(f[7], "active", 256)),
            iv._uint_f(f[8], "issued_ms"),
            iv._uint_f(f[9], "expires_ms"),
            iv._str_f(f[10], "coordinator", pattern=_IDENT),
            iv._uint_f(f[11], "seq"),
        )
    except iv._Malformed as exc:
        raise iv.Reject("malformed", str(exc)) from exc


class AnnouncementSubscriber:
    """§5.9 steps 9-15 after §3.3, with the rollback state per (coordinator, region)."""

    def __init__(self, trust: dict[str, iv.Key], region: str | None = None, **kw: Any) -> None:
        self.trust = trust
        self.region = region
        self.kw = kw
        self.last: dict[tuple[str, str], tuple[int, bytes]] = {}

    def verify(self, data: bytes, subject: str, now_ms: int) -> Announcement:
        env, key = iv.verify_envelope(
            data,
            subject,
            expected_type="safemode",
            expected_role="coordinator",
            trust=self.trust,
            now_ms=now_ms,
            **self.kw,
        )
        parsed = parse_control_subject(subject)
        if parsed is None:
            raise iv.Reject("subject")
        region, s_coordinator = parsed
        if self.region is not None and region != self.region:
            raise iv.Reject("region_mismatch")
        a = decode_announcement(env.payload)
        if a.region != region:
            raise iv.Reject("subject")
        if a.coordinator != key.principal or s_coordinator not in (None, key.principal):
            raise iv.Reject("principal_mismatch")
        if not valid_scope(a.scope) or not all(valid_scope(s) for s in a.active):
            raise iv.Reject("malformed", "scope")
        if list(a.active) != sorted(set(a.active)):
            raise iv.Reject("malformed", "active order")
        if (a.state == "entered" and a.scope not in a.active) or (
            a.state == "left" and a.scope in a.active
        ):
            raise iv.Reject("malformed", "state vs active")
        if (a.cause == "alarm") != (a.rule != ""):
            raise iv.Reject("malformed", "rule vs cause")
        if not a.issued_ms < a.expires_ms:
            raise iv.Reject("malformed", "times")
        if a.issued_ms != env.iat or a.expires_ms > env.exp:
            raise iv.Reject("lifetime")
        if not now_ms < a.expires_ms:
            raise iv.Reject("expired")
        if not env.iat * 1000 <= a.seq < (min(env.iat, now_ms) + 5_000) * 1000:
            raise iv.Reject("sequence")
        k = (a.coordinator, a.region)
        digest = hashlib.sha256(data).digest()
        last = self.last.get(k)
        if last is not None and not (a.seq == last[0] and digest == last[1]) and a.seq <= last[0]:
            raise iv.Reject("rollback")
        self.last[k] = (a.seq, digest)
        return a


@dataclass(frozen=True)
class Command:
    operator: str
    region: str
    scope: str
    action: str
    reason: str
    issued_ms: int


def verify_command(
    data: bytes,
    subject: str,
    *,
    trust: dict[str, iv.Key],
    regions: tuple[str, ...],
    seen: set[tuple[str, bytes]],
    now_ms: int,
    **kw: Any,
) -> Command:
    """§5.10 coordinator steps 9-15 after §3.3; ``seen`` is the replay state."""
    env, key = iv.verify_envelope(
        data,
        subject,
        expected_type="safemode-command",
        expected_role="operator",
        trust=trust,
        now_ms=now_ms,
        **kw,
    )
    region = parse_region_subject(subject, "operator")
    if region is None:
        raise iv.Reject("subject")
    if region not in regions:
        raise iv.Reject("region_mismatch")
    try:
        f = iv._arr(iv.mp_decode(env.payload), 6, "command")
        c = Command(
            iv._str_f(f[0], "operator", pattern=_IDENT),
            iv._str_f(f[1], "region", pattern=_IDENT),
            iv._str_f(f[2], "scope", 512),
            iv._enum_f(f[3], "action", ACTIONS),
            iv._str_f(f[4], "reason", 512),
            iv._uint_f(f[5], "issued_ms"),
        )
    except iv._Malformed as exc:
        raise iv.Reject("malformed", str(exc)) from exc
    if c.region != region:
        raise iv.Reject("subject")
    if c.operator != key.principal:
        raise iv.Reject("principal_mismatch")
    if not valid_scope(c.scope):
        raise iv.Reject("malformed", "scope")
    if c.issued_ms != env.iat or env.exp - env.iat > 120_000:
        raise iv.Reject("lifetime")
    if (env.kid, env.nonce) in seen:
        raise iv.Reject("replay")
    seen.add((env.kid, env.nonce))
    return c
