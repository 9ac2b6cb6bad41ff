"""The fabric's NATS accounts and their exports/imports, as pure data (split from
:mod:`cctf.bus.accounts`, which holds the roles, users and permissions this model is built from).

:func:`accounts_for` is the single source of the accounts: ``CCTF`` (JetStream), ``CLIENTS`` and one
``AGENT_<REGION>`` per region, and of what each reaches in ``CCTF`` (services, so that the server
rewrites reply subjects; the only streams are the client's inbox, heads and live verdicts). See
:mod:`cctf.bus.accounts` for why.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cctf.bus.accounts import (
    ACCOUNT_NAME,
    CLIENT_ACCOUNT_NAME,
    CLIENT_LIVE_SUBJECTS,
    CLIENT_USER,
    HEAD_SUBJECTS,
    LOG_API_SUBJECTS,
    Role,
    agent_account_name,
    agent_service_subjects,
    client_api_subject,
    granted_subjects,
    inbox_prefix,
    join_service_subject,
    validate_region,
)

__all__ = ["Account", "Export", "ExportKind", "Import", "accounts_for"]


class ExportKind(enum.StrEnum):
    """A service (request/reply: the server rewrites the reply subject) or a stream (one way)."""

    SERVICE = "service"
    STREAM = "stream"


@dataclass(frozen=True)
class Export:
    """Subjects an account lets other accounts reach; ``accounts``: the only ones allowed."""

    kind: ExportKind
    subject: str
    accounts: tuple[str, ...]


@dataclass(frozen=True)
class Import:
    """Subjects an account reaches in ``account`` (same subject on both sides)."""

    kind: ExportKind
    account: str
    subject: str
    to: str = ""  # the subject in the importing account, when not the same


@dataclass(frozen=True)
class Account:
    """One NATS account of the fabric: whether it has JetStream, its exports and imports."""

    name: str
    jetstream: bool
    exports: tuple[Export, ...] = ()
    imports: tuple[Import, ...] = ()


def accounts_for(regions: Sequence[str]) -> tuple[Account, ...]:
    """The fabric's accounts (but ``SYS``): ``CCTF`` first (JetStream: streams, coordinator, admin),
    then ``CLIENTS``, then one account per region's agents. Everything another account reaches in
    ``CCTF`` is a
    *service* export restricted to that one account: the server rewrites the reply subject of each
    request to a ``_R_.`` subject, so its answers (publish acks, errors) can never be stored by a
    stream listening on a reply subject chosen by the requester. The one *stream* export is the
    client's inbox (``_INBOX.client.>``), for the push deliveries of its consumers."""
    regions = tuple(validate_region(r) for r in regions)
    exports: list[Export] = []
    agents: list[Account] = []
    for region in regions:
        name = agent_account_name(region)
        subjects = (*agent_service_subjects(region), join_service_subject(region))
        exports += [Export(ExportKind.SERVICE, s, (name,)) for s in subjects]
        imports = tuple(Import(ExportKind.SERVICE, ACCOUNT_NAME, s) for s in subjects)
        agents.append(Account(name, jetstream=False, imports=imports))
    # the client: its granted JetStream API calls (and flow-control replies) as services, and the
    # push deliveries of its consumers (deliver subjects under its inbox) as a stream
    client_services = granted_subjects(Role.CLIENT, regions)
    client_inbox = inbox_prefix(CLIENT_USER) + ".>"
    exports += [Export(ExportKind.SERVICE, s, (CLIENT_ACCOUNT_NAME,)) for s in client_services]
    exports.append(Export(ExportKind.STREAM, client_inbox, (CLIENT_ACCOUNT_NAME,)))
    exports.append(Export(ExportKind.SERVICE, LOG_API_SUBJECTS, (CLIENT_ACCOUNT_NAME,)))
    exports += [Export(ExportKind.STREAM, s, (CLIENT_ACCOUNT_NAME,)) for s in CLIENT_LIVE_SUBJECTS]
    client_imports = [
        Import(ExportKind.SERVICE, ACCOUNT_NAME, s, to=client_api_subject(s))
        for s in client_services
    ]
    client_imports.append(Import(ExportKind.SERVICE, ACCOUNT_NAME, LOG_API_SUBJECTS))
    client_imports.append(Import(ExportKind.STREAM, ACCOUNT_NAME, client_inbox))
    exports.append(Export(ExportKind.STREAM, HEAD_SUBJECTS, (CLIENT_ACCOUNT_NAME,)))
    client_imports.append(Import(ExportKind.STREAM, ACCOUNT_NAME, HEAD_SUBJECTS))
    client_imports += [Import(ExportKind.STREAM, ACCOUNT_NAME, s) for s in CLIENT_LIVE_SUBJECTS]
    clients = Account(CLIENT_ACCOUNT_NAME, jetstream=False, imports=tuple(client_imports))
    return (Account(ACCOUNT_NAME, jetstream=True, exports=tuple(exports)), clients, *agents)
