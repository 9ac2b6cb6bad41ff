"""All 8 up/down combinations of the three paths, end to end over NATS: signed DNS and identity
verdicts in a real nats-server's verdict stream, read and verified by a real TrustClient; key material
fetched over HTTPS from the local identity fabric's real bundle endpoint and OIDC issuer and used only
under the verdicts' digests; credentials the fabric issued (X.509-SVID chain, ID token) presented by
the caller; the decision asked through the SDK and through the gateway's HTTP API.

A path is "down" in one of two ways, as in production:

* ``outage``: nothing answers -- the DNS verdict is UNAVAILABLE (resolvers time out), the workload's
  endpoint is down (its ``mtls`` verdict UNAVAILABLE), the issuer is down (its ``jwks`` verdict
  UNAVAILABLE, our own fetch fails too);
* ``failure``: something wrong answers -- resolvers disagree (DISPUTED), the endpoint presents
  another SPIFFE ID to every region (agents refuse it: ``invalid`` evidence, DISPUTED ``mtls``
  verdict), the presented token is not the workload's (``sub`` mismatch).

The expected outcomes are written out below (not computed by the negotiator under test).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from clientbus import Bus, bus_fixture  # noqa: F401 - fixture bus
from gatewayworld import RelyingWorld
from wirefactories import make_world

from cctf.bus_schemas.messages import Outcome
from cctf.client.identity import workload_to_json
from cctf.client.sdk import TrustClient
from cctf.devfabric.identity import IdentityFabric, Mode, Presentation
from cctf.gateway.app import create_app

PATHS = ("dns", "mtls", "oidc")
COMBINATIONS = [
    dict(zip(PATHS, ups, strict=True)) for ups in itertools.product((True, False), repeat=3)
]


def expected(up: dict[str, bool], mode: str, policy: str) -> str:
    """The decision table (docs/architecture.md, "Relying parties")."""
    holding = sum(up.values())
    if policy == "default":  # at least 2 of 3
        if holding >= 2:
            return "trusted"
        return "unavailable" if mode == "outage" else "refused"
    # mTLS required (and at least 2 of 3)
    if up["mtls"] and holding >= 2:
        return "trusted"
    return "unavailable" if mode == "outage" else "refused"


POLICIES = {"default": None, "mtls_required": {"at_least": 2, "require": ["mtls"]}}


@pytest.fixture
async def rw(bus: Bus, identity_fabric: IdentityFabric) -> AsyncIterator[RelyingWorld]:
    world = make_world(start_ms=time.time_ns() // 1_000_000)
    yield RelyingWorld(bus, world, identity_fabric)


async def _arrange(rw: RelyingWorld, spiffe_id: str, up: dict[str, bool], mode: str) -> str:
    """Publish the verdicts and set the fabric's faults of one combination; returns the token the
    caller presents."""
    fab = rw.fabric
    fab.reset_faults()
    w = fab.workload(spiffe_id)
    await rw.bundle()
    if up["dns"]:
        await rw.dns(w.spec.dns_name)
    else:
        await rw.dns(w.spec.dns_name, Outcome.UNAVAILABLE if mode == "outage" else Outcome.DISPUTED)
    if up["mtls"]:
        await rw.mtls(spiffe_id)
    elif mode == "outage":
        w.set_mode(Mode.DOWN)
        await rw.mtls(spiffe_id, Outcome.UNAVAILABLE)
    else:
        w.present(Presentation.WRONG_IDENTITY)  # what the agents would see; they refuse it
        await rw.mtls_refused(spiffe_id)
    if up["oidc"] or mode == "failure":
        await rw.jwks()
    else:
        fab.issuer.set_mode(Mode.DOWN)
        await rw.jwks(Outcome.UNAVAILABLE)
    subject = spiffe_id if up["oidc"] or mode == "outage" else fab.trust_domain.spiffe_id("db")
    return fab.issuer.mint_id_token(subject, w.spec.audience)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("mode", ["outage", "failure"])
async def test_all_eight_combinations_of_the_three_paths(
    rw: RelyingWorld, bus: Bus, mode: str, policy: str
) -> None:
    spiffe_id = rw.fabric.workload("api").spiffe_id
    got: dict[str, tuple[str, str, dict[str, str]]] = {}
    want: dict[str, str] = {}
    for up in COMBINATIONS:
        label = " ".join(f"{p}={'up' if u else 'down'}" for p, u in up.items())
        token = await _arrange(rw, spiffe_id, up, mode)
        # a fresh relying party per combination (no material cached from the previous one)
        trust = TrustClient(bus.client_nc, rw.world.trust, "us-east", clock=rw.world.clock)
        client = rw.client(trust, POLICIES[policy])
        sdk = workload_to_json(await client.workload(spiffe_id, token=token))
        app = create_app(rw.client(trust, POLICIES[policy]))
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://gw"
        ) as http:
            r = await http.get(
                f"/v1/workloads/{spiffe_id}", headers={"Authorization": f"Bearer {token}"}
            )
        assert r.status_code == 200, r.text
        via_http: dict[str, Any] = r.json()
        assert via_http == sdk, label  # the gateway answers exactly the SDK's decision
        states = {p: s["state"] for p, s in sdk["paths"].items()}
        # each path is in the state the combination says (up: holds; down: the mode's state)
        down_state = "unavailable" if mode == "outage" else "fails"
        assert states == {p: "holds" if u else down_state for p, u in up.items()}, (label, sdk)
        got[label] = (sdk["outcome"], sdk["reason"], states)
        want[label] = expected(up, mode, policy)
    assert {k: v[0] for k, v in got.items()} == want, got
    if policy == "mtls_required":
        without_mtls = [k for k in want if "mtls=down" in k]
        assert len(without_mtls) == 4 and all(got[k][0] != "trusted" for k in without_mtls)
        if mode == "failure":
            assert all(got[k][0] == "refused" for k in without_mtls)
        # dns + oidc hold, mtls down: trusted under 2-of-3, never under mTLS required
        assert got["dns=up mtls=down oidc=up"][0] != "trusted"
        assert "mtls is required" in got["dns=up mtls=down oidc=up"][1]


async def test_a_presented_chain_is_validated_on_the_mtls_path(rw: RelyingWorld, bus: Bus) -> None:
    fab = rw.fabric
    api = fab.workload("api")
    await rw.bundle()
    await rw.dns(api.spec.dns_name)
    await rw.mtls(api.spiffe_id)
    trust = TrustClient(bus.client_nc, rw.world.trust, "us-east", clock=rw.world.clock)
    client = rw.client(trust)
    good = api.issued().chain_pem()
    d = workload_to_json(await client.workload(api.spiffe_id, chain=good))
    assert d["paths"]["mtls"] == {"state": "holds", "reason": "chain_valid"}
    other = fab.workload("db").issued().chain_pem()  # valid SVID, another workload
    d = workload_to_json(await client.workload(api.spiffe_id, chain=other))
    assert d["paths"]["mtls"] == {"state": "fails", "reason": "wrong_spiffe_id"}
    expired = api.issued(Presentation.EXPIRED).chain_pem()
    d = workload_to_json(await client.workload(api.spiffe_id, chain=expired))
    assert d["paths"]["mtls"] == {"state": "fails", "reason": "expired"}
    assert d["outcome"] == "unavailable"  # dns holds, mtls fails: 2 of 3 only if oidc comes back


async def test_safe_mode_requires_every_configured_path(rw: RelyingWorld, bus: Bus) -> None:
    """Safe mode's stricter path rules: while the region's signed safe-mode state covers the
    workload's DNS name, every configured path is required (dns + oidc no longer enough under
    2-of-3); a region without safe mode (or after it left) decides as before."""
    from cctf.bus_schemas.control import SafeModeAnnouncement, SafeModeCause, SafeModeState
    from cctf.coordinator.pipeline.safemode import seal_announcement

    spiffe_id = rw.fabric.workload("api").spiffe_id
    dns_name = rw.fabric.workload("api").spec.dns_name
    up = {"dns": True, "mtls": False, "oidc": True}
    token = await _arrange(rw, spiffe_id, up, "outage")

    async def decide() -> dict[str, Any]:
        trust = TrustClient(bus.client_nc, rw.world.trust, "us-east", clock=rw.world.clock)
        return workload_to_json(await rw.client(trust).workload(spiffe_id, token=token))

    before = await decide()  # nothing announced: the workload's own policy
    assert (before["outcome"], before["safe_mode"]) == ("trusted", False), before

    async def announce(active: list[str], state: SafeModeState) -> None:
        now = rw._tick()
        ann = SafeModeAnnouncement(
            region="us-east",
            scope=dns_name,
            state=state,
            cause=SafeModeCause.OPERATOR,
            rule="",
            reason="operator ops-alice: suspected hijack",
            round=now // 1000,
            active=active,
            issued_ms=now,
            expires_ms=now + 300_000,
            coordinator=rw.world.coordinator.principal,
            seq=now * 1000,
        )
        await bus.publish(*seal_announcement(rw.world.coordinator.key, ann))

    await announce([dns_name], SafeModeState.ENTERED)
    strict = await decide()
    assert (strict["outcome"], strict["safe_mode"]) == ("unavailable", True), strict
    assert "mtls required" in strict["policy"] and "mtls is required" in strict["reason"]
    await announce([], SafeModeState.LEFT)
    after = await decide()
    assert (after["outcome"], after["safe_mode"]) == ("trusted", False), after
