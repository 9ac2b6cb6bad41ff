"""NATS subject builders and parsers.

Every token that comes from outside (region, agent id, DNS name, qtype) is validated or encoded so that
no input can place ``.``, ``*``, ``>`` or white space into a subject: a DNS name can never widen or
redirect a subscription or a permission.

Subjects (``v1`` is the protocol version)::

    cctf.v1.vote.<region>.<agent>                       signed ballots of resolver votes
    cctf.v1.evidence.<region>.<agent>                   identity evidence (reserved)
    cctf.v1.verdict.<region>.<name-token>.<qtype>       signed verdicts

Name tokens: the DNS name is lower-cased and made absolute-less (no trailing dot); each character in
``[a-z0-9-]`` stands for itself, ``.`` becomes ``_``, and every other byte of its UTF-8 form becomes
``~`` followed by two lower-case hex digits (``_`` itself is ``~5f``, ``~`` is ``~7e``). The root name
is the token ``~2e``. The mapping is injective and reversible (:func:`name_from_token`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cctf.bus_schemas.limits import MAX_QNAME_CHARS, MAX_SUBJECT_BYTES
from cctf.ids import IdError, check_id, check_qtype

PREFIX: Final = "cctf.v1"
_TOKEN_RE: Final = re.compile(r"(?:[a-z0-9-]|_|~[0-9a-f]{2})+")
_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


#: Subject and token errors are id errors (one class: ``check_id`` raises it too).
SubjectError = IdError


class Kind(StrEnum):
    VOTE = "vote"
    EVIDENCE = "evidence"
    VERDICT = "verdict"


def normalize_name(name: str) -> str:
    """Lower-case, absolute (trailing dot) presentation form of a DNS name."""
    if not isinstance(name, str) or not name:
        raise SubjectError("empty DNS name")
    n = name.lower()
    if not n.endswith("."):
        n += "."
    if len(n) > MAX_QNAME_CHARS:
        raise SubjectError(f"DNS name longer than {MAX_QNAME_CHARS} characters")
    if n != "." and (".." in n or n.startswith(".")):
        raise SubjectError(f"DNS name {name!r} has an empty label")
    try:
        n.encode("utf-8")
    except UnicodeEncodeError:
        raise SubjectError(f"DNS name {name!r} is not encodable as UTF-8") from None
    return n


def name_token(name: str) -> str:
    """Encode a DNS name as a single, wildcard-free subject token."""
    n = normalize_name(name)
    if n == ".":
        return "~2e"
    out: list[str] = []
    for ch in n[:-1]:
        if ch in _PLAIN:
            out.append(ch)
        elif ch == ".":
            out.append("_")
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def name_from_token(token: str) -> str:
    """Inverse of :func:`name_token`; returns the absolute name."""
    if token == "~2e":
        return "."
    if _TOKEN_RE.fullmatch(token) is None:
        raise SubjectError(f"invalid name token {token!r}")
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
        raise SubjectError(f"name token {token!r} is not valid UTF-8") from exc
    if name_token(name) != token:  # reject non-canonical spellings (e.g. ~61 for "a")
        raise SubjectError(f"name token {token!r} is not in canonical form")
    return name


def vote_subject(region: str, agent: str) -> str:
    return f"{PREFIX}.vote.{check_id(region, 'region')}.{check_id(agent, 'agent id')}"


def evidence_subject(region: str, agent: str) -> str:
    return f"{PREFIX}.evidence.{check_id(region, 'region')}.{check_id(agent, 'agent id')}"


def verdict_subject(region: str, qname: str, qtype: str) -> str:
    subject = (
        f"{PREFIX}.verdict.{check_id(region, 'region')}.{name_token(qname)}.{check_qtype(qtype)}"
    )
    if len(subject) > MAX_SUBJECT_BYTES:  # all ASCII; a long non-ASCII name can exceed the cap
        raise SubjectError(f"verdict subject for {qname!r} exceeds {MAX_SUBJECT_BYTES} bytes")
    return subject


def vote_filter(region: str | None = None) -> str:
    return f"{PREFIX}.vote.{check_id(region, 'region')}.>" if region else f"{PREFIX}.vote.>"


def verdict_filter(region: str) -> str:
    return f"{PREFIX}.verdict.{check_id(region, 'region')}.>"


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    kind: Kind
    region: str
    agent: str | None = None
    qname: str | None = None
    qtype: str | None = None


def parse_subject(subject: str) -> ParsedSubject:
    """Parse and validate any CCTF subject; raises :class:`SubjectError`."""
    if not isinstance(subject, str) or len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise SubjectError("subject missing or too long")
    parts = subject.split(".")
    if len(parts) < 5 or parts[0] != "cctf" or parts[1] != "v1":
        raise SubjectError(f"not a cctf.v1 subject: {subject!r}")
    try:
        kind = Kind(parts[2])
    except ValueError:
        raise SubjectError(f"unknown subject kind {parts[2]!r}") from None
    region = check_id(parts[3], "region")
    if kind in (Kind.VOTE, Kind.EVIDENCE):
        if len(parts) != 5:
            raise SubjectError(f"{kind} subject must have 5 tokens: {subject!r}")
        return ParsedSubject(kind, region, agent=check_id(parts[4], "agent id"))
    if len(parts) != 6:
        raise SubjectError(f"verdict subject must have 6 tokens: {subject!r}")
    return ParsedSubject(kind, region, qname=name_from_token(parts[4]), qtype=check_qtype(parts[5]))
