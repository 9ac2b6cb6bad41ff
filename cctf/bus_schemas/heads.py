"""Log heads on the bus (wire-protocol.md §3.2, §7): subjects, the log's origin and key name.

A coordinator that batch-signs (``"tlog"`` authenticator) publishes each signed checkpoint of its
log, BEFORE the verdicts that cite it, on every verdict region's head subject::

    cctf.v1.head.<region>.<coordinator>.<size>      (size: decimal, no leading zero, >= 1)

as the raw C2SP signed-note bytes (UTF-8, at most :data:`MAX_HEAD_BYTES`). It is the one message on
the bus that is not an envelope: a signed note is self-authenticating (both hybrid halves signed by
the coordinator's key under the key name :func:`log_origin`), and the subject only says where to
find it. The checkpoint's origin line and the note's key name are both ``cctf/v1/log/<kid>``.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cctf.ids import IdError, check_id

__all__ = [
    "HEAD_PREFIX",
    "MAX_HEAD_BYTES",
    "HeadSubject",
    "head_filter",
    "head_msg_id",
    "head_subject",
    "log_origin",
    "parse_head_subject",
]

HEAD_PREFIX: Final = "cctf.v1.head"
#: Largest head message (a hybrid signed checkpoint is about 4.6 KB).
MAX_HEAD_BYTES: Final = 16 * 1024
LOG_ORIGIN_PREFIX: Final = "cctf/v1/log/"
_SIZE_RE: Final = re.compile(r"[1-9][0-9]{0,18}")
_KID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def log_origin(kid: str) -> str:
    """``cctf/v1/log/<kid>``: the checkpoint origin line AND the signed-note key name of the log
    of the signer ``kid`` (one log per coordinator key)."""
    if not isinstance(kid, str) or _KID_RE.fullmatch(kid) is None:
        raise IdError(f"key id {kid!r} cannot name a log")
    return LOG_ORIGIN_PREFIX + kid


def head_subject(region: str, coordinator: str, size: int) -> str:
    """``cctf.v1.head.<region>.<coordinator>.<size>``."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 2**63 - 1:
        raise IdError(f"head size {size!r} is not within 1..2^63-1")
    return (
        f"{HEAD_PREFIX}.{check_id(region, 'region')}.{check_id(coordinator, 'coordinator')}.{size}"
    )


def head_filter(region: str) -> str:
    """``cctf.v1.head.<region>.>``: every head of a region (its stream, a client's live copy)."""
    return f"{HEAD_PREFIX}.{check_id(region, 'region')}.>"


def head_msg_id(coordinator: str, size: int) -> str:
    """``Nats-Msg-Id`` of a head: ``head.<coordinator>.<size>`` (a retried publish lands once)."""
    return f"head.{coordinator}.{size}"


@dataclass(frozen=True, slots=True)
class HeadSubject:
    region: str
    coordinator: str
    size: int


def parse_head_subject(subject: str) -> HeadSubject:
    """Parse a head subject exactly (raises :class:`~cctf.ids.IdError`, a ``ValueError``)."""
    if not isinstance(subject, str) or len(subject) > 1024:
        raise IdError("not a head subject")
    parts = subject.split(".")
    if len(parts) != 6 or ".".join(parts[:3]) != HEAD_PREFIX:
        raise IdError(f"{subject[:80]!r} is not a head subject")
    region, coordinator, size = parts[3], parts[4], parts[5]
    check_id(region, "region")
    check_id(coordinator, "coordinator")
    if _SIZE_RE.fullmatch(size) is None or int(size) > 2**63 - 1:
        raise IdError(f"head size {size[:24]!r} is not a canonical decimal >= 1")
    return HeadSubject(region, coordinator, int(size))
