"""NATS over TLS with certificate-mapped users (D5 transport, cctf.bus.tlsauth), real nats-server.

Agents present CA-issued X.509-SVIDs (cctf.ca profile, issued by the real Issuer); nats-server
``verify_and_map`` maps the SPIFFE URI SAN to a per-agent user of its region's account. Shown: an
agent publishes its own ballots; a stolen region-A certificate cannot publish in region B (nor as
another agent of A); expired and unknown-CA certificates are refused at connect; a join credential
gets one first certificate and nothing else. Renewal with ``ClientTls.reload`` across a server
restart (reconnects present the current certificate) is shown with every component a process in
``test_tls_fabric_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from capki import TRUST_DOMAIN, CaWorld, make_ca_world
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from natshelpers import (
    ErrorLog,
    keep_votes,
    nothing_stored,
    setup_streams,
    vote_count,
)
from tlspki import leaf, pem, write_pair

from cctf.bus.accounts import NatsUser, build_users
from cctf.bus.connect import Connection, connect, jetstream
from cctf.bus.rpc import RpcError, request
from cctf.bus.streams import votes_stream_name
from cctf.bus.tls import ClientTls
from cctf.bus.tlsauth import (
    ServerTls,
    TlsUser,
    agent_tls_users,
    join_tls_user,
    role_tls_user,
)
from cctf.ca.client import make_csr, new_tls_key
from cctf.ca.config import AgentCaConfig
from cctf.ca.entries import RevocationReason, RevokeEntry, encode_entry
from cctf.ca.errors import CaError
from cctf.ca.issuer import make_test_hierarchy
from cctf.ca.join import JoinRequest, parse_join_cert
from cctf.ca.log import open_ca_log
from cctf.ca.profile import agent_spiffe_id
from cctf.ca.renew import CertRenewer
from cctf.ca.request import decode_response
from cctf.ca.service import ADMIN_JOIN, CaService
from cctf.clock import SystemClock
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.devfabric.nats_server import NatsServer, free_ports
from cctf.errors import ConfigError

REGIONS = ("us-east", "eu-west")
AGENTS = (("a1", "us-east"), ("a2", "us-east"), ("b1", "eu-west"))
ADMIN_SAN = f"spiffe://{TRUST_DOMAIN}/cctf/admin"
CA_SAN = f"spiffe://{TRUST_DOMAIN}/cctf/ca"


async def _cctf_json(*args: str, cwd: Path) -> dict[str, Any]:
    """``python -m cctf *args`` (exit 0 expected): its JSON output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:  # timed out or cancelled: leave nothing behind
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (args, err.decode()[-2000:])
    return dict(json.loads(out.decode()))


