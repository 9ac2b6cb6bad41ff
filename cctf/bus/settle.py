"""Wait until a just-created replicated stream is in place on every node that hosts it.

``add_stream`` returns once the stream's leader has it; a replica (and so the subject interest on
that replica's node) can come a moment later. A publish through such a node in that moment gets
*no responders* (``NoStreamResponseError``). Setup tools (``ensure_streams``) wait here, so that
whoever publishes first after setup finds the stream on whichever node it is connected to.
Components never call this: they retry their (idempotent) publishes instead.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
from nats.js.api import StreamInfo
from nats.js.manager import JetStreamManager

__all__ = ["not_settled", "wait_settled"]


def not_settled(info: StreamInfo, replicas: int) -> str | None:
    """Why ``info``'s stream is not yet on all its ``replicas`` nodes, or ``None`` if it is.

    Replicas the leader reports offline are not waited for (a node that is down stays down)."""
    if replicas <= 1:
        return None
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return "no leader yet"
    peers = cluster.replicas or []
    if len(peers) < replicas - 1:
        return f"{len(peers) + 1} of {replicas} replicas placed"
    lagging = [p.name or "?" for p in peers if not p.offline and not p.current]
    if lagging:
        return "replica(s) not current: " + ", ".join(sorted(lagging))
    return None


async def wait_settled(js: JetStreamManager, name: str, replicas: int, deadline: float) -> None:
    """Poll ``name``'s stream info until :func:`not_settled` is ``None``.

    Raises ``TimeoutError`` (with the last reason) once ``time.monotonic()`` passes ``deadline``."""
    delay = 0.02
    while True:
        try:
            reason = not_settled(await js.stream_info(name), replicas)
        except (nats.errors.Error, TimeoutError) as exc:  # e.g. a leader election under way
            reason = f"stream info failed: {exc!r}"[:200]
        if reason is None:
            return
        if time.monotonic() + delay >= deadline:
            raise TimeoutError(f"stream {name}: {reason}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
