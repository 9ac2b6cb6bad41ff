"""Many NATS messages written to a connection in one go (nats-py lives here).

nats-py 2.16 publishes one message per ``Client.publish`` call: each call validates the subject,
builds the header block key by key, formats an ``HPUB`` command and appends it to the client's
pending buffer, which the client's flusher task writes to the socket on the next event-loop turn.
For a batch of hundreds of verdicts that per-call work is most of the publishing cost. nats-py has
no public call that takes several messages, so :class:`BatchWriter` builds the same bytes itself
(:func:`hpub_command`, byte for byte what ``Client.publish`` would send, tested against nats-py's
own encoder) and hands them to the client's pending buffer in one call, through the same internal
path ``Client.publish`` ends in (``_send_command``, then a flusher kick when none is queued):
the same buffer, flusher, size bound and statistics, so ordering with every other publish of the
connection is kept.

The fast path is taken only while the connection is connected and exposes that internal path (a
different nats-py falls back, with a warning once, to one ``Client.publish`` per message); a
message nats-py would refuse (an empty subject or one with whitespace, a payload over the server's
``max_payload``) is refused here with the same error before anything is written, so per message
the outcome is what ``Client.publish`` would give. While reconnecting every message goes through
``Client.publish`` (its bounded reconnect buffer and its errors, unchanged).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nats import errors as nats_errors

from cctf.bus.connect import Connection
from cctf.bus.headers import EXPECTED_STREAM, MSG_ID

__all__ = ["BatchWriter", "OutMessage", "header_block", "hpub_command", "id_header_block"]

_log = logging.getLogger(__name__)

_BAD_SUBJECT: Final = re.compile(r"[ \t\r\n]")  # what nats-py's publish refuses (besides empty)
_HEADER_KEY: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token
_VALUE_NEWLINES: Final = str.maketrans({"\r": " ", "\n": " "})
_HDR_LINE: Final = b"NATS/1.0\r\n"
_CRLF: Final = b"\r\n"
_ID_BLOCK: Final = b"NATS/1.0\r\n%s: %%s\r\n\r\n" % MSG_ID.encode()
_ID_STREAM_BLOCK: Final = b"NATS/1.0\r\n%s: %%s\r\n%s: %%s\r\n\r\n" % (
    MSG_ID.encode(),
    EXPECTED_STREAM.encode(),
)
_MAX_KEYS: Final = 64
_KEYS: dict[str, bytes] = {}  # checked header keys -> b"<key>: " (the few names CCTF sends)
#: Bytes handed to the pending buffer per call (a batch larger than this is several calls).
_CHUNK_BYTES: Final = 1 << 20

#: One message: subject, reply subject ("" for none), header block (:func:`header_block`), payload.
OutMessage = tuple[str, str, bytes, bytes]


def header_block(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block nats-py sends for ``headers`` (keys stripped, empty ones
    skipped; values stripped, CR/LF replaced by spaces); raises ``BadHeaderError`` for a key that is
    not a token, as ``Client.publish`` does."""
    parts = [_HDR_LINE]
    for k, v in headers.items():
        prefix = _KEYS.get(k)
        if prefix is None:
            key = k.strip()
            if not key:
                continue
            if not _HEADER_KEY.fullmatch(key):
                raise nats_errors.BadHeaderError(key)
            prefix = key.encode() + b": "
            if len(_KEYS) < _MAX_KEYS:
                _KEYS[k] = prefix
        parts.append(prefix + v.strip().translate(_VALUE_NEWLINES).encode() + _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def id_header_block(msg_id: str, expected_stream: str | None = None) -> bytes:
    """:func:`header_block` of ``{Nats-Msg-Id: msg_id}`` (and ``Nats-Expected-Stream``), the
    headers of every JetStream publish here, in one formatting step."""
    if expected_stream is None:
        return _ID_BLOCK % _value(msg_id)
    return _ID_STREAM_BLOCK % (_value(msg_id), _value(expected_stream))


def _value(v: str) -> bytes:
    return v.strip().translate(_VALUE_NEWLINES).encode()


def hpub_command(subject: str, reply: str, header: bytes, payload: bytes) -> bytes:
    """The ``HPUB`` protocol command of one message with header block ``header``."""
    n = len(header)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        n,
        n + len(payload),
        header,
        payload,
    )


def check_message(conn: Connection, subject: str, reply: str, payload: bytes) -> None:
    """Raise what ``Client.publish`` raises for this message before sending anything."""
    if not subject or _BAD_SUBJECT.search(subject) or _BAD_SUBJECT.search(reply):
        raise nats_errors.BadSubjectError
    if len(payload) > conn.max_payload:
        raise nats_errors.MaxPayloadError


class BatchWriter:
    """Writes batches of messages to one connection (module doc)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        send = getattr(conn, "_send_command", None)
        flush = getattr(conn, "_flush_pending", None)
        self.fast = callable(send) and callable(flush) and hasattr(conn, "_flush_queue")
        if not self.fast:
            _log.warning("nats-py without the batch write path: one publish per message")

    async def write(self, msgs: Sequence[OutMessage]) -> list[BaseException | None]:
        """Send every message of ``msgs`` in order; per message ``None`` (went out: in the
        connection's buffer, as after ``Client.publish``) or the exception that stopped it.
        ``CancelledError`` passes."""
        conn = self._conn
        if not self.fast or not conn.is_connected or conn.is_draining_pubs:
            return await self._one_by_one(msgs)
        out: list[BaseException | None] = [None] * len(msgs)
        chunk: list[bytes] = []
        held: list[int] = []  # the positions of ``chunk``'s messages
        size = payload_bytes = 0
        for i, (subject, reply, header, payload) in enumerate(msgs):
            try:
                check_message(conn, subject, reply, payload)
            except nats_errors.Error as exc:
                out[i] = exc
                continue
            cmd = hpub_command(subject, reply, header, payload)
            chunk.append(cmd)
            held.append(i)
            size += len(cmd)
            payload_bytes += len(payload)
            if size >= _CHUNK_BYTES:
                await self._send(chunk, held, payload_bytes, out)
                chunk, held, size, payload_bytes = [], [], 0, 0
        if chunk:
            await self._send(chunk, held, payload_bytes, out)
        return out

    async def _send(
        self,
        cmds: list[bytes],
        held: list[int],
        payload_bytes: int,
        out: list[BaseException | None],
    ) -> None:
        conn: Any = self._conn
        try:
            if conn.is_closed:
                raise nats_errors.ConnectionClosedError
            conn.stats["out_msgs"] += len(cmds)
            conn.stats["out_bytes"] += payload_bytes
            await conn._send_command(b"".join(cmds))
            if conn._flush_queue is not None and conn._flush_queue.empty():
                await conn._flush_pending()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (a retry of these resends the same bytes and message ids)
            for i in held:
                out[i] = exc

    async def _one_by_one(self, msgs: Sequence[OutMessage]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        publish = self._conn.publish
        for subject, reply, header, payload in msgs:
            try:
                await publish(subject, payload, reply=reply, headers=_parse_block(header))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                out.append(exc)
            else:
                out.append(None)
        return out


def _parse_block(header: bytes) -> dict[str, str]:
    """The headers of a :func:`header_block` (for the one-by-one path)."""
    lines = header.decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines if line)
