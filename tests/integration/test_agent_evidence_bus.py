"""Agent identity evidence end to end: real nats-server, real DNS server, the local identity fabric
(HTTPS bundle endpoint, OIDC issuer, workload TLS endpoints) with its faults; every evidence message
is checked by the clean-room verifier written from docs/wire-protocol.md (§5.5, §5.6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import independent_evidence as ie
import independent_verifier as iv
import msgspec
import pytest
import pytest_asyncio
from idfabric import find_leaks
from nats.aio.msg import Msg
from natshelpers import ErrorLog, keep_votes, nothing_stored, setup_streams
from wirefactories import make_identity

from cctf.agents.canonical import Transport
from cctf.agents.dnsquery import ResolverSpec
from cctf.agents.evidence import evidence_id_secret, evidence_msg_id
from cctf.agents.resolver import MSG_ID_HEADER, ResolverAgent
from cctf.bus.streams import votes_stream_name
from cctf.bus_schemas.envelope import decode_envelope, seal
from cctf.bus_schemas.evidence import EvidenceBallot, decode_evidence, encode
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.subjects import evidence_subject
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.zone import demo_zone
from cctf.devfabric.identity import IdentityFabric, Presentation
from cctf.devfabric.identity_pki import encode_json
from cctf.devfabric.identity_servers import Mode
from cctf.devfabric.nats import NatsFabric
from cctf.identity.bundle import parse_bundle
from cctf.identity.oidc import parse_jwks
from cctf.identity.x509svid import leaf_key_digest

HOST = "127.0.0.1"
US, EU = "us-east", "eu-west"
AGENTS = {US: make_identity("agent-1", US), EU: make_identity("agent-2", EU)}
TRUST = iv.trust_of(
    *(
        iv.Key(a.entry.keys.suite.value, a.entry.keys.raw, "agent", a.principal, a.region)
        for a in AGENTS.values()
    )
)
ROUND_MS = 1000

pytestmark = pytest.mark.timeout(90)


@pytest_asyncio.fixture
async def fabric(tmp_path: Path) -> AsyncIterator[IdentityFabric]:
    """The identity fabric with a 1 s refresh hint, so bundle faults are seen within a round."""
    f = IdentityFabric(tmp_path / "idf", refresh_hint_s=1)
    async with f:
        yield f


@pytest_asyncio.fixture
async def dns() -> AsyncIterator[FaultyDnsServer]:
    srv = FaultyDnsServer(demo_zone(), HOST, 0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _bus(nats: NatsFabric, nats_connect: Any) -> Any:
    admin = await nats_connect(nats, "admin")
    js = admin.jetstream()
    await setup_streams(js, nats.regions)
    for region in (US, EU):
        await keep_votes(js, region)
    return admin


def _agent(
    nc: Any, fabric: IdentityFabric, dns: FaultyDnsServer, region: str = US, **kw: Any
) -> ResolverAgent:
    me = AGENTS[region]
    targets = fabric.targets(region)
    # refresh (and retry after a refusal) within a second, so each fault shows in the next round
    domains = [msgspec.structs.replace(t, refresh_ms=1000) for t in targets.trust_domains]
    return ResolverAgent(
        agent=me.principal,
        region=region,
        key=me.key,
        resolvers=[ResolverSpec("r1", HOST, dns.port, Transport.UDP)],
        names=[("www.demo.test.", "A")],
        nc=nc,
        round_ms=ROUND_MS,
        query_deadline_ms=700,
        identity=msgspec.structs.replace(targets, trust_domains=domains),
        **kw,
    )


async def _evidence(admin: Any, region: str) -> list[tuple[Msg, ie.EvidenceBallot]]:
    """Every evidence message in the region's vote stream, verified by the clean-room verifier."""
    js = admin.jetstream()
    stream = votes_stream_name(region)
    info = await js.stream_info(stream)
    out: list[tuple[Msg, ie.EvidenceBallot]] = []
    if info.state.messages == 0:
        return out
    verifier = ie.EvidenceVerifier(TRUST, round_ms=ROUND_MS)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        if not msg.subject.startswith("cctf.v1.evidence."):
            continue
        iat = decode_envelope(msg.data).iat
        out.append((msg, verifier.verify(msg.data, msg.subject, iat)))
    return out


