"""The CCTF NATS account model as pure data: users per role, their subject permissions.

One user per role (``admin``, ``coordinator``, ``client``) and one per region (``agent-<region>``).
:func:`permissions_for` is the single source of every user's permissions, :func:`account_of` and
:func:`cctf.bus.accountmap.accounts_for` of the accounts: the server config renderer
(``cctf.devfabric.nats_config``), the static ``deploy/nats/accounts.conf`` (generated from it) and
the tests read them from here.

Accounts: ``CCTF`` holds JetStream (the streams), ``admin`` and ``coordinator``. Each region's agents
are in an account of their own, ``AGENT_<REGION>`` (no JetStream), which imports from ``CCTF`` as
*services* only its region's vote and evidence subjects, each exported to that one account. The
``client`` is in ``CLIENTS`` (no JetStream): it imports its granted JetStream API calls as services
under the API prefix ``JS.CCTF.API`` (:func:`js_api_prefix`; the server imports ``$JS.API.>`` into
every account), its flow-control replies as services, and the push deliveries of its consumers as a
*stream* import of ``_INBOX.client.>``.
Why: nats-server checks permissions on a publish's subject, never on its reply subject, and answers
there itself (publish acks, errors); inside ``CCTF`` a stream listening on the reply subject would
store the answer. Across a service import the server rewrites the reply subject to a ``_R_.``
subject and delivers the answer in the requester's own account, where no stream listens
(``tests/redteam/test_reply_injection.py``).

Least privilege, as data:

* :data:`JS_API` names every JetStream API call ("verb") by the subject it is requested on.
* :data:`GRANTS` says which verbs each role may call, and on which kind of stream (vote or verdict
  streams). Everything not granted is refused by the server (allow lists only, no "allow all but").
* Inboxes: every user's connection uses the inbox prefix ``_INBOX.<user>`` (set by
  :func:`cctf.bus.connect.connect`) and may subscribe only to ``_INBOX.<user>.>`` plus its role's
  subjects, so nobody receives another user's replies or consumer deliveries.
* The live path (design D1): coordinators subscribe (core) to every region's ballots and evidence
  and to the CA log's records (:data:`COORDINATOR_LIVE_SUBJECTS`; a live CA record is checked like
  a stored one and a refused one is only counted, ``cctf.ca.follow``), clients to the verdicts (:data:`CLIENT_LIVE_SUBJECTS`, a
  stream export to ``CLIENTS``); nobody else subscribes to a stream subject. Such a subscription
  gives interest to any push consumer delivering there, and the server does not check a push
  consumer's ``deliver_subject`` against its creator's permissions, so every message a restricted
  role may consume carries ``Nats-Expected-Stream``: a copy pushed onto another stream's subject is
  refused by that stream (``tests/redteam/test_push_delivery.py``).

Roles:

* ``agent-<region>`` publishes its region's ballots and evidence (the JetStream publish acks come back
  on its inbox) and calls no JetStream API at all.
* ``client`` (its API subjects under ``JS.CCTF.API``, see :func:`client_api_subject`) reads verdict
  streams: stream info, direct get, and its own *ephemeral* consumers on
  verdict streams only (``CONSUMER.CREATE.<stream>`` without a name token: the server names them and
  refuses a durable name in the request); it does not delete them (the server removes an ephemeral
  consumer once its subscriber is gone). It never acknowledges, pulls, pauses, updates or deletes a
  consumer, and never changes a stream.
* ``coordinator`` manages its durables on the vote streams (create, info, delete; not pause), pulls
  and acknowledges from them, reads stream info, publishes verdicts. It keeps its LKG state in the
  KV bucket ``CCTF_LKG`` (publish on ``$KV.CCTF_LKG.>``; stream info, direct get and ephemeral
  ordered consumers on ``KV_CCTF_LKG`` to read it back). It publishes safe-mode announcements
  (``cctf.v1.control.>``) and reads operator commands through its own ephemeral ordered consumer on
  ``CCTF_CONTROL``. It publishes its log heads (``cctf.v1.head.>``). It may not create, change, purge or delete any stream, and may not publish
  operator commands (``cctf.v1.operator.>``: only ``admin`` may).
* the client also reads ``CCTF_CONTROL`` (the safe-mode announcements) and the heads streams
  ``CCTF_HEADS_<REGION>`` (signed log checkpoints) as it reads verdict streams.

* ``ca`` (``cctf ca serve``, :mod:`cctf.ca.service`) answers certificate requests and revocations
  (subscribes ``cctf.v1.ca.>``, one reply per request), appends to and reads back ITS log only
  (publishes ``cctf.v1.log.ca``; stream info, message/direct get and ordered consumers on
  ``CCTF_LOG``); it touches no vote, verdict or control stream.
* ``admin`` (set-up: streams) and ``sys`` (system account) are unrestricted.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cctf.bus.kv import LKG_BUCKET, kv_stream_name
from cctf.bus.streams import (
    CONTROL_STREAM,
    LOG_STREAM,
    heads_stream_name,
    verdict_stream_name,
    votes_stream_name,
)
from cctf.ids import check_id

DEFAULT_REGIONS: tuple[str, ...] = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
MAX_PAYLOAD_BYTES = 1 << 20
ACCOUNT_NAME = "CCTF"
CLIENT_ACCOUNT_NAME = "CLIENTS"
SYSTEM_ACCOUNT_NAME = "SYS"
CLUSTER_NAME = "cctf"

ADMIN_USER = "admin"
COORDINATOR_USER = "coordinator"
CLIENT_USER = "client"
CA_USER = "ca"
SYSTEM_USER = "sys"
ROUTE_USER = "route"
AGENT_PREFIX = "agent-"

#: Log records: a coordinator publishes ``cctf.v1.log.<its id>`` (one token). Allow lists only, so
#: the shared coordinator user could also publish on another log's subject (as on another
#: coordinator's verdict subjects): such a record cannot carry the log key's signature, fences the
#: log's writer (fail closed) and fails every mirror (docs/threat-model.md, "Durable log").
LOG_PUBLISH: Final = "cctf.v1.log.*"
#: The log API (``cctf log serve``, request-reply): ``cctf.v1.logapi.<log-id>.<op>``.
LOG_API_SUBJECTS: Final = "cctf.v1.logapi.>"

#: The inbox prefix of every connection is ``_INBOX.<user>`` (see :func:`inbox_prefix`).
INBOX_ROOT: Final = "_INBOX"

# Characters allowed in a password: enough for token_urlsafe and common generators, and nothing
# that could break out of a quoted string in the nats-server config.
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._~+/=!@%^*,:-]{1,256}$")


class Role(enum.StrEnum):
    ADMIN = "admin"
    SYSTEM = "sys"
    COORDINATOR = "coordinator"
    CLIENT = "client"
    AGENT = "agent"
    CA = "ca"


class StreamKind(enum.StrEnum):
    """Which streams a grant applies to: every region's vote or verdict stream, or none (account)."""

    VOTES = "votes"
    VERDICTS = "verdicts"
    LKG = "lkg"
    """The coordinators' LKG bucket (``KV_CCTF_LKG``, :mod:`cctf.bus.kv`)."""
    CONTROL = "control"  # the one control stream (safe-mode announcements, operator commands)
    HEADS = "heads"  # every region's heads stream (signed log checkpoints, CCTF_HEADS_<REGION>)
    LOG = "log"  # the durable transparency logs (CCTF_LOG, cctf.bus.logstream)
    NONE = "none"


