"""The demo's coordinators: one (``coord-1``), or three (``cctf demo --coordinators 3``: ``coord-1``
.. ``coord-3``, each its own key, NATS connection, durables, LKG and safe-mode state, signed log, all
with ``per_coordinator_subjects``; the demo's subscriber then uses ``coordinators: 2-of-3`` for DNS
verdicts, identity verdicts and safe mode).

:func:`coordinator_ids` names them, :func:`start_coordinators` starts them (each with a
:class:`~cctf.devfabric.demo_log.HeadRecorder` of its published heads), :func:`check_logs` stops
nothing and re-derives every coordinator's log at the end (one ``log`` line each, in order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cctf.bus.connect import Connection
from cctf.bus_schemas.heads import log_origin
from cctf.client.coordquorum import CoordinatorPolicy
from cctf.coordinator.config import CoordinatorConfig, RuleConfig
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.service import Coordinator
from cctf.coordinator.tally import QuorumRule
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.demo_log import HeadRecorder, check_demo_log, serve_log
from cctf.devfabric.nats import NatsFabric
from cctf.identity.targets import IdentityTargets

__all__ = [
    "DemoCoordinator",
    "check_logs",
    "coordinator_ids",
    "fabric_keys",
    "policy_for",
    "start_coordinators",
]

#: Coordinator counts ``cctf demo --coordinators`` takes.
COORDINATOR_COUNTS = (1, 3)


def coordinator_ids(n: int) -> tuple[str, ...]:
    """``coord-1`` .. ``coord-<n>``."""
    if n not in COORDINATOR_COUNTS:
        raise ValueError(f"--coordinators takes 1 or 3, not {n}")
    return tuple(f"coord-{i}" for i in range(1, n + 1))


def policy_for(ids: Sequence[str]) -> CoordinatorPolicy | None:
    """The subscriber's policy: none for one coordinator, the majority (2-of-3) for three."""
    return None if len(ids) == 1 else CoordinatorPolicy(len(ids) // 2 + 1, tuple(ids))


def fabric_keys(
    workdir: Path,
    agents: dict[str, str],
    suite: SuiteId,
    coordinators: Sequence[str],
    coordinator_region: str,
) -> tuple[dict[str, SigningKey], dict[str, SigningKey], TrustConfig]:
    """Fresh signing keys for each region's agent (``agents``: region -> agent id) and each
    coordinator, saved under ``workdir/keys``, and the trust config naming them (saved as
    ``workdir/trust.json``)."""
    agent_keys = {r: SigningKey.generate(suite) for r in agents}
    coord_keys = {c: SigningKey.generate(suite) for c in coordinators}
    trust = TrustConfig(
        [TrustEntry(Role.AGENT, a, r, agent_keys[r].public) for r, a in agents.items()]
        + [
            TrustEntry(Role.COORDINATOR, c, coordinator_region, key.public)
            for c, key in coord_keys.items()
        ]
    )
    keydir = workdir / "keys"
    for r, a in agents.items():
        save_signing_key(keydir / f"{a}.key.json", agent_keys[r])
    for c, key in coord_keys.items():
        save_signing_key(keydir / f"{c}.key.json", key)
    trust.save(workdir / "trust.json")
    return agent_keys, coord_keys, trust


@dataclass
class DemoCoordinator:
    id: str
    key: SigningKey
    service: Coordinator
    heads: HeadRecorder


async def start_coordinators(
    fabric: NatsFabric,
    admin: Connection,
    keys: dict[str, SigningKey],
    trust: TrustConfig,
    stack: contextlib.AsyncExitStack,
    *,
    region: str,
    electorate: Sequence[str],
    names: Sequence[str],
    rule: QuorumRule,
    round_ms: int,
    lkg: LkgConfig | None,
    identity: IdentityTargets,
) -> list[DemoCoordinator]:
    """Start one coordinator per key (in ``keys``' order); each is stopped by ``stack``."""
    several = len(keys) > 1
    out: list[DemoCoordinator] = []
    for cid, key in keys.items():
        nc: Any = await fabric.connect("coordinator", name=cid)
        stack.push_async_callback(nc.close)
        service = Coordinator(
            CoordinatorConfig(
                coordinator=cid,
                region=region,
                rule=RuleConfig(k=rule.k, n=rule.n),
                electorate=list(electorate),
                names=[(name, "A") for name in names],
                verdict_regions=[region],
                round_ms=round_ms,
                round_grace_ms=max(500, round_ms // 2),
                lkg=lkg or LkgConfig(),
                identity=identity,
                signing="batch",  # one signed log head per batch (issue #9), logged in CCTF_LOG
                per_coordinator_subjects=several,  # k-of-m: each on its own subjects
            ),
            nc,
            key=key,
            trust=trust,
        )
        heads = HeadRecorder(cid, log_origin(key.kid), key.public)
        await heads.start(admin)  # every head published, checked against the log at the end
        await service.start()
        stack.push_async_callback(service.stop)
        await serve_log(nc, cid, key.public, stack)  # the log API: subscribers' consistency proofs
        out.append(DemoCoordinator(cid, key, service, heads))
    return out


async def check_logs(admin: Connection, coordinators: Sequence[DemoCoordinator]) -> list[Any]:
    """Stop every coordinator (its log appends drained), then re-derive each one's log and check
    every head it published: one ``{"size", "root", "verified", ...}`` per coordinator."""
    for c in coordinators:
        await c.service.stop()
    return [await check_demo_log(admin, c.id, c.key.public, c.heads) for c in coordinators]
