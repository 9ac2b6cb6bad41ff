"""Core NATS request-reply (nats-py lives here): serve a subject, ask a subject.

* :func:`serve` subscribes ``subject`` (a queue group, so several servers share the load) and answers
  each request with ``await handler(subject, data)``; a handler that raises is logged and answered
  with nothing (the requester times out), never crashes the subscription. Requests are handled one at
  a time in arrival order (nats-py runs one task per subscription).
* :func:`request` sends one request and returns the reply's bytes; :class:`RpcError` (one line) on
  timeout, no responders or a closed connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cctf.bus.connect import Connection
from cctf.errors import CctfError

__all__ = ["RpcError", "Served", "request", "serve"]

_log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[bytes]]


class RpcError(CctfError):
    """A request got no answer."""


class Served:
    """A subscription answering requests; :meth:`close` unsubscribes."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    async def close(self) -> None:
        try:
            await self._sub.unsubscribe()
        except Exception as exc:  # a closed connection: nothing left to stop
            _log.debug("unsubscribe failed: %r", exc)


async def serve(
    conn: Connection, subject: str, handler: Handler, *, queue: str = "", max_bytes: int = 1 << 20
) -> Served:
    async def _on(msg: Msg) -> None:
        if not msg.reply or len(msg.data) > max_bytes:
            return
        try:
            answer = await handler(msg.subject, msg.data)
        except Exception:
            _log.exception("request handler failed on %s", msg.subject[:256])
            return
        try:
            await conn.publish(msg.reply, answer)
        except Exception as exc:
            _log.warning("reply on %s failed: %r", msg.subject[:256], exc)

    return Served(await conn.subscribe(subject, queue=queue, cb=_on))


async def request(conn: Connection, subject: str, data: bytes, *, timeout_s: float) -> bytes:
    try:
        msg = await conn.request(subject, data, timeout=timeout_s)
    except nats.errors.NoRespondersError:
        raise RpcError(f"no responder on {subject}") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise RpcError(f"no answer on {subject} within {timeout_s} s") from None
    except nats.errors.Error as exc:
        raise RpcError(f"request on {subject} failed: {exc!r}") from None
    return bytes(msg.data)
