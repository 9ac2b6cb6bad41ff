"""``cctf.bus.batchwrite``: the bytes of a batch write are, message for message, what nats-py's own
``Client.publish`` encoder produces (its ``_send_publish`` on an unconnected client only appends the
command to the pending buffer, which is read back here), and what it refuses is refused."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats import errors as nats_errors
from nats.aio.client import Client

from cctf.bus.batchwrite import (
    _parse_block,
    check_message,
    header_block,
    hpub_command,
    id_header_block,
)

_token = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=20,
).filter(lambda k: all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in k))
_value = st.text(max_size=40)
_subject = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=60
)


def _nats_py_bytes(subject: str, reply: str, payload: bytes, headers: dict[str, str]) -> bytes:
    nc = Client()
    asyncio.run(nc._send_publish(subject, reply, payload, len(payload), headers))
    assert len(nc._pending) == 1
    return nc._pending[0]


@settings(max_examples=150, deadline=None)
@given(
    subject=_subject,
    reply=st.one_of(st.just(""), _subject),
    payload=st.binary(max_size=300),
    headers=st.dictionaries(
        st.one_of(_token, st.sampled_from(["Nats-Msg-Id", "Nats-Expected-Stream", " Pad "])),
        _value,
        max_size=4,
    ),
)
def test_a_command_is_byte_for_byte_what_nats_py_sends(
    subject: str, reply: str, payload: bytes, headers: dict[str, str]
) -> None:
    ours = hpub_command(subject, reply, header_block(headers), payload)
    assert ours == _nats_py_bytes(subject, reply, payload, headers)


def test_a_header_block_reads_back_for_the_one_by_one_path() -> None:
    headers = {"Nats-Msg-Id": "v.coord-1.us-east.n1.A.7", "Nats-Expected-Stream": "CCTF_V"}
    assert _parse_block(header_block(headers)) == headers
    assert _parse_block(header_block({})) == {}


def test_what_nats_py_refuses_is_refused() -> None:
    with pytest.raises(nats_errors.BadHeaderError):
        header_block({"bad key": "x"})
    nc = Client()  # max_payload of an unconnected client: 1 MiB (nats-py's default)
    for subject, reply in (("", ""), ("a b", ""), ("a\r\nPUB x", ""), ("a", "r\n")):
        with pytest.raises(nats_errors.BadSubjectError):
            check_message(nc, subject, reply, b"x")
    with pytest.raises(nats_errors.MaxPayloadError):
        check_message(nc, "a", "", b"x" * (nc.max_payload + 1))
    check_message(nc, "cctf.v1.verdict.us-east.n1.A", "_INBOX.x.1", b"x" * nc.max_payload)


@settings(max_examples=100, deadline=None)
@given(msg_id=_value, stream=st.one_of(st.none(), _value))
def test_the_message_id_header_block_is_the_generic_one(msg_id: str, stream: str | None) -> None:
    headers = {"Nats-Msg-Id": msg_id} | ({} if stream is None else {"Nats-Expected-Stream": stream})
    assert id_header_block(msg_id, stream) == header_block(headers)
