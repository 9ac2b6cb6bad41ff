"""nats-server configuration rendering, from the account model in :mod:`cctf.bus.accounts`.

Two outputs of the same data:

* :func:`render_server_config`: a complete server config with literal (random) passwords, written
  0600 by :class:`cctf.devfabric.nats.NatsServer` for a local fabric.
* :func:`render_accounts_conf`: ``deploy/nats/accounts.conf``, the operator's file, with every
  password read from an environment variable. ``cctf nats accounts-conf`` prints it; a test checks
  that the file in the repository is exactly this output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from cctf.bus.accountmap import Account, accounts_for
from cctf.bus.accounts import (
    ACCOUNT_NAME,
    ADMIN_USER,
    AGENT_PREFIX,
    CA_USER,
    CLIENT_USER,
    CLUSTER_NAME,
    COORDINATOR_USER,
    DEFAULT_REGIONS,
    MAX_PAYLOAD_BYTES,
    SYSTEM_ACCOUNT_NAME,
    SYSTEM_USER,
    NatsUser,
    Role,
    UserPermissions,
    account_of,
    build_users,
    check_password,
    permissions_for,
    role_of,
)
from cctf.bus.tlsauth import (
    ServerTls,
    TlsUser,
    agent_tls_users,
    join_tls_user,
    role_tls_user,
)

__all__ = [
    "DEFAULT_MAX_FILE_STORE",
    "DEFAULT_MAX_MEMORY_STORE",
    "LAME_DUCK_DURATION",
    "LAME_DUCK_GRACE_PERIOD",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "component_san",
    "password_env_var",
    "render_accounts_conf",
    "render_server_config",
    "render_tls_accounts_conf",
]

_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DEFAULT_MAX_MEMORY_STORE: Final = 64 * 1024 * 1024
DEFAULT_MAX_FILE_STORE: Final = 2 * 1024 * 1024 * 1024
#: Subscriptions one connection may hold (a client needs one per verdict stream it follows plus its
#: inbox; nats-server cannot limit per user with config-file accounts, only per connection).
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = 1024
#: Lame duck mode (SIGUSR2, ``NatsServer.lame_duck``): the server hands its JetStream leaderships over
#: at once, waits the grace period, then closes its client connections spread over the duration
#: (nats-server refuses less than 30 s) and exits. Defaults are 10 s and 2 min.
LAME_DUCK_GRACE_PERIOD: Final = "1s"
LAME_DUCK_DURATION: Final = "30s"

_ROLE_COMMENTS: Final[Mapping[Role, str]] = {
    Role.ADMIN: "Set-up only (creating streams): unrestricted within the account. Keep it off agents.",
    Role.COORDINATOR: (
        "Manages its durables on the vote streams, pulls and acknowledges ballots, publishes\n"
        "verdicts. May not create, change, purge or delete streams, nor pause consumers."
    ),
    Role.CLIENT: (
        "TrustClient: reads verdict streams (stream info, direct get, its own ephemeral consumers)\n"
        "under the JetStream API prefix JS.CCTF.API. Publishes nothing under cctf.v1, calls\n"
        "nothing on the vote streams or their consumers."
    ),
    Role.CA: (
        "cctf ca serve: answers certificate requests and revocations (cctf.v1.ca.>), appends to\n"
        "and reads its own log (cctf.v1.log.ca, CCTF_LOG) only."
    ),
    Role.AGENT: (
        "Publishes ONLY its own region's votes and evidence; no JetStream API at all. Its\n"
        "publish acknowledgements come back (service responses) on its own inbox (_INBOX.<user>.>)."
    ),
}


def _q(value: str) -> str:
    """A double-quoted nats-server config string."""
    if any(ch in value for ch in '"\\\n\r') or any(ord(ch) < 0x20 for ch in value):
        raise ValueError("value cannot be quoted safely in a nats-server config")
    return f'"{value}"'


def _qlist(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _regions_of(users: Sequence[str]) -> tuple[str, ...]:
    return tuple(n[len(AGENT_PREFIX) :] for n in users if n.startswith(AGENT_PREFIX))


def _render_user(name: str, password: str, regions: Sequence[str], indent: str) -> list[str]:
    return _render_entry(name, password, permissions_for(name, regions), indent)


def _render_entry(
    name: str, password: str | None, perms: UserPermissions | None, indent: str
) -> list[str]:
    lines = [f"{indent}{{", f"{indent}  user: {_q(name)}"]
    if password is not None:  # None: a certificate-mapped user (verify_and_map)
        lines.append(f"{indent}  password: {password}")
    if perms is not None:
        lines.append(f"{indent}  permissions: {{")
        for section, allow, deny in (
            ("publish", perms.publish_allow, perms.publish_deny),
            ("subscribe", perms.subscribe_allow, perms.subscribe_deny),
        ):
            lines.append(f"{indent}    {section}: {{")
            lines.append(f"{indent}      allow: [")
            lines += [f"{indent}        {_q(v)}" for v in allow]
            lines.append(f"{indent}      ]")
            if deny:
                lines.append(f"{indent}      deny: {_qlist(deny)}")
            lines.append(f"{indent}    }}")
        if perms.allow_responses:
            lines.append(f"{indent}    allow_responses: true")
        lines.append(f"{indent}  }}")
    lines.append(f"{indent}}}")
    return lines


_ACCOUNT_COMMENTS: Final[Mapping[str, str]] = {
    ACCOUNT_NAME: (
        "The streams (JetStream), the coordinator and admin. Reached from the other accounts only\n"
        "through service exports, each restricted to one account: the server rewrites a request's\n"
        "reply subject to a _R_. subject, so no publish ack or error lands on a stream subject."
    ),
    "CLIENTS": (
        "The client (every relying party holds it; no JetStream): imports from CCTF, as services,\n"
        "only its granted JetStream API calls on the verdict streams and their flow-control\n"
        "replies, and, as a stream, the push deliveries of its consumers (under its inbox)."
    ),
    "AGENT_": (
        "One account per region's agents (no JetStream): imports only its own region's vote and\n"
        "evidence subjects from CCTF, as services."
    ),
}


def _render_links(account: Account, indent: str) -> list[str]:
    lines: list[str] = []
    if account.exports:
        lines.append(f"{indent}exports: [")
        for exp in account.exports:
            lines.append(
                f"{indent}  {{ {exp.kind.value}: {_q(exp.subject)}, accounts: {_qlist(exp.accounts)} }}"
            )
        lines.append(f"{indent}]")
    if account.imports:
        lines.append(f"{indent}imports: [")
        for imp in account.imports:
            lines.append(
                f"{indent}  {{ {imp.kind.value}: {{ account: {_q(imp.account)}, "
                f"subject: {_q(imp.subject)} }}{f', to: {_q(imp.to)}' if imp.to else ''} }}"
            )
        lines.append(f"{indent}]")
    return lines


def _render_accounts(
    names: Sequence[str],
    password: Callable[[str], str],
    *,
    jetstream: bool,
    comments: bool,
    tls_users: Sequence[TlsUser] = (),
    regions: Sequence[str] | None = None,
) -> list[str]:
    regions = _regions_of(names) if regions is None else tuple(regions)
    out = [f"system_account: {SYSTEM_ACCOUNT_NAME}", "", "accounts {"]
    if comments:
        out.append("  # System account: monitoring and server events only.")
    out += [f"  {SYSTEM_ACCOUNT_NAME} {{", "    users: ["]
    for name in names:
        if name == SYSTEM_USER:
            out += _render_user(name, password(name), regions, "      ")
    out += ["    ]", "  }"]
    commented: set[str] = set()
    for account in accounts_for(regions):
        key = (
            account.name if account.name in _ACCOUNT_COMMENTS else account.name.split("_")[0] + "_"
        )
        out.append("")
        if comments and key in _ACCOUNT_COMMENTS and key not in commented:
            out += [f"  # {line}" for line in _ACCOUNT_COMMENTS[key].splitlines()]
            commented.add(key)
        out.append(f"  {account.name} {{")
        if jetstream and account.jetstream:
            out.append("    jetstream: enabled")
        out.append("    users: [")
        seen: set[Role] = set()
        for name in names:
            if name == SYSTEM_USER or account_of(name) != account.name:
                continue
            role = role_of(name)
            if comments and role not in seen and role in _ROLE_COMMENTS:
                out += [f"      # {line}" for line in _ROLE_COMMENTS[role].splitlines()]
            seen.add(role)
            out += _render_user(name, password(name), regions, "      ")
        for tu in tls_users:
            if tu.account == account.name:
                out += _render_entry(tu.san, None, tu.permissions, "      ")
        out.append("    ]")
        out += _render_links(account, "    ")
        out.append("  }")
    out += ["}", ""]
    return out


def password_env_var(user_name: str) -> str:
    """``$CCTF_NATS_<USER>_PASSWORD`` (user upper-cased, ``-`` -> ``_``)."""
    return f"CCTF_NATS_{user_name.upper().replace('-', '_')}_PASSWORD"


def render_accounts_conf(regions: Sequence[str] = DEFAULT_REGIONS) -> str:
    """``deploy/nats/accounts.conf``: accounts, users, permissions; passwords from the environment."""
    names = list(build_users(regions))
    header = [
        "# CCTF accounts, users and permissions. Included by single.conf and cluster/node-*.conf.",
        "#",
        "# GENERATED from cctf/bus/accounts.py by `cctf nats accounts-conf` -- do not edit by hand;",
        "# a test checks that this file equals the generated one. Regions: " + ", ".join(regions),
        "#",
        "# Passwords are NOT stored here: each one is read from an environment variable when the",
        "# server starts (e.g. $CCTF_NATS_ADMIN_PASSWORD); a missing one stops the server. Values of",
        "# environment variables are parsed like config values (numbers, booleans, '#' comments),",
        "# so use passwords that start with a letter and hold only letters and digits, e.g.:",
        '#     export CCTF_NATS_ADMIN_PASSWORD="p$(openssl rand -hex 24)"',
        "",
    ]
    body = _render_accounts(
        names, lambda n: "$" + password_env_var(n), jetstream=True, comments=True
    )
    return "\n".join(header + body)


def component_san(trust_domain: str, role: str) -> str:
    """The URI SAN of an operator-issued component certificate (``admin``, ``coordinator``,
    ``client``, ``ca``) in the TLS deployment: ``spiffe://<trust-domain>/cctf/<role>``."""
    return f"spiffe://{trust_domain}/cctf/{role}"


