"""The one root of every error CCTF raises on purpose, and the one configuration error.

Callers that want "anything CCTF refused" catch :class:`CctfError`; each room subclasses it
(``CryptoError``, ``IdError``, ``ConfigError`` ...). Messages are one line, fit for a CLI.
"""

from __future__ import annotations

__all__ = ["CctfError", "ConfigError"]


class CctfError(Exception):
    """Root of every error CCTF raises on purpose."""


class ConfigError(CctfError, ValueError):
    """A configuration file or value is invalid (the message says which and why, in one line)."""
