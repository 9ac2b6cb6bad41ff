"""k-of-m coordinators for identity verdicts at the subscriber (pure).

The identity counterpart of :mod:`cctf.client.coordquorum` (same policy type, same steps): with
``coordinators: {k: 2, of: [c1, c2, c3]}`` each coordinator publishes its identity verdicts on its
own subject ``cctf.v1.verdict.<region>.<subject-token>.<kind>.<coordinator>``
(docs/wire-protocol.md §5.6) and a subscriber uses an identity verdict only when ``k`` distinct
configured coordinators signed the same *statement* for the same *key*:

* key: ``(kind, subject, round)``;
* statement: ``(outcome, facts_digest)`` (the digest binds kind, subject and every fact, so equal
  digests are equal facts).

Every verdict given here has passed :class:`cctf.client.verify_identity.IdentityVerifier` (steps
1–17); this module only counts. Steps of :func:`combine_identity`, failing with
:attr:`~cctf.bus_schemas.envelope.Reason.COORDINATOR_QUORUM`:

C1. verdicts of coordinators not in ``of`` count for nothing;
C2. one verdict per coordinator and key: a coordinator that signed two different statements for one
    key counts for nothing on it;
C3. a (key, statement) group of at least ``k`` distinct coordinators is *used* (``2k > m``: at most
    one group per key); when several keys (rounds) have one, the latest round wins;
C4. none: fail closed, reported with the counts seen.

The representative verdict is the used group's verdict that expires first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.evidence import IdentityVerdict
from cctf.bus_schemas.messages import Outcome
from cctf.client.coordquorum import CoordinatorPolicy

__all__ = ["CombinedIdentity", "IdentityQuorumKey", "combine_identity"]

IdentityQuorumKey = tuple[str, str, int]  # (kind, subject, round)
_Statement = tuple[Outcome, bytes]


@dataclass(frozen=True, slots=True)
class CombinedIdentity:
    """A used identity verdict: the representative (expires first) of ``signers`` (≥ k)."""

    verdict: IdentityVerdict
    signers: tuple[str, ...]


def _key(v: IdentityVerdict) -> IdentityQuorumKey:
    return (v.kind.value, v.subject, v.round)


def _statement(v: IdentityVerdict) -> _Statement:
    return (v.outcome, v.facts_digest)


def combine_identity(
    policy: CoordinatorPolicy, verdicts: Sequence[IdentityVerdict]
) -> CombinedIdentity:
    """The used identity verdict among the (individually verified) ``verdicts`` — typically the
    last one of each configured coordinator for one (kind, subject). Raises :class:`Rejected`
    (``coordinator_quorum``) when no statement reaches ``k`` (C4)."""
    allowed = set(policy.of)
    per: dict[IdentityQuorumKey, dict[str, IdentityVerdict | None]] = {}
    for v in verdicts:
        if v.coordinator not in allowed:  # C1
            continue
        seen = per.setdefault(_key(v), {})
        if v.coordinator not in seen:
            seen[v.coordinator] = v
        elif (first := seen[v.coordinator]) is not None and _statement(first) != _statement(v):
            seen[v.coordinator] = None  # C2
    best: CombinedIdentity | None = None
    counts: list[str] = []
    for key, seen in per.items():
        groups: dict[_Statement, dict[str, IdentityVerdict]] = {}
        for coord, got in seen.items():
            if got is not None:
                groups.setdefault(_statement(got), {})[coord] = got
        for group in groups.values():  # C3
            counts.append(f"round {key[2]}: {len(group)}")
            if len(group) >= policy.k and (best is None or key[2] > best.verdict.round):
                rep = min(group.values(), key=lambda g: (g.expires_ms, g.coordinator))
                best = CombinedIdentity(rep, tuple(sorted(group)))
    if best is None:  # C4
        detail = ", ".join(sorted(counts)) or "no identity verdict of a configured coordinator"
        raise Rejected(
            Reason.COORDINATOR_QUORUM,
            f"no identity statement signed by {policy.k} of {policy.m} coordinators ({detail})",
        )
    return best
