"""``cctf demo``'s options and naming (split from :mod:`cctf.devfabric.demo`, which re-exports
them): :class:`DemoOptions` (validated as one-line ``ValueError``), :class:`DemoParts` (what tests
get at start), the ids of the demo's agents, resolvers and coordinator, and its keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.chaos.faults import Faults
from cctf.chaos.signing import SignedZone
from cctf.chaos.zone import DEMO_NAMES
from cctf.coordinator.lkgconfig import LkgConfig
from cctf.coordinator.tally import QuorumRule
from cctf.crypto.keys import SigningKey
from cctf.crypto.suites import SuiteId
from cctf.crypto.trust import TrustConfig
from cctf.devfabric.demo_coordinators import coordinator_ids, fabric_keys
from cctf.devfabric.demo_identity import check_fail_paths
from cctf.devfabric.identity import IdentityFabric
from cctf.devfabric.nats import NatsFabric
from cctf.errors import CctfError

COORDINATOR_ID = "coord-1"
VERDICT_REGION = DEFAULT_REGIONS[0]


def resolver_id(region: str) -> str:
    return f"dns-{region}"


def agent_id(region: str) -> str:
    return f"agent-{region}"


def poison_address(index: int) -> str:
    """The forged A record of the ``index``-th poisoned resolver: distinct per resolver."""
    return f"203.0.113.{66 + index}"


def make_keys_and_trust(
    workdir: Path, regions: Sequence[str], suite: SuiteId
) -> tuple[dict[str, SigningKey], SigningKey, TrustConfig]:
    """Fresh signing keys for one agent per region and the coordinator, saved under
    ``workdir/keys``, and the trust config naming them (saved as ``workdir/trust.json``)."""
    agent_keys, coord_keys, trust = make_fabric_keys(workdir, regions, suite, (COORDINATOR_ID,))
    return agent_keys, coord_keys[COORDINATOR_ID], trust


def make_fabric_keys(
    workdir: Path, regions: Sequence[str], suite: SuiteId, coordinators: Sequence[str]
) -> tuple[dict[str, SigningKey], dict[str, SigningKey], TrustConfig]:
    """:func:`make_keys_and_trust` for several coordinators (a key each, in order)."""
    agents = {r: agent_id(r) for r in regions}
    return fabric_keys(workdir, agents, suite, coordinators, VERDICT_REGION)


@dataclass(frozen=True)
class DemoOptions:
    rounds: int | None = None
    poison: int = 0
    blackhole: int = 0
    json: bool = False
    nodes: int = 3
    round_ms: int = 1_000
    k: int = 3
    names: tuple[str, ...] = DEMO_NAMES
    suite: SuiteId = SuiteId.HYBRID
    workdir: Path | None = None
    fabric_file: Path = field(default_factory=lambda: Path(".cctf") / "fabric.json")
    keep_workdir: bool = False
    timeout_s: float | None = None  # overall cap when --rounds is given
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    fail_paths: tuple[str, ...] = ()
    mtls_fault: str = "down"
    lkg: LkgConfig | None = None  # the coordinator's lkg: block (default: its defaults)
    gateway_port: int = 0
    bogus: int = 0
    coordinators: int = 1  # 3: coord-1..coord-3, the subscriber combines 2-of-3

    def validate(self) -> None:
        check_fail_paths(self.fail_paths, self.mtls_fault)
        coordinator_ids(self.coordinators)  # raises ValueError with a clear message
        n = len(DEFAULT_REGIONS)
        if not 0 <= self.gateway_port <= 65535:
            raise ValueError(f"--gateway-port takes 0..65535, not {self.gateway_port}")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port takes 1..65535, not {self.metrics_port}")
        if self.rounds is not None and self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        if not all(0 <= c <= n for c in (self.poison, self.blackhole, self.bogus)):
            raise ValueError(f"--poison, --bogus and --blackhole take 0..{n}")
        if self.poison + self.blackhole + self.bogus > n:
            raise ValueError(
                f"--poison plus --bogus plus --blackhole cannot exceed the {n} resolvers"
            )
        if self.nodes not in (1, 3):
            raise ValueError("--nodes takes 1 or 3")
        if self.round_ms < 200:
            raise ValueError("--round-ms must be at least 200")
        QuorumRule(self.k, n)  # raises ValueError with a clear message

    def faults_for(self, index: int) -> Faults:
        """Resolvers 0..poison-1 are poisoned, the next ``bogus`` ones serve tampered DNSSEC
        records, the last ``blackhole`` ones are blackholed; with ``--fail-path dns`` every one is
        blackholed."""
        if "dns" in self.fail_paths:
            return Faults(blackhole=True)
        if index < self.poison:
            return Faults(poison=poison_address(index))
        if index < self.poison + self.bogus:
            return Faults(dnssec="tampered")
        if index >= len(DEFAULT_REGIONS) - self.blackhole:
            return Faults(blackhole=True)
        return Faults()


@dataclass(frozen=True)
class DemoParts:
    """What ``run_demo(on_start=...)`` is given once NATS, DNS and the identity fabric are up and
    before any agent runs (tests subscribe to the bus here)."""

    nats: NatsFabric
    identity: IdentityFabric
    workdir: Path
    signing_keys: tuple[SigningKey, ...] = ()  # agents' and coordinator's (leak checks)
    zone: SignedZone | None = None  # the signed demo zone (its KSK and ZSK: leak checks)


class DemoError(CctfError):
    """The demo could not start (the message is one line, e.g. a busy metrics port)."""
