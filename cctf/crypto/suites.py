"""Signature suites.

=============================  ===========================================  =====
suite id                       components (in signature order)              rank
=============================  ===========================================  =====
``ed25519``                    Ed25519                                      1
``ml-dsa-65``                  ML-DSA-65 (FIPS 204)                         2
``hybrid-ed25519-ml-dsa-65``   Ed25519, then ML-DSA-65 (both required)      3
=============================  ===========================================  =====

Each component signs the same to-be-signed bytes ``tbs`` under a label that names the suite *and* the
component, so a signature made for one suite is useless under another and one half of a hybrid
signature cannot be lifted into a single-algorithm message::

    label     = "CCTF-v1/" + suite_id + "/" + component        (ASCII)
    Ed25519   signs  label || 0x00 || tbs
    ML-DSA-65 signs  tbs  with FIPS 204 context string = label

(The envelope's ``tbs`` already contains the suite id; the labels are defence in depth.)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from cctf.crypto.errors import SignatureError, SuiteError


class SuiteId(StrEnum):
    ED25519 = "ed25519"
    ML_DSA_65 = "ml-dsa-65"
    HYBRID = "hybrid-ed25519-ml-dsa-65"


class Component(StrEnum):
    ED25519 = "ed25519"
    ML_DSA_65 = "ml-dsa-65"


COMPONENTS: Final[dict[SuiteId, tuple[Component, ...]]] = {
    SuiteId.ED25519: (Component.ED25519,),
    SuiteId.ML_DSA_65: (Component.ML_DSA_65,),
    SuiteId.HYBRID: (Component.ED25519, Component.ML_DSA_65),
}

RANK: Final[dict[SuiteId, int]] = {SuiteId.ED25519: 1, SuiteId.ML_DSA_65: 2, SuiteId.HYBRID: 3}

SIGNATURE_BYTES: Final[dict[Component, int]] = {Component.ED25519: 64, Component.ML_DSA_65: 3309}
PUBLIC_KEY_BYTES: Final[dict[Component, int]] = {Component.ED25519: 32, Component.ML_DSA_65: 1952}


def parse_suite(value: str) -> SuiteId:
    try:
        return SuiteId(value)
    except ValueError:
        raise SuiteError(f"unknown signature suite {value!r}") from None


def label(suite: SuiteId, component: Component) -> bytes:
    return f"CCTF-v1/{suite.value}/{component.value}".encode("ascii")


PrivateKey = ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey
PublicKey = ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey


def sign_component(suite: SuiteId, component: Component, key: PrivateKey, tbs: bytes) -> bytes:
    lab = label(suite, component)
    if component is Component.ED25519:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(lab + b"\x00" + tbs)
    assert isinstance(key, mldsa.MLDSA65PrivateKey)
    return key.sign(tbs, lab)


def verify_component(
    suite: SuiteId, component: Component, key: PublicKey, signature: bytes, tbs: bytes
) -> None:
    """Verify one component signature; raises :class:`SignatureError`."""
    if len(signature) != SIGNATURE_BYTES[component]:
        raise SignatureError(f"{component.value} signature has the wrong length")
    lab = label(suite, component)
    try:
        if component is Component.ED25519:
            assert isinstance(key, ed25519.Ed25519PublicKey)
            key.verify(signature, lab + b"\x00" + tbs)
        else:
            assert isinstance(key, mldsa.MLDSA65PublicKey)
            key.verify(signature, tbs, lab)
    except InvalidSignature:
        raise SignatureError(f"{component.value} signature does not verify") from None
