"""Verified log heads of a subscriber (pure, no I/O): the :class:`HeadLookup` of ``"tlog"`` verdicts,
consistency tracking between the heads seen, and the split-view alarm.

Heads. A coordinator signs one C2SP checkpoint (a signed note, :mod:`cctf.translog.note`) per batch
of verdicts, origin and key name ``cctf/v1/log/<kid>`` (:func:`cctf.bus_schemas.tlog.log_origin`).
:meth:`HeadCache.add_note` verifies a note ONCE, in numbered steps, and remembers ``(kid, size) →
root`` in a bounded LRU; :meth:`HeadCache.verified_root` answers envelope step 7 from it:

1. the note is at most :data:`MAX_HEAD_NOTE_BYTES` and parses (signed-note shape) [``malformed``]
2. its first signature line whose key name is ``cctf/v1/log/<kid>`` for a ``kid`` the trust config
   holds as a coordinator key names the log [``unknown_log``]; when the note arrived on a head
   subject, that key's principal must be the subject's coordinator [``wrong_log``]
3. both hybrid halves verify (anti-downgrade) and the body is a checkpoint whose origin is the key
   name [``signature`` / ``malformed``]
4. when the note arrived on a head subject, its tree size is the subject's [``wrong_size``];
   a head whose ``(kid, size, root)`` is already verified is not verified again (the note of one
   head may differ in its randomised ML-DSA-65 signature)
5. split view, fork: a verified head of the same ``(kid, size)`` with another root is already known
   → the alarm (below); the first root stays the one verdicts are checked against

Consistency. The heads of one log must each be a prefix of the later ones. Per log the cache keeps
an *anchor* (the largest head proven consistent with every head checked so far; the first head seen
is the first anchor) and a bounded set of heads not yet checked. :meth:`HeadCache.pending` lists the
consistency proofs still needed, always between an unchecked head and the anchor (smaller size
first); :meth:`HeadCache.add_consistency` verifies one (RFC 9162 §2.1.4.2,
:func:`cctf.translog.merkle.verify_consistency`): a head proven to extend the anchor becomes the
anchor, an older one is checked (prefix of the anchor, so of every later head: consistency is
transitive). A proof that does not verify between two validly signed heads is a split view
(inconsistent). Proofs come from the log API (``cctf log serve``), through the caller.

Split view. Two validly signed heads of one log with the same size and different roots, or a head
not consistent with an earlier one, is recorded as a :class:`SplitView` (bounded list), handed to
the ``on_split_view`` callback (the SDK counts ``cctf_client_split_view_total`` and logs one line)
and raised on demand by :meth:`HeadCache.raise_for_split_view` (:class:`SplitViewError`, a
:class:`~cctf.bus_schemas.envelope.Rejected` with reason ``split_view``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.bus_schemas.heads import LOG_ORIGIN_PREFIX, log_origin
from cctf.client.inclusion import NodeMemo
from cctf.crypto.errors import KeyError_
from cctf.crypto.trust import Role, TrustConfig
from cctf.errors import CctfError
from cctf.translog.checkpoint import Checkpoint, parse_checkpoint
from cctf.translog.errors import NoteError, ProofError, TranslogError
from cctf.translog.merkle import verify_consistency
from cctf.translog.note import NoteVerifier, open_checkpoint, parse_note

__all__ = [
    "DEFAULT_HEAD_CAPACITY",
    "MAX_HEAD_NOTE_BYTES",
    "MAX_UNCHECKED_PER_LOG",
    "HeadCache",
    "HeadError",
    "SplitView",
    "SplitViewError",
    "VerifiedHead",
]

#: A head on the bus is the raw signed note, at most 16 KiB (docs/wire-protocol.md, heads).
MAX_HEAD_NOTE_BYTES: Final = 16 * 1024
#: Verified ``(kid, size) → root`` entries remembered (32-byte roots: about 6 MiB at this size).
DEFAULT_HEAD_CAPACITY: Final = 65_536
#: Heads per log waiting for a consistency proof; past it the oldest is dropped (counted).
MAX_UNCHECKED_PER_LOG: Final = 256
#: Split views remembered for :meth:`HeadCache.raise_for_split_view` and reports.
MAX_SPLIT_VIEWS: Final = 64


class HeadError(CctfError):
    """A head (signed note) that cannot be used. ``reason`` is stable (also the metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VerifiedHead:
    """A checkpoint whose signed note verified under coordinator key ``kid``."""

    kid: str
    coordinator: str
    checkpoint: Checkpoint
    note: bytes  # the raw signed note (what is gossiped)

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root_hash


@dataclass(frozen=True, slots=True)
class SplitView:
    """Evidence that a log showed two views: ``kind`` ``fork`` (same size, two roots) or
    ``inconsistent`` (the smaller head is not a prefix of the larger one)."""

    kind: str
    kid: str
    coordinator: str
    size1: int
    root1: bytes
    size2: int
    root2: bytes
    detail: str

    def describe(self) -> str:
        return (
            f"split view ({self.kind}) of log {log_origin(self.kid)}: size {self.size1} root "
            f"{self.root1.hex()[:16]}… vs size {self.size2} root {self.root2.hex()[:16]}…: "
            f"{self.detail}"
        )


class SplitViewError(Rejected):
    """A log showed two views (see :class:`SplitView`); raised on demand."""

    def __init__(self, view: SplitView) -> None:
        super().__init__(Reason.SPLIT_VIEW, view.describe())
        self.view = view


@dataclass
class _Log:
    kid: str
    coordinator: str
    anchor: VerifiedHead
    unchecked: OrderedDict[int, VerifiedHead]


class HeadCache:
    """Verified heads (a :class:`cctf.bus_schemas.tlog.HeadLookup`), consistency and split views."""

    def __init__(
        self,
        trust: TrustConfig,
        *,
        capacity: int = DEFAULT_HEAD_CAPACITY,
        max_unchecked: int = MAX_UNCHECKED_PER_LOG,
        on_split_view: Callable[[SplitView], None] | None = None,
    ) -> None:
        if capacity < 1 or max_unchecked < 1:
            raise ValueError("capacity and max_unchecked must be positive")
        self.trust = trust
        self._capacity = capacity
        self._max_unchecked = max_unchecked
        self._on_split_view = on_split_view
        self._roots: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._verifiers: dict[str, NoteVerifier] = {}
        self._logs: dict[str, _Log] = {}
        self._newest: dict[str, VerifiedHead] = {}
        #: Split views seen (oldest first, at most :data:`MAX_SPLIT_VIEWS`).
        self.split_views: list[SplitView] = []
        #: Notes whose signatures were verified (each ``(kid, size)`` once; refusals not counted).
        self.verified = 0
        #: Consistency proofs verified; heads dropped unchecked because too many were pending.
        self.consistency_checked = 0
        self.unchecked_dropped = 0
        #: Envelope step 7c hashes interior nodes with this memo (:mod:`cctf.client.inclusion`:
        #: the proofs of one batch share their upper nodes; every proof still checked in full).
        self.node_hash = NodeMemo()
        #: ... and checks a whole proof through it in one call (the same proofs accepted).
        self.verify_inclusion = self.node_hash.verify_inclusion

    # ---- envelope step 7

    def verified_root(self, kid: str, size: int) -> bytes | None:
        root = self._roots.get((kid, size))
        if root is not None:
            self._roots.move_to_end((kid, size))
        return root

    def __len__(self) -> int:
        return len(self._roots)

    # ---- adding heads

    def add_note(
        self, note: bytes | str, *, coordinator: str | None = None, size: int | None = None
    ) -> VerifiedHead | None:
        """Verify a head (steps 1–5 above) and remember it. ``coordinator`` / ``size``: those of the
        head subject it arrived on (``None`` for gossip). Returns the head when it was new, ``None``
        when the same head was already known or it forks a known one (recorded as a split view).
        Raises :class:`HeadError`."""
        raw = note.encode("utf-8") if isinstance(note, str) else note
        if len(raw) > MAX_HEAD_NOTE_BYTES:  # 1
            raise HeadError("malformed", f"a head note is at most {MAX_HEAD_NOTE_BYTES} bytes")
        try:
            parsed = parse_note(raw)
        except NoteError as exc:
            raise HeadError("malformed", str(exc)) from None
        kid = self._log_kid(s.name for s in parsed.signatures)  # 2
        entry = self.trust.get(kid, Role.COORDINATOR)
        if coordinator is not None and entry.principal != coordinator:
            raise HeadError(
                "wrong_log", f"head of {entry.principal}'s log on {coordinator}'s head subject"
            )
        try:  # the body, not yet trusted: a known head again needs no signature check
            claimed = parse_checkpoint(parsed.text.encode("utf-8"))
        except TranslogError as exc:
            raise HeadError("malformed", str(exc)) from None
        if size is not None and claimed.size != size:  # 4 (before any signature work)
            raise HeadError("wrong_size", f"head of size {claimed.size} on the subject of {size}")
        if (
            claimed.origin == log_origin(kid)
            and self._roots.get((kid, claimed.size)) == claimed.root_hash
        ):
            return None  # verified once already (its signatures may differ: ML-DSA is randomised)
        try:  # 3
            checkpoint = open_checkpoint(raw, self._verifier(kid), origin=log_origin(kid))
        except NoteError as exc:
            reason = "malformed" if exc.reason in ("malformed", "wrong-origin") else "signature"
            raise HeadError(reason, str(exc)) from None
        except TranslogError as exc:
            raise HeadError("malformed", str(exc)) from None
        if size is not None and checkpoint.size != size:  # 4
            raise HeadError(
                "wrong_size", f"head of size {checkpoint.size} on the subject of {size}"
            )
        head = VerifiedHead(kid, entry.principal, checkpoint, raw)
        self.verified += 1
        first = self._roots.get((kid, checkpoint.size))
        if first is not None:  # 5
            if first != checkpoint.root_hash:
                self._split(
                    SplitView(
                        "fork",
                        kid,
                        entry.principal,
                        checkpoint.size,
                        first,
                        checkpoint.size,
                        checkpoint.root_hash,
                        "two validly signed heads of one size with different roots",
                    )
                )
            return None
        self._remember(kid, checkpoint.size, checkpoint.root_hash)
        self._track(head)
        return head

    def _log_kid(self, names: Iterable[str]) -> str:
        for name in names:
            if not name.startswith(LOG_ORIGIN_PREFIX):
                continue
            kid = name[len(LOG_ORIGIN_PREFIX) :]
            try:
                self.trust.get(kid, Role.COORDINATOR)
            except KeyError_:
                continue
            return kid
        raise HeadError("unknown_log", "the note is signed by no trusted coordinator's log key")

    def _verifier(self, kid: str) -> NoteVerifier:
        v = self._verifiers.get(kid)
        if v is None:
            try:
                v = NoteVerifier(log_origin(kid), self.trust.get(kid, Role.COORDINATOR).keys)
            except NoteError as exc:
                raise HeadError("signature", f"key {kid} cannot sign log heads: {exc}") from None
            self._verifiers[kid] = v
        return v

    def _remember(self, kid: str, size: int, root: bytes) -> None:
        self._roots[(kid, size)] = root
        self._roots.move_to_end((kid, size))
        while len(self._roots) > self._capacity:
            self._roots.popitem(last=False)

    # ---- consistency

    def newest(self) -> dict[str, VerifiedHead]:
        """The largest verified head of each log (what a subscriber gossips)."""
        return dict(self._newest)

    def _track(self, head: VerifiedHead) -> None:
        if head.size == 0:
            return  # the empty tree is a prefix of every tree: nothing to prove
        newest = self._newest.get(head.kid)
        if newest is None or head.size > newest.size:
            self._newest[head.kid] = head
        log = self._logs.get(head.kid)
        if log is None:
            self._logs[head.kid] = _Log(head.kid, head.coordinator, head, OrderedDict())
            return
        if head.size == log.anchor.size:
            return  # equal size and root: nothing to prove (a fork was caught in step 5)
        log.unchecked[head.size] = head
        while len(log.unchecked) > self._max_unchecked:
            log.unchecked.popitem(last=False)
            self.unchecked_dropped += 1

    def pending(self, limit: int = 64) -> list[tuple[str, int, int]]:
        """Consistency proofs still needed, as ``(kid, size1, size2)`` with ``size1 < size2``:
        between each unchecked head and its log's anchor (the newest unchecked heads first)."""
        out: list[tuple[str, int, int]] = []
        for kid, log in self._logs.items():
            a = log.anchor.size
            for s in reversed(log.unchecked):
                out.append((kid, min(a, s), max(a, s)))
                if len(out) >= limit:
                    return out
        return out

    def anchor(self, kid: str) -> VerifiedHead | None:
        """The largest head of ``kid``'s log proven consistent with every head checked so far."""
        log = self._logs.get(kid)
        return None if log is None else log.anchor

    def add_consistency(self, kid: str, size1: int, size2: int, proof: Sequence[bytes]) -> bool:
        """Check a consistency proof between two verified heads of ``kid``'s log (``size1 <
        size2``). ``True``: it verified and a pending check is done; ``False``: nothing pending
        matched (stale). A proof that does not verify is a split view (``inconsistent``); it is
        recorded, and the unchecked head is dropped from tracking."""
        log = self._logs.get(kid)
        if log is None or size1 >= size2:
            return False
        a = log.anchor
        if size1 == a.size and size2 in log.unchecked:
            older, newer, unchecked = a, log.unchecked[size2], size2
        elif size2 == a.size and size1 in log.unchecked:
            older, newer, unchecked = log.unchecked[size1], a, size1
        else:
            return False
        try:
            verify_consistency(older.size, newer.size, list(proof), older.root, newer.root)
        except ProofError as exc:
            del log.unchecked[unchecked]
            self._split(
                SplitView(
                    "inconsistent",
                    kid,
                    log.coordinator,
                    older.size,
                    older.root,
                    newer.size,
                    newer.root,
                    f"the consistency proof does not verify ({exc.reason})",
                )
            )
            return True
        self.consistency_checked += 1
        del log.unchecked[unchecked]
        if newer is not a:
            log.anchor = newer
        return True

    def drop_unchecked(self, kid: str, size: int) -> bool:
        """Stop tracking an unchecked head (its proof cannot be obtained); counted."""
        log = self._logs.get(kid)
        if log is None or log.unchecked.pop(size, None) is None:
            return False
        self.unchecked_dropped += 1
        return True

    # ---- the alarm

    def _split(self, view: SplitView) -> None:
        self.split_views.append(view)
        del self.split_views[:-MAX_SPLIT_VIEWS]
        if self._on_split_view is not None:
            self._on_split_view(view)

    def raise_for_split_view(self) -> None:
        """Raise :class:`SplitViewError` for the first split view seen, if any."""
        if self.split_views:
            raise SplitViewError(self.split_views[0])