def render_tls_accounts_conf(
    trust_domain: str, agents: Sequence[tuple[str, str]], regions: Sequence[str] | None = None
) -> str:
    """``deploy/nats/tls/accounts.conf``: the production shape, every user certificate-mapped
    (``verify_and_map``): one user per agent and per agent's join credential, one per component
    role; the ONLY password is the system account's (from the environment)."""
    regions = tuple(dict.fromkeys(r for r, _a in agents)) if regions is None else tuple(regions)
    roles = (ADMIN_USER, COORDINATOR_USER, CLIENT_USER, CA_USER)
    tls_users = (
        *agent_tls_users(trust_domain, agents),
        *(join_tls_user(trust_domain, r, a) for r, a in agents),
        *(role_tls_user(component_san(trust_domain, n), n, regions) for n in roles),
    )
    header = [
        "# CCTF accounts for NATS over TLS (tls { verify_and_map: true }): every user is the URI SAN",
        "# of a certificate (docs/ca.md §8-§10). Included by tls/single.conf.",
        "#",
        "# GENERATED by `cctf nats accounts-conf --tls` -- do not edit by hand; a test checks that",
        f"# this file equals the generated one. Trust domain {trust_domain}; agents: "
        + ", ".join(f"{r}/{a}" for r, a in agents),
        "#",
        "# No agent, coordinator, client, CA or admin password exists: the only password is the",
        "# system account's (monitoring), read from $CCTF_NATS_SYS_PASSWORD. Agents: CA-issued",
        "# certificates (spiffe://<td>/cctf/agent/<region>/<agent>) and one-time join certificates",
        "# (.../cctf/join/<region>/<agent>); components: operator-issued (.../cctf/<role>).",
        "# A revoked agent: re-render without it and `nats-server --signal reload` (docs/ca.md §10).",
        "",
    ]
    body = _render_accounts(
        [SYSTEM_USER],
        lambda n: "$" + password_env_var(n),
        jetstream=True,
        comments=True,
        tls_users=tls_users,
        regions=regions,
    )
    return "\n".join(header + body)


