"""One connect policy for every CCTF component: all servers listed, reconnect, errors logged."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
from nats.aio.client import Client

from cctf.bus.accounts import NatsUser

__all__ = ["Connection", "ErrorCallback", "connect"]

#: A live NATS connection (components type against this name, never import nats-py).
Connection = Client

_log = logging.getLogger(__name__)

ErrorCallback = Callable[[Exception], Awaitable[None]]


async def connect(
    urls: str | Sequence[str],
    user: NatsUser,
    *,
    name: str,
    for_tests: bool = False,
    error_cb: ErrorCallback | None = None,
    **kw: Any,
) -> Client:
    """Connect to NATS as ``user``.

    Production defaults reconnect forever (2 s between attempts per server); ``for_tests`` gives
    up quickly (2 attempts per server, 50 ms apart, 1 s connect timeout). Any nats-py ``connect``
    option in ``kw`` overrides these. Errors always go to the log (never the password), then to
    ``error_cb`` if given.
    """
    servers = [urls] if isinstance(urls, str) else list(urls)

    async def _error_cb(exc: Exception) -> None:
        _log.warning("nats client %s (user %s): %s", name, user.name, exc)
        if error_cb is not None:
            await error_cb(exc)

    async def _disconnected_cb() -> None:
        _log.info("nats client %s disconnected", name)

    async def _reconnected_cb() -> None:
        _log.info("nats client %s reconnected", name)

    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "user": user.name,
        "password": user.password,
        "error_cb": _error_cb,
        "disconnected_cb": _disconnected_cb,
        "reconnected_cb": _reconnected_cb,
        "allow_reconnect": True,
    }
    if for_tests:
        options.update(max_reconnect_attempts=2, reconnect_time_wait=0.05, connect_timeout=1)
    else:
        options.update(
            max_reconnect_attempts=-1,
            reconnect_time_wait=2,
            connect_timeout=5,
            ping_interval=20,
            max_outstanding_pings=3,
        )
    options.update(kw)
    nc: Client = await nats.connect(**options)
    return nc
