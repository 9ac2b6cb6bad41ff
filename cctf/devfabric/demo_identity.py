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

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from cctf.devfabric.identity import IdentityFabric, Mode, Presentation

PATHS = ("dns", "mtls", "oidc")
MTLS_FAULTS = ("down", "wrong-identity")


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
    progress(
        f"SPIFFE trust domain {td.name}: bundle endpoint {fabric.bundle.bundle_url(regions[0])} "
        f"(one port per region; sequence {td.sequence}), web CA {fabric.web_ca_file}"
    )
    progress(f"OIDC issuer {fabric.issuer.issuer_url} (discovery + JWKS, ES256)")
    for w in fabric.workloads.values():
        progress(
            f"workload {w.spiffe_id} ({w.spec.dns_name}): X.509-SVID on "
            f"{w.address(regions[0])} (one port per region)"
        )
    for line in apply_faults(fabric, fail_paths, mtls_fault):
        progress(line)
    return fabric