#: Every JetStream API call, by the subject it is requested on. ``{stream}`` is a stream name,
#: ``{consumer}`` one token (a consumer name); a trailing ``.>`` stands for a subject or filter.
#: ``ACK`` and ``FC`` are not API requests but the acknowledgement subject of a delivered message and
#: the flow-control reply of a push consumer (``$JS.FC.<stream>.<consumer>.<random>``).
JS_API: Final[Mapping[str, str]] = {
    "INFO": "$JS.API.INFO",
    "STREAM.NAMES": "$JS.API.STREAM.NAMES",
    "STREAM.LIST": "$JS.API.STREAM.LIST",
    "STREAM.CREATE": "$JS.API.STREAM.CREATE.{stream}",
    "STREAM.UPDATE": "$JS.API.STREAM.UPDATE.{stream}",
    "STREAM.DELETE": "$JS.API.STREAM.DELETE.{stream}",
    "STREAM.PURGE": "$JS.API.STREAM.PURGE.{stream}",
    "STREAM.INFO": "$JS.API.STREAM.INFO.{stream}",
    "STREAM.MSG.GET": "$JS.API.STREAM.MSG.GET.{stream}",
    "STREAM.MSG.DELETE": "$JS.API.STREAM.MSG.DELETE.{stream}",
    "STREAM.SNAPSHOT": "$JS.API.STREAM.SNAPSHOT.{stream}",
    "STREAM.RESTORE": "$JS.API.STREAM.RESTORE.{stream}",
    "STREAM.LEADER.STEPDOWN": "$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
    "STREAM.PEER.REMOVE": "$JS.API.STREAM.PEER.REMOVE.{stream}",
    "DIRECT.GET": "$JS.API.DIRECT.GET.{stream}",
    "DIRECT.GET.LAST": "$JS.API.DIRECT.GET.{stream}.>",
    "CONSUMER.CREATE": "$JS.API.CONSUMER.CREATE.{stream}",
    "CONSUMER.CREATE.NAMED": "$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
    "CONSUMER.CREATE.FILTERED": "$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>",
    "CONSUMER.DURABLE.CREATE": "$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
    "CONSUMER.INFO": "$JS.API.CONSUMER.INFO.{stream}.{consumer}",
    "CONSUMER.DELETE": "$JS.API.CONSUMER.DELETE.{stream}.{consumer}",
    "CONSUMER.PAUSE": "$JS.API.CONSUMER.PAUSE.{stream}.{consumer}",
    "CONSUMER.UNPIN": "$JS.API.CONSUMER.UNPIN.{stream}.{consumer}",
    "CONSUMER.RESET": "$JS.API.CONSUMER.RESET.{stream}.{consumer}",
    "CONSUMER.LEADER.STEPDOWN": "$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}",
    "CONSUMER.NAMES": "$JS.API.CONSUMER.NAMES.{stream}",
    "CONSUMER.LIST": "$JS.API.CONSUMER.LIST.{stream}",
    "CONSUMER.MSG.NEXT": "$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
    "ACK": "$JS.ACK.{stream}.>",
    "FC": "$JS.FC.{stream}.>",
    "META.LEADER.STEPDOWN": "$JS.API.META.LEADER.STEPDOWN",
    "SERVER.REMOVE": "$JS.API.SERVER.REMOVE",
    "ACCOUNT.PURGE": "$JS.API.ACCOUNT.PURGE.{account}",
}

