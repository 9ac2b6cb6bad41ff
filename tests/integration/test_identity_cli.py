"""``cctf workload`` and ``cctf validate cert|token`` as processes, against a real nats-server with
signed verdicts and the local identity fabric's HTTPS endpoints; exit codes as ``cctf check``."""

from __future__ import annotations

import json
from pathlib import Path

from clientbus import (  # noqa: F401 - fixtures bus, cli_files
    LENIENT,
    Bus,
    bus_fixture,
    cli_files_fixture,
    run_cli,
)
from gatewayworld import RelyingWorld
from wirefactories import World

from cctf.devfabric.identity import IdentityFabric, Presentation


async def _setup(
    bus: Bus, cli_files: tuple[World, list[str]], fabric: IdentityFabric, tmp_path: Path
) -> tuple[RelyingWorld, list[str]]:
    world, common = cli_files
    targets = tmp_path / "identity.json"
    targets.write_text(json.dumps(fabric.targets_document()))
    rw = RelyingWorld(bus, world, fabric)
    await rw.bundle()
    await rw.jwks()
    return rw, [*common, "--identity", str(targets), *LENIENT]


async def test_validate_cert_and_token_exit_codes(
    bus: Bus, cli_files: tuple[World, list[str]], identity_fabric: IdentityFabric, tmp_path: Path
) -> None:
    _rw, opts = await _setup(bus, cli_files, identity_fabric, tmp_path)
    api = identity_fabric.workload("api")
    good = tmp_path / "good.pem"
    good.write_bytes(api.issued().chain_pem())
    rogue = tmp_path / "rogue.pem"
    rogue.write_bytes(api.issued(Presentation.UNTRUSTED).chain_pem())

    code, out, err = await run_cli("validate", "cert", str(good), *opts, "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["decision"] == "valid" and body["spiffe_id"] == api.spiffe_id
    code, out, _ = await run_cli("validate", "cert", str(rogue), *opts)
    assert code == 3 and out.startswith("INVALID ") and "unknown_issuer" in out

    token = identity_fabric.issuer.mint_id_token(api.spiffe_id, api.spec.audience)
    tok = tmp_path / "token.jwt"
    tok.write_text(token + "\n")
    code, out, err = await run_cli(
        "validate", "token", str(tok), "--audience", api.spec.audience, *opts, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["subject"] == api.spiffe_id
    code, out, err = await run_cli("validate", "token", str(tok), "--audience", "nope", *opts)
    assert code == 3 and "audience_not_configured" in out
    assert token not in out + err  # never printed

    code, _, err = await run_cli("validate", "cert", str(tmp_path / "missing.pem"), *opts)
    assert code == 1 and "missing.pem" in err and len(err.strip().splitlines()) == 1


async def test_workload_exit_codes(
    bus: Bus, cli_files: tuple[World, list[str]], identity_fabric: IdentityFabric, tmp_path: Path
) -> None:
    rw, opts = await _setup(bus, cli_files, identity_fabric, tmp_path)
    api = identity_fabric.workload("api")
    tok = tmp_path / "token.jwt"
    tok.write_text(identity_fabric.issuer.mint_id_token(api.spiffe_id, api.spec.audience))

    await rw.dns(api.spec.dns_name)
    code, out, err = await run_cli("workload", api.spiffe_id, *opts, "--json")
    assert code == 3, err  # dns holds, mtls no verdict, oidc no token: unavailable
    body = json.loads(out)
    assert body["outcome"] == "unavailable" and body["paths"]["oidc"]["reason"] == "no_token"

    code, out, err = await run_cli("workload", api.spiffe_id, "--token-file", str(tok), *opts)
    assert code == 0, err
    assert out.startswith(f"{api.spiffe_id} TRUSTED dns=holds")

    # a presented chain on the mtls path: validated under the quorum bundle, for this workload only
    await rw.mtls(api.spiffe_id)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(identity_fabric.workload("db").issued().chain_pem())
    code, out, err = await run_cli(
        "workload", api.spiffe_id, "--chain-file", str(chain), *opts, "--json"
    )
    assert code == 3, err  # dns holds, mtls fails (another workload's SVID), oidc no token
    body = json.loads(out)
    assert body["paths"]["mtls"] == {"state": "fails", "reason": "wrong_spiffe_id"}
    assert body["outcome"] == "unavailable"

    code, _, err = await run_cli("workload", "spiffe://demo.test/nobody", *opts)
    assert code == 1 and "not configured" in err
    code, _, err = await run_cli("workload", "spiffe://Demo.test/x", *opts)
    assert code == 2 and "trust_domain_invalid" in err
