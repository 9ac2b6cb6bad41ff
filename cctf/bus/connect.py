"""One connect policy for every CCTF component: all servers listed, fast reconnect, own inbox.

* Every server URL is listed, so a client moves to another node when its node goes away.
* Reconnect is fast: :data:`RECONNECT_WAIT_S` plus a random jitter of up to :data:`RECONNECT_JITTER_S`
  between attempts on the same server (the jitter spreads a herd of clients after a node restart).
* ``initial_retries`` bounds the first connection (each server retried that many times, then
  ``NoServersError``), so a CLI fails fast when NATS is unreachable; once connected, reconnecting is
  unbounded (production) or quick to give up (``for_tests``).
* The inbox prefix is ``_INBOX.<user>`` (:func:`cctf.bus.accounts.inbox_prefix`): request replies and
  consumer deliveries arrive under it, and the server lets each user subscribe only to its own.
* :func:`jetstream` gives a connection's JetStream context with its user's API prefix (the client,
  in account ``CLIENTS``, reaches the streams' account through ``JS.CCTF.API``).
* Errors always go to the log (never the password), then to ``error_cb`` if given.
* ``tls`` (:class:`cctf.bus.tls.ClientTls`): the connection presents that certificate and the
  server maps it to a user (``verify_and_map``, :mod:`cctf.bus.tlsauth`); a ``user`` with an empty
  password then only names the inbox (``_INBOX.<user.name>``) and no user name is sent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from cctf.bus.accounts import NatsUser, inbox_prefix, js_api_prefix
from cctf.bus.tls import ClientTls

__all__ = [
    "RECONNECT_JITTER_S",
    "RECONNECT_WAIT_S",
    "Connection",
    "ErrorCallback",
    "connect",
    "jetstream",
]

#: A live NATS connection (components type against this name, never import nats-py).
Connection = Client

_log = logging.getLogger(__name__)

ErrorCallback = Callable[[Exception], Awaitable[None]]

RECONNECT_WAIT_S: Final = 0.1  # design D1: a client is back on a surviving node at once
RECONNECT_JITTER_S: Final = 0.1


async def connect(
    urls: str | Sequence[str],
    user: NatsUser,
    *,
    name: str,
    for_tests: bool = False,
    initial_retries: int | None = None,
    error_cb: ErrorCallback | None = None,
    tls: ClientTls | None = None,
    **kw: Any,
) -> Client:
    """Connect to NATS as ``user``.

    Production defaults reconnect forever (0.1-0.2 s between attempts on one server); ``for_tests``
    gives up quickly (2 attempts per server, 50 ms apart, 1 s connect timeout).
    ``initial_retries`` (>= 1) bounds only the first connection: each server is tried at most
    ``1 + initial_retries`` times, then ``nats.errors.NoServersError``; once connected, the reconnect
    policy above applies.
    Any nats-py ``connect`` option in ``kw`` overrides these (``inbox_prefix`` excepted: the server
    only lets a user subscribe to its own).
    """
    servers = [urls] if isinstance(urls, str) else list(urls)
    if not servers:
        raise ValueError("no NATS server URL")
    if initial_retries is not None and initial_retries < 1:
        raise ValueError("initial_retries must be >= 1")
    if "inbox_prefix" in kw:
        raise ValueError("the inbox prefix is _INBOX.<user>, fixed by the server permissions")

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
        "inbox_prefix": inbox_prefix(user.name),
        "error_cb": _error_cb,
        "disconnected_cb": _disconnected_cb,
        "reconnected_cb": _reconnected_cb,
        "allow_reconnect": True,
    }
    if user.password or tls is None:
        options.update(user=user.name, password=user.password)
    if tls is not None:
        options["tls"] = tls.context  # the same object on every reconnect: reload() applies
    if for_tests:
        options.update(max_reconnect_attempts=2, reconnect_time_wait=0.05, connect_timeout=1)
    else:
        options.update(
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S + random.uniform(0.0, RECONNECT_JITTER_S),
            connect_timeout=2,
            ping_interval=20,
            max_outstanding_pings=3,
        )
    options.update(kw)
    later = options["max_reconnect_attempts"]
    if initial_retries is not None:
        options["max_reconnect_attempts"] = initial_retries
    nc = Client()
    await nc.connect(**options)
    nc.options["cctf_user"] = user.name  # the fabric user (also when the certificate names it)
    if initial_retries is not None:
        nc.options["max_reconnect_attempts"] = later
        for server in nc._server_pool:  # the first connection's failures do not count later
            server.reconnects = 0
    return nc


def jetstream(conn: Client, *, timeout: float = 5.0) -> JetStreamContext:
    """The JetStream context of ``conn`` with its user's API prefix
    (:func:`cctf.bus.accounts.js_api_prefix`: the client reaches the streams' account through
    ``JS.CCTF.API``)."""
    user = conn.options.get("cctf_user") or conn.options.get("user") or ""
    return conn.jetstream(timeout=timeout, prefix=js_api_prefix(str(user)))
