"""File helpers shared by every room: one bounded reader, one atomic 0600 writer.

Every file CCTF reads (configs, keys, trust, credentials) goes through :func:`read_bounded`, so one size
cap applies everywhere and an oversized or unreadable file gives one clear line, never a traceback.
Every file holding a secret is written by :func:`write_secret_file`: a fresh random temporary name in
the same directory, mode 0600 from creation, ``fsync``, then an atomic ``rename``.
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
    "write_secret_file",
    "write_secret_json",
]

#: The one size cap for configuration, key, trust and credentials files.
MAX_FILE_BYTES: Final = 1 << 20


def read_bounded(path: str | Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``; :class:`ConfigError` if unreadable or larger than ``max_bytes``."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
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
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            line = " ".join(str(exc).split())
            raise ConfigError(f"{what} is not valid YAML: {line}") from None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


def read_document(path: str | Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read and parse a bounded JSON file, or a YAML file when its name ends in ``.yaml``/``.yml``."""
    p = Path(path)
    data = read_bounded(p, what, max_bytes)
    yaml_ok = p.suffix.lower() in (".yaml", ".yml")
    return parse_document(data, f"{what} {p}", yaml_ok=yaml_ok)


def write_secret_file(path: str | Path, data: str | bytes) -> Path:
    """Atomically write ``data`` to ``path`` with mode 0600 (the file is never wider than 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
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


def write_secret_json(path: str | Path, obj: Any) -> Path:
    """:func:`write_secret_file` of ``obj`` as indented JSON."""
    return write_secret_file(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
