"""NATS subject builders and parsers.

Every token that comes from outside (region, agent id, DNS name, qtype) is validated or encoded so that
no input can place ``.``, ``*``, ``>`` or white space into a subject: a DNS name can never widen or
redirect a subscription or a permission.

Subjects (``v1`` is the protocol version)::

    cctf.v1.vote.<region>.<agent>                       signed ballots of resolver votes
    cctf.v1.evidence.<region>.<agent>                   signed evidence ballots (identity)
    cctf.v1.verdict.<region>.<name-token>.<qtype>       signed verdicts (DNS; qtype upper-case)
    cctf.v1.verdict.<region>.<name-token>.<qtype>.<coordinator>
                                                        the same, per coordinator (k-of-m, HA)
    cctf.v1.verdict.<region>.<subject-token>.<kind>     signed identity verdicts (kind lower-case)
    cctf.v1.verdict.<region>.<subject-token>.<kind>.<coordinator>
                                                        the same, per coordinator (k-of-m, HA)
    cctf.v1.control.<region>                            signed safe-mode announcements
    cctf.v1.control.<region>.<coordinator>              the same, per coordinator (k-of-m)
    cctf.v1.operator.<region>                           signed operator commands (safe mode)

Names (:func:`normalize_name`, the one normaliser): lower-cased, absolute (trailing dot), RFC 1035
bounded (at most 253 UTF-8 octets without the trailing dot, 1..63 octets per label).

Name tokens (:func:`name_token`): the *escaped* form maps each character of the name without its
trailing dot: ``[a-z0-9-]`` stands for itself, ``.`` becomes ``_``, and every other byte of its UTF-8
form becomes ``~`` followed by two lower-case hex digits (``_`` itself is ``~5f``, ``~`` is ``~7e``).
The root name is the token ``~2e``. When the escaped form would be longer than
:data:`~cctf.bus_schemas.limits.MAX_NAME_TOKEN_CHARS` characters, the token is the *digest* form
``=`` followed by the lower-case, unpadded RFC 4648 base32 of SHA-256 of the normalised name's UTF-8
bytes (53 characters). No escaped token starts with ``=``, so the mapping is injective (the digest form
as far as SHA-256 is collision-resistant), every token is at most 253 characters and every verdict
subject at most 313 bytes. Escaped tokens are reversible (:func:`name_from_token`); digest tokens are
matched by re-encoding the claimed name (:func:`token_matches`).

Identity verdict subjects (:func:`identity_verdict_subject`) end in the lower-case identity kind
(``bundle``, ``jwks``, ``mtls``), never an upper-case qtype, so they never meet a DNS verdict subject.
Their subject token (:func:`identity_token`) is always a digest: ``=`` followed by the lower-case,
unpadded base32 of ``H("CCTF-identity-subject-v1" || 0x00 || kind || 0x00 || subject)`` (subject in
UTF-8: printable ASCII, 1..2048 characters). It has the syntax of a digest name token but another
preimage domain, so the two cannot be confused even if read without the last token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from enum import StrEnum
from typing import Final

import msgspec

from cctf.bus_schemas.evidence import IdentityKind
from cctf.bus_schemas.limits import (
    MAX_IDENTITY_SUBJECT_CHARS,
    MAX_LABEL_OCTETS,
    MAX_NAME_OCTETS,
    MAX_NAME_TOKEN_CHARS,
    MAX_SUBJECT_BYTES,
)
from cctf.ids import IdError, check_id, check_qtype, shown

PREFIX: Final = "cctf.v1"
_TOKEN_RE: Final = re.compile(r"(?:[a-z0-9-]|_|~[0-9a-f]{2})+")
#: ``=`` then base32 (RFC 4648, lower case, no padding) of 32 bytes: 52 characters.
_DIGEST_RE: Final = re.compile(r"=[a-z2-7]{52}")
DIGEST_PREFIX: Final = "="
_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
#: A name (without its trailing dot) / a token made of these alone escapes to / from itself, `.`
#: and `_` swapped (the fast paths of :func:`_escaped` and :func:`name_from_token`).
_PLAIN_NAME: Final = _PLAIN | {"."}
_PLAIN_TOKEN: Final = _PLAIN | {"_"}
_IDENTITY_DOMAIN: Final = b"CCTF-identity-subject-v1\x00"
_IDENTITY_SUBJECT_RE: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDENTITY_SUBJECT_CHARS}}}")
_IDENTITY_KINDS: Final = frozenset(k.value for k in IdentityKind)


#: Subject and token errors are id errors (one class: ``check_id`` raises it too).
SubjectError = IdError


class Kind(StrEnum):
    VOTE = "vote"
    EVIDENCE = "evidence"
    VERDICT = "verdict"
    CONTROL = "control"
    OPERATOR = "operator"


#: ``Kind(value)`` as a dict look-up (an enum call per subject was a tenth of parsing one).
_KINDS: Final[dict[str, Kind]] = {k.value: k for k in Kind}


def normalize_name(name: str) -> str:
    """Lower-case, absolute (trailing dot) presentation form of a DNS name, RFC 1035 bounded.

    Raises :class:`SubjectError` for an empty name, an empty label, a label over 63 octets or a name
    over 253 octets (UTF-8, without the trailing dot), or text that is not encodable as UTF-8.
    """
    if not isinstance(name, str) or not name:
        raise SubjectError("empty DNS name")
    if len(name) > 4 * MAX_NAME_OCTETS:  # bound the work before lower-casing a hostile string
        raise SubjectError(f"DNS name longer than {MAX_NAME_OCTETS} octets")
    n = name.lower()
    if n == ".":
        return n
    body = n[:-1] if n.endswith(".") else n
    try:
        raw = body.encode("utf-8")
    except UnicodeEncodeError:
        raise SubjectError(f"DNS name {_show(name)} is not encodable as UTF-8") from None
    if len(raw) > MAX_NAME_OCTETS:
        raise SubjectError(f"DNS name {_show(name)} is longer than {MAX_NAME_OCTETS} octets")
    for label in raw.split(b"."):
        if not label:
            raise SubjectError(f"DNS name {_show(name)} has an empty label")
        if len(label) > MAX_LABEL_OCTETS:
            raise SubjectError(
                f"DNS name {_show(name)} has a label longer than {MAX_LABEL_OCTETS} octets"
            )
    return body + "."


def _show(name: str) -> str:
    """A name for an error message: repr, cut to a readable length."""
    return repr(name) if len(name) <= 80 else repr(name[:60]) + f"... ({len(name)} chars)"


def _escaped(n: str) -> str:
    body = n[:-1]
    if _PLAIN_NAME.issuperset(body):  # the common case: nothing but `.` to escape
        return body.replace(".", "_")
    out: list[str] = []
    for ch in body:
        if ch in _PLAIN:
            out.append(ch)
        elif ch == ".":
            out.append("_")
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def _b32_token(raw: bytes) -> str:
    return DIGEST_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _digest(n: str) -> str:
    return _b32_token(hashlib.sha256(n.encode("utf-8")).digest())


def name_token(name: str) -> str:
    """Encode a DNS name as a single, wildcard-free subject token of at most 253 characters.

    Pure, so memoised (bounded LRU, :data:`NAME_TOKEN_CACHE`): a verdict's subject and message id
    in every verdict region, and the same names every round, encode each name once."""
    if isinstance(name, str):
        return _name_token_cached(name)
    return _name_token(name)  # raises SubjectError (not cached: not hashable in general)


#: Names whose token :func:`name_token` keeps (each at most ~0.8 KB with its key).
NAME_TOKEN_CACHE: Final = 16_384


def _name_token(name: str) -> str:
    n = normalize_name(name)
    if n == ".":
        return "~2e"
    token = _escaped(n)
    return token if len(token) <= MAX_NAME_TOKEN_CHARS else _digest(n)


_name_token_cached = functools.lru_cache(maxsize=NAME_TOKEN_CACHE)(_name_token)


def is_digest_token(token: str) -> bool:
    """Whether ``token`` is a well-formed digest-form name token (it names no recoverable name)."""
    if (
        not isinstance(token, str)
        or token[:1] != DIGEST_PREFIX
        or _DIGEST_RE.fullmatch(token) is None
    ):
        return False
    raw = base64.b32decode(token[1:].upper() + "====")  # 52 chars + padding = 32 bytes
    # canonical: the unused low bits of the last character are zero
    return DIGEST_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower() == token


def name_from_token(token: str) -> str:
    """Inverse of :func:`name_token` for escaped tokens; returns the absolute name.

    A digest token names no recoverable name: it raises :class:`SubjectError` (use
    :func:`token_matches` to check a claimed name against any token)."""
    if token == "~2e":
        return "."
    if isinstance(token, str) and token and _PLAIN_TOKEN.issuperset(token):
        # Fast path, the same result: a plain token decodes to itself with `_` -> `.`, and it is
        # canonical iff that name is valid (its escaped form is the token again) and short enough.
        name = token.replace("_", ".") + "."
        # ASCII, lower case and absolute already: ``normalize_name`` returns ``name`` or raises,
        # and it raises only for a name too long, an empty label or one too long
        if len(token) > MAX_NAME_OCTETS or not all(
            0 < len(label) <= MAX_LABEL_OCTETS for label in token.split("_")
        ):
            try:
                normalize_name(name)
            except SubjectError as exc:
                raise SubjectError(
                    f"name token {_show(token)} encodes an invalid name: {exc}"
                ) from None
        if len(token) > MAX_NAME_TOKEN_CHARS:
            raise SubjectError(f"name token {_show(token)} is not in canonical form")
        return name
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise SubjectError(
            f"invalid name token {_show(token) if isinstance(token, str) else token}"
        )
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "~":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
            continue
        raw.append(ord("." if ch == "_" else ch))
        i += 1
    try:
        name = raw.decode("utf-8") + "."
    except UnicodeDecodeError as exc:
        raise SubjectError(f"name token {_show(token)} is not valid UTF-8") from exc
    try:
        canonical = name_token(name)
    except SubjectError as exc:
        raise SubjectError(f"name token {_show(token)} encodes an invalid name: {exc}") from None
    if canonical != token:  # non-canonical spellings (~61 for "a"), or too long for escaped form
        raise SubjectError(f"name token {_show(token)} is not in canonical form")
    return name


def check_token(token: str) -> str:
    """Validate a name token of either form; returns it."""
    if token == "~2e" or is_digest_token(token):
        return token
    name_from_token(token)
    return token


def token_matches(token: str, name: str) -> bool:
    """Whether ``name`` (any spelling) is the name that ``token`` stands for."""
    try:
        return name_token(name) == token
    except SubjectError:
        return False


def check_identity_kind(kind: object) -> IdentityKind:
    """An identity kind (``bundle``, ``jwks``, ``mtls``; exactly, lower case)."""
    if not isinstance(kind, str) or kind not in _IDENTITY_KINDS:
        raise SubjectError(f"invalid identity kind {shown(kind)}: expected bundle, jwks or mtls")
    return IdentityKind(kind)


def check_identity_subject(subject: object) -> str:
    """An identity subject: printable ASCII without spaces, 1..2048 characters."""
    if not isinstance(subject, str) or _IDENTITY_SUBJECT_RE.fullmatch(subject) is None:
        raise SubjectError(
            f"invalid identity subject {shown(subject)}: expected 1..{MAX_IDENTITY_SUBJECT_CHARS}"
            " printable ASCII characters without spaces"
        )
    return subject


def identity_token(kind: IdentityKind | str, subject: str) -> str:
    """The subject token of an identity verdict: ``=`` + base32(H(domain || kind || 0 || subject))."""
    k = check_identity_kind(kind)
    raw = _IDENTITY_DOMAIN + k.value.encode() + b"\x00" + check_identity_subject(subject).encode()
    return _b32_token(hashlib.sha256(raw).digest())


def identity_verdict_subject(
    region: str, kind: IdentityKind | str, subject: str, coordinator: str | None = None
) -> str:
    """``cctf.v1.verdict.<region>.<identity_token(kind, subject)>.<kind>`` (at most 109 bytes);
    with ``coordinator`` that coordinator's own subject ``...<kind>.<coordinator>`` (k-of-m,
    docs/wire-protocol.md §5.6), so the last identity verdict of each coordinator stays readable."""
    token = identity_token(kind, subject)
    out = f"{PREFIX}.verdict.{check_id(region, 'region')}.{token}.{IdentityKind(kind).value}"
    return out if coordinator is None else out + "." + check_id(coordinator, "coordinator")


def identity_verdict_filter(region: str, kind: IdentityKind | str) -> str:
    """Every identity verdict of one kind in one region: ``cctf.v1.verdict.<region>.*.<kind>``."""
    return f"{PREFIX}.verdict.{check_id(region, 'region')}.*.{check_identity_kind(kind).value}"


def evidence_filter(region: str | None = None) -> str:
    return f"{PREFIX}.evidence.{check_id(region, 'region')}.>" if region else f"{PREFIX}.evidence.>"


def vote_subject(region: str, agent: str) -> str:
    return f"{PREFIX}.vote.{check_id(region, 'region')}.{check_id(agent, 'agent id')}"


def evidence_subject(region: str, agent: str) -> str:
    return f"{PREFIX}.evidence.{check_id(region, 'region')}.{check_id(agent, 'agent id')}"


def verdict_subject(region: str, qname: str, qtype: str, coordinator: str | None = None) -> str:
    """``cctf.v1.verdict.<region>.<name-token>.<qtype>``; with ``coordinator`` (deployments of
    several coordinators, see docs/wire-protocol.md §5.6) that coordinator's own subject
    ``...<qtype>.<coordinator>``, so the last verdict of each coordinator stays readable."""
    subject = (
        f"{PREFIX}.verdict.{check_id(region, 'region')}.{name_token(qname)}.{check_qtype(qtype)}"
    )
    if coordinator is not None:
        subject += "." + check_id(coordinator, "coordinator")
    if len(subject) > MAX_SUBJECT_BYTES:  # cannot happen (at most 313 bytes); kept as a guard
        raise SubjectError(f"verdict subject for {qname!r} exceeds {MAX_SUBJECT_BYTES} bytes")
    return subject


def control_subject(region: str, coordinator: str | None = None) -> str:
    """Where the coordinator announces safe mode for ``region``: ``cctf.v1.control.<region>``;
    with ``coordinator`` (several coordinators, k-of-m) its own ``cctf.v1.control.<region>.<coordinator>``."""
    out = f"{PREFIX}.control.{check_id(region, 'region')}"
    return out if coordinator is None else out + "." + check_id(coordinator, "coordinator")


def operator_subject(region: str) -> str:
    """Where an operator's safe-mode command for ``region`` goes: ``cctf.v1.operator.<region>``."""
    return f"{PREFIX}.operator.{check_id(region, 'region')}"