async def request_retried(
    nc: Connection, subject: str, data: bytes, timeout_s: float = 15
) -> bytes:
    """A request, retried while nobody answers yet (a responder's connection may be between a
    server restart or a slow TLS handshake and its re-subscription), bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await request(nc, subject, data, timeout_s=5)
        except RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@dataclass
class TlsFabric:
    server: NatsServer
    world: CaWorld
    dir: Path
    ops_ca: Path  # what clients trust for the server's certificate
    admin: ClientTls
    ops_key: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    ca: ClientTls  # the CA service's component certificate (user "ca")
    users: tuple[TlsUser, ...] = ()  # the server's certificate-mapped users

    def agent_files(self, agent: str, *, lifetime_ms: int, now_ms: int, name: str) -> ClientTls:
        issued = self.world.issue(agent, now_ms, lifetime_ms)
        cert = x509.load_der_x509_certificate(issued.cert.der)
        key = self.world.agents[agent].tls_key
        cert_path, key_path = write_pair(
            self.dir, name, cert, key, (self.world.issuer.intermediate,)
        )
        return ClientTls(ca=self.ops_ca, cert=cert_path, key=key_path)


@pytest.fixture(scope="module")
def tls_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFabric]:
    d = tmp_path_factory.mktemp("natstls")
    now_ms = int(time.time() * 1000)
    world = make_ca_world(agents=AGENTS, now_ms=now_ms)
    ops = make_test_hierarchy("ops.test", now_ms=now_ms)  # the components' (and server's) CA
    server_cert, server_key = leaf(ops.root, ops.root_key, server=True)
    s_cert, s_key = write_pair(d, "server", server_cert, server_key)
    ops_ca = d / "ops-ca.pem"
    ops_ca.write_bytes(pem(ops.root))
    client_cas = d / "client-cas.pem"  # the agent intermediate + the components' CA
    client_cas.write_bytes(pem(world.issuer.intermediate) + pem(ops.root))
    admin_cert, admin_key = leaf(ops.root, ops.root_key, uri=ADMIN_SAN)
    a_cert, a_key = write_pair(d, "admin", admin_cert, admin_key)
    c_cert, c_key = write_pair(d, "ca", *leaf(ops.root, ops.root_key, uri=CA_SAN))
    port, http_port = free_ports(2)
    users = (
        *agent_tls_users(TRUST_DOMAIN, [(r, a) for a, r in AGENTS]),
        role_tls_user(ADMIN_SAN, "admin", REGIONS),
        role_tls_user(CA_SAN, "ca", REGIONS),
        join_tls_user(TRUST_DOMAIN, "us-east", "a1"),
    )
    server = NatsServer(
        name="tls1",
        directory=d / "n1",
        port=port,
        http_port=http_port,
        users={"sys": build_users(REGIONS)["sys"]},  # the production shape: no other password
        regions=REGIONS,
        tls=ServerTls(
            cert_file=str(s_cert), key_file=str(s_key), ca_file=str(client_cas), timeout_s=5.0
        ),
        tls_users=users,
    )
    config = server.render_config()
    assert "agent-us-east" not in config.replace("_INBOX.agent-us-east.", "")
    assert config.count("password:") == 1  # sys only
    server.start(timeout_s=20)
    try:
        yield TlsFabric(
            server,
            world,
            d,
            ops_ca,
            ClientTls(ca=ops_ca, cert=a_cert, key=a_key),
            (ops.root, ops.root_key),
            ClientTls(ca=ops_ca, cert=c_cert, key=c_key),
            users,
        )
    finally:
        server.stop()


async def _connect(
    fab: TlsFabric, user: str, tls: ClientTls, errors: ErrorLog | None = None, **kw: object
) -> Connection:
    return await connect(
        fab.server.client_url,
        NatsUser(user, ""),
        name=user,
        for_tests=True,
        tls=tls,
        error_cb=errors,
        **kw,
    )


@pytest.fixture
async def streams(tls_fabric: TlsFabric) -> AsyncIterator[None]:
    nc = await _connect(tls_fabric, "admin", tls_fabric.admin)
    try:
        js = jetstream(nc)
        await setup_streams(js, REGIONS)
        for region in REGIONS:
            await keep_votes(js, region)
        yield
    finally:
        await nc.close()


def _now() -> int:
    return int(time.time() * 1000)


async def test_agent_publishes_only_its_own_subjects(tls_fabric: TlsFabric, streams: None) -> None:
    fab = tls_fabric
    admin = await _connect(fab, "admin", fab.admin)
    errors = ErrorLog()
    tls = fab.agent_files("a1", lifetime_ms=3_600_000, now_ms=_now(), name="a1-own")
    agent = await _connect(fab, "agent-us-east.a1", tls, errors)
    try:
        ajs, js = jetstream(agent), jetstream(admin)
        before = await vote_count(js, "us-east")
        ack = await ajs.publish("cctf.v1.vote.us-east.a1", b"ballot", timeout=5)
        assert ack.stream == votes_stream_name("us-east")
        assert await vote_count(js, "us-east") == before + 1
        # the stolen region-A certificate in region B, and as another agent of region A
        for subject in ("cctf.v1.vote.eu-west.b1", "cctf.v1.vote.us-east.a2"):
            await agent.publish(subject, b"forged")
            await agent.flush()
            await errors.wait_for(f'Permissions Violation for Publish to "{subject}"')
        assert await nothing_stored(js, votes_stream_name("eu-west"), "cctf.v1.vote.eu-west.b1")
        assert await nothing_stored(js, votes_stream_name("us-east"), "cctf.v1.vote.us-east.a2")
    finally:
        await agent.close()
        await admin.close()


async def _refused(fab: TlsFabric, user: str, tls: ClientTls, why: str) -> None:
    """The connection fails, and the server's log says why (``why``) for THIS attempt."""
    before = fab.server.log_tail(100_000).count(why)
    with pytest.raises(Exception):  # noqa: B017 (nats-py: NoServersError or an SSL error)
        await _connect(fab, user, tls, max_reconnect_attempts=0, allow_reconnect=False)
    deadline = time.monotonic() + 5
    while fab.server.log_tail(100_000).count(why) <= before:
        assert time.monotonic() < deadline, f"no {why!r} in the server log"
        await asyncio.sleep(0.05)


