"""Batch sign (pure): many messages -> one log append, ONE signed checkpoint, one ``"tlog"``
envelope per message (wire-protocol.md §3.2).

:class:`BatchLog` is the coordinator's transparency log as the batch-sign stage sees it: the RFC 9162
tree (:class:`~cctf.translog.merkle.MerkleTree`, resumed by the caller from the stored records of the
durable log, ``cctf.translog.logstate``) and the coordinator's hybrid key, whose signed checkpoints
carry origin and key name ``cctf/v1/log/<kid>`` (:func:`cctf.bus_schemas.heads.log_origin`).
:meth:`BatchLog.seal` takes a batch of :class:`BatchItem` and, in this order:

1. builds each item's log entry ``msgpack(["CCTF-LOG-ENTRY-v1", v, type, subjects, suite, kid, iat,
   exp, nonce, payload])`` (:func:`~cctf.bus_schemas.envelope.log_entry_bytes`);
2. appends them to the tree (leaves ``first_index`` .. ``size - 1``);
3. signs ONE checkpoint ``(origin, size, root)`` (C2SP signed note, Ed25519 + ML-DSA-65);
4. seals each item as an envelope with ``auth = ["tlog", subjects, index, proof, [size, root]]``,
   ``proof`` its inclusion proof in the tree of ``size`` leaves.

The result (:class:`SealedBatch`) is what the service publishes (the head first, on every verdict
region's ``cctf.v1.head.<region>.<coordinator>.<size>``, then each envelope on every one of its
subjects) and appends to the durable log (one ``LogBatch`` record ``[origin, first_index, entries,
checkpoint]``). Not thread-safe: one batch at a time (the service runs :meth:`BatchLog.seal` in
one worker thread at a time). A failure in step 3 leaves the tree appended: the caller stops (fail
closed; a restart resumes from the durable log).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import (
    MAX_TLOG_SUBJECTS,
    PROTOCOL_VERSION,
    Envelope,
    TlogAuth,
    TlogHead,
    encode_envelope,
    log_entry_bytes,
)
from cctf.bus_schemas.heads import log_origin
from cctf.bus_schemas.messages import MessageType
from cctf.crypto.keys import SigningKey
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.merkle import MerkleTree
from cctf.translog.note import sign_checkpoint

__all__ = ["MAX_BATCH", "BatchItem", "BatchLog", "SealedBatch", "SignedBatch"]

#: Most messages in one batch (one log record; the coordinator's ``batch_max`` is at most this).
MAX_BATCH: Final = 8192


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One message to batch-sign: its type, EVERY subject it is published on, payload and times."""

    msg_type: MessageType
    subjects: tuple[str, ...]
    payload: bytes
    iat: int
    exp: int
    nonce: bytes | None = None  # fixed only by tests and test vectors

    def __post_init__(self) -> None:
        if not 1 <= len(self.subjects) <= MAX_TLOG_SUBJECTS:
            raise ValueError(f"a batch-signed message has 1..{MAX_TLOG_SUBJECTS} subjects")
        if len(set(self.subjects)) != len(self.subjects):
            raise ValueError("a batch-signed message lists a subject twice")
        if len(self.payload) > L.MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {L.MAX_PAYLOAD_BYTES}")
        if not 0 <= self.iat <= self.exp:
            raise ValueError("iat must be <= exp")


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """One batch after steps 1-3: the checkpoint (a signed note) of the tree after it and the log
    entries (leaves ``first_index`` ..): all its ``LogBatch`` record needs. Its envelopes (step 4)
    come from :meth:`BatchLog.envelopes`."""

    origin: str
    first_index: int
    size: int
    root: bytes
    checkpoint: str
    entries: tuple[bytes, ...]
    items: tuple[BatchItem, ...]
    types: tuple[str, ...]
    nonces: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """One signed batch: the checkpoint (a signed note) of the tree after it, the log entries
    (leaves ``first_index`` ..), and the envelopes in item order (each the same bytes on every
    subject of its item)."""

    origin: str
    first_index: int
    size: int
    root: bytes
    checkpoint: str
    entries: tuple[bytes, ...]
    envelopes: tuple[bytes, ...]


class BatchLog:
    """The coordinator's log: a Merkle tree and the key that signs its checkpoints (pure)."""

    def __init__(self, key: SigningKey, tree: MerkleTree | None = None) -> None:
        self._key = key
        self.origin = log_origin(key.kid)
        self.tree = tree if tree is not None else MerkleTree()

    @property
    def size(self) -> int:
        return self.tree.size

    def seal(self, items: Sequence[BatchItem]) -> SealedBatch:
        """Steps 1-4 of the module doc for one batch of 1..:data:`MAX_BATCH` items."""
        signed = self.sign(items)
        return SealedBatch(
            signed.origin,
            signed.first_index,
            signed.size,
            signed.root,
            signed.checkpoint,
            signed.entries,
            self.envelopes(signed),
        )

    def sign(self, items: Sequence[BatchItem]) -> SignedBatch:
        """Steps 1-3 for one batch of 1..:data:`MAX_BATCH` items (the tree is appended)."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} messages")
        key, tree = self._key, self.tree
        suite, kid = key.suite.value, key.kid
        nonces = tuple(
            it.nonce if it.nonce is not None else os.urandom(L.NONCE_BYTES) for it in items
        )
        types = tuple(it.msg_type.value for it in items)
        entries = tuple(
            log_entry_bytes(  # 1
                v=PROTOCOL_VERSION,
                type=t,
                subjects=list(it.subjects),
                suite=suite,
                kid=kid,
                iat=it.iat,
                exp=it.exp,
                nonce=nonce,
                payload=it.payload,
            )
            for it, t, nonce in zip(items, types, nonces, strict=True)
        )
        first = tree.size
        for entry in entries:  # 2
            tree.append(entry)
        size = tree.size
        root = tree.root()
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, key)  # 3
        return SignedBatch(
            self.origin, first, size, root, note, entries, tuple(items), types, nonces
        )

    def envelopes(self, signed: SignedBatch) -> tuple[bytes, ...]:
        """Step 4 of a batch signed by :meth:`sign` (its proofs are against its own head, so later
        batches may have been signed since)."""
        key = self._key
        suite, kid, first = key.suite.value, key.kid, signed.first_index
        head = TlogHead(signed.size, signed.root)
        proofs = self.tree.inclusion_proofs(first, signed.size)
        return tuple(
            encode_envelope(  # 4
                Envelope(
                    v=PROTOCOL_VERSION,
                    type=t,
                    suite=suite,
                    kid=kid,
                    iat=it.iat,
                    exp=it.exp,
                    nonce=nonce,
                    payload=it.payload,
                    auth=TlogAuth(list(it.subjects), first + i, proofs[i], head),
                )
            )
            for i, (it, t, nonce) in enumerate(
                zip(signed.items, signed.types, signed.nonces, strict=True)
            )
        )
