"""Signing keys, public key sets and key ids.

A key id names one public key set under one suite::

    kid = "k" + hex(SHA-256("CCTF-kid-v1" || 0x00 || suite_id || 0x00 || pk_1 || ... || pk_m))[:32]

with the raw public keys in the suite's component order. A key id therefore cannot be re-used with
another suite or another key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from cctf.crypto.errors import KeyFileError, SignatureError, SuiteError
from cctf.crypto.suites import (
    COMPONENTS,
    PUBLIC_KEY_BYTES,
    Component,
    PrivateKey,
    PublicKey,
    SuiteId,
    parse_suite,
    sign_component,
    verify_component,
)
from cctf.errors import ConfigError
from cctf.util.files import read_document, write_secret_json

_KID_DOMAIN = b"CCTF-kid-v1\x00"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyFileError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyFileError(f"{what} is not valid base64") from None


def _file_suite(value: object) -> SuiteId:
    """The suite named in a key or trust file; an unknown suite is a :class:`KeyFileError`."""
    try:
        return parse_suite(str(value))
    except SuiteError as exc:
        raise KeyFileError(str(exc)) from None


def _load_public(component: Component, raw: bytes) -> PublicKey:
    if len(raw) != PUBLIC_KEY_BYTES[component]:
        raise KeyFileError(
            f"{component.value} public key must be {PUBLIC_KEY_BYTES[component]} bytes"
        )
    try:
        if component is Component.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return mldsa.MLDSA65PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyFileError(f"invalid {component.value} public key: {exc}") from None


@dataclass(frozen=True)
class PublicKeySet:
    """The public half of a signing key: one raw public key per suite component."""

    suite: SuiteId
    raw: tuple[bytes, ...]
    _keys: tuple[PublicKey, ...] = field(repr=False, compare=False, default=())
    kid: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        comps = COMPONENTS[self.suite]
        if len(self.raw) != len(comps):
            raise KeyFileError(f"suite {self.suite.value} needs {len(comps)} public keys")
        keys = tuple(_load_public(c, r) for c, r in zip(comps, self.raw, strict=True))
        digest = hashlib.sha256(
            _KID_DOMAIN + self.suite.value.encode() + b"\x00" + b"".join(self.raw)
        ).hexdigest()
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "kid", "k" + digest[:32])

    def verify(self, tbs: bytes, signatures: tuple[bytes, ...] | list[bytes]) -> None:
        """Verify every component signature over ``tbs``; raises :class:`SignatureError`."""
        comps = COMPONENTS[self.suite]
        if len(signatures) != len(comps):
            raise SignatureError(
                f"suite {self.suite.value} needs {len(comps)} signatures, got {len(signatures)}"
            )
        for comp, key, sig in zip(comps, self._keys, signatures, strict=True):
            verify_component(self.suite, comp, key, sig, tbs)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"suite": self.suite.value, "kid": self.kid}
        for comp, raw in zip(COMPONENTS[self.suite], self.raw, strict=True):
            out[comp.value] = _b64(raw)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PublicKeySet:
        suite = _file_suite(obj.get("suite"))
        raw = tuple(_unb64(obj.get(c.value), f"{c.value} public key") for c in COMPONENTS[suite])
        pks = cls(suite, raw)
        if "kid" in obj and obj["kid"] != pks.kid:
            raise KeyFileError(f"key id {obj['kid']!r} does not match its public keys ({pks.kid})")
        return pks


class SigningKey:
    """A private signing key for one suite. ``repr`` never shows secret material."""

    def __init__(self, suite: SuiteId, seeds: tuple[bytes, ...]) -> None:
        comps = COMPONENTS[suite]
        if len(seeds) != len(comps):
            raise KeyFileError(f"suite {suite.value} needs {len(comps)} private seeds")
        keys: list[PrivateKey] = []
        for comp, seed in zip(comps, seeds, strict=True):
            if len(seed) != 32:
                raise KeyFileError(f"{comp.value} seed must be 32 bytes")
            if comp is Component.ED25519:
                keys.append(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
            else:
                keys.append(mldsa.MLDSA65PrivateKey.from_seed_bytes(seed))
        self.suite = suite
        self._seeds = seeds
        self._keys = tuple(keys)
        self.public = PublicKeySet(suite, tuple(_public_raw(k) for k in keys))

    @property
    def kid(self) -> str:
        return self.public.kid

    def __repr__(self) -> str:
        return f"SigningKey(suite={self.suite.value!r}, kid={self.kid!r})"

    @classmethod
    def generate(cls, suite: SuiteId = SuiteId.HYBRID) -> SigningKey:
        return cls(suite, tuple(os.urandom(32) for _ in COMPONENTS[suite]))

    def sign(self, tbs: bytes) -> tuple[bytes, ...]:
        return tuple(
            sign_component(self.suite, comp, key, tbs)
            for comp, key in zip(COMPONENTS[self.suite], self._keys, strict=True)
        )

    def sign_note_text(self, text: bytes) -> tuple[bytes, ...]:
        """Component signatures over a C2SP signed-note text, for :mod:`cctf.translog.note`:
        Ed25519 per RFC 8032 over the text itself, ML-DSA-65 over the text with an empty FIPS 204
        context. Domain separation from :meth:`sign`: a note text never holds a 0x00 byte (refused
        here) while every Ed25519 message of :meth:`sign` does (``label || 0x00 || tbs``), and every
        ML-DSA-65 signature of :meth:`sign` has a non-empty context."""
        if b"\x00" in text:
            raise SignatureError("a note text must not contain a 0x00 byte")
        return tuple(key.sign(text) for key in self._keys)

    def derive_secret(self, label: str) -> bytes:
        """A 32-byte secret for ``label``, derived from the private seeds (HMAC-SHA256): stable for
        this key, unknown to anyone without it, and unrelated for different labels."""
        return hmac.new(
            b"".join(self._seeds), b"cctf-derive-v1|" + label.encode(), "sha256"
        ).digest()

    def private_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "cctf-signing-key", "suite": self.suite.value}
        for comp, seed in zip(COMPONENTS[self.suite], self._seeds, strict=True):
            out[f"{comp.value}-seed"] = _b64(seed)
        out["public"] = self.public.to_json()
        return out

    @classmethod
    def from_private_json(cls, obj: dict[str, Any]) -> SigningKey:
        if obj.get("kind") != "cctf-signing-key":
            raise KeyFileError("not a cctf signing key file")
        suite = _file_suite(obj.get("suite"))
        seeds = tuple(
            _unb64(obj.get(f"{c.value}-seed"), f"{c.value} seed") for c in COMPONENTS[suite]
        )
        return cls(suite, seeds)


def _public_raw(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A key or trust file as a JSON object, read through the one bounded reader
    (:func:`cctf.util.files.read_document`, same size cap as every file); any failure is one
    :class:`KeyFileError` line."""
    try:
        obj = read_document(path, what)
    except ConfigError as exc:
        raise KeyFileError(str(exc)) from None
    if not isinstance(obj, dict):
        raise KeyFileError(f"{what} {path} must hold a JSON object")
    return obj


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey.from_private_json(read_json(path, "key file"))


def save_signing_key(path: Path, key: SigningKey) -> None:
    write_secret_json(path, key.private_json())
