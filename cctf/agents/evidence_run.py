"""An agent's identity observations, round after round (thin async adapter over
:mod:`cctf.identity.fetch`; every rule is in :mod:`cctf.identity` and :mod:`cctf.agents.evidence`).

:class:`EvidenceCollector` holds, per configured subject, the result of its last observation and when
to observe it again, and :meth:`EvidenceCollector.collect` gives one round's observations:

* **bundles** (per trust domain): refreshed when its :class:`~cctf.identity.bundle.FederationState`
  is due (``spiffe_refresh_hint``, else the domain's ``refresh_ms``; after a failure within 30 s),
  from its ``https_web`` endpoint (:func:`~cctf.identity.fetch.fetch_document`, web PKI or
  ``ca_file``) or its ``bundle_file``. The state refuses a ``spiffe_sequence`` rollback or conflict
  (``invalid``, the accepted bundle is kept) and an empty bundle invalidates the domain
  (``invalid``); between refreshes the last result is reported again, every round;
* **JWKS** (per issuer): discovery document, then the JWKS it names, each bounded; refreshed every
  ``probe_every_ms`` (default: every round);
* **mTLS** (per workload with an ``endpoint``): the TLS endpoint is probed
  (:func:`~cctf.identity.fetch.probe_tls`) and the presented chain validated as an X509-SVID with the
  expected SPIFFE ID under the bundle this agent holds for the workload's trust domain (never a
  bundle fetched by anyone else); every ``probe_every_ms`` (default: every round).

Everything due in a round runs concurrently and must finish by the round's deadline (a fetch still
running then is a ``timeout``). Never raises for a network or document failure: each becomes an
observation with a status and a reason code. Nothing fetched is logged or kept beyond its parsed
key material.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Final

from cctf.agents.evidence import (
    Failure,
    Outcome,
    build_evidence_ballots,
    evidence_msg_id,
    failure_of,
    observation,
)
from cctf.agents.publishing import PublishResult
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.evidence import EvidenceStatus, IdentityKind, Observation, encode
from cctf.bus_schemas.messages import MessageType
from cctf.bus_schemas.subjects import evidence_subject
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.crypto.keys import SigningKey
from cctf.errors import ConfigError
from cctf.identity.bundle import MAX_BUNDLE_BYTES, RETRY_MS, FederationState, TrustBundle
from cctf.identity.errors import IdentityError
from cctf.identity.fetch import fetch_document, probe_tls
from cctf.identity.oidc import MAX_DISCOVERY_BYTES, MAX_JWKS_BYTES, KeySet, parse_discovery
from cctf.identity.oidc import parse_jwks as _parse_jwks
from cctf.identity.targets import (
    IdentityTargets,
    IssuerTarget,
    TrustDomainTarget,
    WorkloadTarget,
    check_endpoint,
)
from cctf.identity.x509svid import parse_der_chain, verify_x509_svid
from cctf.util.files import read_bounded

__all__ = [
    "MIN_BUDGET_S",
    "EvidenceCollector",
    "EvidenceReport",
    "EvidenceStats",
    "publish_evidence",
]

#: a fetch always gets at least this much time, even when the round's deadline is (nearly) past
MIN_BUDGET_S: Final = 0.05
_MIN_RETRY_MS: Final = 1_000


@dataclass(frozen=True, slots=True)
class _Last:
    outcome: Outcome
    observed_ms: int
    next_ms: int  # observe again at or after this time (jwks / mtls)


class EvidenceCollector:
    """Observation state of one agent over its identity targets (module docstring)."""

    def __init__(
        self,
        targets: IdentityTargets,
        *,
        agent: str,
        region: str,
        clock: Clock = SYSTEM_CLOCK,
        probe_every_ms: int | None = None,
    ) -> None:
        self.targets = targets
        self.agent = agent
        self.region = region
        self._clock = clock
        self.probe_every_ms = probe_every_ms
        self.states: dict[str, FederationState] = {
            t.name: FederationState(t.name, t.refresh_ms) for t in targets.trust_domains
        }
        self._bundles: dict[str, _Last] = {}
        self._jwks: dict[str, _Last] = {}
        self._mtls: dict[str, _Last] = {}
        self.workloads = [w for w in targets.workloads if w.endpoint is not None]

    @property
    def subjects(self) -> int:
        """Observations per round."""
        return len(self.targets.trust_domains) + len(self.targets.issuers) + len(self.workloads)

    async def collect(self, round_: int, deadline_ms: int) -> list[Observation]:
        """Refresh what is due (concurrently, until ``deadline_ms``), then one observation per
        configured subject for ``round_``."""
        now = self._clock.now_ms()
        budget = max(MIN_BUDGET_S, (deadline_ms - now) / 1000)
        domains = [t for t in self.targets.trust_domains if self.states[t.name].due(now)]
        issuers = [i for i in self.targets.issuers if self._due(self._jwks.get(i.issuer), now)]
        workloads = [w for w in self.workloads if self._due(self._mtls.get(w.spiffe_id), now)]
        bundles, keysets, chains = await asyncio.gather(
            asyncio.gather(*(self._bundle_bytes(t, budget) for t in domains)),
            asyncio.gather(*(self._keyset(i, budget) for i in issuers)),
            asyncio.gather(*(self._chain(w, budget) for w in workloads)),
        )
        now = self._clock.now_ms()
        for t, data in zip(
            domains, bundles, strict=True
        ):  # bundles first: mTLS validates under them
            self._refresh_bundle(t, data, now)
        for i, keyset in zip(issuers, keysets, strict=True):
            self._jwks[i.issuer] = _Last(keyset, now, self._next(now))
        for w, chain in zip(workloads, chains, strict=True):
            self._mtls[w.spiffe_id] = _Last(self._validate(w, chain, now), now, self._next(now))
        return self.observations(round_)

    def observations(self, round_: int) -> list[Observation]:
        """The round's observations from the last results (bundles, issuers, workloads; in
        configuration order). A subject not observed yet reports ``error`` / ``not_observed``."""
        out: list[Observation] = []
        for kind, subjects, results in (
            (IdentityKind.BUNDLE, [t.name for t in self.targets.trust_domains], self._bundles),
            (IdentityKind.JWKS, [i.issuer for i in self.targets.issuers], self._jwks),
            (IdentityKind.MTLS, [w.spiffe_id for w in self.workloads], self._mtls),
        ):
            for subject in subjects:
                last = results.get(subject)
                if last is None:
                    last = _Last(Failure(EvidenceStatus.ERROR, "not_observed"), 0, 0)
                out.append(
                    observation(
                        self.agent,
                        self.region,
                        round_,
                        kind,
                        subject,
                        last.outcome,
                        last.observed_ms,
                    )
                )
        return out

    # ---- schedule

    def _due(self, last: _Last | None, now: int) -> bool:
        return last is None or now >= last.next_ms

    def _next(self, now: int) -> int:
        return now if self.probe_every_ms is None else now + self.probe_every_ms

    # ---- bundles

    async def _bundle_bytes(self, t: TrustDomainTarget, budget: float) -> bytes | Failure:
        try:
            if t.bundle_file is not None:
                try:
                    return read_bounded(t.bundle_file, f"bundle of {t.name}", MAX_BUNDLE_BYTES)
                except ConfigError:  # missing, unreadable or over the cap
                    return Failure(EvidenceStatus.ERROR, "bundle_file_unreadable")
            assert t.bundle_endpoint is not None
            return await fetch_document(
                t.bundle_endpoint, max_bytes=MAX_BUNDLE_BYTES, ca_file=t.ca_file, timeout_s=budget
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failure_of(exc)

    def _refresh_bundle(self, t: TrustDomainTarget, got: bytes | Failure, now: int) -> None:
        state = self.states[t.name]
        if isinstance(got, Failure):  # not fetched: the state is unchanged, retried soon
            retry = now + max(_MIN_RETRY_MS, min(t.refresh_ms, RETRY_MS))
            self.states[t.name] = replace(state, next_refresh_ms=retry)
            self._bundles[t.name] = _Last(got, now, retry)
            return
        update = state.observe(got, now)
        self.states[t.name] = update.state
        outcome: Outcome
        if update.error is not None:
            outcome = failure_of(update.error)
        elif update.state.bundle is not None:
            outcome = update.state.bundle
        else:  # cannot happen: an accepted update holds a bundle
            outcome = Failure(EvidenceStatus.ERROR, "internal")
        self._bundles[t.name] = _Last(outcome, now, update.state.next_refresh_ms)

    def bundle_of(self, trust_domain: str) -> TrustBundle | None:
        """The bundle this agent currently holds for ``trust_domain`` (what mTLS validates under)."""
        state = self.states.get(trust_domain)
        return None if state is None else state.bundle

    # ---- issuers

    async def _keyset(self, i: IssuerTarget, budget: float) -> KeySet | Failure:
        loop = asyncio.get_running_loop()
        end = loop.time() + budget
        try:
            data = await fetch_document(
                i.discovery_location,
                max_bytes=MAX_DISCOVERY_BYTES,
                ca_file=i.ca_file,
                timeout_s=budget,
            )
            discovery = parse_discovery(i.issuer, data)
            left = max(MIN_BUDGET_S, end - loop.time())
            keys = await fetch_document(
                discovery.jwks_uri, max_bytes=MAX_JWKS_BYTES, ca_file=i.ca_file, timeout_s=left
            )
            return _parse_jwks(keys)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failure_of(exc)

    # ---- workloads

    async def _chain(self, w: WorkloadTarget, budget: float) -> list[bytes] | Failure:
        try:
            assert w.endpoint is not None
            host, port = check_endpoint(w.endpoint)
            return await probe_tls(host, port, timeout_s=budget)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failure_of(exc)

    def _validate(self, w: WorkloadTarget, got: list[bytes] | Failure, now: int) -> Outcome:
        if isinstance(got, Failure):
            return got
        state = self.states.get(w.trust_domain)
        if state is None or state.bundle is None:
            if state is not None and state.invalid is not None:  # the domain is invalidated
                return Failure(EvidenceStatus.INVALID, state.invalid.value)
            return Failure(EvidenceStatus.ERROR, "bundle_unavailable")
        try:
            chain = parse_der_chain(got)
            # the expected SPIFFE ID is compared by observation(): a chain that validates but names
            # another workload is reported `invalid` / `wrong_spiffe_id` with the ID it presented
            return verify_x509_svid(chain, state.bundle, now)
        except IdentityError as exc:
            return failure_of(exc)
        except Exception as exc:  # a certificate the verifier chokes on: refused, not a crash
            return failure_of(exc)


@dataclass(frozen=True, slots=True)
class EvidenceReport:
    """What happened to one round's evidence."""

    round: int
    observations: int
    statuses: dict[str, int]  # observation status -> count
    details: tuple[str, ...]  # the distinct reason codes, sorted
    parts: int  # evidence ballots sent
    parts_ok: int  # of which acknowledged

    @property
    def ok(self) -> bool:
        return self.parts_ok == self.parts

    def log_fields(self) -> dict[str, object]:
        """What the agent logs about the round (counts and reason codes only)."""
        return {
            "round": self.round,
            "observations": self.observations,
            "statuses": self.statuses,
            "parts": self.parts,
            "parts_ok": self.parts_ok,
            "details": list(self.details),
        }


