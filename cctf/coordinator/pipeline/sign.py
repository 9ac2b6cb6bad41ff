"""Sign: one verdict -> one sealed envelope per verdict region, with its subject and message id.

CPU-bound but pure (the service runs it in worker threads). A verdict whose subject cannot be built
(for instance a name whose token makes the subject too long) raises :class:`SignError`: the caller
settles that key as unpublishable, counted, and its ballots are acknowledged, never held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cctf.bus_schemas.messages import Verdict
from cctf.coordinator.pipeline.decide import verdict_msg_id
from cctf.coordinator.verdicts import seal_verdict
from cctf.crypto.keys import SigningKey
from cctf.errors import CctfError

__all__ = ["Sealed", "SignError", "Signer"]


class SignError(CctfError):
    """The verdict cannot be sealed for some region (its subject is invalid)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    region: str
    subject: str
    data: bytes
    msg_id: str


class Signer:
    def __init__(self, key: SigningKey, regions: Sequence[str]) -> None:
        if not regions:
            raise ValueError("at least one verdict region is needed")
        self._key = key
        self._regions = tuple(regions)

    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    def seal(self, verdict: Verdict, payload: bytes) -> list[Sealed]:
        out: list[Sealed] = []
        for region in self._regions:
            try:
                subject, data = seal_verdict(self._key, verdict, region, payload)
                msg_id = verdict_msg_id(verdict.qname, verdict.qtype, verdict.round, region)
            except ValueError as exc:  # IdError / SubjectError are ValueErrors
                raise SignError(f"verdict for {verdict.qname[:80]!r}: {exc}") from None
            out.append(Sealed(region, subject, data, msg_id))
        return out
