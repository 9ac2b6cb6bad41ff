"""Typed configuration: msgspec structs read from YAML or JSON, with one-line errors (pure but for the
one bounded read in :func:`load_config`).

Every component config is a :class:`ConfigStruct` subclass: unknown fields are refused, ranges are
``Annotated[int, msgspec.Meta(ge=..., le=...)]`` and cross-field rules live in ``__post_init__``
(raise ``ValueError``). :func:`load_config` reads the file through the one bounded reader
(``cctf.util.files``), so every config file has the same size cap, and turns every problem into a
:class:`~cctf.errors.ConfigError` naming the file and the field::

    agent config a.yaml: Expected `int` >= 100 - at `$.round_ms`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec

from cctf.errors import ConfigError
from cctf.util.files import read_document

__all__ = ["ConfigError", "ConfigStruct", "convert_config", "load_config"]

T = TypeVar("T")


class ConfigStruct(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config struct: unknown fields are an error; instances are immutable.

    ``kw_only`` is not inherited by msgspec: declare subclasses ``class X(ConfigStruct, kw_only=True)``.
    """


def convert_config(obj: Any, type_: type[T], where: str) -> T:
    """``obj`` (parsed YAML/JSON) as ``type_``; :class:`ConfigError` ``"<where>: <problem>"``."""
    try:
        return msgspec.convert(obj, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None


def load_config(path: str | Path, type_: type[T], what: str) -> T:
    """Read ``path`` (YAML when it ends in ``.yaml``/``.yml``, else JSON) as ``type_``."""
    p = Path(path)
    return convert_config(read_document(p, what), type_, f"{what} {p}")
