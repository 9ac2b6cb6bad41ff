"""Real DNSSEC interop (issue #5 acceptance): Debian's unbound validating a dnspython-signed zone
served by the project's fault-injecting DNS server, and the agent's own validation through a plain
(non-validating) unbound, both against the same trust anchor.

Zones: a signed parent ``test.`` (the trust anchor: its DS) delegating to the signed demo zone
``demo.test.`` with the child's DS; one chaos server each (unbound reaches them as stub zones). Two
unbound processes for the whole module: ``validating`` (validator + iterator, the DS trust anchor,
EDE on; plain DNS and DNS over TLS) and ``plain`` (iterator only: passes records and RRSIGs
through, so the agent validates).

secure → holds (AD from unbound, ``secure`` votes, a TRUSTED verdict stating ``secure``); a tampered
record, expired RRSIGs and a broken (wrong or missing) DS → unbound answers SERVFAIL with a DNSSEC EDE
code, the agent's own validation finds the answer ``bogus``, and the votes never make a TRUSTED verdict.

Skipped (with the reason) when unbound is not installed, except on CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnstestservers import make_pki
from unboundhelpers import Unbound, find_binary
from wirefactories import START_MS

from cctf.agents.ballot import build_votes
from cctf.agents.canonical import Observation
from cctf.agents.dnssec import DNSSEC_EDE_CODES, TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.roundquery import query_all
from cctf.agents.spec import ResolverSpec
from cctf.bus_schemas.messages import DnssecState, Outcome, Transport, VoteStatus
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import Faults
from cctf.chaos.signing import SignedZone, signed_demo_zone, signed_parent
from cctf.chaos.zone import demo_zone
from cctf.clock import FakeClock
from cctf.coordinator.pipeline.decide import Decider
from cctf.coordinator.pipeline.verify import vote_input
from cctf.coordinator.tally import QuorumRule, TallyKey
from cctf.coordinator.tallybook import TallyBook

NAME = "www.demo.test."
ROUND = START_MS // 1000
RULE = QuorumRule(5, 9)


class Zones:
    """The parent and child chaos servers, on an event loop of their own (module scope)."""

    def __init__(self) -> None:
        self.child_zone = signed_demo_zone()
        # test. delegates demo.test. (signed, with its DS) and plain.test. (unsigned, no DS)
        self.parent_zone = signed_parent(
            "test.", {"demo.test.": self.child_zone.ds, "plain.test.": ()}
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.parent = FaultyDnsServer(self.parent_zone.zone, signed=self.parent_zone)
        self.child = FaultyDnsServer(self.child_zone.zone, signed=self.child_zone)
        self.unsigned = FaultyDnsServer(demo_zone("plain.test."))

    def start(self) -> None:
        self.thread.start()
        for srv in (self.parent, self.child, self.unsigned):
            asyncio.run_coroutine_threadsafe(srv.start(), self.loop).result(10)

    def stop(self) -> None:
        for srv in (self.parent, self.child, self.unsigned):
            asyncio.run_coroutine_threadsafe(srv.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def set(self, *, parent: Faults | None = None, child: Faults | None = None) -> None:
        self.loop.call_soon_threadsafe(self.parent.set_faults, parent or Faults())
        self.loop.call_soon_threadsafe(self.child.set_faults, child or Faults())
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(5)

    @property
    def anchor(self) -> SignedZone:
        return self.parent_zone


class World:
    def __init__(self, zones: Zones, validating: Unbound, plain: Unbound, ca_file: str) -> None:
        self.zones = zones
        self.validating = validating
        self.plain = plain
        self.ca_file = ca_file

    def reset(self, **faults: Faults) -> None:
        self.zones.set(**faults)
        self.validating.flush()
        self.plain.flush()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    find_binary("unbound")
    find_binary("unbound-control")
    zones = Zones()
    zones.start()
    stubs = [
        ("test.", zones.parent.port),
        ("demo.test.", zones.child.port),
        ("plain.test.", zones.unsigned.port),
    ]
    base = tmp_path_factory.mktemp("unbound")
    pki = make_pki(Path(base) / "pki")
    validating = Unbound(
        Path(base) / "validating",
        stubs=stubs,
        trust_anchors=[zones.anchor.trust_anchor],
        tls=(pki.cert_file, pki.key_file),
    )
    plain = Unbound(Path(base) / "plain", stubs=stubs, validating=False)
    try:
        validating.start()
        plain.start()
        yield World(zones, validating, plain, pki.ca_file)
    finally:
        validating.stop()
        plain.stop()
        zones.stop()


def _ask(port: int, name: str = NAME) -> dns.message.Message:
    query = dns.message.make_query(name, "A", want_dnssec=True)
    return dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)


def _specs(world: World) -> list[ResolverSpec]:
    assert world.validating.tls_port is not None
    return [
        ResolverSpec("validating", "127.0.0.1", world.validating.port, Transport.UDP),
        ResolverSpec("plain", "127.0.0.1", world.plain.port, Transport.UDP),
        # the validating unbound over DoT, not listed as validating: its AD / EDE count because
        # the transport is authenticated
        ResolverSpec(
            "dot",
            "127.0.0.1",
            world.validating.tls_port,
            Transport.DOT,
            tls_hostname="dns.test",
            ca_file=world.ca_file,
        ),
    ]


async def _observe(world: World, name: str = NAME) -> dict[str, Observation]:
    """One agent round's observations: the validating unbound is a listed validating resolver
    (loopback), the plain one is validated by the agent up to the parent's DS."""
    validator = ChainValidator(
        TrustAnchors.parse([world.zones.anchor.trust_anchor]), validating={"validating"}
    )
    specs = _specs(world)
    observations = await query_all(specs, [(name, "A")], deadline_s=5.0, dnssec=validator)
    return {obs.resolver_id: obs for obs in observations}