_V, _D, _L, _N = StreamKind.VOTES, StreamKind.VERDICTS, StreamKind.LKG, StreamKind.NONE
_C = StreamKind.CONTROL
_H = StreamKind.HEADS
_G = StreamKind.LOG

#: What each restricted role may call: (verb, stream kind). Everything else is refused.
GRANTS: Final[Mapping[Role, frozenset[tuple[str, StreamKind]]]] = {
    Role.AGENT: frozenset(),
    Role.CLIENT: frozenset(
        {
            ("STREAM.NAMES", _N),  # stream lookup by subject (names are no secret)
            ("STREAM.INFO", _D),
            ("DIRECT.GET", _D),
            ("DIRECT.GET.LAST", _D),
            ("CONSUMER.CREATE", _D),  # unnamed: ephemeral, server-named, never a durable
            ("FC", _D),  # flow-control replies of its ordered (push) consumers
            ("STREAM.INFO", _C),  # safe-mode announcements: read like verdicts
            ("DIRECT.GET", _C),
            ("DIRECT.GET.LAST", _C),
            ("CONSUMER.CREATE", _C),
            ("FC", _C),
            ("STREAM.INFO", _H),  # log heads: the exact head a verdict names (direct get), or all
            ("DIRECT.GET", _H),
            ("DIRECT.GET.LAST", _H),
            ("CONSUMER.CREATE", _H),
            ("FC", _H),
            ("STREAM.INFO", _G),  # the durable logs: cctf log verify|head|proof|consistency
            ("DIRECT.GET", _G),
            ("DIRECT.GET.LAST", _G),
            ("CONSUMER.CREATE", _G),
            ("FC", _G),
        }
    ),
    Role.CA: frozenset(
        {
            ("STREAM.NAMES", _N),
            ("STREAM.INFO", _G),
            ("STREAM.MSG.GET", _G),
            ("DIRECT.GET", _G),
            ("DIRECT.GET.LAST", _G),
            ("CONSUMER.CREATE", _G),
            ("FC", _G),
        }
    ),
    Role.COORDINATOR: frozenset(
        {
            ("INFO", _N),
            ("STREAM.NAMES", _N),
            ("STREAM.INFO", _V),
            ("STREAM.INFO", _D),
            ("STREAM.INFO", _H),
            ("CONSUMER.CREATE.NAMED", _V),
            ("CONSUMER.CREATE.FILTERED", _V),
            ("CONSUMER.DURABLE.CREATE", _V),
            ("CONSUMER.INFO", _V),
            ("CONSUMER.DELETE", _V),
            ("CONSUMER.NAMES", _V),
            ("CONSUMER.MSG.NEXT", _V),
            ("ACK", _V),
            # its LKG state (cctf.bus.kv): bind, direct get, read through an ordered consumer
            # then the leader's tail of it (STREAM.MSG.GET: start-up reads complete, not a
            # lagging replica's view)
            ("STREAM.INFO", _L),
            ("STREAM.MSG.GET", _L),
            ("DIRECT.GET", _L),
            ("DIRECT.GET.LAST", _L),
            ("CONSUMER.CREATE", _L),
            ("CONSUMER.CREATE.NAMED", _L),
            ("CONSUMER.CREATE.FILTERED", _L),
            ("CONSUMER.INFO", _L),
            ("CONSUMER.DELETE", _L),
            ("FC", _L),
            ("STREAM.INFO", _C),  # operator commands: its own ordered consumer on the control
            ("CONSUMER.CREATE", _C),  # stream (deliveries under its inbox), never a durable
            ("FC", _C),
            # its log (cctf.bus.logstream): resume (ordered consumer), leader reads of the last
            # record (fence checks), direct get for the log API; publish below
            ("STREAM.INFO", _G),
            ("STREAM.MSG.GET", _G),
            ("DIRECT.GET", _G),
            ("DIRECT.GET.LAST", _G),
            ("CONSUMER.CREATE", _G),
            ("FC", _G),
        }
    ),
}


