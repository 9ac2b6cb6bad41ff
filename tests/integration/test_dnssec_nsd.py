"""Real DNSSEC interop with Debian's nsd as the authoritative server: dnspython-signed zones written
as zone files and served by nsd, validated by Debian's unbound and by the agent's own validation
(straight from nsd, and through unbound).

Three zones, each its own DS trust anchor: ``good.test.`` (signed), ``bad.test.`` (signed, then one
record changed in the zone file: its RRSIG no longer matches) and ``old.test.`` (signed with a
validity window that ended ten days ago). One nsd and one validating unbound for the module.
Skipped (with the reason) when nsd or unbound is missing, except on CI (``CI=true``): there it fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from unboundhelpers import Nsd, Unbound, find_binary

from cctf.agents.dnssec import DNSSEC_EDE_CODES, TrustAnchors
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.roundquery import query_all
from cctf.agents.spec import ResolverSpec
from cctf.bus_schemas.messages import DnssecState, Transport, VoteStatus
from cctf.chaos.signing import sign
from cctf.chaos.zone import demo_zone


@dataclass
class Served:
    nsd: Nsd
    unbound: Unbound
    anchors: list[str]


def _zone_text(origin: str, *, now_s: float, tamper: bool = False) -> tuple[str, str]:
    signed = sign(demo_zone(origin), now_s=now_s)
    text = signed.zone.to_text(relativize=False)
    if tamper:
        www = f"www.{origin} 300 IN A 192.0.2.10"
        assert www in text
        text = text.replace(www, f"www.{origin} 300 IN A 192.0.2.99")
    return text, signed.trust_anchor


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    find_binary("nsd")
    find_binary("unbound")
    now = time.time()
    zones: dict[str, str] = {}
    anchors: list[str] = []
    for origin, when, tamper in (
        ("good.test.", now, False),
        ("bad.test.", now, True),
        ("old.test.", now - 40 * 86_400, False),  # 30-day signatures, ended 10 days ago
    ):
        text, anchor = _zone_text(origin, now_s=when, tamper=tamper)
        zones[origin] = text
        anchors.append(anchor)
    base = Path(tmp_path_factory.mktemp("nsd"))
    nsd = Nsd(base / "nsd", zones)
    nsd.start("good.test.")
    unbound = Unbound(
        base / "unbound",
        stubs=[(origin, nsd.port) for origin in zones],
        trust_anchors=anchors,
    )
    try:
        unbound.start()
        yield Served(nsd, unbound, anchors)
    finally:
        unbound.stop()
        nsd.stop()


def _unbound(served: Served, name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A", want_dnssec=True)
    return dns.query.tcp(query, "127.0.0.1", port=served.unbound.port, timeout=5)


async def _states(served: Served, name: str) -> dict[str, tuple[VoteStatus, DnssecState]]:
    validator = ChainValidator(TrustAnchors.parse(served.anchors), validating={"unbound"})
    specs = [
        ResolverSpec("nsd", "127.0.0.1", served.nsd.port, Transport.UDP),  # own validation
        ResolverSpec("unbound", "127.0.0.1", served.unbound.port, Transport.UDP),
    ]
    observations = await query_all(specs, [(name, "A")], deadline_s=5.0, dnssec=validator)
    return {o.resolver_id: (o.status, o.dnssec) for o in observations}


async def test_a_signed_zone_served_by_nsd_is_secure(served: Served) -> None:
    response = _unbound(served, "www.good.test.")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AD
    assert await _states(served, "www.good.test.") == {
        "nsd": (VoteStatus.ANSWER, DnssecState.SECURE),
        "unbound": (VoteStatus.ANSWER, DnssecState.SECURE),
    }
    # a denial from nsd's NSEC chain is secure too
    assert (await _states(served, "nope.good.test."))["nsd"] == (
        VoteStatus.ANSWER,
        DnssecState.SECURE,
    )


@pytest.mark.parametrize("name", ["www.bad.test.", "www.old.test."])
async def test_tampered_and_expired_zones_are_bogus(served: Served, name: str) -> None:
    response = _unbound(served, name)
    assert response.rcode() == dns.rcode.SERVFAIL
    codes = {opt.code for opt in response.options if hasattr(opt, "code")}
    assert codes & DNSSEC_EDE_CODES, codes
    assert await _states(served, name) == {
        "nsd": (VoteStatus.ANSWER, DnssecState.BOGUS),
        "unbound": (VoteStatus.SERVFAIL, DnssecState.BOGUS),
    }
