"""The demo's log check (issue #9): every head the coordinator published is recorded as it goes by;
when the demo ends (the coordinator stopped, its appends drained) the whole log is re-derived from
``CCTF_LOG`` (:func:`cctf.logmon.monitor.verify_log`: every root, signature and consistency
checked) and every recorded head must be one of the log's heads (same size, same root: no split
view). The result is the demo's last line, ``{"log": {"size": N, "root": "<hex>", "verified":
true}}``."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from cctf.bus.connect import Connection
from cctf.bus_schemas.heads import parse_head_subject
from cctf.crypto.keys import PublicKeySet
from cctf.logmon.monitor import LogMonitor, log_verifier, verify_log
from cctf.translog.checkpoint import Checkpoint
from cctf.translog.errors import TranslogError
from cctf.translog.note import NoteVerifier, open_checkpoint

__all__ = ["HeadRecorder", "check_demo_log", "log_line", "serve_log"]


class HeadRecorder:
    """Records (and verifies) every head published on ``cctf.v1.head.>`` by one coordinator."""

    def __init__(self, coordinator: str, origin: str, key: PublicKeySet) -> None:
        self.coordinator = coordinator
        self._origin = origin
        self._verifier = NoteVerifier(origin, key)
        self.heads: dict[int, Checkpoint] = {}
        self.bad = 0

    async def start(self, conn: Connection) -> None:
        await conn.subscribe("cctf.v1.head.>", cb=self._on_msg)
        await conn.flush()

    async def _on_msg(self, msg: Any) -> None:
        try:
            parsed = parse_head_subject(msg.subject)
            if parsed.coordinator != self.coordinator:
                return
            cp = open_checkpoint(msg.data, self._verifier, self._origin)
        except (TranslogError, ValueError):
            self.bad += 1
            return
        known = self.heads.get(cp.size)
        if known is not None and known.root_hash != cp.root_hash:
            self.bad += 1  # two heads of one size: a split view
        self.heads.setdefault(cp.size, cp)


async def check_demo_log(
    conn: Connection, log_id: str, key: PublicKeySet, recorder: HeadRecorder | None
) -> dict[str, Any]:
    """``{"size", "root", "verified"}`` (plus ``"heads"`` checked, and ``"error"`` when not
    verified) of the demo coordinator's log."""
    try:
        mirror, _records = await verify_log(
            conn, log_id, lambda origin: log_verifier(log_id, origin, key=key)
        )
        size = 0 if mirror is None else mirror.size
        root = b"" if mirror is None or mirror.last is None else mirror.last.root
        heads = recorder.heads if recorder is not None else {}
        if recorder is not None and recorder.bad:
            raise TranslogError("split-view", f"{recorder.bad} published heads did not verify")
        for cp in heads.values():
            stored = None if mirror is None else mirror.head_at(cp.size)
            if stored is None or stored.root != cp.root_hash:
                raise TranslogError(
                    "head-not-logged", f"published head of size {cp.size} is not the log's"
                )
        if mirror is not None and mirror.heads:
            mirror.check_consistency(mirror.heads[0].size, mirror.size)
    except TranslogError as exc:
        return {"size": 0, "root": "", "verified": False, "error": str(exc)[:300]}
    return {"size": size, "root": root.hex(), "verified": True}


def log_line(obj: dict[str, Any], *, as_json: bool) -> str:
    """The demo's last line: ``{"log": {"size": N, "root": "<hex>", "verified": true}}`` (JSON) or
    ``log: size=N root=<hex> verified``."""
    if as_json:
        return json.dumps(
            {"log": {k: obj[k] for k in ("size", "root", "verified", "error") if k in obj}}
        )
    state = "verified" if obj["verified"] else f"NOT verified: {obj.get('error')}"
    return f"log: size={obj['size']} root={obj['root']} {state}"


async def serve_log(
    conn: Connection, log_id: str, key: PublicKeySet, stack: contextlib.AsyncExitStack
) -> LogMonitor:
    """``cctf log serve`` in the demo: a monitor following ``log_id`` and answering the log API
    (the subscribers' consistency proofs); stopped by ``stack``."""
    monitor = LogMonitor(conn, log_id, lambda origin: log_verifier(log_id, origin, key=key))
    await monitor.start()
    stack.push_async_callback(monitor.stop)
    return monitor