@dataclass
class EvidenceStats:
    """An agent's evidence counters (monotonic within a process)."""

    published: int = 0  # evidence ballots (parts) acknowledged
    failed: int = 0  # evidence ballots given up
    errors: int = 0  # evidence rounds aborted by an unexpected exception
    #: observations by status (:class:`~cctf.bus_schemas.evidence.EvidenceStatus`)
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, report: EvidenceReport) -> None:
        self.published += report.parts_ok
        self.failed += report.parts - report.parts_ok
        for status, count in report.statuses.items():
            self.by_status[status] = self.by_status.get(status, 0) + count


Publish = Callable[[bytes, str, int], Awaitable[PublishResult]]


async def publish_evidence(
    collector: EvidenceCollector,
    round_: int,
    *,
    deadline_ms: int,
    round_end: int,
    key: SigningKey,
    secret: bytes,
    lifetime_ms: int,
    clock: Clock,
    publish: Publish,
) -> EvidenceReport:
    """One round's evidence: collect (until ``deadline_ms``), build the ballots, seal each on
    ``cctf.v1.evidence.<region>.<agent>`` and ``publish(data, msg_id, round_end)`` them concurrently
    (``msg_id`` = :func:`~cctf.agents.evidence.evidence_msg_id` with ``secret``)."""
    observations = await collector.collect(round_, deadline_ms)
    now = clock.now_ms()
    agent, region = collector.agent, collector.region
    subject = evidence_subject(region, agent)
    ballots = build_evidence_ballots(agent, region, round_, observations, now)
    sealed = [
        seal(key, subject, MessageType.EVIDENCE, encode(b), now_ms=now, lifetime_ms=lifetime_ms)
        for b in ballots
    ]
    results = await asyncio.gather(
        *(
            publish(data, evidence_msg_id(agent, round_, part, secret=secret), round_end)
            for part, data in enumerate(sealed)
        )
    )
    statuses: dict[str, int] = {}
    for o in observations:
        statuses[o.status.value] = statuses.get(o.status.value, 0) + 1
    return EvidenceReport(
        round=round_,
        observations=len(observations),
        statuses=statuses,
        details=tuple(sorted({o.detail for o in observations if o.detail})),
        parts=len(results),
        parts_ok=sum(r.ok for r in results),
    )
