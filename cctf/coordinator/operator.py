"""Operator safe-mode commands: the coordinator's numbered checks (pure; time as a number).

A command (:class:`~cctf.bus_schemas.control.SafeModeCommand`, type ``safemode-command``) arrives on
``cctf.v1.operator.<region>``, a subject only the ``admin`` NATS user may publish on, and must be
signed by a key of role ``operator`` in the coordinator's trust config. Steps 1–9 are
:func:`cctf.bus_schemas.opening.open_signed` (role operator; 9: an operator subject). Then:

9.  (continued) the subject's region is one the coordinator announces for (:attr:`Reason.REGION`)
10. strict payload decoding (:attr:`Reason.MALFORMED`)
11. the payload's ``region`` equals the subject's (:attr:`Reason.SUBJECT`)
12. ``operator`` equals the signing key's principal (:attr:`Reason.PRINCIPAL`)
13. ``scope`` is a valid scope (:attr:`Reason.MALFORMED`)
14. ``issued_ms == iat`` and ``exp - iat <= MAX_COMMAND_LIFETIME_MS`` (:attr:`Reason.LIFETIME`)
15. the envelope (key id and nonce) was not seen before (:attr:`Reason.REPLAY`)

A refused command changes nothing; the coordinator counts and logs it with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cctf.bus_schemas.control import SafeModeCommand, check_scope, decode_command
from cctf.bus_schemas.envelope import Reason, Rejected, TimePolicy
from cctf.bus_schemas.messages import MessageType, PayloadError
from cctf.bus_schemas.opening import open_signed
from cctf.bus_schemas.subjects import SubjectError
from cctf.coordinator.replay import ReplayCache, ReplayCacheFull
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig

__all__ = ["MAX_COMMAND_LIFETIME_MS", "CommandVerifier"]

#: An operator command is valid for at most two minutes after it was signed.
MAX_COMMAND_LIFETIME_MS: Final = 120_000


class CommandVerifier:
    def __init__(
        self,
        trust: TrustConfig,
        regions: Sequence[str],
        policy: SuitePolicy = SuitePolicy(),  # noqa: B008 - frozen, immutable
        *,
        time_policy: TimePolicy = TimePolicy(),  # noqa: B008 - frozen, immutable
        replay_capacity: int = 10_000,
    ) -> None:
        self._trust = trust
        self._regions = frozenset(regions)
        self._policy = policy
        self._times = time_policy
        self._replay = ReplayCache(capacity=replay_capacity)

    def verify(self, data: bytes, subject: str, now_ms: int) -> SafeModeCommand:
        opened = open_signed(  # 1-9
            data,
            subject,
            expected_type=MessageType.SAFEMODE_COMMAND,
            role=Role.OPERATOR,
            trust=self._trust,
            policy=self._policy,
            now_ms=now_ms,
            time_policy=self._times,
        )
        env, signer, parsed = opened.envelope, opened.signer, opened.subject
        if parsed.region not in self._regions:  # 9
            raise Rejected(Reason.REGION, f"this coordinator does not serve {parsed.region}")
        try:  # 10
            cmd = decode_command(env.payload)
        except PayloadError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        if cmd.region != parsed.region:  # 11
            raise Rejected(Reason.SUBJECT, f"command for {cmd.region} on {subject!r}")
        if cmd.operator != signer.principal:  # 12
            raise Rejected(
                Reason.PRINCIPAL, f"operator {cmd.operator} signed by {signer.principal}"
            )
        try:  # 13
            check_scope(cmd.scope)
        except SubjectError as exc:
            raise Rejected(Reason.MALFORMED, str(exc)) from None
        if cmd.issued_ms != env.iat or env.exp - env.iat > MAX_COMMAND_LIFETIME_MS:  # 14
            raise Rejected(
                Reason.LIFETIME,
                f"command lifetime {env.exp - env.iat} ms (at most {MAX_COMMAND_LIFETIME_MS})",
            )
        try:  # 15
            fresh = self._replay.check_and_add(env.kid.encode() + env.nonce, env.exp, now_ms)
        except ReplayCacheFull as exc:
            raise Rejected(Reason.REPLAY, str(exc)) from None
        if not fresh:
            raise Rejected(Reason.REPLAY, "this command was seen before")
        return cmd
