"""Hard deadlines for asyncio work, and clean-ups run in the background (no I/O of its own).

``asyncio.wait_for`` waits, without bound, for a cancelled operation to finish its clean-up (a QUIC
close waits out its draining period, a TLS shutdown waits for the peer). :func:`hard_deadline` returns
by the deadline plus a short grace whatever the operation does: on expiry the task is cancelled, and
abandoned if it has not unwound within the grace period. Abandoned tasks and :func:`background`
clean-ups are kept referenced until they finish (so they are not garbage-collected mid-flight), and
their exceptions are retrieved (so asyncio does not log "exception was never retrieved").

:func:`stop_task` / :func:`stop_tasks` are THE bounded stop of a component's own tasks: cancel, wait
at most ``grace_s``, cancel again while waiting (a cancel can be swallowed: Python 3.11's
``wait_for``, used inside nats-py, drops a cancel that arrives as the awaited result does), then
abandon what is still running with one log line. Every ``stop()``/``close()`` uses them instead of an
ad-hoc ``cancel(); await task`` (which hangs forever on a swallowed cancel).

:class:`BoundedExitStack` is an ``AsyncExitStack`` whose async callbacks (``close()``, ``stop()``)
each get at most ``limit_s``: a clean-up that never returns (a client close awaiting a flush that
never ends) is abandoned with one log line, and the stack goes on to the next (the servers after it
are still stopped), so a shutdown is bounded by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final, ParamSpec, TypeVar

from cctf.telemetry import get_logger

__all__ = [
    "CANCEL_GRACE_S",
    "RECANCEL_S",
    "BoundedExitStack",
    "abandon",
    "background",
    "detached_count",
    "hard_deadline",
    "stop_task",
    "stop_tasks",
]

T = TypeVar("T")
P = ParamSpec("P")

#: After the deadline, how long a cancelled task may take to unwind before it is abandoned.
CANCEL_GRACE_S: Final = 0.05

#: While a stop waits, a task still running is cancelled again this often (a swallowed cancel).
RECANCEL_S: Final = 0.1

_log = get_logger("cctf.util.deadline")

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


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a stopped task's failure is not the stopper's: mark it retrieved


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any] | None], grace_s: float, *, what: str = "task"
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them at most ``grace_s`` in all, cancelling again every
    :data:`RECANCEL_S` those still running; never raises what a task raised. Returns the tasks
    still running at the deadline (empty when every one stopped): they are abandoned (kept
    referenced until done) and each is logged once (``task_stuck``, with ``what`` and its name).
    Cancelling the caller abandons every task still running and re-raises."""
    pending: set[asyncio.Task[Any]] = set()
    for task in tasks:
        if task is None:
            continue
        if task.done():
            _retrieve(task)
        else:
            pending.add(task)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(grace_s, 0.0)
    try:
        while pending:
            for task in pending:
                task.cancel()
            left = deadline - loop.time()
            if left <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
            for task in done:
                _retrieve(task)
    except asyncio.CancelledError:
        for task in pending:
            abandon(task)
        raise
    stuck = sorted(pending, key=lambda t: t.get_name())
    for task in stuck:
        abandon(task)
        _log.error("task_stuck", what=what, task=task.get_name(), grace_s=grace_s)
    return stuck


async def stop_task(task: asyncio.Task[Any] | None, grace_s: float, *, what: str = "task") -> bool:
    """:func:`stop_tasks` for one task (``None``: nothing to stop); True when it stopped in time."""
    return not await stop_tasks([task], grace_s, what=what)


class BoundedExitStack(contextlib.AsyncExitStack):
    """An ``AsyncExitStack`` whose every async callback is bounded by ``limit_s`` (see the module
    docstring): a stuck one is cancelled, abandoned and logged (``cleanup_stuck``), never awaited
    forever. Exceptions of a callback propagate as with ``AsyncExitStack``."""

    def __init__(self, limit_s: float = 10.0) -> None:
        super().__init__()
        self._limit_s = limit_s

    def push_async_callback(
        self, callback: Callable[P, Awaitable[T]], /, *args: P.args, **kwds: P.kwargs
    ) -> Callable[P, Awaitable[T]]:
        limit_s = self._limit_s
        what = getattr(callback, "__qualname__", repr(callback))

        async def call() -> None:
            await callback(*args, **kwds)

        async def bounded() -> None:
            try:
                await hard_deadline(call(), limit_s)
            except TimeoutError:
                _log.error("cleanup_stuck", what=what, limit_s=limit_s)

        super().push_async_callback(bounded)
        return callback
