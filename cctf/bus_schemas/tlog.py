"""Verifier-side types of the ``"tlog"`` authenticator (docs/wire-protocol.md §3.2): the injected
head lookup of envelope step 7, and where a verified batch-signed message sits in its log.

The wire structures (:class:`~cctf.bus_schemas.envelope.TlogAuth`) and the log entry bytes
(:func:`~cctf.bus_schemas.envelope.log_entry_bytes`) are in :mod:`cctf.bus_schemas.envelope`; the
head subjects and the log origin in :mod:`cctf.bus_schemas.heads`; the head cache that implements
:class:`HeadLookup` (verifying each signed checkpoint once) in :mod:`cctf.client.heads`.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from cctf.bus_schemas.heads import log_origin

__all__ = ["HeadLookup", "LogPosition"]


class LogPosition(msgspec.Struct, frozen=True, gc=False):
    """Where a verified batch-signed message sits: leaf ``index`` of the log of ``kid`` under the
    verified checkpoint ``(size, root)``."""

    kid: str
    index: int
    size: int
    root: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "origin": log_origin(self.kid),
            "index": self.index,
            "size": self.size,
            "root": self.root.hex(),
        }


class HeadLookup(Protocol):
    """The verified checkpoints a receiver knows (pure; injected into envelope step 7)."""

    def verified_root(self, kid: str, size: int) -> bytes | None:
        """The root hash of the checkpoint of size ``size`` of ``kid``'s log, once its signed note
        verified (both halves, origin and key name ``cctf/v1/log/<kid>``); ``None`` if unknown."""
        ...


#: A lookup MAY also offer ``node_hash(left, right) -> bytes``, equal to
#: :func:`cctf.translog.merkle.node_hash` (e.g. memoised: :class:`cctf.client.inclusion.NodeMemo`);
#: step 7c then hashes the proof's interior nodes with it.
