"""No token, private key or full certificate crosses the bus: a short demo run (NATS cluster, DNS
servers, identity fabric, agents, coordinator, relying party) while an admin connection of the
CCTF account (where every region's publishes are imported and every stream lives) subscribes to
``>`` and keeps every message: subject, reply, headers and payload.

Every message is scanned by ``find_leaks`` (tests/support/idfabric.py): JWT-shaped strings and every
token the fabric minted, PEM markers, the PKCS#8 / SEC1 DER and the raw scalar of every private key
the fabric generated, and the DER of every certificate it issued; and for the demo's own secrets
(every agent's and the coordinator's signing seeds, the demo zone's KSK and ZSK) their raw, hex and
base64 forms. A planted control message shows the capture and the scanner see what they must.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import pytest
from idfabric import find_leaks
from nats.aio.msg import Msg

from cctf.bus.accounts import DEFAULT_REGIONS
from cctf.bus.connect import connect
from cctf.devfabric.demo import DemoOptions, DemoParts, run_demo
from cctf.devfabric.identity import Presentation
from cctf.devfabric.identity_pki import private_key_secrets

pytestmark = pytest.mark.slow

CONTROL_SUBJECT = "test.capture.control"


def _raw(msg: Msg) -> bytes:
    headers = b"".join(
        k.encode() + b":" + v.encode() + b"\n" for k, v in (msg.headers or {}).items()
    )
    return msg.subject.encode() + b"\n" + msg.reply.encode() + b"\n" + headers + msg.data


def demo_secret_material(parts: DemoParts) -> list[bytes]:
    """Raw, hex and base64 forms of every signing seed and the zone's private keys."""
    raw: list[bytes] = [seed for key in parts.signing_keys for seed in key._seeds]
    assert parts.zone is not None
    for zk in (parts.zone.ksk, parts.zone.zsk):
        raw.extend(private_key_secrets(zk.private))
    out: list[bytes] = []
    for secret in raw:
        out += [secret, secret.hex().encode(), base64.b64encode(secret).rstrip(b"=")]
        out.append(base64.urlsafe_b64encode(secret).rstrip(b"="))
    return out


def inject_faults(parts: DemoParts) -> None:
    """Faults whose observations carry details (reason codes of refused material and chains)."""
    ident = parts.identity
    r = DEFAULT_REGIONS
    ident.bundle.tamper(view=r[0])
    ident.bundle.empty(view=r[1])
    ident.workload("api").present(Presentation.WRONG_IDENTITY, view=r[2])
    ident.workload("auth").present(Presentation.UNTRUSTED, view=r[3])
    ident.workload("db").present(Presentation.EXPIRED, view=r[4])


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "faults"])
async def test_no_secret_on_the_bus_during_a_demo_run(tmp_path: Path, faults: bool) -> None:
    captured: list[Msg] = []
    parts_seen: list[DemoParts] = []
    closers = []

    async def on_start(parts: DemoParts) -> None:
        parts_seen.append(parts)
        if faults:
            inject_faults(parts)
        nc = await connect(
            parts.nats.urls, parts.nats.users["admin"], name="test-capture", for_tests=True
        )
        closers.append(nc)

        async def keep(msg: Msg) -> None:
            captured.append(msg)

        await nc.subscribe(">", cb=keep)
        await nc.flush()
        # positive control: the capture sees a token-bearing message published in the account
        api = parts.identity.workload("api")
        token = parts.identity.issuer.mint_id_token(api.spiffe_id, "cctf-demo")
        await nc.publish(CONTROL_SUBJECT, token.encode())
        await nc.flush()

    opts = DemoOptions(
        rounds=3,
        nodes=1,
        workdir=tmp_path / "demo",
        json=True,
        fabric_file=tmp_path / "fabric.json",
    )
    out, err = io.StringIO(), io.StringIO()
    try:
        code = await asyncio.wait_for(run_demo(opts, out=out, err=err, on_start=on_start), 150)
    finally:
        for nc in closers:
            await nc.close()
    assert code == 0, err.getvalue()[-3000:]
    (parts,) = parts_seen
    fabric = parts.identity

    control = [m for m in captured if m.subject == CONTROL_SUBJECT]
    assert len(control) == 1 and find_leaks(_raw(control[0]), fabric)
    rest = [m for m in captured if m.subject != CONTROL_SUBJECT]
    subjects = {m.subject for m in rest}
    # the capture saw every region's publishes and the verdicts
    for region in DEFAULT_REGIONS:
        assert any(s.startswith(f"cctf.v1.vote.{region}.") for s in subjects), (region, subjects)
        assert any(s.startswith(f"cctf.v1.evidence.{region}.") for s in subjects), region
    assert any(s.startswith("cctf.v1.verdict.") for s in subjects)
    for kind in ("bundle", "jwks", "mtls"):  # identity verdicts
        assert any(s.startswith("cctf.v1.verdict.") and s.endswith("." + kind) for s in subjects)
    # the relying party negotiated every workload, presenting tokens the fabric minted
    decisions = [line for line in out.getvalue().splitlines() if '"workload"' in line]
    assert len(decisions) >= 9
    assert len(fabric.minted_tokens()) >= 9 + 1
    assert len(rest) > 50

    # the demo's own secrets: agents' and coordinator's signing seeds, the zone's KSK and ZSK
    demo_secrets = demo_secret_material(parts)
    assert len(demo_secrets) >= 3 * (6 * 2 + 2)
    leaks = {}
    for m in rest:
        raw = _raw(m)
        reasons = find_leaks(raw, fabric)
        reasons += [f"demo secret ({len(s)} bytes)" for s in demo_secrets if s in raw]
        if reasons:
            leaks[m.subject] = reasons
    assert leaks == {}
    # the fabric really handed out material the scan could have found
    assert fabric.certificate_ders() and fabric.secret_material()
