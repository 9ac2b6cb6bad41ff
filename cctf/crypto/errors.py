"""Crypto errors. Verification raises one of these; it never returns a bool."""

from __future__ import annotations

from cctf.errors import CctfError, ConfigError


class CryptoError(CctfError):
    """Base class for every crypto failure."""


class SignatureError(CryptoError):
    """A signature did not verify, or the authenticator has the wrong shape for its suite."""


class SuiteError(CryptoError):
    """Unknown suite, or a suite the policy forbids (downgrade)."""


class KeyError_(CryptoError):
    """A key is unknown, malformed, or used outside its role or region."""


class KeyFileError(CryptoError, ConfigError):
    """A key or trust file could not be read or is malformed (also a :class:`ConfigError`)."""
