"""k-of-m coordinators for safe-mode announcements at the subscriber (pure).

With several coordinators (``per_coordinator_subjects``) each one announces its view of a region's
safe-mode state on its own subject ``cctf.v1.control.<region>.<coordinator>``; the last announcement
of each is that coordinator's whole state (its ``active`` scopes). A subscriber with the policy
``coordinators: {k, of}`` (:class:`~cctf.client.coordquorum.CoordinatorPolicy`, ``2k > m``) combines
the (individually verified) last announcements of the configured coordinators:

S1. announcements of coordinators not in ``of`` count for nothing; one per coordinator (the
    caller passes each coordinator's last one; a second one of the same coordinator is refused);
S2. fewer than ``k`` coordinators with a valid announcement: fail closed
    (:attr:`~cctf.bus_schemas.envelope.Reason.COORDINATOR_QUORUM`) — the state is unknown;
S3. the combined state: a scope is active when at least ``k`` of them list it. So one coordinator
    (or one stolen coordinator key) alone can neither put a region into safe mode for its clients
    nor take it out while ``k`` honest coordinators report it.

The representative announcement is the newest (highest ``issued_ms``) of the ``k`` or more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cctf.bus_schemas.control import SafeModeAnnouncement
from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.client.coordquorum import CoordinatorPolicy

__all__ = ["CombinedSafeMode", "combine_safe_mode"]


@dataclass(frozen=True, slots=True)
class CombinedSafeMode:
    announcement: SafeModeAnnouncement  # the newest of the counted ones
    active: tuple[str, ...]  # scopes listed by at least k coordinators, sorted
    signers: tuple[str, ...]  # the coordinators whose announcements were counted


def combine_safe_mode(
    policy: CoordinatorPolicy, announcements: Sequence[SafeModeAnnouncement]
) -> CombinedSafeMode:
    """Steps S1–S3; raises :class:`Rejected` (``coordinator_quorum``) at S1 (two of one
    coordinator) or S2."""
    per: dict[str, SafeModeAnnouncement] = {}
    for a in announcements:
        if a.coordinator not in policy.of:  # S1
            continue
        if a.coordinator in per:
            raise Rejected(
                Reason.COORDINATOR_QUORUM, f"two announcements of {a.coordinator} to combine"
            )
        per[a.coordinator] = a
    if len(per) < policy.k:  # S2
        raise Rejected(
            Reason.COORDINATOR_QUORUM,
            f"safe-mode state of {len(per)} of {policy.m} coordinators, {policy.k} needed",
        )
    counts = Counter(s for a in per.values() for s in set(a.active))  # S3
    active = tuple(sorted(s for s, n in counts.items() if n >= policy.k))
    newest = max(per.values(), key=lambda a: (a.issued_ms, a.coordinator))
    return CombinedSafeMode(newest, active, tuple(sorted(per)))