def role_of(user_name: str) -> Role:
    """The role of a fabric user name (``ValueError`` for an unknown one)."""
    if user_name.startswith(AGENT_PREFIX):
        validate_region(user_name[len(AGENT_PREFIX) :])
        return Role.AGENT
    try:
        role = Role(user_name)
    except ValueError:
        raise ValueError(f"unknown CCTF user {user_name!r}") from None
    if role is Role.AGENT:
        raise ValueError(f"unknown CCTF user {user_name!r}")
    return role


def inbox_prefix(user_name: str) -> str:
    """The inbox prefix of ``user_name``'s connections: ``_INBOX.<user>``."""
    return f"{INBOX_ROOT}.{user_name}"


def stream_names(kind: StreamKind, regions: Sequence[str]) -> tuple[str, ...]:
    """The streams of one kind for ``regions``."""
    if kind is StreamKind.VOTES:
        return tuple(votes_stream_name(r) for r in regions)
    if kind is StreamKind.VERDICTS:
        return tuple(verdict_stream_name(r) for r in regions)
    if kind is StreamKind.LKG:
        return (kv_stream_name(LKG_BUCKET),)
    if kind is StreamKind.CONTROL:
        return (CONTROL_STREAM,)
    if kind is StreamKind.HEADS:
        return tuple(heads_stream_name(r) for r in regions)
    if kind is StreamKind.LOG:
        return (LOG_STREAM,)
    return ()