async def test_expired_and_unknown_ca_certificates_are_refused_at_connect(
    tls_fabric: TlsFabric,
) -> None:
    fab = tls_fabric
    # expired: issued (by the real issuer) 60 s ago for 2 s
    expired = fab.agent_files("a1", lifetime_ms=2_000, now_ms=_now() - 60_000, name="a1-expired")
    await _refused(fab, "agent-us-east.a1", expired, "certificate has expired")
    # unknown CA: the same SPIFFE ID, under another (unconfigured) intermediate
    other = make_ca_world(agents=AGENTS, now_ms=_now())
    issued = other.issue("a1", _now(), 3_600_000)
    assert issued.cert.spiffe_id == agent_spiffe_id(TRUST_DOMAIN, "us-east", "a1")
    c, k = write_pair(
        fab.dir,
        "a1-rogue",
        x509.load_der_x509_certificate(issued.cert.der),
        other.agents["a1"].tls_key,
        (other.issuer.intermediate,),
    )
    await _refused(
        fab, "agent-us-east.a1", ClientTls(ca=fab.ops_ca, cert=c, key=k), "unknown authority"
    )
    # a certificate of a trusted CA whose SAN maps to no user
    ops = fab.ops_key
    c, k = write_pair(fab.dir, "nobody", *leaf(ops[0], ops[1], uri="spiffe://cctf.test/nobody"))
    await _refused(fab, "admin", ClientTls(ca=fab.ops_ca, cert=c, key=k), "authentication error")
    nc = await _connect(fab, "admin", fab.admin)  # control: a mapped certificate connects
    await nc.close()


async def test_a_join_credential_gets_one_first_certificate_and_nothing_else(
    tls_fabric: TlsFabric, streams: None
) -> None:
    """Bootstrap (docs/ca.md §9): the operator asks the CA (admin subject) for a join certificate;
    the server maps it to ``join-us-east.a1``, which may publish ONLY the join subject: no ballot,
    no renewal; over it the agent's first certificate is issued ONCE; that certificate then votes."""
    fab = tls_fabric
    admin = await _connect(fab, "admin", fab.admin)
    ca_nc = await _connect(fab, "ca", fab.ca)
    ca = CaService(ca_nc, fab.world.issuer, _AckedLog(), clock=SystemClock())
    await ca.start()
    await ca_nc.flush()
    errors = ErrorLog()
    joined: Connection | None = None
    try:
        join_key = new_tls_key()
        req = JoinRequest("us-east", "a1", make_csr(join_key, "a1"), 0)
        raw = await request_retried(admin, ADMIN_JOIN, msgspec.msgpack.encode(req))
        resp = decode_response(raw)
        assert resp.error == ""
        join = parse_join_cert(resp.certificate, fab.world.issuer.intermediate, TRUST_DOMAIN)
        j_cert, j_key = write_pair(
            fab.dir,
            "a1-join",
            x509.load_der_x509_certificate(join.der),
            join_key,
            (fab.world.issuer.intermediate,),
        )
        config = AgentCaConfig(
            trust_domain=TRUST_DOMAIN,
            intermediate=str(fab.dir / "intermediate.pem"),
            cert_dir=str(fab.dir / "a1-boot"),
            join_cert=str(j_cert),
            join_key=str(j_key),
        )
        (fab.dir / "intermediate.pem").write_bytes(pem(fab.world.issuer.intermediate))
        joined = await _connect(
            fab, "join-us-east.a1", ClientTls(ca=fab.ops_ca, cert=j_cert, key=j_key), errors
        )
        for subject in (
            "cctf.v1.vote.us-east.a1",
            "cctf.v1.ca.issue.us-east.a1",
            "cctf.v1.ca.join.us-east.a2",
        ):
            await joined.publish(subject, b"x")
            await joined.flush()
            await errors.wait_for(f'Permissions Violation for Publish to "{subject}"')
        renewer = CertRenewer(
            joined, fab.world.agents["a1"].key, agent="a1", region="us-east", config=config
        )
        first = await renewer.obtain_until(_now() + 15_000, join=True)  # the CA may reconnect
        assert first is not None
        assert first.agent == "a1" and ca.counts["issued"] == 1
        with pytest.raises(CaError, match="already used"):
            await renewer.obtain(join=True)
        # the bootstrapped certificate is the agent's own NATS credential
        agent = await _connect(
            fab,
            "agent-us-east.a1",
            ClientTls(ca=fab.ops_ca, cert=renewer.cert_path, key=renewer.key_path),
        )
        try:
            ack = await jetstream(agent).publish("cctf.v1.vote.us-east.a1", b"first", timeout=5)
            assert ack.stream == votes_stream_name("us-east")
        finally:
            await agent.close()
    finally:
        if joined is not None:
            await joined.close()
        await ca.stop()
        await ca_nc.close()
        await admin.close()


