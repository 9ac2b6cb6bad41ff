"""CertRegistry (pure): the coordinator's view of the CA log, and the ballot gate it answers.

The coordinator feeds it every entry of the CA log in log order (:meth:`CertRegistry.add`, from the
follower in :mod:`cctf.ca.follow`) and asks it, for every ballot and evidence ballot, whether the
signer's key id holds a certificate right now (:meth:`CertRegistry.check`, verifier step 12a).

A certificate entry is registered only if, in order (the first failure refuses the entry, counted
in :attr:`CertRegistry.refused` by reason; the log stays followed):

1. the entry decodes (:func:`cctf.ca.entries.decode_entry`) [``entry``];
2. the certificate follows the agent profile and was signed by the configured intermediate
   (:func:`cctf.ca.profile.parse_agent_cert`) [``cert``, ``issuer``, ``binding``];
3. its key binding names an **agent** key of the trust config, whose region and principal are the
   SPIFFE ID's, and whose raw public keys hash to the binding's digests [``binding``].

A join entry (:mod:`cctf.ca.join`) is registered when its certificate follows the join profile, was
signed by the intermediate, and names an agent (region, principal) of the trust config [``cert``,
``issuer``, ``binding``]; it never admits a ballot, it only feeds :attr:`CertRegistry.joins` (the
CA's single-use rule), as every registered agent certificate does (it redeems its agent's join).

A revocation entry is registered when its kid is an agent key of the trust config (else refused,
``binding``). :meth:`check` then decides, for ``kid`` at ``now_ms``:

* no certificate of ``kid`` was ever registered → ``cert_unlogged``;
* a revocation of ``kid`` with reason ``key_compromise`` or ``cessation`` was registered → every
  certificate of the key, also one registered later, is refused ``cert_revoked`` (the key is out);
* a registered certificate with ``not_before ≤ now < not_after`` and not revoked → accepted;
* else, such a certificate exists but is revoked → ``cert_revoked``;
* else → ``cert_expired`` (every logged certificate is out of its validity window).

Bounds: only kids of the trust config are held; per kid at most :data:`MAX_CERTS_PER_KID`
certificates (the oldest dropped first: renewal at 2/3 of the lifetime keeps two alive) and
:data:`MAX_REVOKED_PER_KID` revoked serials.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509

from cctf.bus_schemas.envelope import Reason, Rejected
from cctf.ca.entries import CertEntry, JoinEntry, RevocationReason, decode_entry
from cctf.ca.errors import CaError, CaReason
from cctf.ca.join import JoinCert, JoinLedger, parse_join_cert
from cctf.ca.profile import AgentCert, parse_agent_cert
from cctf.crypto.errors import KeyError_
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

__all__ = ["KEY_REVOCATIONS", "MAX_CERTS_PER_KID", "MAX_REVOKED_PER_KID", "CertRegistry"]

MAX_CERTS_PER_KID: Final = 8
MAX_REVOKED_PER_KID: Final = 64
#: revocation reasons that revoke the KEY, not one certificate: every certificate of that kid, also
#: one logged later (a renewal), is refused, and the CA issues none (a new key is the way back)
KEY_REVOCATIONS: Final = frozenset({RevocationReason.KEY_COMPROMISE, RevocationReason.CESSATION})


@dataclass(slots=True)
class _KeyCerts:
    certs: deque[AgentCert] = field(default_factory=lambda: deque(maxlen=MAX_CERTS_PER_KID))
    revoked: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_REVOKED_PER_KID))
    blocked: str = ""  # a key_compromise / cessation revocation: the KEY is out, every cert


class CertRegistry:
    """Certificates and revocations read from the CA log, by agent key id."""

    def __init__(self, issuer: x509.Certificate, trust_domain: str, trust: TrustConfig) -> None:
        self._issuer = issuer
        self._trust_domain = trust_domain
        self._trust = trust
        self._by_kid: dict[str, _KeyCerts] = {}
        self.entries = 0  # entries read (registered or refused)
        self.certificates = 0
        self.revocations = 0
        self.refused: dict[str, int] = {}
        self.joins = JoinLedger()
        self._agents = {(e.region, e.principal) for e in trust if e.role is Role.AGENT}

    def _agent(self, kid: str) -> TrustEntry:
        try:
            return self._trust.get(kid, Role.AGENT)
        except KeyError_ as exc:
            raise CaError(CaReason.BINDING, str(exc)) from None

    def add(self, entry: bytes) -> AgentCert | JoinCert | str | None:
        """Register one log entry (in log order). Returns the certificate, the revoked serial, or
        ``None`` when the entry was refused (counted; never raises on input)."""
        self.entries += 1
        try:
            return self._add(entry)
        except CaError as exc:
            self.refused[exc.reason.value] = self.refused.get(exc.reason.value, 0) + 1
            return None

    def _add(self, data: bytes) -> AgentCert | JoinCert | str:
        entry = decode_entry(data)  # 1
        if isinstance(entry, JoinEntry):
            join = parse_join_cert(entry.der, self._issuer, self._trust_domain)
            if (join.region, join.agent) not in self._agents:
                raise CaError(CaReason.BINDING, f"{join.spiffe_id} names no agent key")
            self.joins.note_join(join)
            return join
        if isinstance(entry, CertEntry):
            cert = parse_agent_cert(entry.der, self._issuer, self._trust_domain)  # 2
            known = self._agent(cert.binding.kid)  # 3
            if (known.region, known.principal) != (cert.region, cert.agent):
                raise CaError(
                    CaReason.BINDING,
                    f"{cert.spiffe_id} names another agent than key {cert.binding.kid}",
                )
            if not cert.binding.matches(known.keys):
                raise CaError(CaReason.BINDING, f"binding digests are not key {known.kid}'s")
            rec = self._by_kid.setdefault(known.kid, _KeyCerts())
            if all(c.serial != cert.serial for c in rec.certs):
                rec.certs.append(cert)
            self.certificates += 1
            self.joins.note_cert(cert.region, cert.agent)
            return cert
        self._agent(entry.kid)
        rec = self._by_kid.setdefault(entry.kid, _KeyCerts())
        if entry.serial not in rec.revoked:
            rec.revoked.append(entry.serial)
        if entry.reason in KEY_REVOCATIONS and not rec.blocked:
            rec.blocked = entry.reason.value
        self.revocations += 1
        return entry.serial

    def check(self, kid: str, now_ms: int) -> AgentCert:
        """The certificate that admits ``kid`` at ``now_ms`` (the one valid longest), else
        :class:`~cctf.bus_schemas.envelope.Rejected` with ``cert_unlogged``, ``cert_revoked`` or
        ``cert_expired`` (rules above)."""
        rec = self._by_kid.get(kid)
        if rec is None or not rec.certs:
            raise Rejected(Reason.CERT_UNLOGGED, f"no logged certificate for key {kid}")
        if rec.blocked:  # the key itself: later certificates (renewals) are revoked too
            raise Rejected(Reason.CERT_REVOKED, f"key {kid} revoked ({rec.blocked})")
        valid = [c for c in rec.certs if c.not_before_ms <= now_ms < c.not_after_ms]
        good = [c for c in valid if c.serial not in rec.revoked]
        if good:
            return max(good, key=lambda c: c.not_after_ms)
        if valid:
            serials = ", ".join(c.serial for c in valid)
            raise Rejected(Reason.CERT_REVOKED, f"key {kid}: certificate {serials} revoked")
        last = max(c.not_after_ms for c in rec.certs)
        first = min(c.not_before_ms for c in rec.certs)
        if now_ms < first:
            raise Rejected(Reason.CERT_EXPIRED, f"key {kid}: no certificate valid yet")
        raise Rejected(Reason.CERT_EXPIRED, f"key {kid}: last certificate expired at {last}")

    def kids(self) -> list[str]:
        return list(self._by_kid)

    def find(self, serial: str) -> AgentCert | None:
        for rec in self._by_kid.values():
            for c in rec.certs:
                if c.serial == serial:
                    return c
        return None

    def certs_of(self, kid: str) -> list[AgentCert]:
        rec = self._by_kid.get(kid)
        return list(rec.certs) if rec is not None else []

    def is_blocked(self, kid: str) -> bool:
        """A revocation with a key reason (:data:`KEY_REVOCATIONS`) was logged for ``kid``."""
        rec = self._by_kid.get(kid)
        return rec is not None and bool(rec.blocked)

    def is_revoked(self, kid: str, serial: str) -> bool:
        rec = self._by_kid.get(kid)
        return rec is not None and serial in rec.revoked
