"""The identity paths of ``cctf demo``: the local identity fabric (SPIFFE trust domain, bundle
endpoint, OIDC issuer, workload TLS endpoints) and the ``--fail-path`` faults on it.

``--fail-path`` takes a path down for the whole run:

* ``dns``: every resolver is blackholed (the workload names' resolvers are the demo's resolvers),
  so every name verdict is UNAVAILABLE and the dns path of every workload is unavailable;
* ``mtls``: every workload TLS endpoint is down (connections reset), or, with
  ``--mtls-fault wrong-identity``, presents a valid SVID of another SPIFFE ID (the path fails);
* ``oidc``: the OIDC issuer is down (discovery and JWKS unreachable: the path is unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cctf.bus_schemas.evidence import IdentityKind
from cctf.client.identity import IdentityClient, workload_to_json
from cctf.client.sdk import TrustClient, TrustClientError
from cctf.devfabric.identity import IdentityFabric, Mode, Presentation, WorkloadEndpoint
from cctf.gateway.app import create_app
from cctf.gateway.server import GatewayServer
from cctf.identity.fetch import FetchError, probe_tls
from cctf.telemetry import get_logger
from cctf.util.deadline import stop_task

_log = get_logger("cctf.demo")

PATHS = ("dns", "mtls", "oidc")
MTLS_FAULTS = ("down", "wrong-identity")
CHAIN_TIMEOUT_S = 3.0


def check_fail_paths(paths: Sequence[str], mtls_fault: str) -> None:
    for p in paths:
        if p not in PATHS:
            raise ValueError(f"--fail-path takes {', '.join(PATHS)}, not {p!r}")
    if len(set(paths)) != len(paths):
        raise ValueError("--fail-path names each path at most once")
    if mtls_fault not in MTLS_FAULTS:
        raise ValueError(f"--mtls-fault takes {', '.join(MTLS_FAULTS)}, not {mtls_fault!r}")


def apply_faults(fabric: IdentityFabric, paths: Sequence[str], mtls_fault: str) -> list[str]:
    """Set the identity faults of ``paths`` (dns is the DNS servers' business); returns what was
    done, one line each."""
    done: list[str] = []
    if "mtls" in paths:
        for w in fabric.workloads.values():
            if mtls_fault == "down":
                w.set_mode(Mode.DOWN)
            else:
                w.present(Presentation.WRONG_IDENTITY)
        done.append(f"fail-path mtls: every workload endpoint {mtls_fault}")
    if "oidc" in paths:
        fabric.issuer.set_mode(Mode.DOWN)
        done.append("fail-path oidc: the OIDC issuer is down")
    return done


async def start_identity_fabric(
    workdir: Path,
    regions: Sequence[str],
    stack: contextlib.AsyncExitStack,
    progress: Callable[[str], None],
    *,
    fail_paths: Sequence[str] = (),
    mtls_fault: str = "down",
) -> IdentityFabric:
    fabric = IdentityFabric(workdir / "identity", regions=regions)
    await fabric.astart()
    stack.push_async_callback(fabric.astop)
    td = fabric.trust_domain
    progress(f"web PKI of the HTTPS endpoints: {fabric.web_ca_file}")
    progress(
        f"SPIFFE trust domain {td.name}: bundle {fabric.bundle.bundle_url(regions[0])} "
        f"(sequence {td.sequence})"
    )
    progress(f"OIDC issuer {fabric.issuer.issuer_url} (ES256)")
    for w in fabric.workloads.values():
        progress(f"workload {w.spiffe_id}: X.509-SVID on {w.address(regions[0])}")
    for line in apply_faults(fabric, fail_paths, mtls_fault):
        progress(line)
    return fabric


def workload_line(obj: Mapping[str, Any]) -> str:
    """``workload <spiffe-id> round=<r> <OUTCOME> dns=<state> mtls=<state> oidc=<state>`` with
    each non-holding path's reason in parentheses (one line, no control characters)."""
    parts = []
    for path in PATHS:
        p = obj["paths"][path]
        reason = f"({p['reason']})" if p["state"] != "holds" and p["reason"] else ""
        parts.append(f"{path}={p['state']}{reason}")
    text = f"workload {obj['workload']} round={obj['round']} {obj['outcome'].upper()} " + " ".join(
        parts
    )
    return "".join(c if c.isprintable() else "?" for c in text)


def identity_subjects(fabric: IdentityFabric) -> list[tuple[IdentityKind, str]]:
    """Every identity subject the demo's coordinator decides on."""
    subjects: list[tuple[IdentityKind, str]] = [
        (IdentityKind.BUNDLE, fabric.trust_domain.name),
        (IdentityKind.JWKS, fabric.issuer.issuer_url),
    ]
    subjects.extend((IdentityKind.MTLS, w.spiffe_id) for w in fabric.workloads.values())
    return subjects


class RelyingParty:
    """The demo's relying party: after each round's DNS verdicts, it waits (bounded) for that
    round's identity verdicts, then negotiates every workload through the SDK, presenting the
    workload's ID token (freshly minted by the local issuer, as the workload would present it) and
    the X.509-SVID chain its endpoint presents to the relying party.
    Decisions are emitted in round order by one task; :meth:`close` stops it."""

    def __init__(
        self,
        client: IdentityClient,
        fabric: IdentityFabric,
        emit: Callable[[dict[str, Any]], None],
        *,
        round_ms: int,
        region: str,
    ) -> None:
        self.client = client
        self.fabric = fabric
        self.region = region
        self._emit = emit
        self._round_ms = round_ms
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self.decided: set[int] = set()
        self._task = asyncio.create_task(self._loop())

    def round_complete(self, round_: int) -> None:
        self._queue.put_nowait(round_)

    async def close(self) -> None:
        await stop_task(self._task, 2.0, what="relying party")

    def failed(self) -> BaseException | None:
        if self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def _loop(self) -> None:
        while True:
            round_ = await self._queue.get()
            await self._await_identity_round(round_)
            for w in self.fabric.workloads.values():
                token = self.fabric.issuer.mint_id_token(w.spiffe_id, w.spec.audience)
                chain = await self._presented_chain(w)
                try:
                    decision = await self.client.workload(w.spiffe_id, token=token, chain=chain)
                except TrustClientError as exc:
                    self._emit(_undecided(w.spiffe_id, round_, str(exc)))
                    continue
                except Exception as exc:  # a bug must cost one decision, not the demo
                    _log.error("workload_decision_failed", workload=w.spiffe_id, error=repr(exc))
                    self._emit(_undecided(w.spiffe_id, round_, f"internal error: {exc!r}"))
                    continue
                obj = workload_to_json(decision)
                obj["round"] = round_
                self._emit(obj)
            self.decided.add(round_)

    async def _presented_chain(self, workload: WorkloadEndpoint) -> str | None:
        """The PEM chain the workload's endpoint presents to this relying party (validated locally
        by the SDK as well as against the mtls verdict); ``None`` when it cannot be reached."""
        host, _, port = workload.address(self.region).rpartition(":")
        try:
            ders = await probe_tls(host, int(port), timeout_s=CHAIN_TIMEOUT_S)
        except (FetchError, OSError, ValueError):
            return None
        return "".join(ssl.DER_cert_to_PEM_cert(d) for d in ders)

    async def _await_identity_round(self, round_: int) -> None:
        """Until every identity subject has a verdict of ``round_`` or later, or one and a half
        rounds passed (a path that is down still gets its UNAVAILABLE verdict by the round's
        deadline; waiting longer would let the round's DNS verdicts go stale)."""
        deadline = time.monotonic() + 1.5 * self._round_ms / 1000 + 0.25
        pending = identity_subjects(self.fabric)
        while pending and time.monotonic() < deadline:
            still = []
            for kind, subject in pending:
                try:
                    v = await self.client.trust.identity_verdict(kind, subject)
                except Exception:  # none yet, refused, bus busy: wait for the next look
                    still.append((kind, subject))
                    continue
                if v.round < round_:
                    still.append((kind, subject))
            pending = still
            if pending:
                await asyncio.sleep(0.1)


def _undecided(spiffe_id: str, round_: int, why: str) -> dict[str, Any]:
    reason = " ".join(why.split())[:200] or "lookup failed"
    return {
        "workload": spiffe_id,
        "round": round_,
        "outcome": "unavailable",
        "reason": reason,
        "policy": "",
        "paths": {p: {"state": "unavailable", "reason": "lookup_failed"} for p in PATHS},
    }


async def start_relying_party(
    trust: TrustClient,
    fabric: IdentityFabric,
    region: str,
    stack: contextlib.AsyncExitStack,
    progress: Callable[[str], None],
    emit: Callable[[dict[str, Any]], None],
    *,
    round_ms: int,
    gateway_host: str = "127.0.0.1",
    gateway_port: int = 0,
) -> RelyingParty:
    """The SDK's identity client over ``trust``, the gateway serving it, and the per-round
    negotiation of every workload."""
    client = IdentityClient(trust, fabric.targets(region, issuer_view=True))
    server = GatewayServer(create_app(client), gateway_host, gateway_port)
    await server.start()
    stack.push_async_callback(server.stop)
    progress(f"gateway: {server.url} (OpenAPI: {server.url}/openapi.json)")
    rp = RelyingParty(client, fabric, emit, round_ms=round_ms, region=region)
    stack.push_async_callback(rp.close)
    return rp