class _AckedLog:
    """A CA log that acknowledges at once (the real CA log is tested in test_ca_gate.py)."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []

    @property
    def size(self) -> int:
        return len(self.entries)

    async def append(self, entries: Sequence[bytes]) -> int:
        self.entries.extend(entries)
        return len(self.entries) - len(entries)


def test_reload_refuses_a_bad_pair_and_keeps_the_live_context(tls_fabric: TlsFabric) -> None:
    fab = tls_fabric
    tls = fab.agent_files("b1", lifetime_ms=3_600_000, now_ms=_now(), name="b1")
    tls.key.write_bytes(fab.admin.key.read_bytes())  # a key that is not the certificate's
    with pytest.raises(ConfigError, match="cannot be used"):
        tls.reload()
    assert tls.reloads == 0


async def test_a_reload_without_a_revoked_agent_closes_its_live_connection(
    tls_fabric: TlsFabric, streams: None
) -> None:
    """Revocation at the NATS layer (docs/ca.md §10): nats-server has no view of the CA log, but a
    config reload (SIGHUP) with the users ``cctf ca tls-users`` renders from the trust config and
    the CA log (the agent revoked with a key reason left out) closes its LIVE connection at once,
    and its certificate (still within its validity) no longer maps to any user; a certificate
    revoked with ``superseded`` keeps its agent's user."""
    fab = tls_fabric
    d = fab.dir / "tls-users"
    d.mkdir()
    log_key = SigningKey.generate()
    save_signing_key(d / "ca-log.key.json", log_key)
    fab.world.trust.save(d / "trust.json")
    ca_nc = await _connect(fab, "ca", fab.ca)
    log = await open_ca_log(ca_nc, log_key, fab.world.registry())
    kid = {a: fab.world.agents[a].key.kid for a, _r in AGENTS}
    await log.append(
        [
            encode_entry(RevokeEntry("1f", kid["a2"], RevocationReason.SUPERSEDED, _now())),
            encode_entry(RevokeEntry("2e", kid["b1"], RevocationReason.KEY_COMPROMISE, _now())),
        ]
    )
    log.close()
    await ca_nc.close()
    (d / "ca.yaml").write_text(
        json.dumps(
            {
                "trust_domain": TRUST_DOMAIN,
                "intermediate": "unused.pem",
                "intermediate_key": "unused.key",
                "log_key": "ca-log.key.json",
                "trust_file": "trust.json",
                "nats": {
                    "urls": [fab.server.client_url],
                    "user": "ca",
                    "tls": {
                        "ca": str(fab.ops_ca),
                        "cert": str(fab.ca.cert),
                        "key": str(fab.ca.key),
                    },
                },
            }
        )
    )
    out = await _cctf_json("ca", "tls-users", "--config", "ca.yaml", "--json", cwd=d)
    assert out["log"]["size"] == 2
    assert [(r["agent"], r["reason"]) for r in out["revoked"]] == [("b1", "key_compromise")]
    rendered = msgspec.json.decode(json.dumps(out["users"]), type=list[TlsUser])

    tls = fab.agent_files("b1", lifetime_ms=3_600_000, now_ms=_now(), name="b1-reload")
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    agent = await _connect(
        fab,
        "agent-eu-west.b1",
        tls,
        closed_cb=on_closed,
        max_reconnect_attempts=2,
        reconnect_time_wait=0.1,
    )
    other = await _connect(
        fab,
        "agent-us-east.a1",
        fab.agent_files("a1", lifetime_ms=3_600_000, now_ms=_now(), name="a1-reload"),
    )
    revoked = f"spiffe://{TRUST_DOMAIN}/cctf/agent/eu-west/b1"
    agent_users = [u for u in fab.users if "/cctf/agent/" in u.san]
    assert rendered == [u for u in agent_users if u.san != revoked]  # sorted: us-east a1, a2
    try:
        await agent.flush()
        fab.server.reload_tls_users([*(u for u in fab.users if u not in agent_users), *rendered])
        await asyncio.wait_for(closed.wait(), timeout=15)  # dropped, reconnects refused
        assert other.is_connected  # every other agent keeps its session
        await other.flush()
        await _refused(fab, "agent-eu-west.b1", tls, "authentication error")
    finally:
        fab.server.reload_tls_users(fab.users)
        await other.close()
        if not agent.is_closed:
            await agent.close()
