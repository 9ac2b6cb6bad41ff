"""``cctf ca tls-users``: the certificate-mapped NATS users of the trust config's agents, minus the
agents whose KEY the CA log shows revoked (docs/ca.md §10).

nats-server has no view of the CA log; a config reload without a revoked agent's user closes its
live connection and maps its certificate to nobody. :func:`revoked_keys` is the pure part: from the
CA log's entries (in log order, already checked by a ``LogMirror``), the kids revoked with a key
reason (``key_compromise``, ``cessation``: every certificate of the key, also later ones) that the
trust config names as agents. :func:`agent_users` renders
:func:`cctf.bus.tlsauth.agent_tls_users` for the other agents. A certificate revoked with
``superseded`` / ``unspecified`` keeps its agent's user (the next renewal re-admits it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cctf.bus.tlsauth import TlsUser, agent_tls_users
from cctf.ca.entries import RevokeEntry, decode_entry
from cctf.ca.errors import CaError
from cctf.ca.registry import KEY_REVOCATIONS
from cctf.crypto.trust import Role, TrustConfig

__all__ = ["RevokedKey", "agent_users", "revoked_keys"]


@dataclass(frozen=True, slots=True)
class RevokedKey:
    kid: str
    region: str
    agent: str
    reason: str


def revoked_keys(trust: TrustConfig, entries: Iterable[bytes]) -> dict[str, RevokedKey]:
    """The agent keys revoked with a key reason, by kid (the first such revocation of each). An
    entry that does not decode, or names no agent key of ``trust``, is skipped (the coordinator's
    registry refuses it too)."""
    agents = {e.keys.kid: e for e in trust if e.role is Role.AGENT}
    out: dict[str, RevokedKey] = {}
    for raw in entries:
        try:
            entry = decode_entry(raw)
        except CaError:
            continue
        if not isinstance(entry, RevokeEntry) or entry.reason not in KEY_REVOCATIONS:
            continue
        known = agents.get(entry.kid)
        if known is not None and entry.kid not in out:
            out[entry.kid] = RevokedKey(
                entry.kid, known.region, known.principal, entry.reason.value
            )
    return out


def agent_users(
    trust: TrustConfig, trust_domain: str, revoked: dict[str, RevokedKey]
) -> tuple[TlsUser, ...]:
    """One certificate-mapped user per agent of ``trust`` whose key is not in ``revoked`` (sorted by
    region, agent)."""
    keep = sorted(
        {
            (e.region, e.principal)
            for e in trust
            if e.role is Role.AGENT and e.keys.kid not in revoked
        }
    )
    return agent_tls_users(trust_domain, keep)
