"""k-of-m coordinators at the subscriber: combining verified verdicts of several coordinators (pure).

A deployment may run ``m`` coordinators at once, each with its own durable consumers, its own key
and its own view of the ballots, each publishing its verdicts on its own subject
(``cctf.v1.verdict.<region>.<name-token>.<qtype>.<coordinator>``, docs/wire-protocol.md §5.6). A
subscriber with the policy ``coordinators: {k: 2, of: [c1, c2, c3]}`` uses a verdict only when ``k``
distinct configured coordinators signed the same *statement* for the same *key*:

* key: ``(qname, qtype, round)``;
* statement: ``(outcome, answer_digest, dnssec, is_lkg)`` (LKG-ness: an LKG attestation never
  combines with a fresh verdict).

Every verdict given to this module has passed the full single-verdict verification
(:class:`cctf.client.verify.VerdictVerifier`: signature, coordinator = signing principal, times,
rollback); this module only counts. Numbered steps (:func:`combine`), all failing with
:attr:`~cctf.bus_schemas.envelope.Reason.COORDINATOR_QUORUM`:

C1. verdicts of coordinators not in ``of`` are ignored (they count for nothing);
C2. one verdict per coordinator: a coordinator that signed two different statements for one key
    (equivocation) counts for nothing on that key;
C3. group the remaining verdicts by (key, statement); a group with at least ``k`` distinct
    coordinators is *used*; with ``2k > m`` (enforced by :class:`CoordinatorPolicy`) at most one
    group per key can reach ``k``, so two conflicting statements are never both used;
C4. none reaches ``k``: fail closed (reported with the counts seen).

The representative verdict returned is the group's verdict that expires first (so the combined
statement is never used beyond the validity of any of its ``k`` signatures).

:class:`QuorumCombiner` is the streaming form (``TrustClient.verdicts``): it collects per key, emits
a key at most once (the first time a group reaches ``k``), and bounds its state to ``capacity`` keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.messages import DnssecState, Outcome, Verdict
from cctf.bus_schemas.subjects import normalize_name
from cctf.ids import check_id

__all__ = [
    "MAX_COORDINATORS",
    "CombinedVerdict",
    "CoordinatorPolicy",
    "QuorumCombiner",
    "QuorumKey",
    "Statement",
    "combine",
    "parse_policy",
    "quorum_key",
    "statement",
]

#: Bound on ``of`` (a subscriber reads one subject per configured coordinator).
MAX_COORDINATORS = 16

QuorumKey = tuple[str, str, int]  # (normalized qname, qtype, round)
Statement = tuple[Outcome, bytes, DnssecState, bool]  # (outcome, answer_digest, dnssec, is_lkg)


@dataclass(frozen=True, slots=True)
class CoordinatorPolicy:
    """``k`` of the coordinators ``of`` must sign the same statement (``2k > len(of)``)."""

    k: int
    of: tuple[str, ...]

    def __post_init__(self) -> None:
        of = tuple(check_id(c, "coordinator") for c in self.of)
        if not 1 <= len(of) <= MAX_COORDINATORS:
            raise ValueError(f"coordinators: of lists 1..{MAX_COORDINATORS} coordinators")
        if len(set(of)) != len(of):
            raise ValueError("coordinators: of lists a coordinator twice")
        if not isinstance(self.k, int) or not (len(of) < 2 * self.k and self.k <= len(of)):
            raise ValueError(
                f"coordinators: k={self.k} of {len(of)} must satisfy 2k > m and k <= m "
                "(so two conflicting verdicts can never both reach k)"
            )
        object.__setattr__(self, "of", of)

    @property
    def m(self) -> int:
        return len(self.of)


def parse_policy(text: str) -> CoordinatorPolicy:
    """``"2:c1,c2,c3"`` (the ``cctf check --coordinators`` form) -> a policy; raises ValueError."""
    k_text, sep, names = text.partition(":")
    if not sep or not k_text.strip().isdigit():
        raise ValueError(f"--coordinators: expected K:C1,C2,... (e.g. 2:c1,c2,c3), got {text!r}")
    return CoordinatorPolicy(int(k_text), tuple(n.strip() for n in names.split(",") if n.strip()))


def quorum_key(v: Verdict) -> QuorumKey:
    return (normalize_name(v.qname), v.qtype, v.round)


def statement(v: Verdict) -> Statement:
    return (v.outcome, v.answer_digest, v.dnssec, v.is_lkg)


@dataclass(frozen=True, slots=True)
class CombinedVerdict:
    """A used verdict: ``verdict`` is the representative (expires first) of ``signers`` (≥ k)."""

    verdict: Verdict
    signers: tuple[str, ...]

    @property
    def key(self) -> QuorumKey:
        return quorum_key(self.verdict)


def _first_per_coordinator(
    policy: CoordinatorPolicy, verdicts: Iterable[Verdict]
) -> dict[QuorumKey, dict[str, Verdict | None]]:
    """Steps C1-C2: per key, the first verdict of each configured coordinator (``None`` once it
    signed two different statements for the key)."""
    allowed = set(policy.of)
    per: dict[QuorumKey, dict[str, Verdict | None]] = {}
    for v in verdicts:
        if v.coordinator in allowed:  # C1
            _note(per.setdefault(quorum_key(v), {}), v)
    return per


def _note(seen: dict[str, Verdict | None], v: Verdict) -> None:
    if v.coordinator not in seen:
        seen[v.coordinator] = v
    elif (first := seen[v.coordinator]) is not None and statement(first) != statement(v):
        seen[v.coordinator] = None  # C2: equivocation counts for nothing


def _groups_of(seen: dict[str, Verdict | None]) -> dict[Statement, dict[str, Verdict]]:
    """Step C3 for one key."""
    groups: dict[Statement, dict[str, Verdict]] = {}
    for coord, v in seen.items():
        if v is not None:
            groups.setdefault(statement(v), {})[coord] = v
    return groups


def _used(policy: CoordinatorPolicy, group: dict[str, Verdict]) -> CombinedVerdict | None:
    if len(group) < policy.k:
        return None
    rep = min(group.values(), key=lambda v: (v.expires_ms, v.coordinator))
    return CombinedVerdict(rep, tuple(sorted(group)))


def combine(policy: CoordinatorPolicy, verdicts: Sequence[Verdict]) -> CombinedVerdict:
    """The used verdict among the (individually verified) ``verdicts`` — typically the last verdict
    of each configured coordinator for one (name, qtype). When several keys (rounds) reach ``k``,
    the latest round wins. Raises :class:`Rejected` (``coordinator_quorum``) when none does (C4)."""
    best: CombinedVerdict | None = None
    seen: list[str] = []
    for key, seen_per_coord in _first_per_coordinator(policy, verdicts).items():
        for group in _groups_of(seen_per_coord).values():
            seen.append(f"round {key[2]}: {len(group)}")
            used = _used(policy, group)
            if used is not None and (best is None or used.key[2] > best.key[2]):
                best = used
    if best is None:
        detail = ", ".join(sorted(seen)) or "no verdict of a configured coordinator"
        raise Rejected(
            Reason.COORDINATOR_QUORUM,
            f"no statement signed by {policy.k} of {policy.m} coordinators ({detail})",
        )
    return best


class QuorumCombiner:
    """Streaming k-of-m: :meth:`add` returns the used verdict the first time a key reaches ``k``,
    else ``None`` (a key is emitted at most once; later verdicts for it are ignored)."""

    def __init__(self, policy: CoordinatorPolicy, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.policy = policy
        self._capacity = capacity
        self._pending: OrderedDict[QuorumKey, dict[str, Verdict | None]] = OrderedDict()
        self._done: OrderedDict[QuorumKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, v: Verdict) -> CombinedVerdict | None:
        if v.coordinator not in self.policy.of:  # C1
            return None
        key = quorum_key(v)
        if key in self._done:
            return None
        seen = self._pending.setdefault(key, {})
        self._pending.move_to_end(key)
        _note(seen, v)  # C2 (at most one entry per configured coordinator: bounded)
        for group in _groups_of(seen).values():  # C3
            used = _used(self.policy, group)
            if used is not None:
                del self._pending[key]
                self._done[key] = None
                while len(self._done) > self._capacity:
                    self._done.popitem(last=False)
                return used
        while len(self._pending) > self._capacity:
            self._pending.popitem(last=False)
        return None
