"""Failure classification of one DNS exchange (pure: exception -> vote status and a short detail).

The detail never carries server-controlled text (only exception class names, fixed phrases, HTTP
status codes and errno names), so a hostile resolver cannot inject text into logs or votes.
"""

from __future__ import annotations

import errno
import re
import ssl
from typing import Final

import dns.exception
import dns.message
import dns.query
import httpx2

from cctf.agents.canonical import VoteStatus
from cctf.agents.transports import DohResponseError

__all__ = ["classify"]


def _is_quic_eof(exc: BaseException) -> bool:
    """dnspython's QUIC ``UnexpectedEOF`` (not part of its public API: matched by name and module)."""
    return type(exc).__name__ == "UnexpectedEOF" and type(exc).__module__.startswith("dns.quic")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8 and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


_HTTP_STATUS_RE: Final = re.compile(r"status code (\d{3})")


def classify(exc: BaseException, deadline_s: float) -> tuple[VoteStatus, str]:
    """Map a failure to a vote status and a short detail (no server-controlled text)."""
    timeout_detail = f"timeout after {round(deadline_s * 1000)} ms"
    chain = _causes(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return VoteStatus.ERROR, f"TLS certificate verification failed: {e.verify_message}"
    if isinstance(exc, TimeoutError | dns.exception.Timeout | httpx2.TimeoutException):
        return VoteStatus.TIMEOUT, timeout_detail
    for e in chain:
        if isinstance(e, ssl.SSLWantReadError | ssl.SSLWantWriteError):
            continue  # not a failure: a non-blocking read/write in progress when something else was
        if isinstance(e, ssl.SSLError):
            return VoteStatus.ERROR, f"TLS error: {e.reason or type(e).__name__}"
        if isinstance(e, ConnectionRefusedError):
            return VoteStatus.ERROR, "connection refused"
        if isinstance(e, ConnectionResetError):
            return VoteStatus.ERROR, "connection reset"
    if isinstance(exc, DohResponseError):
        return VoteStatus.ERROR, str(exc)
    if isinstance(exc, dns.query.BadResponse):
        return VoteStatus.ERROR, "response does not match the query"
    if isinstance(exc, dns.message.Truncated):
        return VoteStatus.ERROR, "truncated response"
    if _is_quic_eof(exc):
        return VoteStatus.ERROR, "QUIC connection failed (handshake, certificate or peer close)"
    if isinstance(exc, EOFError):
        return VoteStatus.ERROR, "connection closed by the server"
    if isinstance(exc, dns.exception.DNSException):
        return VoteStatus.ERROR, f"malformed response ({type(exc).__name__})"
    if isinstance(exc, httpx2.HTTPError):
        return VoteStatus.ERROR, f"HTTP failure ({type(exc).__name__})"
    if isinstance(exc, ValueError) and (m := _HTTP_STATUS_RE.search(str(exc))):
        return VoteStatus.ERROR, f"HTTP status {m.group(1)}"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return VoteStatus.ERROR, f"network error ({name})"
    return VoteStatus.ERROR, f"unexpected failure ({type(exc).__name__})"