def _by_subject(ballot: ie.EvidenceBallot) -> dict[tuple[str, str], ie.Observation]:
    return {(o.kind, o.subject): o for o in ballot.observations}


async def test_agent_publishes_verified_evidence_every_round(
    nats_single: NatsFabric, nats_connect: Any, fabric: IdentityFabric, dns: FaultyDnsServer
) -> None:
    admin = await _bus(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    agent = _agent(nc, fabric, dns)
    stats = await agent.run(rounds=2)
    assert stats.ballots_published == 2 and stats.evidence.published == 2
    assert stats.evidence.failed == stats.evidence.errors == 0
    assert stats.evidence.by_status == {"ok": 2 * (2 + len(fabric.workloads))}
    got = await _evidence(admin, US)
    assert len(got) == 2
    bundle = parse_bundle(fabric.trust_domain.name, encode_json(fabric.trust_domain.document()))
    keys = parse_jwks(encode_json(fabric.issuer.jwks()))
    me = AGENTS[US]
    for msg, ballot in got:
        assert (
            msg.subject == evidence_subject(US, me.principal) == "cctf.v1.evidence.us-east.agent-1"
        )
        assert msg.headers[MSG_ID_HEADER] == evidence_msg_id(
            me.principal, ballot.round, 0, secret=evidence_id_secret(me.key)
        )
        obs = _by_subject(ballot)
        assert len(obs) == 2 + len(fabric.workloads)
        assert {o.status for o in obs.values()} == {"ok"}, [o.detail for o in obs.values()]
        b = obs[("bundle", fabric.trust_domain.name)]
        assert b.facts.key_digest == bundle.digest and b.facts.sequence == bundle.sequence
        assert b.facts.keys == bundle.authority_count
        j = obs[("jwks", fabric.issuer.issuer_url)]
        assert j.facts.key_digest == keys.digest and j.facts.keys == len(keys.keys)
        for w in fabric.workloads.values():
            m = obs[("mtls", w.spiffe_id)]
            assert m.facts.spiffe_id == w.spiffe_id
            assert m.facts.key_digest == leaf_key_digest(w.issued().cert)
            assert m.facts.bundle_digest == bundle.digest
            assert m.facts.not_before_ms <= time.time() * 1000 <= m.facts.not_after_ms
        # the reference decoder agrees with the clean-room one
        assert decode_evidence(decode_envelope(msg.data).payload).round == ballot.round
    # evidence goes to the agent's own region's stream only
    assert await _evidence(admin, EU) == []


async def test_faults_become_reason_codes(
    nats_single: NatsFabric, nats_connect: Any, fabric: IdentityFabric, dns: FaultyDnsServer
) -> None:
    admin = await _bus(nats_single, nats_connect)
    nc = await nats_connect(nats_single, "agent-us-east")
    agent = _agent(nc, fabric, dns)
    await agent.run(rounds=1)  # the genuine bundle is accepted first (sequence 5)
    api, auth, db = (fabric.workload(x) for x in ("api", "auth", "db"))
    fabric.bundle.rollback(view=US)
    api.present(Presentation.WRONG_IDENTITY, view=US)
    auth.present(Presentation.EXPIRED, view=US)
    db.set_mode(Mode.DOWN, view=US)
    fabric.issuer.swap_jwks()
    await asyncio.sleep(1.1)  # past the 1 s refresh hint
    await agent.run(rounds=1)
    last = _by_subject((await _evidence(admin, US))[-1][1])
    td = fabric.trust_domain.name
    status = {k: (o.status, o.detail) for k, o in last.items()}
    assert status[("bundle", td)] == ("invalid", "sequence_rollback")
    assert status[("mtls", api.spiffe_id)] == ("invalid", "wrong_spiffe_id")
    assert last[("mtls", api.spiffe_id)].facts.spiffe_id not in ("", api.spiffe_id)
    assert status[("mtls", auth.spiffe_id)] == ("invalid", "expired")
    assert status[("mtls", db.spiffe_id)][0] in ("error", "timeout")
    genuine = parse_jwks(encode_json(fabric.issuer.jwks()))
    swapped = last[("jwks", fabric.issuer.issuer_url)]
    assert swapped.status == "ok" and swapped.facts.key_digest != genuine.digest

    # an empty bundle invalidates the trust domain: its workloads cannot be validated either
    fabric.reset_faults()
    fabric.bundle.empty(view=US)
    await asyncio.sleep(1.1)
    await agent.run(rounds=1)
    last = _by_subject((await _evidence(admin, US))[-1][1])
    assert (last[("bundle", td)].status, last[("bundle", td)].detail) == ("invalid", "empty_bundle")
    for w in fabric.workloads.values():
        assert (last[("mtls", w.spiffe_id)].status, last[("mtls", w.spiffe_id)].detail) == (
            "invalid",
            "empty_bundle",
        )

    # the bundle endpoint hangs: a timeout within the round, the agent keeps its rounds
    fabric.reset_faults()
    fabric.bundle.set_mode(Mode.HANG, view=US)
    await asyncio.sleep(1.1)
    stats = await agent.run(rounds=1)
    last = _by_subject((await _evidence(admin, US))[-1][1])
    assert (last[("bundle", td)].status, last[("bundle", td)].detail) == ("timeout", "timeout")
    assert stats.round_errors == 0 and stats.rounds_skipped == 0


async def test_split_view_is_seen_by_one_region_only(
    nats_single: NatsFabric, nats_connect: Any, fabric: IdentityFabric, dns: FaultyDnsServer
) -> None:
    """A bundle endpoint tampered for us-east only: the us-east agent reports other key material
    (and, validating the genuine workloads under it, refuses them); eu-west sees the genuine one."""
    admin = await _bus(nats_single, nats_connect)
    fabric.bundle.tamper(view=US)
    us = _agent(await nats_connect(nats_single, "agent-us-east"), fabric, dns, US)
    eu = _agent(await nats_connect(nats_single, "agent-eu-west"), fabric, dns, EU)
    await asyncio.gather(us.run(rounds=1), eu.run(rounds=1))
    td = fabric.trust_domain.name
    [(_, us_ballot)] = await _evidence(admin, US)
    [(_, eu_ballot)] = await _evidence(admin, EU)
    us_obs, eu_obs = _by_subject(us_ballot), _by_subject(eu_ballot)
    genuine = parse_bundle(td, encode_json(fabric.trust_domain.document()))
    assert eu_obs[("bundle", td)].facts.key_digest == genuine.digest
    assert us_obs[("bundle", td)].status == "ok"
    assert us_obs[("bundle", td)].facts.key_digest != genuine.digest
    assert us_obs[("bundle", td)].facts_digest != eu_obs[("bundle", td)].facts_digest
    for w in fabric.workloads.values():
        assert eu_obs[("mtls", w.spiffe_id)].status == "ok"
        assert (us_obs[("mtls", w.spiffe_id)].status, us_obs[("mtls", w.spiffe_id)].detail) == (
            "invalid",
            "unknown_issuer",
        )
    # JWKS is not affected by the bundle endpoint's split view
    assert us_obs[("jwks", fabric.issuer.issuer_url)].facts_digest == (
        eu_obs[("jwks", fabric.issuer.issuer_url)].facts_digest
    )

    # eu-west, which holds the genuine bundle, is now shown the other keys under the same
    # spiffe_sequence: its federation state refuses them (sequence_conflict) and keeps validating
    # the workloads under the genuine bundle it accepted
    fabric.bundle.tamper(view=EU)
    await asyncio.sleep(1.1)  # past the 1 s refresh hint
    await eu.run(rounds=1)
    eu_obs = _by_subject((await _evidence(admin, EU))[-1][1])
    assert (eu_obs[("bundle", td)].status, eu_obs[("bundle", td)].detail) == (
        "invalid",
        "sequence_conflict",
    )
    assert all(eu_obs[("mtls", w.spiffe_id)].status == "ok" for w in fabric.workloads.values())
    assert eu.evidence is not None and eu.evidence.bundle_of(td) is not None
    assert eu.evidence.bundle_of(td).digest == genuine.digest  # type: ignore[union-attr]


async def test_evidence_is_pinned_to_the_agents_region(
    nats_single: NatsFabric, nats_connect: Any
) -> None:
    admin = await _bus(nats_single, nats_connect)
    me = AGENTS[US]
    ballot = EvidenceBallot(me.principal, EU, 1, 0, [])
    eu_subject = evidence_subject(EU, me.principal)
    now = int(time.time() * 1000)
    forged = seal(me.key, eu_subject, MessageType.EVIDENCE, encode(ballot), now_ms=now,
                  lifetime_ms=30_000)  # fmt: skip
    errors = ErrorLog()
    nc = await nats_connect(nats_single, "agent-us-east", error_cb=errors)
    await nc.publish(eu_subject, forged)  # the server refuses another region's evidence subject
    await nc.flush()
    await errors.wait_for(f'publish to "{eu_subject}"')
    assert await nothing_stored(admin.jetstream(), votes_stream_name(EU), eu_subject)
    # had it got there (say, through a mis-configured account), the coordinator's step 12 refuses it
    verifier = ie.EvidenceVerifier(TRUST, round_ms=ROUND_MS)
    with pytest.raises(iv.Reject, match="region_mismatch"):
        verifier.verify(forged, eu_subject, now)
    # and a ballot claiming the other region on the agent's own subject as well
    own = evidence_subject(US, me.principal)
    claims = seal(me.key, own, MessageType.EVIDENCE, encode(ballot), now_ms=now, lifetime_ms=30_000)
    with pytest.raises(iv.Reject, match="region_mismatch"):
        verifier.verify(claims, own, now)


async def test_no_token_private_key_or_certificate_on_the_bus(
    nats_single: NatsFabric,
    nats_connect: Any,
    fabric: IdentityFabric,
    dns: FaultyDnsServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Capture every message on cctf.v1.> while agents observe a fabric with every kind of fault
    (and tokens minted); none holds a token (JWT shape or a minted one), a PEM block, a private key
    encoding of the fabric or the DER of any of its certificates; neither do the agents' logs."""
    admin = await _bus(nats_single, nats_connect)
    captured: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        captured.append(msg)

    await admin.subscribe("cctf.v1.>", cb=on_msg)
    await admin.flush()
    for w in fabric.workloads.values():  # tokens exist: the scanner must not find them anywhere
        fabric.issuer.mint_id_token(w.spiffe_id, w.spec.audience)
    fabric.workload("api").present(Presentation.WRONG_IDENTITY, view=US)
    fabric.workload("auth").present(Presentation.UNTRUSTED, view=US)
    fabric.workload("db").present(Presentation.NOT_YET_VALID, view=EU)
    fabric.bundle.tamper(view=EU)
    us = _agent(await nats_connect(nats_single, "agent-us-east"), fabric, dns, US)
    eu = _agent(await nats_connect(nats_single, "agent-eu-west"), fabric, dns, EU)
    await asyncio.gather(us.run(rounds=2), eu.run(rounds=2))
    await admin.flush()
    await asyncio.sleep(0.2)
    evidence = [m for m in captured if m.subject.startswith("cctf.v1.evidence.")]
    assert len(evidence) == 4 and len(captured) >= 8
    assert fabric.minted_tokens() and fabric.secret_material() and fabric.certificate_ders()
    for msg in captured:
        assert find_leaks(msg.data, fabric) == [], msg.subject
        for value in (msg.headers or {}).values():
            assert find_leaks(value.encode(), fabric) == [], msg.subject
    # nor in what the agents logged
    out, err = capfd.readouterr()
    assert "evidence.published" in out + err
    assert find_leaks((out + err).encode(), fabric) == []
    # positive control: the scanner does see each kind of secret
    token = fabric.minted_tokens()[0].encode()
    assert find_leaks(b"x" + token + b"y", fabric)
    assert find_leaks(fabric.secret_material()[0], fabric)
    assert find_leaks(fabric.certificate_ders()[0], fabric)