def api_subject(verb: str, stream: str = "", consumer: str = "*") -> str:
    """The subject (or permission pattern, with ``consumer="*"``) of one JetStream API verb."""
    return JS_API[verb].format(stream=stream, consumer=consumer, account=ACCOUNT_NAME)


def granted_subjects(role: Role, regions: Sequence[str]) -> tuple[str, ...]:
    """The JetStream API publish permissions of ``role``, expanded for ``regions``."""
    out: list[str] = []
    for verb, kind in sorted(GRANTS.get(role, frozenset())):
        if kind is StreamKind.NONE:
            out.append(api_subject(verb))
        else:
            out += [api_subject(verb, stream) for stream in stream_names(kind, regions)]
    return tuple(out)


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
    allow_responses: bool = False
    """nats-server ``allow_responses``: it may publish ONE reply to each request it received (on
    the request's reply subject, a ``_R_.`` subject across a service import), nothing else."""


def validate_region(region: str) -> str:
    """Return ``region`` if it is a valid region token (``[a-z0-9][a-z0-9-]{0,31}``)."""
    return check_id(region, "region")


def agent_user_name(region: str) -> str:
    """The NATS user name of a region's agents: ``agent-<region>``."""
    return AGENT_PREFIX + validate_region(region)


def permissions_for(user_name: str, regions: Sequence[str]) -> UserPermissions | None:
    """Permissions of a fabric user in a fabric of ``regions``; ``None`` for ``admin`` and ``sys``."""
    regions = tuple(validate_region(r) for r in regions)
    role = role_of(user_name)
    inbox = inbox_prefix(user_name) + ".>"
    if role in (Role.ADMIN, Role.SYSTEM):
        return None
    if role is Role.COORDINATOR:
        return UserPermissions(
            publish_allow=(
                "cctf.v1.verdict.>",
                "cctf.v1.head.>",  # its signed log checkpoints (batch signing)
                f"$KV.{LKG_BUCKET}.>",  # puts and deletes of its LKG state
                "cctf.v1.control.>",
                LOG_PUBLISH,  # its own log's records
                *granted_subjects(role, regions),
            ),
            subscribe_allow=(inbox, LOG_API_SUBJECTS, *COORDINATOR_LIVE_SUBJECTS),
            allow_responses=True,  # ... one reply per request (cctf log serve answers the log API)
        )
    if role is Role.CA:
        return UserPermissions(
            publish_allow=(
                "cctf.v1.log.ca",
                "cctf.v1.ca.admin.>",
                *granted_subjects(role, regions),
            ),
            subscribe_allow=(inbox, "cctf.v1.ca.>"),
            allow_responses=True,
        )
    if role is Role.CLIENT:
        return UserPermissions(
            publish_allow=(
                *(client_api_subject(s) or s for s in granted_subjects(role, regions)),
                CLIENT_GOSSIP_SUBJECTS,
                LOG_API_SUBJECTS,
            ),
            subscribe_allow=(inbox, *CLIENT_HEAD_SUBJECTS, *CLIENT_LIVE_SUBJECTS),
        )
    region = user_name[len(AGENT_PREFIX) :]
    return UserPermissions(
        publish_allow=agent_service_subjects(region),
        subscribe_allow=(inbox,),
    )


