"""NATS/JetStream header names CCTF sets or reads, in one place (instead of string literals)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXPECTED_LAST_MSG_ID",
    "EXPECTED_LAST_SEQUENCE",
    "EXPECTED_LAST_SUBJECT_SEQUENCE",
    "EXPECTED_STREAM",
    "MSG_ID",
]

#: De-duplication id: a publish with an id seen within the stream's duplicate window lands once.
MSG_ID: Final = "Nats-Msg-Id"
#: The publish is refused unless the subject's last stored sequence is this value.
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
#: The publish is refused unless the stream's last sequence is this value.
EXPECTED_LAST_SEQUENCE: Final = "Nats-Expected-Last-Sequence"
#: The publish is refused unless the stream's last message id is this value.
EXPECTED_LAST_MSG_ID: Final = "Nats-Expected-Last-Msg-Id"
#: The publish is refused unless it lands in this stream.
EXPECTED_STREAM: Final = "Nats-Expected-Stream"
