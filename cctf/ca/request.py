"""The certificate request and response (pure codec + the CA's numbered request checks).

An agent asks for a certificate with a NATS request on ``cctf.v1.ca.issue.<region>.<agent>``; the
request is a signed envelope (type ``cert-request``, signed by the agent's hybrid key: proof of
possession of both halves), payload::

    CertRequest = [region, agent, csr, lifetime_ms]        (MessagePack array)
      region, agent  Id: the requesting agent
      csr            bin ≤ 4 KiB: a PKCS#10 CSR (DER) over the agent's ECDSA P-256 TLS key (its
                     self-signature is the proof of possession of the TLS key); its subject and
                     extensions are ignored (the CA decides the certificate's content)
      lifetime_ms    uint: requested lifetime, 0 = the CA's default

The reply is NOT an envelope (the certificate is signed by the CA, and the agent checks it binds
its own keys before using it)::

    CertResponse = [error, certificate, chain, log_index]
      error        str: "" on success, else "<reason>: <detail>" (cctf.ca.errors.CaReason)
      certificate  bin: the leaf DER ("" on error)
      chain        array of 0..4 bin: the intermediate(s), leaf's issuer first
      log_index    uint: the certificate's index in the CA log (its entry was appended and acked
                   before this reply was sent)

:func:`check_request` (the CA's steps, first failure raises :class:`CaError`):

1–8. :func:`cctf.bus_schemas.envelope.verify_envelope` (type ``cert-request``, an agent key of the
     CA's trust config, both signatures, time window) [``request``];
9.  the subject is ``cctf.v1.ca.issue.<region>.<agent>`` [``subject``];
10. the (kid, nonce) pair is new (:class:`RequestReplay`) [``replay``];
11. strict payload decoding [``request``];
12. subject region/agent = key region/principal = payload region/agent [``principal_mismatch``];
13. the CSR decodes, its signature verifies, its key is ECDSA P-256 [``csr``];
14. the lifetime is 0 or within [MIN_LIFETIME_MS, the CA's maximum] [``lifetime``].
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cctf.bus_schemas.envelope import Rejected, TimePolicy, verify_envelope
from cctf.bus_schemas.messages import Id, MessageType, Uint
from cctf.ca.errors import CaError, CaReason
from cctf.ca.profile import MIN_LIFETIME_MS
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

__all__ = [
    "ISSUE_PREFIX",
    "JOIN_PREFIX",
    "CertRequest",
    "CertResponse",
    "CheckedRequest",
    "RequestReplay",
    "check_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "issue_subject",
    "join_subject",
]

ISSUE_PREFIX: Final = "cctf.v1.ca.issue."
#: first certificates, asked over a join credential (cctf.ca.join): the same request, this subject
JOIN_PREFIX: Final = "cctf.v1.ca.join."
MAX_CSR_BYTES: Final = 4096
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: a request envelope lives at most this long (the CA's TimePolicy)
REQUEST_TIME_POLICY: Final = TimePolicy(max_skew_ms=5_000, max_lifetime_ms=60_000)

Der = Annotated[bytes, msgspec.Meta(max_length=16 * 1024)]


class CertRequest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    region: Id
    agent: Id
    csr: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_CSR_BYTES)]
    lifetime_ms: Uint


class CertResponse(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    error: Annotated[str, msgspec.Meta(max_length=512)]
    certificate: Der
    chain: Annotated[list[Der], msgspec.Meta(max_length=4)]
    log_index: Uint


_ENC: Final = msgspec.msgpack.Encoder()
_REQ: Final = msgspec.msgpack.Decoder(CertRequest)
_RESP: Final = msgspec.msgpack.Decoder(CertResponse)


def issue_subject(region: str, agent: str) -> str:
    return f"{ISSUE_PREFIX}{region}.{agent}"


def join_subject(region: str, agent: str) -> str:
    return f"{JOIN_PREFIX}{region}.{agent}"


def encode_request(req: CertRequest) -> bytes:
    return _ENC.encode(req)


def encode_response(resp: CertResponse) -> bytes:
    return _ENC.encode(resp)


def decode_response(data: bytes) -> CertResponse:
    if len(data) > MAX_RESPONSE_BYTES:
        raise CaError(CaReason.REQUEST, "response too large")
    try:
        return _RESP.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CaError(CaReason.REQUEST, f"malformed response: {exc}") from None


class RequestReplay:
    """Bounded (kid, nonce) memory until each request's expiry (step 10)."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._capacity = capacity

    def fresh(self, key: bytes, exp_ms: int, now_ms: int) -> bool:
        while self._seen and next(iter(self._seen.values())) <= now_ms:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            raise CaError(CaReason.REPLAY, "replay memory full: try again later")
        self._seen[key] = exp_ms
        # expiries are bounded by REQUEST_TIME_POLICY, so FIFO order is close to expiry order
        return True


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    signer: TrustEntry
    request: CertRequest
    tls_public_key: ec.EllipticCurvePublicKey


