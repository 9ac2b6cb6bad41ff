"""Batch-signed (``"tlog"``) messages for the verifier tests, built with real Merkle trees and real
hybrid note signatures (the producer's steps, written out for the tests).

Typical use::

    log = TestLog(world.coordinator)
    batch = log.batch([(subjects, verdict), ...], now_ms=now)   # appends, signs one head
    cache = HeadCache(world.trust); cache.add_note(batch.note)
    opened = open_signed(batch.envelopes[0], subjects[0], ..., heads=cache)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from wirefactories import LIFETIME_MS, Identity

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import (
    PROTOCOL_VERSION,
    Envelope,
    TlogAuth,
    TlogHead,
    encode_envelope,
)
from cctf.bus_schemas.envelope import log_entry_bytes as entry_bytes
from cctf.bus_schemas.heads import log_origin
from cctf.bus_schemas.messages import MessageType, Verdict, encode
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.merkle import MerkleTree
from cctf.translog.note import sign_checkpoint

__all__ = ["Batch", "TestLog", "tlog_envelope"]


def tlog_envelope(
    signer: Identity,
    subjects: Sequence[str],
    payload: bytes,
    *,
    now_ms: int,
    index: int,
    proof: Sequence[bytes],
    size: int,
    root: bytes,
    msg_type: str = MessageType.VERDICT.value,
    lifetime_ms: int = LIFETIME_MS,
    nonce: bytes,
) -> bytes:
    env = Envelope(
        v=PROTOCOL_VERSION,
        type=msg_type,
        suite=signer.key.suite.value,
        kid=signer.kid,
        iat=now_ms,
        exp=now_ms + lifetime_ms,
        nonce=nonce,
        payload=payload,
        auth=TlogAuth(list(subjects), index, list(proof), TlogHead(size, root)),
    )
    return encode_envelope(env)


@dataclass
class Batch:
    """One signed head and the envelopes of its entries (in order)."""

    size: int
    root: bytes
    note: bytes
    envelopes: list[bytes]
    first_index: int


@dataclass
class TestLog:
    """A coordinator's log: a tree, and a head signed per :meth:`batch`."""

    signer: Identity
    tree: MerkleTree = field(default_factory=MerkleTree)

    __test__ = False  # not a pytest class

    @property
    def origin(self) -> str:
        return log_origin(self.signer.kid)

    def head_note(self, size: int | None = None) -> bytes:
        n = self.tree.size if size is None else size
        cp = Checkpoint(self.origin, n, self.tree.root(n))
        return sign_checkpoint(cp, self.origin, self.signer.key).encode("utf-8")

    def batch(
        self,
        items: Sequence[tuple[Sequence[str], Verdict | bytes]],
        *,
        now_ms: int,
        lifetime_ms: int = LIFETIME_MS,
        msg_type: str = MessageType.VERDICT.value,
    ) -> Batch:
        """Append one entry per ``(subjects, verdict or payload)``, sign the head, build the
        envelopes (each with its inclusion proof in the tree of the new size)."""
        fields = []
        first = self.tree.size
        for subjects, message in items:
            payload = message if isinstance(message, bytes) else encode(message)
            nonce = os.urandom(L.NONCE_BYTES)
            entry = entry_bytes(
                v=PROTOCOL_VERSION,
                type=msg_type,
                subjects=list(subjects),
                suite=self.signer.key.suite.value,
                kid=self.signer.kid,
                iat=now_ms,
                exp=now_ms + lifetime_ms,
                nonce=nonce,
                payload=payload,
            )
            fields.append((subjects, payload, nonce, self.tree.append(entry)))
        size, root = self.tree.size, self.tree.root()
        envelopes = [
            tlog_envelope(
                self.signer,
                subjects,
                payload,
                now_ms=now_ms,
                index=index,
                proof=self.tree.inclusion_proof(index, size),
                size=size,
                root=root,
                msg_type=msg_type,
                lifetime_ms=lifetime_ms,
                nonce=nonce,
            )
            for subjects, payload, nonce, index in fields
        ]
        return Batch(size, root, self.head_note(), envelopes, first)
