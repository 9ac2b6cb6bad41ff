"""The errors of the subscriber SDK (:mod:`cctf.client.sdk`), one root: :class:`TrustClientError`."""

from __future__ import annotations

from typing import Final

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.errors import CctfError

__all__ = ["FALL_BACK", "FetchError", "NoVerdict", "TrustClientError", "VerdictRejected"]


class TrustClientError(CctfError):
    """Base class of the errors :meth:`TrustClient.check` raises."""


class NoVerdict(TrustClientError, LookupError):
    """The region's verdict stream holds no verdict for this (name, qtype)."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no verdict on {subject}")
        self.subject = subject


class VerdictRejected(TrustClientError):
    """The stored verdict failed verification (fail closed). ``reason`` is the stable reason."""

    def __init__(self, subject: str, rejected: Rejected) -> None:
        super().__init__(f"verdict on {subject} rejected: {rejected}")
        self.subject = subject
        self.reason: Reason = rejected.reason
        self.detail = rejected.detail


class FetchError(TrustClientError):
    """The bus could not be asked (timeout, no responders, connection closed). ``transient``: a
    retry may succeed (a timeout, no responders, no stream leader yet)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


#: Rejections of a fetched verdict after which ``check`` answers with a newer cached verdict (one
#: still valid and not older than the maximum age) instead: the bus served an older verdict.
FALL_BACK: Final = frozenset({Reason.ROLLBACK, Reason.STALE})