def _verdict(observations: dict[str, Observation], name: str = NAME) -> tuple[Outcome, DnssecState]:
    """Three agents seeing the same (their votes: 3 resolvers each, 9 voters, 5-of-9), tallied and
    decided by the coordinator's own stages."""
    voters = [f"agent-{a}/{r}" for a in "abc" for r in sorted(observations)]
    book = TallyBook(RULE, voters, refusable=True)
    decision = None
    for agent in ("agent-a", "agent-b", "agent-c"):
        observed = [(name, "A", obs) for obs in observations.values()]
        for vote in build_votes(agent, "us-east", ROUND, observed, START_MS):
            _, d = book.add(name, "A", ROUND, vote_input(vote))
            decision = decision or d
    if decision is None:
        ((_, decision),) = book.expire(ROUND)
    assert decision is not None
    key = TallyKey(name, "A", ROUND)
    verdict = Decider(RULE, "coord-1", 30_000, FakeClock(START_MS)).verdict(key, decision)
    return verdict.outcome, verdict.dnssec


async def test_secure_zone_holds(world: World) -> None:
    world.reset()
    direct = _ask(world.validating.port)
    assert direct.rcode() == dns.rcode.NOERROR and direct.flags & dns.flags.AD
    obs = await _observe(world)
    assert {r: (o.status, o.dnssec) for r, o in obs.items()} == {
        "validating": (VoteStatus.ANSWER, DnssecState.SECURE),
        "plain": (VoteStatus.ANSWER, DnssecState.SECURE),
        "dot": (VoteStatus.ANSWER, DnssecState.SECURE),
    }
    answers = {o.answer for o in obs.values()}
    assert answers == {("www.demo.test. A 192.0.2.10",)}
    assert _verdict(obs) == (Outcome.TRUSTED, DnssecState.SECURE)


@pytest.mark.parametrize(
    ("where", "fault"),
    [
        ("child", "tampered"),
        ("child", "expired"),
        ("child", "no-rrsig"),
        ("parent", "wrong-ds"),
        ("parent", "missing-ds"),
    ],
)
async def test_broken_chains_are_bogus_and_never_trusted(
    world: World, where: str, fault: str
) -> None:
    world.reset(**{where: Faults(dnssec=fault)})
    direct = _ask(world.validating.port)
    assert direct.rcode() == dns.rcode.SERVFAIL
    codes = {opt.code for opt in direct.options if hasattr(opt, "code")}
    assert codes & DNSSEC_EDE_CODES, f"unbound gave EDE {codes}"
    obs = await _observe(world)
    validating, plain, dot = obs["validating"], obs["plain"], obs["dot"]
    assert (validating.status, validating.dnssec) == (VoteStatus.SERVFAIL, DnssecState.BOGUS)
    assert (dot.status, dot.dnssec) == (VoteStatus.SERVFAIL, DnssecState.BOGUS)
    assert plain.dnssec is DnssecState.BOGUS, plain
    outcome, state = _verdict(obs)
    assert outcome is not Outcome.TRUSTED
    assert outcome is Outcome.DISPUTED  # bogus votes are not "unavailable": no last-known-good
    assert state is DnssecState.INDETERMINATE
    # and once the fault is gone, the same resolvers hold again
    world.reset()
    assert _verdict(await _observe(world)) == (Outcome.TRUSTED, DnssecState.SECURE)


