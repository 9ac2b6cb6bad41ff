"""``LogApiClient``: asks the log API (``cctf log serve``) over NATS request-reply and checks every
reply's shape; proofs are verified by the caller against heads it verified itself (the API is never
trusted). It is a :class:`cctf.client.headfeed.ConsistencySource` (``consistency(log_id, size1,
size2)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from cctf.bus.connect import Connection
from cctf.bus.rpc import RpcError, request
from cctf.translog.api import (
    ApiError,
    api_subject,
    decode_reply,
    reply_hash,
    reply_note,
    reply_proof,
    reply_uint,
)

__all__ = ["LogApiClient"]


class LogApiClient:
    def __init__(self, conn: Connection, *, timeout_s: float = 2.0) -> None:
        self._conn = conn
        self._timeout = timeout_s

    async def _ask(self, log_id: str, op: str, req: dict[str, Any]) -> dict[str, Any]:
        try:
            data = await request(
                self._conn,
                api_subject(log_id, op),
                msgspec.msgpack.encode(req),
                timeout_s=self._timeout,
            )
        except RpcError as exc:  # nobody subscribes (a definite answer of NATS), or no answer
            reason = "not-served" if str(exc).startswith("no responder") else "unavailable"
            raise ApiError(reason, str(exc)) from None
        return decode_reply(data)

    async def head(self, log_id: str) -> tuple[int, bytes, str]:
        """``(size, root, signed note)`` of the log's newest head."""
        r = await self._ask(log_id, "head", {})
        return reply_uint(r, "size"), reply_hash(r, "root"), reply_note(r)

    async def inclusion(self, log_id: str, index: int, size: int | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"index": index}
        if size is not None:
            req["size"] = size
        r = await self._ask(log_id, "inclusion", req)
        return {
            "index": reply_uint(r, "index"),
            "size": reply_uint(r, "size"),
            "root": reply_hash(r, "root"),
            "proof": reply_proof(r),
            "checkpoint": reply_note(r),
        }

    async def consistency(self, log_id: str, size1: int, size2: int) -> Sequence[bytes]:
        """The proof that the head of ``size1`` is a prefix of the head of ``size2``."""
        r = await self._ask(log_id, "consistency", {"size1": size1, "size2": size2})
        if (reply_uint(r, "size1"), reply_uint(r, "size2")) != (size1, size2):
            raise ApiError("bad-reply", "the reply is for other sizes")
        return reply_proof(r)

    async def entries(self, log_id: str, start: int, count: int) -> list[bytes]:
        r = await self._ask(log_id, "entries", {"start": start, "count": count})
        entries = r.get("entries")
        if reply_uint(r, "start") != start or not isinstance(entries, list):
            raise ApiError("bad-reply", "not the entries asked for")
        if not all(isinstance(e, bytes) for e in entries) or not 0 < len(entries) <= count:
            raise ApiError("bad-reply", "entries are 1..count byte strings")
        return list(entries)