def check_request(
    data: bytes,
    subject: str,
    *,
    trust: TrustConfig,
    policy: SuitePolicy,
    replay: RequestReplay,
    now_ms: int,
    max_lifetime_ms: int,
    prefix: str = ISSUE_PREFIX,
) -> CheckedRequest:
    """The CA's steps 1–14 (module docstring); ``prefix`` :data:`JOIN_PREFIX` for a first
    certificate over a join credential (step 9 then requires ``cctf.v1.ca.join.<region>.<agent>``)."""
    try:  # 1-8
        checked = verify_envelope(
            data,
            subject,
            expected_type=MessageType.CERT_REQUEST,
            role=Role.AGENT,
            trust=trust,
            policy=policy,
            now_ms=now_ms,
            time_policy=REQUEST_TIME_POLICY,
        )
    except Rejected as rej:
        raise CaError(CaReason.REQUEST, f"step {rej.reason.value}: {rej.detail}") from None
    env, signer = checked.envelope, checked.signer
    tokens = subject.removeprefix(prefix).split(".")  # 9
    if prefix not in (ISSUE_PREFIX, JOIN_PREFIX) or not subject.startswith(prefix):
        raise CaError(CaReason.SUBJECT, f"{subject[:200]!r} is not {prefix}<region>.<agent>")
    if len(tokens) != 2:
        raise CaError(CaReason.SUBJECT, f"{subject[:200]!r} is not {prefix}<region>.<agent>")
    if not replay.fresh(env.kid.encode() + env.nonce, env.exp, now_ms):  # 10
        raise CaError(CaReason.REPLAY, "request nonce already seen")
    try:  # 11
        req = _REQ.decode(env.payload)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CaError(CaReason.REQUEST, f"malformed cert request: {exc}") from None
    if not (
        tokens[0] == signer.region == req.region and tokens[1] == signer.principal == req.agent
    ):
        raise CaError(  # 12
            CaReason.PRINCIPAL,
            f"subject {tokens[0]}/{tokens[1]}, key {signer.region}/{signer.principal}, "
            f"request {req.region}/{req.agent} differ",
        )
    try:  # 13
        csr = x509.load_der_x509_csr(req.csr)
        key = csr.public_key()
        ok = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise CaError(CaReason.CSR, f"undecodable CSR: {exc}") from None
    if not ok:
        raise CaError(CaReason.CSR, "the CSR's signature does not verify")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CaError(CaReason.CSR, "the CSR key is not ECDSA P-256")
    if req.lifetime_ms and not MIN_LIFETIME_MS <= req.lifetime_ms <= max_lifetime_ms:  # 14
        raise CaError(
            CaReason.LIFETIME,
            f"lifetime {req.lifetime_ms} ms outside [{MIN_LIFETIME_MS}, {max_lifetime_ms}]",
        )
    return CheckedRequest(signer, req, key)
