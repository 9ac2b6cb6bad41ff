"""The join credential (cctf.ca.join): profile, log entry, the single-use rule, the CA's steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from capki import START_MS, TRUST_DOMAIN, make_ca_world
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from cctf.bus_schemas.envelope import Rejected
from cctf.ca.client import make_csr, new_tls_key, seal_request
from cctf.ca.entries import JoinEntry, decode_entry, encode_entry
from cctf.ca.errors import CaError, CaReason
from cctf.ca.issuer import random_serial
from cctf.ca.join import (
    JOIN_DEFAULT_LIFETIME_MS,
    JoinCert,
    JoinLedger,
    join_spiffe_id,
    parse_join_cert,
)
from cctf.ca.profile import parse_agent_cert
from cctf.ca.request import JOIN_PREFIX, join_subject

WORLD = make_ca_world()
AGENT, REGION = "agent-us-east", "us-east"


def _join(
    now_ms: int = START_MS, lifetime_ms: int = 0, agent: str = AGENT
) -> tuple[JoinCert, bytes]:
    region = WORLD.agents[agent].region
    csr = make_csr(new_tls_key(), agent)
    return WORLD.issuer.issue_join(
        region, agent, csr, lifetime_ms=lifetime_ms, now_ms=now_ms, serial=random_serial()
    )


def test_join_certificate_profile_and_entry() -> None:
    join, entry = _join()
    assert join.spiffe_id == join_spiffe_id(TRUST_DOMAIN, REGION, AGENT)
    assert join.spiffe_id == f"spiffe://{TRUST_DOMAIN}/cctf/join/{REGION}/{AGENT}"
    assert join.not_after_ms - join.not_before_ms == JOIN_DEFAULT_LIFETIME_MS
    assert decode_entry(entry) == JoinEntry(join.der)
    assert encode_entry(JoinEntry(join.der)) == entry
    # it is not an agent certificate: it can never admit a ballot
    with pytest.raises(CaError) as exc:
        parse_agent_cert(join.der, WORLD.issuer.intermediate, TRUST_DOMAIN)
    assert exc.value.reason is CaReason.CERT
    # under another intermediate, it is refused
    other = make_ca_world()
    with pytest.raises(CaError) as exc:
        parse_join_cert(join.der, other.issuer.intermediate, TRUST_DOMAIN)
    assert exc.value.reason is CaReason.ISSUER
    # an agent certificate is not a join certificate
    issued = WORLD.issue(AGENT, START_MS)
    with pytest.raises(CaError, match="not under"):
        parse_join_cert(issued.cert.der, WORLD.issuer.intermediate, TRUST_DOMAIN)


def test_join_issuance_is_bounded_to_trusted_agents_and_one_hour() -> None:
    with pytest.raises(CaError) as exc:
        WORLD.issuer.issue_join(
            "eu-west",
            AGENT,
            make_csr(new_tls_key(), AGENT),
            lifetime_ms=0,
            now_ms=START_MS,
            serial=1,
        )
    assert exc.value.reason is CaReason.PRINCIPAL
    with pytest.raises(CaError) as exc:
        _join(lifetime_ms=3_600_001)
    assert exc.value.reason is CaReason.LIFETIME
    with pytest.raises(CaError) as exc:
        WORLD.issuer.issue_join(
            REGION, AGENT, b"not a csr", lifetime_ms=0, now_ms=START_MS, serial=1
        )
    assert exc.value.reason is CaReason.CSR


def test_the_registry_redeems_a_join_with_the_next_agent_certificate() -> None:
    reg = WORLD.registry()
    with pytest.raises(CaError, match="no join certificate"):
        reg.joins.check(REGION, AGENT, START_MS)
    join, entry = _join()
    assert reg.add(entry) == join
    assert reg.joins.check(REGION, AGENT, START_MS + 1) == join
    with pytest.raises(CaError, match="not valid now"):
        reg.joins.check(REGION, AGENT, join.not_after_ms)
    with pytest.raises(Rejected):  # the join certificate admits no ballot
        reg.check(WORLD.agents[AGENT].key.kid, START_MS + 1)
    reg.add(WORLD.issue(AGENT, START_MS + 1000).entry)
    with pytest.raises(CaError) as exc:
        reg.joins.check(REGION, AGENT, START_MS + 2000)
    assert exc.value.reason is CaReason.JOIN and "already used" in str(exc.value)
    # the other agent's join is untouched; a NEW join re-opens this agent's bootstrap
    other, other_entry = _join(agent="agent-eu-west")
    reg.add(other_entry)
    assert reg.joins.check("eu-west", "agent-eu-west", START_MS + 1) == other
    again, again_entry = _join(now_ms=START_MS + 5000)
    reg.add(again_entry)
    assert reg.joins.check(REGION, AGENT, START_MS + 6000) == again


def test_join_requests_are_checked_on_the_join_subject_only() -> None:
    a = WORLD.agents[AGENT]
    subject, data = seal_request(
        a.key,
        region=REGION,
        agent=AGENT,
        csr=make_csr(a.tls_key, AGENT),
        lifetime_ms=0,
        now_ms=START_MS,
        join=True,
    )
    assert subject == join_subject(REGION, AGENT) == f"{JOIN_PREFIX}{REGION}.{AGENT}"
    issued = WORLD.issuer.issue(
        data, subject, now_ms=START_MS, serial=random_serial(), prefix=JOIN_PREFIX
    )
    assert issued.cert.agent == AGENT
    # the same request presented as a renewal (another subject) fails step 9 / the signature
    with pytest.raises(CaError):
        WORLD.issuer.issue(data, subject, now_ms=START_MS, serial=random_serial())


# ---- the single-use rule, against a brute-force model ---------------------------------------------

EVENTS = st.lists(
    st.tuples(st.sampled_from(["join", "cert", "check"]), st.integers(0, 3), st.integers(0, 50)),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_ledger_equals_a_brute_force_reading_of_the_log(events: list[tuple[str, int, int]]) -> None:
    """A check is granted iff the newest join of that agent is valid now and no agent certificate
    of that agent comes after it in the log (the log = the events so far, in order)."""
    ledger = JoinLedger()
    log: list[tuple[str, int, int]] = []  # (kind, agent, not_after)
    for kind, agent, t in events:
        if kind == "join":
            cert = JoinCert(b"", f"{len(log):x}", "r", f"a{agent}", "", 10, 10 + t + 1)
            ledger.note_join(cert)
            log.append(("join", agent, cert.not_after_ms))
        elif kind == "cert":
            ledger.note_cert("r", f"a{agent}")
            log.append(("cert", agent, 0))
        else:
            mine = [i for i, (k, a, _) in enumerate(log) if a == agent and k == "join"]
            expected = bool(mine) and (
                10 <= t < log[mine[-1]][2]
                and not any(k == "cert" and a == agent for k, a, _ in log[mine[-1] :])
            )
            try:
                ledger.check("r", f"a{agent}", t)
                granted = True
            except CaError as exc:
                assert exc.reason is CaReason.JOIN
                granted = False
            assert granted == expected


def test_an_agent_bootstraps_only_without_a_certificate_valid_now(tmp_path: Path) -> None:
    from cryptography import x509

    from cctf.ca.bootstrap import needs_certificate

    path = tmp_path / "a.cert.pem"
    assert needs_certificate(path, START_MS)  # missing
    path.write_bytes(b"not a certificate")
    assert needs_certificate(path, START_MS)  # undecodable
    issued = WORLD.issue(AGENT, START_MS, 10_000)
    path.write_bytes(
        x509.load_der_x509_certificate(issued.cert.der).public_bytes(serialization.Encoding.PEM)
    )
    assert not needs_certificate(path, START_MS + 1)
    assert needs_certificate(path, START_MS - 1_000)  # not yet valid
    assert needs_certificate(path, issued.cert.not_after_ms)  # expired


async def test_a_join_whose_append_failed_is_spent_and_a_second_use_is_refused() -> None:
    """The CA's join rule without NATS (CaService.handle_join): one certificate per join
    certificate; a failed append (the record may still land) spends the join too (fail closed)."""
    from cctf.ca.request import decode_response
    from cctf.ca.service import CaService
    from cctf.clock import FakeClock

    class Log:
        fail = True
        size = 0

        async def append(self, entries: list[bytes]) -> int:
            if self.fail:
                raise CaError(CaReason.LOG, "not acknowledged")
            self.size += len(entries)
            return self.size - len(entries)

    world = make_ca_world()
    clock = FakeClock(START_MS)
    log = Log()
    ca = CaService(None, world.issuer, log, clock=clock)  # type: ignore[arg-type]
    a = world.agents[AGENT]

    def request() -> tuple[str, bytes]:
        return seal_request(
            a.key,
            region=REGION,
            agent=AGENT,
            csr=make_csr(new_tls_key(), AGENT),
            lifetime_ms=0,
            now_ms=clock.now_ms(),
            join=True,
        )

    join, entry = world.issuer.issue_join(
        REGION, AGENT, make_csr(new_tls_key(), AGENT), lifetime_ms=0, now_ms=START_MS, serial=7
    )
    ca.registry.add(entry)
    first = decode_response(await ca.handle_join(*request()))
    assert first.error.startswith("log:")
    log.fail = False
    clock.advance(1)
    second = decode_response(await ca.handle_join(*request()))
    assert second.error.startswith("join:") and "already used" in second.error
    # a new join certificate: exactly one certificate, then refused again
    _join2, entry2 = world.issuer.issue_join(
        REGION, AGENT, make_csr(new_tls_key(), AGENT), lifetime_ms=0, now_ms=START_MS + 1, serial=8
    )
    ca.registry.add(entry2)
    ok = decode_response(await ca.handle_join(*request()))
    assert ok.error == "" and ok.certificate
    again = decode_response(await ca.handle_join(*request()))
    assert "already used" in again.error
    # the renewal subject does not take a join request (the envelope is bound to its subject)
    subject, data = request()
    assert decode_response(await ca.handle_issue(subject.replace(".join.", ".issue."), data)).error
    del join
