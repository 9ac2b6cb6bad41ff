"""Hard deadlines for asyncio work, and clean-ups run in the background (no I/O of its own).

``asyncio.wait_for`` waits, without bound, for a cancelled operation to finish its clean-up (a QUIC
close waits out its draining period, a TLS shutdown waits for the peer). :func:`hard_deadline` returns
by the deadline plus a short grace whatever the operation does: on expiry the task is cancelled, and
abandoned if it has not unwound within the grace period. Abandoned tasks and :func:`background`
clean-ups are kept referenced until they finish (so they are not garbage-collected mid-flight), and
their exceptions are retrieved (so asyncio does not log "exception was never retrieved").
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["CANCEL_GRACE_S", "abandon", "background", "detached_count", "hard_deadline"]

T = TypeVar("T")

#: After the deadline, how long a cancelled task may take to unwind before it is abandoned.
CANCEL_GRACE_S: Final = 0.05

# Tasks abandoned after their deadline; kept referenced until they finish so they are not collected.
_DETACHED: set[asyncio.Task[Any]] = set()


def _forget(task: asyncio.Task[Any]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled():
        task.exception()  # mark retrieved: nobody is waiting for it any more


def abandon(task: asyncio.Task[Any]) -> None:
    """Stop waiting for ``task`` (cancel it if still running); keep it referenced until done."""
    if task.done():
        _forget(task)
        return
    task.cancel()
    _DETACHED.add(task)
    task.add_done_callback(_forget)


def background(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a clean-up without waiting for it (kept referenced until done)."""
    task = asyncio.ensure_future(coro)
    _DETACHED.add(task)
    task.add_done_callback(_forget)


def detached_count() -> int:
    """Abandoned or background tasks still running (for tests and metrics)."""
    return len(_DETACHED)


async def hard_deadline(
    coro: Coroutine[Any, Any, T], limit_s: float, grace_s: float = CANCEL_GRACE_S
) -> T:
    """``asyncio.wait_for`` that really returns by ``limit_s`` (+ ``grace_s``): on expiry the task is
    cancelled, and abandoned if it has not unwound within the grace period; raises ``TimeoutError``.
    Cancelling the caller cancels (and abandons) the task too."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(limit_s, 0.0))
    except asyncio.CancelledError:
        abandon(task)
        raise
    if done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if done:
        _forget(task)
    else:
        abandon(task)
    raise TimeoutError
