"""Presentation of verified verdicts (pure): JSON and one-line text forms."""

from __future__ import annotations

import json

from wirefactories import make_verdict, make_world

from cctf.bus_schemas.messages import DnssecState, Outcome, VoterRecord, VoterState
from cctf.client.present import verdict_line, verdict_to_json

NAME = "example.com."


def test_verdict_to_json_and_line() -> None:
    world = make_world()
    coordinator = world.coordinator.principal
    v = make_verdict(
        NAME,
        round=42,
        k=2,
        n=3,
        voters=[
            VoterRecord("agent-a/r1", VoterState.AGREE, b""),
            VoterRecord("agent-a/r2", VoterState.AGREE, b""),
            VoterRecord("agent-b/r1", VoterState.UNAVAILABLE, b""),
        ],
        coordinator=coordinator,
        seq=9,
    )
    out = verdict_to_json(v)
    assert out == {
        "name": NAME,
        "qtype": "A",
        "round": 42,
        "outcome": "trusted",
        "rcode": 0,
        "answer": ["93.184.216.34"],
        "agree": ["agent-a/r1", "agent-a/r2"],
        "disagree": [],
        "unavailable": ["agent-b/r1"],
        "seq": 9,
        "coordinator": coordinator,
        "issued_ms": v.issued_ms,
        "expires_ms": v.expires_ms,
        "k": 2,
        "n": 3,
        "dnssec": "indeterminate",
        "lkg": None,
    }
    json.dumps(out)
    assert verdict_line(v) == "example.com. A round=42 TRUSTED 93.184.216.34 agree=2/3"
    nx = make_verdict(NAME, round=1, rcode=3, answer=[])
    assert verdict_line(nx) == "example.com. A round=1 TRUSTED rcode=NXDOMAIN agree=3/3"
    disputed = make_verdict(NAME, round=1, outcome=Outcome.DISPUTED)
    assert verdict_line(disputed) == "example.com. A round=1 DISPUTED agree=0/3"
    unknown_rcode = make_verdict(NAME, round=1, rcode=23, answer=[])
    assert "rcode=23" in verdict_line(unknown_rcode)


def test_dnssec_state_in_json_and_line() -> None:
    for state in (DnssecState.SECURE, DnssecState.INSECURE):
        v = make_verdict(NAME, round=1, dnssec=state)
        assert verdict_to_json(v)["dnssec"] == state.value
        assert (
            verdict_line(v)
            == f"example.com. A round=1 TRUSTED 93.184.216.34 agree=3/3 dnssec={state}"
        )
    plain = make_verdict(NAME, round=1)
    assert verdict_to_json(plain)["dnssec"] == "indeterminate"
    assert "dnssec" not in verdict_line(plain)
    disputed = make_verdict(NAME, round=1, outcome=Outcome.DISPUTED)
    assert verdict_to_json(disputed)["dnssec"] == "indeterminate"


def test_verdict_line_escapes_what_could_end_the_line_or_drive_a_terminal() -> None:
    # names and answers come from the bus; a verified verdict still must not inject into a terminal
    # or a line-oriented reader of `cctf watch`
    v = make_verdict(
        "evil\x1b[2J\n.example.",
        qtype="TXT",
        answer=['"ok"', "x\ry\u2028z\x00", "ünïcode"],
        voters=[VoterRecord("agent-a/r1", VoterState.AGREE, b"")],
    )
    line = verdict_line(v)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert line.isprintable()
    assert line.startswith("evil\\x1b[2J\\n.example. TXT round=")
    assert '"ok" x\\ry\\u2028z\\x00 ünïcode agree=1/3' in line
    assert verdict_to_json(v)["answer"] == ['"ok"', "x\ry\u2028z\x00", "ünïcode"]  # exact
