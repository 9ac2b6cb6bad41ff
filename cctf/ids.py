"""The id, qtype and DNS-name grammar shared by every room (pure).

Region, agent, resolver and coordinator ids match ``[a-z0-9][a-z0-9-]{0,31}``; qtypes are upper-case
mnemonics. ``crypto`` (trust entries) and ``bus_schemas`` (subjects) both need these rules, so they
live below both.
"""

from __future__ import annotations

import re
from typing import Final

from cctf.errors import CctfError

__all__ = ["IdError", "check_id", "check_qtype", "shown"]

_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_QTYPE_RE: Final = re.compile(r"[A-Z][A-Z0-9]{0,9}")


class IdError(CctfError, ValueError):
    """An id, a qtype, a DNS name or a subject (token) is malformed."""


_SHOWN: Final = 40  # characters of a refused value quoted in an error message


def shown(value: object) -> str:
    """``repr(value)``, cut to a bounded length: error messages stay one short line."""
    text = repr(value)
    if len(text) <= _SHOWN + 2:
        return text
    size = f"{len(value)} chars" if isinstance(value, str) else type(value).__name__
    return f"{text[: _SHOWN + 1]}'... ({size})"


def check_id(value: str, what: str = "identifier") -> str:
    """Validate a region, agent, resolver or coordinator id: ``[a-z0-9][a-z0-9-]{0,31}``."""
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise IdError(f"invalid {what} {shown(value)}: must match [a-z0-9][a-z0-9-]{{0,31}}")
    return value


def check_qtype(value: str) -> str:
    if not isinstance(value, str) or _QTYPE_RE.fullmatch(value) is None:
        raise IdError(
            f"invalid qtype {shown(value)}: expected an upper-case mnemonic like A or AAAA"
        )
    return value
