"""NATS over TLS with certificate-mapped users (nats-server ``verify_and_map``), as pure data.

With ``tls { verify: true, verify_and_map: true }`` on the client port, nats-server requires a client
certificate chaining to its ``ca_file`` (expired, not-yet-valid or unknown-CA certificates fail the
handshake: no connection at all) and takes the connection's user from the certificate: the first
of its SAN values (e-mail, DNS, then URI) or, last, its subject DN that equals a configured user
name (``server/auth.go``, ``checkClientTLSCertSubject``). CCTF agent certificates (``cctf/ca/``,
docs/ca.md) carry exactly one SAN, the URI ``spiffe://<td>/cctf/agent/<region>/<agent>``, so that
URI is the user name: no password, nothing static per region in the server config.

Why ``verify_and_map`` rather than NKeys/JWTs: the agents already hold short-lived, logged X.509
certificates (D5); mapping them needs no second credential and no operator/resolver machinery, and
a certificate's expiry is enforced by the TLS handshake itself. An NKey seed would be one more
long-lived secret per agent (JWT expiry would need a signing service of its own).

Every user here is ONE principal:

* :func:`agent_tls_user`: one per agent, in its region's account ``AGENT_<REGION>`` (which imports
  only that region's subjects), allowed to publish only its OWN ballot, evidence and certificate
  request subjects (``cctf.v1.{vote,evidence,ca.issue}.<region>.<agent>``), subscribe only its own
  inbox ``_INBOX.agent-<region>.<agent>.>``;
* :func:`join_tls_user`: an agent's one-time join certificate (``cctf.ca.join``: its first
  certificate, before it has one), in its region's account, allowed to publish ONLY
  ``cctf.v1.ca.join.<region>.<agent>`` and to subscribe only its inbox
  ``_INBOX.join-<region>.<agent>.>``: no ballot, no evidence, no renewal, no other agent;
* :func:`role_tls_user`: a non-agent component (coordinator, client, admin) mapped from the URI SAN
  of a certificate the operator issues to it, with that role's permissions
  (:func:`cctf.bus.accounts.permissions_for`).

A connection authenticated this way sends no user name; :func:`cctf.bus.connect.connect` is given
the inbox name (:attr:`TlsUser.inbox`) as its :class:`~cctf.bus.accounts.NatsUser` with an empty
password and a TLS context (:mod:`cctf.bus.tls`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cctf.bus.accounts import (
    AGENT_PREFIX,
    UserPermissions,
    account_of,
    agent_account_name,
    inbox_prefix,
    permissions_for,
    validate_region,
)
from cctf.ids import check_id

__all__ = [
    "SPIFFE_AGENT_PATH",
    "ServerTls",
    "TlsUser",
    "agent_tls_user",
    "agent_tls_users",
    "join_tls_user",
    "role_tls_user",
    "spiffe_agent_id",
]

#: The path of an agent's SPIFFE ID under its trust domain (docs/ca.md §2).
SPIFFE_AGENT_PATH: Final = "/cctf/agent/{region}/{agent}"
#: ... and of its join certificate (docs/ca.md §9); the join user's inbox prefix.
SPIFFE_JOIN_PATH: Final = "/cctf/join/{region}/{agent}"
JOIN_PREFIX: Final = "join-"


@dataclass(frozen=True)
class ServerTls:
    """The server's ``tls`` block: its certificate and key, and the CAs it accepts client
    certificates from (the agent intermediate, plus the CA of the components' certificates)."""

    cert_file: str
    key_file: str
    ca_file: str
    timeout_s: float = 2.0


@dataclass(frozen=True)
class TlsUser:
    """One certificate-mapped user: the certificate value the server maps (``san``), the account
    it lands in, its permissions (``None``: unrestricted) and its connections' inbox name."""

    san: str
    account: str
    permissions: UserPermissions | None
    inbox: str


def spiffe_agent_id(trust_domain: str, region: str, agent: str) -> str:
    """``spiffe://<trust-domain>/cctf/agent/<region>/<agent>`` (the agent certificate's only SAN)."""
    if not trust_domain or any(c in trust_domain for c in '/:"\\ \t\r\n'):
        raise ValueError(f"trust domain {trust_domain!r} is not a host name")
    path = SPIFFE_AGENT_PATH.format(region=validate_region(region), agent=check_id(agent, "agent"))
    return f"spiffe://{trust_domain}{path}"


def agent_tls_user(trust_domain: str, region: str, agent: str) -> TlsUser:
    """The user of one agent certificate: its own subjects only, in its region's account."""
    inbox = f"{AGENT_PREFIX}{validate_region(region)}.{check_id(agent, 'agent')}"
    own = [f"cctf.v1.{kind}.{region}.{agent}" for kind in ("vote", "evidence", "ca.issue")]
    return TlsUser(
        san=spiffe_agent_id(trust_domain, region, agent),
        account=agent_account_name(region),
        permissions=UserPermissions(
            publish_allow=tuple(s for subject in own for s in (subject, subject + ".>")),
            subscribe_allow=(inbox_prefix(inbox) + ".>",),
        ),
        inbox=inbox,
    )


def join_tls_user(trust_domain: str, region: str, agent: str) -> TlsUser:
    """The user of one agent's join certificate: its first-certificate request subject only."""
    agent_id = spiffe_agent_id(trust_domain, region, agent)  # checks every part
    inbox = f"{JOIN_PREFIX}{region}.{agent}"
    subject = f"cctf.v1.ca.join.{region}.{agent}"
    return TlsUser(
        san=agent_id.replace(
            SPIFFE_AGENT_PATH.format(region=region, agent=agent),
            SPIFFE_JOIN_PATH.format(region=region, agent=agent),
        ),
        account=agent_account_name(region),
        permissions=UserPermissions(
            publish_allow=(subject,),
            subscribe_allow=(inbox_prefix(inbox) + ".>",),
        ),
        inbox=inbox,
    )


def agent_tls_users(trust_domain: str, agents: Sequence[tuple[str, str]]) -> tuple[TlsUser, ...]:
    """:func:`agent_tls_user` for each ``(region, agent)``; a duplicate is a ``ValueError``."""
    users = tuple(agent_tls_user(trust_domain, r, a) for r, a in agents)
    if len({u.san for u in users}) != len(users):
        raise ValueError("duplicate agent")
    return users


def role_tls_user(san: str, user_name: str, regions: Sequence[str]) -> TlsUser:
    """A component certificate (URI SAN ``san``) mapped to the fabric role user ``user_name``
    (``coordinator``, ``client``, ``admin``; not an agent: agents have :func:`agent_tls_user`)."""
    if user_name.startswith(AGENT_PREFIX):
        raise ValueError("agents are mapped one certificate per agent (agent_tls_user)")
    if not san or any(c in san for c in '"\\\r\n'):
        raise ValueError(f"certificate value {san!r} cannot be a user name")
    return TlsUser(
        san=san,
        account=account_of(user_name),
        permissions=permissions_for(user_name, regions),
        inbox=user_name,
    )