async def test_agent_fetches_each_chain_record_once_per_ttl(world: World) -> None:
    world.reset()
    validator = ChainValidator(TrustAnchors.parse([world.zones.anchor.trust_anchor]))
    specs = [_specs(world)[1]]  # the plain unbound: own validation
    names = [(f"{label}.demo.test.", "A") for label in ("www", "api", "db", "mail")]
    first = await query_all(specs, names, deadline_s=5.0, dnssec=validator)
    assert [o.dnssec for o in first] == [DnssecState.SECURE] * 4
    fetched = validator.fetches
    assert fetched == 3  # DNSKEY demo.test., DS demo.test., DNSKEY test.: shared by the 4 queries
    again = await query_all(specs, names, deadline_s=5.0, dnssec=validator)
    assert [o.dnssec for o in again] == [DnssecState.SECURE] * 4
    assert validator.fetches == fetched  # cached


def test_the_plain_unbound_passes_records_and_signatures_through(world: World) -> None:
    # the control of the set-up: only the agent validates what the plain unbound returns
    world.reset(child=Faults(dnssec="tampered"))
    assert _ask(world.plain.port).rcode() == dns.rcode.NOERROR
    assert not _ask(world.plain.port).flags & dns.flags.AD
    world.reset()
    assert dns.rdatatype.RRSIG in {rr.rdtype for rr in _ask(world.plain.port).answer}
    assert dns.name.from_text(NAME) in {rr.name for rr in _ask(world.plain.port).answer}


async def test_without_anchors_only_an_authenticated_resolver_is_believed(world: World) -> None:
    """No trust anchor in the agent: the state comes from unbound's AD bit / EDE codes, believed
    over DoT, not over plain DNS from a resolver the agent file does not list as validating."""
    validator = ChainValidator()
    specs = [s for s in _specs(world) if s.id in ("validating", "dot")]
    world.reset()
    states = {
        o.resolver_id: (o.status, o.dnssec)
        for o in await query_all(specs, [(NAME, "A")], deadline_s=5.0, dnssec=validator)
    }
    assert states == {
        "validating": (VoteStatus.ANSWER, DnssecState.INDETERMINATE),
        "dot": (VoteStatus.ANSWER, DnssecState.SECURE),
    }
    assert validator.fetches == 0
    world.reset(child=Faults(dnssec="tampered"))
    states = {
        o.resolver_id: (o.status, o.dnssec)
        for o in await query_all(specs, [(NAME, "A")], deadline_s=5.0, dnssec=validator)
    }
    assert states == {
        "validating": (VoteStatus.SERVFAIL, DnssecState.INDETERMINATE),
        "dot": (VoteStatus.SERVFAIL, DnssecState.BOGUS),
    }


async def test_a_provably_unsigned_delegation_is_insecure_and_can_hold(world: World) -> None:
    """plain.test. is delegated without DS by the signed test.: unbound answers without AD, the
    agent's own validation finds the parent's signed NSEC proof; the verdict holds, stating
    ``insecure`` (a relying party requiring DNSSEC refuses it)."""
    world.reset()
    name = "www.plain.test."
    direct = _ask(world.validating.port, name)
    assert direct.rcode() == dns.rcode.NOERROR and not direct.flags & dns.flags.AD
    obs = await _observe(world, name)
    assert {r: (o.status, o.dnssec) for r, o in obs.items()} == {
        "validating": (VoteStatus.ANSWER, DnssecState.INSECURE),
        "plain": (VoteStatus.ANSWER, DnssecState.INSECURE),
        "dot": (VoteStatus.ANSWER, DnssecState.INSECURE),
    }
    assert _verdict(obs, name) == (Outcome.TRUSTED, DnssecState.INSECURE)
    # the downgrade: the signed demo.test. with its signatures stripped is not insecure
    world.reset(child=Faults(dnssec="no-rrsig"))
    obs = await _observe(world)
    assert {o.dnssec for o in obs.values()} == {DnssecState.BOGUS}