def render_server_config(
    *,
    server_name: str,
    port: int,
    http_port: int,
    users: Mapping[str, NatsUser],
    store_dir: Path | None,
    host: str = "127.0.0.1",
    cluster_port: int | None = None,
    route_ports: Sequence[int] = (),
    route_user: NatsUser | None = None,
    cluster_name: str = CLUSTER_NAME,
    max_memory_store: int = DEFAULT_MAX_MEMORY_STORE,
    max_file_store: int = DEFAULT_MAX_FILE_STORE,
    max_payload: int = MAX_PAYLOAD_BYTES,
    pid_file: Path | None = None,
    tls: ServerTls | None = None,
    tls_users: Sequence[TlsUser] = (),
    regions: Sequence[str] | None = None,
) -> str:
    """Render a nats-server config. The result holds passwords: write it 0600, never print it.

    ``store_dir=None`` disables JetStream. ``cluster_port`` enables the cluster block; routes go to
    ``route_ports`` on ``host`` (authenticated with ``route_user`` when given). Users go to their
    accounts (:func:`cctf.bus.accounts.account_of`: ``sys`` to the system account, agents to their
    region's account, the others to ``CCTF``); the regions of the permissions and of the accounts
    are those of the ``agent-<region>`` users.

    ``tls`` turns on TLS with ``verify_and_map`` on the client port: EVERY client must then present
    a certificate from ``tls.ca_file`` that maps to one of ``tls_users`` (:mod:`cctf.bus.tlsauth`;
    password users can no longer connect there, keep them for a fabric without ``tls``).
    ``regions`` (default: those of the ``agent-<region>`` users) gives the accounts and permissions
    when no agent has a password: the production shape is ``users={"sys": ...}``, every other
    principal a certificate.
    """
    if not _SERVER_NAME_RE.fullmatch(server_name) or not _SERVER_NAME_RE.fullmatch(cluster_name):
        raise ValueError("server and cluster names must match [A-Za-z0-9_-]{1,64}")
    if max_payload > 64 * 1024 * 1024 or max_payload <= 0:
        raise ValueError("max_payload must be in (0, 64 MiB]")
    for user in users.values():
        check_password(user)
    out: list[str] = [
        "# Generated by cctf.devfabric.nats_config. Holds passwords: keep it mode 0600.",
        f"server_name: {_q(server_name)}",
        f"listen: {_q(f'{host}:{port}')}",
        f"http: {_q(f'{host}:{http_port}')}",
        f"max_payload: {max_payload}",
        "max_control_line: 4096",
        "max_connections: 4096",
        f"max_subscriptions: {MAX_SUBSCRIPTIONS_PER_CONNECTION}",
        "max_pending: 67108864",
        'write_deadline: "10s"',
        'ping_interval: "20s"',
        "ping_max: 3",
        # lame duck (SIGUSR2, a rolling restart): JetStream leadership is handed over at once,
        # clients are moved off after the grace period, spread over the duration (30 s minimum)
        f"lame_duck_grace_period: {_q(LAME_DUCK_GRACE_PERIOD)}",
        f"lame_duck_duration: {_q(LAME_DUCK_DURATION)}",
        "debug: false",
        "trace: false",
        "logtime: true",
    ]
    if pid_file is not None:
        out.append(f"pid_file: {_q(str(pid_file))}")
    if tls is not None:
        out += [
            "tls {",
            f"  cert_file: {_q(tls.cert_file)}",
            f"  key_file: {_q(tls.key_file)}",
            f"  ca_file: {_q(tls.ca_file)}",
            "  verify_and_map: true",
            f"  timeout: {tls.timeout_s:g}",
            "}",
        ]
    elif tls_users:
        raise ValueError("certificate-mapped users need the tls block")
    if store_dir is not None:
        out += [
            "jetstream {",
            f"  store_dir: {_q(str(store_dir))}",
            f"  max_memory_store: {max_memory_store}",
            f"  max_file_store: {max_file_store}",
            "}",
        ]
    if cluster_port is not None:
        out += [
            "cluster {",
            f"  name: {_q(cluster_name)}",
            f"  listen: {_q(f'{host}:{cluster_port}')}",
        ]
        if route_user is not None:
            check_password(route_user)
            out += [
                "  authorization {",
                f"    user: {_q(route_user.name)}",
                f"    password: {_q(route_user.password)}",
                "    timeout: 2",
                "  }",
            ]
            cred = f"{route_user.name}:{route_user.password}@"
        else:
            cred = ""
        routes = [f"nats-route://{cred}{host}:{p}" for p in route_ports]
        out += [f"  routes: {_qlist(routes)}", "}"]
    by_name = {u.name: u for u in users.values()}
    out += _render_accounts(
        list(by_name),
        lambda n: _q(by_name[n].password),
        jetstream=store_dir is not None,
        comments=False,
        tls_users=tls_users,
        regions=regions,
    )
    return "\n".join(out)
