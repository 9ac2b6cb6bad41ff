"""LKG: Last-Known-Good attestations, the coordinator's memory of trusted answers (pure).

Per key ``(qname, qtype)`` the stage remembers the **basis**: the newest TRUSTED decision (its
answer digest, round, issue time and an opaque payload, the encoded fresh verdict). Each decided
round's :class:`Round` goes through :meth:`LkgStage.step`, which says what to publish and what to
store. The rules (``docs/architecture.md``, *LKG attestations*):

1. **TRUSTED** (fresh) replaces the basis, unless it is for a round older than the basis's (a late
   decision never replaces newer evidence). An LKG episode of the key ends (``trusted``).
2. **DISPUTED** ends an episode at once (``disputed``) and **forgets** the basis: after a quorum
   disagreement no answer is vouched for again until a fresh TRUSTED decision.
3. **UNAVAILABLE** issues an LKG attestation of the basis when, and only when,

   a. there is a basis (a name never TRUSTED, or forgotten, gets none),
   b. no counted vote of the round is DNSSEC-bogus (else: forget, ``bogus``),
   c. no counted vote of the round carries an answer digest other than the basis's: an outage
      with a different answer in it is a disagreement, not a timeout (else: forget,
      ``disagreement``),
   d. the basis is not newer than the round (a late decision of an older round is not attested
      with newer evidence: published as it is, the basis kept),
   e. the staleness ``now - basis_ms`` is below the key's cap (default 15 min); at the cap the
      stage fails closed: the UNAVAILABLE verdict is published and the basis forgotten (``cap``).

   The attestation repeats the basis (answer, digest, DNSSEC state, voters) for the current
   round, valid ``min(now + lifetime, basis_ms + cap)`` (lifetime default 30 s): no attestation is
   ever usable beyond the cap, and one is issued every round while the outage lasts.
4. The first attestation of an outage starts an **episode** (one ``started`` event); its end is one
   ``ended`` event with the reason. Both are logged once per key (``cctf.coordinator.lkgstate``).

Persistence (the service writes through to a JetStream KV bucket, ``cctf.bus.kv``): a new basis is
stored when none is stored, when its answer digest or tag (DNSSEC state) changed, or when the stored
one is ``store_every_ms`` old; forgetting deletes it. A stored basis may thus be older than the one in
memory (never newer), which after a restart only makes the staleness look larger: safe.

Bounded: at most ``max_keys`` bases (least recently decided forgotten first: that key fails closed).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cctf.bus_schemas.messages import Outcome

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_STALENESS_MS",
    "DEFAULT_STORE_EVERY_MS",
    "Action",
    "Basis",
    "EndReason",
    "Event",
    "EventKind",
    "LkgKey",
    "LkgPolicy",
    "LkgStage",
    "Round",
    "Step",
    "Store",
]

B = TypeVar("B")
LkgKey = tuple[str, str]  # (normalized qname, qtype)

DEFAULT_LIFETIME_MS: Final = 30_000
DEFAULT_MAX_STALENESS_MS: Final = 15 * 60_000
DEFAULT_STORE_EVERY_MS: Final = 10_000
DEFAULT_MAX_KEYS: Final = 50_000


@dataclass(frozen=True, slots=True)
class LkgPolicy:
    """Lifetime of one attestation, the default cap on staleness and per-key caps (all in ms)."""

    lifetime_ms: int = DEFAULT_LIFETIME_MS
    max_staleness_ms: int = DEFAULT_MAX_STALENESS_MS
    caps: Mapping[LkgKey, int] | None = None
    """Per-key caps; a key ``(name, "")`` applies to every qtype of ``name``."""
    store_every_ms: int = DEFAULT_STORE_EVERY_MS
    max_keys: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        if self.lifetime_ms < 1 or self.max_staleness_ms < 1 or self.max_keys < 1:
            raise ValueError("lifetime_ms, max_staleness_ms and max_keys must be positive")
        if self.store_every_ms < 0:
            raise ValueError("store_every_ms must not be negative")
        if any(cap < 1 for cap in (self.caps or {}).values()):
            raise ValueError("per-name caps must be positive")

    def cap_ms(self, key: LkgKey) -> int:
        caps = self.caps or {}
        found = caps.get(key)
        if found is None:
            found = caps.get((key[0], ""))
        return self.max_staleness_ms if found is None else found

    @property
    def longest_cap_ms(self) -> int:
        return max([self.max_staleness_ms, *(self.caps or {}).values()])


@dataclass(frozen=True, slots=True)
class Basis(Generic[B]):
    """The evidence an attestation repeats: a fresh TRUSTED decision."""

    round: int
    basis_ms: int
    """When the TRUSTED decision was made (the fresh verdict's ``issued_ms``)."""
    answer_digest: bytes
    tag: str
    """What else must match for the stored copy to be current (the DNSSEC state)."""
    payload: B


@dataclass(frozen=True, slots=True)
class Round:
    """What the stage needs of one decided round of one key."""

    round: int
    outcome: Outcome
    now_ms: int
    """The issue time of the fresh verdict."""
    answer_digests: tuple[bytes, ...] = ()
    """The answer digests of the round's counted votes (empty entries: no answer)."""
    bogus: bool = False
    """Some counted vote of the round was DNSSEC-bogus."""
    answer_digest: bytes = b""
    tag: str = ""


class Action(enum.Enum):
    FRESH = "fresh"
    """Publish the fresh verdict as decided."""
    LKG = "lkg"
    """Publish an attestation of :attr:`Step.basis` valid until :attr:`Step.expires_ms`."""


class Store(enum.Enum):
    NONE = "none"
    PUT = "put"
    DELETE = "delete"


class EventKind(enum.Enum):
    STARTED = "started"
    ENDED = "ended"


class EndReason(enum.StrEnum):
    TRUSTED = "trusted"
    DISPUTED = "disputed"
    BOGUS = "bogus"
    DISAGREEMENT = "disagreement"
    CAP = "cap"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    round: int
    basis_round: int
    age_ms: int
    reason: EndReason | None = None
    rounds: int = 0
    """(ended) attestations issued in the episode."""


@dataclass(frozen=True, slots=True)
class Step(Generic[B]):
    action: Action
    store: Store = Store.NONE
    basis: Basis[B] | None = None
    """The basis to attest (``LKG``) or to store (``PUT``)."""
    expires_ms: int = 0
    """(``LKG``) the attestation's expiry."""
    event: Event | None = None


class _Entry(Generic[B]):
    __slots__ = ("basis", "episode", "stored")

    def __init__(self, basis: Basis[B], stored: Basis[B] | None) -> None:
        self.basis = basis
        self.stored = stored
        self.episode: tuple[int, int] | None = None  # (first round, attestations)


class LkgStage(Generic[B]):
    def __init__(self, policy: LkgPolicy) -> None:
        self.policy = policy
        self._entries: OrderedDict[LkgKey, _Entry[B]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_lkg(self) -> int:
        """Keys in an LKG episode now."""
        return sum(e.episode is not None for e in self._entries.values())

    def keys(self) -> list[tuple[LkgKey, int]]:
        """Every key with a basis, with its basis round (least recently decided first)."""
        return [(k, e.basis.round) for k, e in self._entries.items()]

    def basis(self, key: LkgKey) -> Basis[B] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.basis

    def in_episode(self, key: LkgKey) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.episode is not None

    def load(self, items: Iterable[tuple[LkgKey, Basis[B]]]) -> int:
        """Bases read back from the store (at start): kept unless memory has a newer one."""
        n = 0
        for key, basis in items:
            entry = self._entries.get(key)
            if entry is None or entry.basis.round < basis.round:
                self._remember(key, _Entry(basis, basis))
                n += 1
        return n

    def forget(self, key: LkgKey) -> None:
        self._entries.pop(key, None)

    def _remember(self, key: LkgKey, entry: _Entry[B]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.policy.max_keys:
            self._entries.popitem(last=False)

    def step(self, key: LkgKey, rnd: Round, fresh: B) -> Step[B]:
        """The decision for one decided round of ``key`` (``fresh``: its payload if TRUSTED)."""
        entry = self._entries.get(key)
        if rnd.outcome is Outcome.TRUSTED:
            return self._trusted(key, entry, rnd, fresh)
        if entry is None:
            return Step(Action.FRESH)  # never trusted (or forgotten)
        if rnd.outcome is Outcome.DISPUTED:
            return self._end(key, entry, rnd, EndReason.DISPUTED)
        if rnd.bogus:
            return self._end(key, entry, rnd, EndReason.BOGUS)
        basis = entry.basis
        if any(d and d != basis.answer_digest for d in rnd.answer_digests):
            return self._end(key, entry, rnd, EndReason.DISAGREEMENT)
        if basis.round > rnd.round:
            return Step(Action.FRESH)  # a late decision of an older round
        cap = self.policy.cap_ms(key)
        if rnd.now_ms - basis.basis_ms >= cap:
            return self._end(key, entry, rnd, EndReason.CAP)
        self._entries.move_to_end(key)
        event = None
        if entry.episode is None:
            entry.episode = (rnd.round, 1)
            event = Event(EventKind.STARTED, rnd.round, basis.round, rnd.now_ms - basis.basis_ms)
        else:
            entry.episode = (entry.episode[0], entry.episode[1] + 1)
        expires = min(rnd.now_ms + self.policy.lifetime_ms, basis.basis_ms + cap)
        return Step(Action.LKG, basis=basis, expires_ms=expires, event=event)

    def _trusted(self, key: LkgKey, entry: _Entry[B] | None, rnd: Round, fresh: B) -> Step[B]:
        basis = Basis(rnd.round, rnd.now_ms, rnd.answer_digest, rnd.tag, fresh)
        if entry is not None and entry.basis.round > rnd.round:
            return Step(Action.FRESH)  # newer evidence is kept
        event = None
        if entry is not None and entry.episode is not None:
            event = self._ended(entry, rnd, EndReason.TRUSTED)
        stored = entry.stored if entry is not None else None
        put = (
            stored is None
            or stored.answer_digest != basis.answer_digest
            or stored.tag != basis.tag
            or rnd.now_ms - stored.basis_ms >= self.policy.store_every_ms
        )
        self._remember(key, _Entry(basis, basis if put else stored))
        return Step(
            Action.FRESH, Store.PUT if put else Store.NONE, basis if put else None, 0, event
        )

    def _ended(self, entry: _Entry[B], rnd: Round, reason: EndReason) -> Event:
        count = entry.episode[1] if entry.episode is not None else 0
        age = rnd.now_ms - entry.basis.basis_ms
        return Event(EventKind.ENDED, rnd.round, entry.basis.round, age, reason, count)

    def _end(self, key: LkgKey, entry: _Entry[B], rnd: Round, reason: EndReason) -> Step[B]:
        event = self._ended(entry, rnd, reason) if entry.episode is not None else None
        del self._entries[key]
        return Step(Action.FRESH, Store.DELETE, event=event)
