"""The CCTF NATS account model as pure data: users per role, their subject permissions.

One account ``CCTF`` with JetStream; one user per role (``admin``, ``coordinator``, ``client``) and one
per region (``agent-<region>``). ``permissions_for`` is the single source of every user's permissions:
the server config renderer (``cctf.devfabric.nats``) and the tests read it from here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cctf.ids import check_id

DEFAULT_REGIONS: tuple[str, ...] = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
MAX_PAYLOAD_BYTES = 1 << 20
ACCOUNT_NAME = "CCTF"
SYSTEM_ACCOUNT_NAME = "SYS"
CLUSTER_NAME = "cctf"

ADMIN_USER = "admin"
COORDINATOR_USER = "coordinator"
CLIENT_USER = "client"
SYSTEM_USER = "sys"
ROUTE_USER = "route"
AGENT_PREFIX = "agent-"

# Characters allowed in a password: enough for token_urlsafe and common generators, and nothing
# that could break out of a quoted string in the nats-server config.
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._~+/=!@%^*,:-]{1,256}$")

# JetStream API calls that change or destroy streams (or the account). Denied to the roles that
# only need consumers and reads. A user allowed ``$JS.API.STREAM.CREATE`` could, for example,
# create a stream that republishes into ``cctf.v1.verdict.>`` and so bypass its publish pins.
_JS_STREAM_ADMIN = (
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
)
_JS_DESTRUCTIVE = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>",
    "$JS.API.STREAM.LEADER.>",
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
    "$JS.API.ACCOUNT.>",
)


@dataclass(frozen=True)
class NatsUser:
    """A username and password. The password is kept out of ``repr``."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class UserPermissions:
    """Subject permissions of one user (``None`` from ``permissions_for`` means unrestricted)."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


def validate_region(region: str) -> str:
    """Return ``region`` if it is a valid region token (``[a-z0-9][a-z0-9-]{0,31}``)."""
    return check_id(region, "region")


def agent_user_name(region: str) -> str:
    """The NATS user name of a region's agents: ``agent-<region>``."""
    return AGENT_PREFIX + validate_region(region)


def permissions_for(user_name: str) -> UserPermissions | None:
    """Permissions of a fabric user; ``None`` for ``admin`` and ``sys`` (unrestricted)."""
    if user_name in (ADMIN_USER, SYSTEM_USER):
        return None
    if user_name == COORDINATOR_USER:
        return UserPermissions(
            publish_allow=(
                "cctf.v1.verdict.>",
                "$JS.API.>",
                "$JS.ACK.>",
                "$JS.FC.>",
                "_INBOX.>",
            ),
            publish_deny=_JS_DESTRUCTIVE,
            subscribe_allow=("cctf.v1.>", "_INBOX.>", "$JS.>"),
        )
    if user_name == CLIENT_USER:
        return UserPermissions(
            publish_allow=("$JS.API.>", "$JS.ACK.>", "$JS.FC.>"),
            publish_deny=("cctf.v1.>", *_JS_STREAM_ADMIN, *_JS_DESTRUCTIVE),
            subscribe_allow=("cctf.v1.verdict.>", "_INBOX.>"),
        )
    if user_name.startswith(AGENT_PREFIX):
        region = validate_region(user_name[len(AGENT_PREFIX) :])
        return UserPermissions(
            publish_allow=(f"cctf.v1.vote.{region}.>", f"cctf.v1.evidence.{region}.>"),
            subscribe_allow=("_INBOX.>",),
        )
    raise ValueError(f"unknown CCTF user {user_name!r}")


def check_password(user: NatsUser) -> None:
    if not _PASSWORD_RE.fullmatch(user.password):
        # never include the password itself in the message
        raise ValueError(
            f"password of user {user.name!r} has unsupported characters or length "
            "(allowed: A-Z a-z 0-9 and ._~+/=!@%^*,:- ; 1..256 characters)"
        )


def build_users(
    regions: Sequence[str] = DEFAULT_REGIONS,
    passwords: Mapping[str, str] | None = None,
    *,
    system_user: bool = True,
) -> dict[str, NatsUser]:
    """Users of one fabric: admin, coordinator, client, ``agent-<region>`` (+ ``sys``).

    Passwords come from ``passwords`` (user name -> password) or are random (``token_urlsafe``).
    """
    given = dict(passwords or {})
    names = [ADMIN_USER, COORDINATOR_USER, CLIENT_USER]
    names += [agent_user_name(r) for r in regions]
    if system_user:
        names.append(SYSTEM_USER)
    if len(set(names)) != len(names):
        raise ValueError("duplicate region")
    unknown = set(given) - set(names)
    if unknown:
        raise ValueError(f"passwords given for unknown users: {sorted(unknown)}")
    users: dict[str, NatsUser] = {}
    for name in names:
        user = NatsUser(name, given.get(name) or secrets.token_urlsafe(24))
        check_password(user)
        users[name] = user
    return users
