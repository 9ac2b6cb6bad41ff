"""The one bounded reader on files that are not regular files: never a wedge, one line, the cap."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cctf.errors import ConfigError
from cctf.util.files import MAX_FILE_BYTES, read_bounded, read_document


def test_a_fifo_nobody_writes_to_is_an_error_not_a_wedge(tmp_path: Path) -> None:
    fifo = tmp_path / "creds.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    # would block in open() for ever without O_NONBLOCK; read as an empty document instead
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        read_document(fifo, "credentials file")
    assert time.monotonic() - started < 2
    assert "\n" not in str(info.value)


def test_a_pipe_with_a_writer_is_read_to_its_end(tmp_path: Path) -> None:
    # like `--trust <(cat trust.json)`: the writer holds the pipe open before the reader comes
    fifo = tmp_path / "trust.json"
    os.mkfifo(fifo)
    body = b'{"ok": "' + b"x" * 200_000 + b'"}'  # several pipe buffers
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_RDWR)  # O_RDWR: opens at once, keeps a writer on the pipe
        opened.set()
        os.write(fd, body[:1000])
        time.sleep(0.2)  # the reader is already blocked in read() by now
        with os.fdopen(fd, "wb") as fh:
            fh.write(body[1000:])

    thread = threading.Thread(target=writer)
    thread.start()
    opened.wait(5)
    try:
        assert read_bounded(fifo, "trust file") == body
    finally:
        thread.join(5)


def test_an_endless_device_stops_at_the_cap() -> None:
    with pytest.raises(ConfigError, match=f"larger than {MAX_FILE_BYTES} bytes"):
        read_bounded("/dev/zero", "config")
