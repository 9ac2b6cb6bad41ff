"""Tallies: route verified votes to the DNS tally book or the identity stage, and decided keys to the
matching decider (pure). The service sees one ``count`` / ``expire`` / ``verdict`` API for both kinds
of keys: :class:`~cctf.coordinator.tally.TallyKey` ``(qname, qtype, round)`` and
:class:`~cctf.coordinator.pipeline.identity.IdentityKey` ``(kind, subject, round)`` (distinct types;
a DNS name always ends in ``.`` and an identity kind never does, so they never compare equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cctf.bus_schemas.evidence import IdentityVerdict
from cctf.bus_schemas.messages import Verdict
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.identity import IdentityKey, IdentityStage
from cctf.coordinator.pipeline.recent import RecentKeys
from cctf.coordinator.pipeline.verify import Checked, CheckedEvidence
from cctf.coordinator.tally import AddResult, Decision, TallyKey
from cctf.coordinator.tallybook import TallyBook
from cctf.coordinator.verdicts import VerdictError

__all__ = ["AnyKey", "AnyVerdict", "Counted", "Deciders", "Tallies"]

_COUNTED = AddResult.COUNTED
_CLOSED = AddResult.CLOSED

AnyKey = TallyKey | IdentityKey
AnyVerdict = Verdict | IdentityVerdict


@dataclass(slots=True)
class Counted:
    """What one verified message did to the tallies."""

    keys: list[AnyKey] = field(default_factory=list)
    """Keys the message was counted in (its delivery is held until each settles)."""
    decided: list[tuple[AnyKey, Decision]] = field(default_factory=list)
    equivocations: list[tuple[str, str]] = field(default_factory=list)
    """``(voter, qname or subject)`` of every equivocating vote."""
    ignored: dict[str, int] = field(default_factory=dict)
    """Add results other than counted / equivocation (``duplicate``, ``closed``, ...)."""
    unheard: int = 0
    """Votes refused ``closed`` for a key with no tally here: its round closed without one, so no
    verdict of this coordinator holds them (a ballot with only such votes is counted expired)."""


class Tallies:
    def __init__(
        self,
        dns: TallyBook,
        identity: IdentityStage | None = None,
        recent: RecentKeys | None = None,
    ) -> None:
        self.dns = dns
        self.identity = identity
        #: DNS keys voted on recently (the silent-round rule of ``pipeline.expiry``), if kept
        self.recent = recent

    @property
    def live(self) -> int:
        return self.dns.live + (self.identity.live if self.identity is not None else 0)

    @property
    def expired_through(self) -> int:
        return self.dns.expired_through

    def count(self, checked: Checked | CheckedEvidence) -> Counted:
        out = Counted()
        if isinstance(checked, CheckedEvidence):
            stage = self.identity
            for key, vote, facts in checked.votes:
                if stage is None:  # the verify stage refuses evidence without an allow-list
                    break
                result, decision = stage.add(key, vote, facts)
                self._note(out, key, vote.voter, key.subject, result, decision)
            return out
        book, add, keys, decided = self.dns, self.dns.add_at, out.keys, out.decided
        recent = self.recent
        closed = 0
        votes = checked.votes
        # one ballot is counted as a whole: with several voters in it (an agent's resolvers), its
        # votes are all counted before any key is decided, so the decision never depends on the
        # order of the ballot's votes (a DNSSEC-bogus vote behind a third timeout still counts)
        first = votes[0][1].voter if votes else ""
        settle = all(vote.voter == first for _k, vote in votes)
        for tkey, vote in votes:
            result, decision = add(tkey, vote, settle)
            if result is _COUNTED:  # the hot path of _note
                keys.append(tkey)
                if decision is not None:
                    decided.append((tkey, decision))
                if recent is not None:  # the silent-round rule's bound (pipeline.recent)
                    recent.note(tkey.qname, tkey.qtype, tkey.round)
                continue
            if result is _CLOSED:  # _note's count, inlined (ballots 4 and 5 of a 3-of-5 round)
                closed += 1
                if not book.holds(tkey):
                    out.unheard += 1
                continue
            self._note(out, tkey, vote.voter, tkey.qname, result, decision)
        if closed:
            out.ignored[_CLOSED.value] = out.ignored.get(_CLOSED.value, 0) + closed
        if not settle:  # the whole ballot is in: decide its keys, each once, in first-vote order
            settle_at = book.settle_at
            for held in dict.fromkeys(keys):
                decision = settle_at(held) if isinstance(held, TallyKey) else None
                if decision is not None:
                    decided.append((held, decision))
        return out

    @staticmethod
    def _note(
        out: Counted,
        key: AnyKey,
        voter: str,
        what: str,
        result: AddResult,
        decision: Decision | None,
    ) -> None:
        if result is AddResult.COUNTED:
            out.keys.append(key)
            if decision is not None:
                out.decided.append((key, decision))
        elif result is AddResult.EQUIVOCATION:
            out.equivocations.append((voter, what))
        else:
            out.ignored[result.value] = out.ignored.get(result.value, 0) + 1

    def expire(self, up_to_round: int) -> list[tuple[AnyKey, Decision]]:
        """Finalize both kinds of tallies up to ``up_to_round`` (DNS first)."""
        decided: list[tuple[AnyKey, Decision]] = list(self.dns.expire(up_to_round))
        if self.identity is not None:
            decided.extend(self.identity.expire(up_to_round))
        return decided

    def rewind(self, to_round: int) -> int:
        """The clock stepped back to ``to_round``: reopen the empty expired rounds above it (both
        kinds of tallies); returns how many rounds stay closed (DNS)."""
        if self.identity is not None:
            self.identity.rewind(to_round)
        return self.dns.rewind(to_round)


class Deciders:
    """``verdict(key, decision)`` for either kind of key (raises :class:`VerdictError`)."""

    def __init__(self, dns: Decider, identity: IdentityStage | None = None) -> None:
        self.dns = dns
        self.identity = identity

    def verdict(self, key: AnyKey, decision: Decision) -> AnyVerdict:
        if isinstance(key, IdentityKey):
            if self.identity is None:
                raise VerdictError(f"an identity decision without an identity stage: {key!r}")
            return self.identity.verdict(key, decision)
        return self.dns.verdict(key, decision)
