"""SPIFFE IDs and trust domain names (pure), strictly per the SPIFFE ID specification.

A SPIFFE ID is ``spiffe://<trust-domain><path>``:

1. the scheme is exactly ``spiffe://`` (lower case);
2. the whole ID is at most 2048 bytes (:data:`MAX_SPIFFE_ID_BYTES`, checked before anything else);
3. the trust domain is 1..255 characters of ``[a-z0-9._-]`` -- upper case is *refused*, not folded
   (a certificate naming ``spiffe://Example.org`` is not an X509-SVID of ``example.org``); so are a
   port, userinfo, percent-encoding, a query and a fragment (their characters are not allowed);
4. the path is empty or ``/``-separated segments of ``[a-zA-Z0-9._-]``, none empty (no ``//`` and no
   trailing ``/``), none ``.`` or ``..``.

Why not ``spiffe.SpiffeId`` (py-spiffe 0.3): it lower-cases an upper-case trust domain instead of
refusing it, has no length limit, and its ``re.match(...$)`` accepts a trailing newline
(docs/identity-libraries.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cctf.identity.errors import IdentityError, Reason
from cctf.ids import shown

__all__ = [
    "MAX_SPIFFE_ID_BYTES",
    "MAX_TRUST_DOMAIN_CHARS",
    "SpiffeId",
    "check_trust_domain",
    "parse_spiffe_id",
]

SCHEME: Final = "spiffe://"
MAX_SPIFFE_ID_BYTES: Final = 2048
MAX_TRUST_DOMAIN_CHARS: Final = 255
_TD_RE: Final = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE: Final = re.compile(r"[a-zA-Z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID: ``trust_domain`` (lower case) and ``path`` (``""`` or ``/seg/...``)."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def uri(self) -> str:
        return str(self)

    def member_of(self, trust_domain: str) -> bool:
        """True when this ID belongs to ``trust_domain`` (exact, lower-case comparison)."""
        return self.trust_domain == trust_domain


def check_trust_domain(name: str) -> str:
    """``name`` if it is a valid trust domain name (rule 3), else :class:`IdentityError`
    ``trust_domain_invalid``."""
    if not isinstance(name, str) or not name:
        raise IdentityError(Reason.TRUST_DOMAIN_INVALID, "empty trust domain name")
    if len(name) > MAX_TRUST_DOMAIN_CHARS:
        raise IdentityError(
            Reason.TRUST_DOMAIN_INVALID,
            f"trust domain longer than {MAX_TRUST_DOMAIN_CHARS} characters",
        )
    if _TD_RE.fullmatch(name) is None:
        what = (
            "has upper-case letters (trust domains are lower case)"
            if _TD_RE.fullmatch(name.lower()) is not None
            else "has characters outside [a-z0-9._-]"
        )
        raise IdentityError(Reason.TRUST_DOMAIN_INVALID, f"trust domain {shown(name)} {what}")
    return name


def parse_spiffe_id(value: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID (rules 1-4); :class:`IdentityError` with reason
    ``spiffe_id_too_long``, ``spiffe_id_malformed``, ``trust_domain_invalid`` or
    ``path_segment_invalid``."""
    if not isinstance(value, str):
        raise IdentityError(Reason.SPIFFE_ID_MALFORMED, "a SPIFFE ID must be a string")
    if len(value) > MAX_SPIFFE_ID_BYTES or len(value.encode("utf-8", "surrogatepass")) > (
        MAX_SPIFFE_ID_BYTES
    ):
        raise IdentityError(
            Reason.SPIFFE_ID_TOO_LONG, f"SPIFFE ID longer than {MAX_SPIFFE_ID_BYTES} bytes"
        )
    if not value.startswith(SCHEME):
        raise IdentityError(
            Reason.SPIFFE_ID_MALFORMED, f"SPIFFE ID {shown(value)} does not start with spiffe://"
        )
    rest = value[len(SCHEME) :]
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if not td:
        raise IdentityError(
            Reason.TRUST_DOMAIN_INVALID, f"SPIFFE ID {shown(value)} has no trust domain"
        )
    for ch in ":@?#%":
        if ch in td:
            raise IdentityError(
                Reason.SPIFFE_ID_MALFORMED,
                f"SPIFFE ID {shown(value)}: port, userinfo, query, fragment or percent-encoding "
                "in the trust domain",
            )
    check_trust_domain(td)
    if path:
        for seg in path[1:].split("/"):
            if not seg:
                raise IdentityError(
                    Reason.PATH_SEGMENT_INVALID,
                    f"SPIFFE ID {shown(value)} has an empty path segment",
                )
            if seg in (".", ".."):
                raise IdentityError(
                    Reason.PATH_SEGMENT_INVALID,
                    f"SPIFFE ID {shown(value)} has a {seg!r} path segment",
                )
            if _SEGMENT_RE.fullmatch(seg) is None:
                raise IdentityError(
                    Reason.PATH_SEGMENT_INVALID,
                    f"SPIFFE ID {shown(value)} has characters outside [a-zA-Z0-9._-] in its path",
                )
    return SpiffeId(td, path)
