"""Sign: one verdict (DNS or identity) -> one sealed envelope per verdict region, with its subject
and message id.

CPU-bound but pure (the service runs it in worker threads). A verdict whose subject cannot be built
(for instance a name whose token makes the subject too long) raises :class:`SignError`: the caller
settles that key as unpublishable, counted, and its ballots are acknowledged, never held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.evidence import IdentityVerdict
from cctf.bus_schemas.limits import MAX_SUBJECT_BYTES
from cctf.bus_schemas.messages import MessageType, Verdict
from cctf.bus_schemas.subjects import (
    PREFIX,
    identity_verdict_subject,
    name_token,
    verdict_subject,
)
from cctf.coordinator.pipeline.decide import verdict_msg_id
from cctf.coordinator.pipeline.identity import identity_msg_id
from cctf.coordinator.verdicts import seal_verdict
from cctf.crypto.keys import SigningKey
from cctf.errors import CctfError
from cctf.ids import check_id, check_qtype

__all__ = ["Sealed", "SignError", "Signer"]


def _check_coordinator(value: str) -> str:
    return check_id(value, "coordinator")


class SignError(CctfError):
    """The verdict cannot be sealed for some region (its subject is invalid)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    region: str
    subject: str
    data: bytes
    msg_id: str


class Signer:
    def __init__(
        self, key: SigningKey, regions: Sequence[str], *, per_coordinator: bool = False
    ) -> None:
        """``per_coordinator``: DNS and identity verdicts on the coordinator's own subject
        ``cctf.v1.verdict.<region>.<name-token>.<qtype>.<coordinator>`` and
        ``...<subject-token>.<kind>.<coordinator>`` (k-of-m deployments)."""
        if not regions:
            raise ValueError("at least one verdict region is needed")
        self._key = key
        self._regions = tuple(regions)
        self._per_coordinator = per_coordinator
        self._qtypes: set[str] = set()
        self._coordinators: set[str] = set()
        try:  # each region's verdict subject prefix, checked once (None: one is invalid)
            self._prefixes: tuple[tuple[str, str], ...] | None = tuple(
                (r, f"{PREFIX}.verdict.{check_id(r, 'region')}.") for r in self._regions
            )
        except ValueError:
            self._prefixes = None

    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    def seal(self, verdict: Verdict | IdentityVerdict, payload: bytes) -> list[Sealed]:
        if isinstance(verdict, IdentityVerdict):
            return self.seal_identity(verdict, payload)
        out: list[Sealed] = []
        for region in self._regions:
            try:
                subject, data = seal_verdict(
                    self._key, verdict, region, payload, per_coordinator=self._per_coordinator
                )
                msg_id = verdict_msg_id(
                    verdict.qname, verdict.qtype, verdict.round, region, verdict.coordinator
                )
            except ValueError as exc:  # IdError / SubjectError are ValueErrors
                raise SignError(f"verdict for {verdict.qname[:80]!r}: {exc}") from None
            out.append(Sealed(region, subject, data, msg_id))
        return out

    def targets(self, verdict: Verdict) -> list[tuple[str, str, str]]:
        """``(region, subject, msg_id)`` of a DNS verdict in every verdict region (batch signing:
        the same envelope goes to all of them); raises :class:`SignError` like :meth:`seal`.

        Fast path: the regions' subject prefixes were checked once (at start), a qtype and a
        coordinator id once each (bounded sets), the name's token is taken once per verdict (not
        once per region and use); whatever fails there is done again by :meth:`_targets`, the
        per-region subject and message-id functions, which raise the same error as always."""
        prefixes = self._prefixes
        qtype, coordinator = verdict.qtype, verdict.coordinator
        try:
            if prefixes is None:
                raise ValueError("a verdict region is invalid")
            token = name_token(verdict.qname)
            suffix = "." + self._known(self._qtypes, qtype, check_qtype)
            if self._per_coordinator:
                suffix += "." + self._known(self._coordinators, coordinator, _check_coordinator)
            out: list[tuple[str, str, str]] = []
            tail = f"{qtype}.{verdict.round}."
            for region, prefix in prefixes:
                subject = prefix + token + suffix
                if len(subject) > MAX_SUBJECT_BYTES:
                    raise ValueError("subject too long")
                out.append((region, subject, f"v1.{token}.{tail}{region}.{coordinator}"))
            return out
        except ValueError:
            return self._targets(verdict)  # raises SignError with the per-region message

    @staticmethod
    def _known(seen: set[str], value: str, check: Callable[[str], str]) -> str:
        if value not in seen:
            check(value)
            if len(seen) >= 64:
                seen.clear()
            seen.add(value)
        return value

    def _targets(self, verdict: Verdict) -> list[tuple[str, str, str]]:
        """:meth:`targets`, region by region through ``verdict_subject`` and ``verdict_msg_id``."""
        coordinator = verdict.coordinator if self._per_coordinator else None
        out: list[tuple[str, str, str]] = []
        for region in self._regions:
            try:
                subject = verdict_subject(region, verdict.qname, verdict.qtype, coordinator)
                msg_id = verdict_msg_id(
                    verdict.qname, verdict.qtype, verdict.round, region, verdict.coordinator
                )
            except ValueError as exc:
                raise SignError(f"verdict for {verdict.qname[:80]!r}: {exc}") from None
            out.append((region, subject, msg_id))
        return out

    def seal_identity(self, verdict: IdentityVerdict, payload: bytes) -> list[Sealed]:
        """An identity verdict: type ``identity`` on ``cctf.v1.verdict.<region>.<token>.<kind>``,
        the envelope's lifetime the verdict's."""
        out: list[Sealed] = []
        kind = verdict.kind.value
        for region in self._regions:
            try:
                coordinator = verdict.coordinator if self._per_coordinator else None
                subject = identity_verdict_subject(region, kind, verdict.subject, coordinator)
                msg_id = identity_msg_id(
                    kind, verdict.subject, verdict.round, region, verdict.coordinator
                )
            except ValueError as exc:
                raise SignError(f"identity verdict for {verdict.subject[:80]!r}: {exc}") from None
            data = seal(
                self._key,
                subject,
                MessageType.IDENTITY,
                payload,
                now_ms=verdict.issued_ms,
                lifetime_ms=verdict.expires_ms - verdict.issued_ms,
            )
            out.append(Sealed(region, subject, data, msg_id))
        return out