#: Log heads (design D3): the client's live copy (core, a stream import from ``CCTF``; heads are
#: self-authenticating signed notes, and ``CCTF_HEADS_<REGION>`` must keep the FIRST head of each
#: subject, ``discard_new_per_subject``, so that a push delivery aimed at a head subject cannot
#: displace one) and the heads clients gossip to each other (core only, inside ``CLIENTS``; no
#: stream stores them).
HEAD_SUBJECTS: Final = "cctf.v1.head.>"
CLIENT_GOSSIP_SUBJECTS: Final = "cctf.v1.gossip.>"
CLIENT_HEAD_SUBJECTS: Final = (HEAD_SUBJECTS, CLIENT_GOSSIP_SUBJECTS)
#: The live path (design D1): what a coordinator subscribes to (core) next to its durable consumers:
#: the ballots and evidence of every region, the same messages the vote streams store, and
#: the CA log's records (``cctf.ca.follow``): their live copy, so that a revocation is honoured
#: while the durable reader is re-created; every live record is checked, a refused one is counted.
COORDINATOR_LIVE_SUBJECTS: Final = ("cctf.v1.vote.>", "cctf.v1.evidence.>", "cctf.v1.log.ca")
#: ... and what a client subscribes to (core) next to its JetStream reads: every verdict (DNS and
#: identity), exported by ``CCTF`` to ``CLIENTS`` as a *stream* (one way: nothing is answered).
CLIENT_LIVE_SUBJECTS: Final = ("cctf.v1.verdict.>",)

#: The JetStream API prefix of the client (account ``CLIENTS``): its imports of ``CCTF``'s API.
CLIENT_JS_API_PREFIX: Final = "JS.CCTF.API"


def client_api_subject(subject: str) -> str:
    """Where the client reaches ``CCTF``'s ``$JS.API.<rest>``: ``JS.CCTF.API.<rest>`` (a server
    with JetStream imports ``$JS.API.>`` into every account, so the client's own ``$JS.API`` answers
    "JetStream not enabled for account"); other subjects (``$JS.FC.``) stay as they are."""
    api = "$JS.API."
    return CLIENT_JS_API_PREFIX + "." + subject[len(api) :] if subject.startswith(api) else ""


def js_api_prefix(user_name: str) -> str:
    """The JetStream API prefix of ``user_name``'s connections: ``JS.CCTF.API`` for the client
    (account ``CLIENTS``), ``$JS.API`` for everyone else (also for a name that is no fabric user)."""
    try:
        role = role_of(user_name)
    except ValueError:
        return "$JS.API"
    return CLIENT_JS_API_PREFIX if role is Role.CLIENT else "$JS.API"


def agent_account_name(region: str) -> str:
    """The account of a region's agents: ``AGENT_<REGION>`` (upper-cased, ``-`` -> ``_``)."""
    return "AGENT_" + validate_region(region).upper().replace("-", "_")


def agent_service_subjects(region: str) -> tuple[str, ...]:
    """What a region's agents publish (and their account imports from ``CCTF`` as services): its
    ballots, its evidence, and its certificate requests to the CA (``cctf.ca.service``)."""
    region = validate_region(region)
    return (
        f"cctf.v1.vote.{region}.>",
        f"cctf.v1.evidence.{region}.>",
        f"cctf.v1.ca.issue.{region}.>",
    )


def join_service_subject(region: str) -> str:
    """Where a join credential (``cctf.ca.join``: an agent's one-time bootstrap certificate) asks
    for that region's agents' first certificates; imported by ``AGENT_<REGION>`` like the others,
    but in no password user's permissions (only :func:`cctf.bus.tlsauth.join_tls_user` has it)."""
    return f"cctf.v1.ca.join.{validate_region(region)}.>"


def account_of(user_name: str) -> str:
    """The account of a fabric user: ``SYS``, ``AGENT_<REGION>`` or ``CCTF``."""
    role = role_of(user_name)
    if role is Role.SYSTEM:
        return SYSTEM_ACCOUNT_NAME
    if role is Role.AGENT:
        return agent_account_name(user_name[len(AGENT_PREFIX) :])
    if role is Role.CLIENT:
        return CLIENT_ACCOUNT_NAME
    return ACCOUNT_NAME


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
    """Users of one fabric: admin, coordinator, client, ca, ``agent-<region>`` (+ ``sys``).

    Passwords come from ``passwords`` (user name -> password) or are random (``token_urlsafe``).
    """
    given = dict(passwords or {})
    names = [ADMIN_USER, COORDINATOR_USER, CLIENT_USER, CA_USER]
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
