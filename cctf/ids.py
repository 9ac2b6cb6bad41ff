"""The id, qtype and DNS-name grammar shared by every room (pure).

Region, agent, resolver and coordinator ids match ``[a-z0-9][a-z0-9-]{0,31}``; qtypes are upper-case
mnemonics. ``crypto`` (trust entries) and ``bus_schemas`` (subjects) both need these rules, so they
live below both.
"""

from __future__ import annotations

import re
from typing import Final

from cctf.errors import CctfError

__all__ = ["IdError", "check_id", "check_qtype"]

_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_QTYPE_RE: Final = re.compile(r"[A-Z][A-Z0-9]{0,9}")


class IdError(CctfError, ValueError):
    """An id, a qtype, a DNS name or a subject (token) is malformed."""


def check_id(value: str, what: str = "identifier") -> str:
    """Validate a region, agent, resolver or coordinator id: ``[a-z0-9][a-z0-9-]{0,31}``."""
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise IdError(f"invalid {what} {value!r}: must match [a-z0-9][a-z0-9-]{{0,31}}")
    return value


def check_qtype(value: str) -> str:
    if not isinstance(value, str) or _QTYPE_RE.fullmatch(value) is None:
        raise IdError(f"invalid qtype {value!r}: expected an upper-case mnemonic like A or AAAA")
    return value