def vote_filter(region: str | None = None) -> str:
    return f"{PREFIX}.vote.{check_id(region, 'region')}.>" if region else f"{PREFIX}.vote.>"


def verdict_filter(region: str) -> str:
    return f"{PREFIX}.verdict.{check_id(region, 'region')}.>"


class ParsedSubject(msgspec.Struct, frozen=True, gc=False):
    # a struct: built in C, untracked by the cyclic GC (one per verified message, issue #9)
    kind: Kind
    region: str
    agent: str | None = None
    qname: str | None = None  # None for a digest token (the name is not recoverable from it)
    qtype: str | None = None  # DNS verdicts only
    token: str | None = None  # name token (DNS) or subject token (identity) of a verdict subject
    identity_kind: IdentityKind | None = None  # identity verdicts only (then qtype is None)
    coordinator: str | None = None  # verdicts on a per-coordinator subject (7 tokens)


def parse_subject(subject: str) -> ParsedSubject:
    """Parse and validate any CCTF subject; raises :class:`SubjectError`."""
    if not isinstance(subject, str) or (
        # at most 4 UTF-8 bytes a character: a short subject is not encoded to be measured
        len(subject) > MAX_SUBJECT_BYTES // 4 and len(subject.encode()) > MAX_SUBJECT_BYTES
    ):
        raise SubjectError("subject missing or too long")
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != "cctf" or parts[1] != "v1":
        raise SubjectError(f"not a cctf.v1 subject: {subject!r}")
    kind = _KINDS.get(parts[2])
    if kind is None:
        raise SubjectError(f"unknown subject kind {parts[2]!r}")
    region = check_id(parts[3], "region")
    if kind is Kind.CONTROL and len(parts) == 5:  # a coordinator's own control subject
        return ParsedSubject(kind, region, coordinator=check_id(parts[4], "coordinator"))
    if kind in (Kind.CONTROL, Kind.OPERATOR):
        if len(parts) != 4:
            raise SubjectError(f"{kind} subject must have 4 tokens: {subject!r}")
        return ParsedSubject(kind, region)
    if kind in (Kind.VOTE, Kind.EVIDENCE):
        if len(parts) != 5:
            raise SubjectError(f"{kind} subject must have 5 tokens: {subject!r}")
        return ParsedSubject(kind, region, agent=check_id(parts[4], "agent id"))
    if len(parts) == 7 and parts[5] not in _IDENTITY_KINDS:  # a per-coordinator DNS verdict
        token, qname = _token_and_name(parts[4])
        return ParsedSubject(
            kind,
            region,
            qname=qname,
            qtype=check_qtype(parts[5]),
            token=token,
            coordinator=check_id(parts[6], "coordinator"),
        )
    if len(parts) not in (6, 7):
        raise SubjectError(f"verdict subject must have 6 tokens (7 per coordinator): {subject!r}")
    if parts[5] in _IDENTITY_KINDS:  # identity verdict: the token is always a digest
        if not is_digest_token(parts[4]):
            raise SubjectError(f"identity verdict subject without a digest token: {subject!r}")
        coordinator = check_id(parts[6], "coordinator") if len(parts) == 7 else None
        return ParsedSubject(
            kind,
            region,
            token=parts[4],
            identity_kind=IdentityKind(parts[5]),
            coordinator=coordinator,
        )
    token, qname = _token_and_name(parts[4])
    return ParsedSubject(kind, region, qname=qname, qtype=check_qtype(parts[5]), token=token)


def _token_and_name(token: str) -> tuple[str, str | None]:
    """:func:`check_token` and the name the token stands for (``None``: a digest token), decoding
    the token once."""
    if token == "~2e":
        return token, "."
    if is_digest_token(token):
        return token, None
    return token, name_from_token(token)
