"""File helpers shared by every room: one bounded reader, one atomic 0600 writer.

Every file CCTF reads (configs, keys, trust, credentials) goes through :func:`read_bounded`, so one size
cap applies everywhere and an oversized or unreadable file gives one clear line, never a traceback.
Every file holding a secret is written by :func:`write_secret_file`: a fresh random temporary name in
the same directory, mode 0600 from creation, ``fsync``, then an atomic ``rename``
(:func:`write_file_atomic` is the same for files that may be wider, such as public keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

from cctf.errors import ConfigError

__all__ = [
    "MAX_FILE_BYTES",
    "parse_document",
    "read_bounded",
    "read_document",
    "write_file_atomic",
    "write_secret_file",
    "write_secret_json",
]

StrPath = str | os.PathLike[str]

#: The one size cap for configuration, key, trust and credentials files.
MAX_FILE_BYTES: Final = 1 << 20


def read_bounded(path: StrPath, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``; :class:`ConfigError` if unreadable or larger than ``max_bytes``."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to returns at once (and then reads as empty)
        # instead of wedging the command; cleared again so a pipe with a writer (``<(cmd)``) is
        # read to its end.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            os.set_blocking(fd, True)
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {p} is larger than {max_bytes} bytes")
    return data


def parse_document(data: bytes, what: str, *, yaml_ok: bool) -> Any:
    """JSON, or (when ``yaml_ok``) YAML, which is a superset of JSON. One-line error on bad input."""
    if yaml_ok:
        import yaml  # lazy: only config readers need it

        try:
            return yaml.safe_load(data.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            line = " ".join(str(exc).split())
            raise ConfigError(f"{what} is not valid YAML: {line}") from None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


def read_document(path: StrPath, what: str, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read and parse a bounded JSON file, or a YAML file when its name ends in ``.yaml``/``.yml``."""
    p = Path(path)
    data = read_bounded(p, what, max_bytes)
    yaml_ok = p.suffix.lower() in (".yaml", ".yml")
    return parse_document(data, f"{what} {p}", yaml_ok=yaml_ok)


def write_file_atomic(path: StrPath, data: str | bytes, *, mode: int) -> Path:
    """Atomically replace ``path`` with ``data``: a fresh random temporary name in the same
    directory created with ``mode`` (never wider), ``fsync``, ``rename``, then ``fsync`` of the
    directory. Missing parent directories are created with mode 0700. Readers see the old file or
    the new one, never a torn one; on any error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename durable too
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_secret_file(path: StrPath, data: str | bytes) -> Path:
    """Atomically write ``data`` to ``path`` with mode 0600 (the file is never wider than 0600)."""
    return write_file_atomic(path, data, mode=0o600)


def write_secret_json(path: StrPath, obj: Any) -> Path:
    """:func:`write_secret_file` of ``obj`` as indented JSON."""
    return write_secret_file(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
