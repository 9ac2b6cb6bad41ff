"""Presentation of verified verdicts (pure): the JSON form and the one-line text form.

Used by ``cctf watch``, ``cctf check`` and the demo. Only call these on verdicts that passed
:class:`cctf.client.verify.VerdictVerifier` (whose step 14 guarantees ``expires_ms`` lies within
the envelope's expiry, so the reported validity never exceeds what was signed for).
"""

from __future__ import annotations

from typing import Any, Final

from cctf.bus_schemas.messages import DnssecState, Outcome, Verdict, VoterState

__all__ = ["verdict_line", "verdict_to_json"]


def _voters(v: Verdict, state: VoterState) -> list[str]:
    return [r.voter for r in v.voters if r.state is state]


def verdict_to_json(v: Verdict) -> dict[str, Any]:
    """A JSON-ready dict of a verdict (used by ``cctf watch --json`` and ``cctf check --json``).

    Keys: ``name``, ``qtype``, ``round``, ``outcome``, ``rcode``, ``answer``, ``agree``,
    ``disagree``, ``unavailable`` (voter ids), ``seq``, ``coordinator``, ``issued_ms``,
    ``expires_ms``, ``k``, ``n``, ``dnssec`` (the DNSSEC state of a TRUSTED answer: ``secure``,
    ``insecure`` or ``indeterminate``; always ``indeterminate`` for other outcomes), ``lkg``:
    ``null`` for a fresh verdict; for a Last-Known-Good attestation ``{"age_ms": issued_ms -
    basis_ms, "basis_round": ..., "basis_ms": ...}`` (the age of its evidence when it was issued).
    """
    return {
        "name": v.qname,
        "qtype": v.qtype,
        "round": v.round,
        "outcome": v.outcome.value,
        "rcode": v.rcode,
        "answer": list(v.answer),
        "agree": _voters(v, VoterState.AGREE),
        "disagree": _voters(v, VoterState.DISAGREE),
        "unavailable": _voters(v, VoterState.UNAVAILABLE),
        "seq": v.seq,
        "coordinator": v.coordinator,
        "issued_ms": v.issued_ms,
        "expires_ms": v.expires_ms,
        "k": v.k,
        "n": v.n,
        "dnssec": v.dnssec.value,
        "lkg": (
            {"age_ms": v.staleness_ms, "basis_round": v.basis_round, "basis_ms": v.basis_ms}
            if v.is_lkg
            else None
        ),
    }


_RCODES: Final = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}


def _printable(text: str) -> str:
    """``text`` with every non-printable character (control, line or paragraph separator, any
    whitespace but the plain space) escaped as ``\\n``, ``\\x1b``, ``\\u2028``...: a name or an
    answer can neither end the line nor drive the terminal. (Names and answers come from the bus;
    the JSON form is exact.)"""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def verdict_line(v: Verdict) -> str:
    """``<name> <qtype> round=<r> <OUTCOME> [rcode=<RCODE>] <answer…> agree=<a>/<n> [dnssec=<state>]
    [LKG age=<s>s basis=<round>]``.

    ``rcode=`` appears only for a TRUSTED verdict whose rcode is not NOERROR (e.g. NXDOMAIN);
    ``dnssec=`` only for a TRUSTED verdict whose DNSSEC state is known (``secure`` or ``insecure``;
    not for ``indeterminate``, which the JSON form still states). An LKG attestation ends with
    ``LKG age=<seconds, one decimal>s basis=<basis_round>`` (the outcome stays TRUSTED). Names
    and answers are shown with non-printable characters escaped (one verdict, one line).
    """
    parts = [_printable(v.qname), v.qtype, f"round={v.round}", v.outcome.value.upper()]
    if v.outcome is Outcome.TRUSTED and v.rcode != 0:
        parts.append(f"rcode={_RCODES.get(v.rcode, str(v.rcode))}")
    parts.extend(_printable(a) for a in v.answer)
    parts.append(f"agree={len(_voters(v, VoterState.AGREE))}/{v.n}")
    if v.outcome is Outcome.TRUSTED and v.dnssec is not DnssecState.INDETERMINATE:
        parts.append(f"dnssec={v.dnssec.value}")
    if v.is_lkg:
        parts.append(f"LKG age={v.staleness_ms / 1000:.1f}s basis={v.basis_round}")
    return " ".join(parts)
