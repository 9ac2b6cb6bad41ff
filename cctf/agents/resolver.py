"""The resolver agent loop (NATS + DNS adapter; the decisions live in :mod:`cctf.agents.ballot`).

Every round (epoch-aligned: ``round = now_ms // round_ms``, started at its boundary ``round * round_ms``)
the agent

1. queries every configured ``(qname, qtype)`` through every resolver concurrently, with a hard
   deadline at ``boundary + query_deadline_ms`` (:func:`cctf.agents.roundquery.query_all`);
2. builds its :class:`~cctf.bus_schemas.messages.Ballot` — several when the votes do not fit in one
   (:func:`cctf.agents.ballot.build_ballots`);
3. seals each once (a signed envelope bound to ``cctf.v1.vote.<region>.<agent>``, its own nonce);
4. publishes them concurrently to JetStream, each with ``Nats-Msg-Id`` =
   :func:`~cctf.agents.ballot.ballot_msg_id` ``(agent, round, part)`` (keyed by the agent key) and
   the region's vote stream as the expected stream, and waits for the acks **in the background**:
   :meth:`ResolverAgent.run` goes on to the next boundary as soon as the round's parts are sealed
   (the core copy of each publish reaches the coordinators at once, design D1), so a slow
   acknowledgement never makes the loop late for the next round. A failed attempt (no responders,
   timeout, disconnected, stream full, API error) is counted by reason and retried with a short backoff, with
   the *same* message id and the *same* sealed bytes, until the round's end; then the part is given up
   and logged (:mod:`cctf.agents.publishing`). A retried publish that did land is deduplicated by the
   stream.

With an ``identity:`` block (:class:`~cctf.identity.targets.IdentityTargets`), the same round also
observes the configured trust domains' bundles, issuers' JWKS and workloads' TLS endpoints
(:class:`~cctf.agents.evidence_run.EvidenceCollector`, concurrently with the DNS queries and by the
same deadline) and publishes the observations as signed evidence ballots on
``cctf.v1.evidence.<region>.<agent>`` (same stream, same retry rules, ``Nats-Msg-Id`` =
:func:`~cctf.agents.evidence.evidence_msg_id`). Evidence never delays or fails the ballots.

Rounds never pile up (:mod:`cctf.agents.plan`): a round reached too late is skipped and counted.
The loop survives NATS outages: the NATS client reconnects on its own, and the
next rounds publish normally.

Nothing secret is logged: the key is referred to by its key id only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cctf.agents.agentstats import (
    LATE_ACK_ROUNDS,
    NOT_RETRIED,
    AgentStats,
    BallotReport,
    Prepared,
    RegionStream,
    cancel_quietly,
    log_report,
)
from cctf.agents.ballot import (
    ObservedQuery,
    VoteMemo,
    ballot_id_secret,
    ballot_msg_id,
    build_ballots,
)
from cctf.agents.config import AgentConfig
from cctf.agents.dnsquery import ResolverSpec, prepare
from cctf.agents.dnssecfetch import ChainValidator
from cctf.agents.evidence import evidence_id_secret
from cctf.agents.evidence_run import EvidenceCollector, publish_evidence
from cctf.agents.plan import questions, round_timing
from cctf.agents.publishing import (
    MSG_ID_HEADER,
    PublishFailure,
    PublishResult,
    publish_until,
)
from cctf.agents.roundquery import query_all
from cctf.agents.udpfast import AnswerMemo
from cctf.bus.streams import votes_stream_name
from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import seal
from cctf.bus_schemas.messages import MessageType, encode
from cctf.bus_schemas.subjects import evidence_subject, vote_subject
from cctf.clock import SYSTEM_CLOCK, Clock
from cctf.crypto.keys import SigningKey
from cctf.identity.targets import IdentityTargets
from cctf.ids import check_id
from cctf.telemetry import get_logger
from cctf.util.deadline import stop_tasks

__all__ = [
    "MSG_ID_HEADER",
    "AgentStats",
    "BallotReport",
    "RegionStream",
    "ResolverAgent",
]

Sleep = Callable[[float], Awaitable[None]]


class ResolverAgent:
    """One resolver agent: queries, ballots, signs and publishes, one round at a time.

    ``nc`` is a connected ``nats.aio.client.Client`` (of the region's ``agent-<region>`` user); the agent
    does not close it. ``stream`` is the JetStream stream every publish must land in
    (``Nats-Expected-Stream``; default the region's ``CCTF_VOTES_<REGION>``, ``None`` accepts any): a
    subject bound to another stream is refused by the server and counted as ``wrong_stream``.
    ``clock`` and ``sleep`` are injectable (tests); ``on_ballot`` is called after
    every round with a :class:`BallotReport` (exceptions it raises are logged and ignored).
    """

    def __init__(
        self,
        *,
        agent: str,
        region: str,
        key: SigningKey,
        resolvers: Sequence[ResolverSpec],
        names: Sequence[tuple[str, str]],
        nc: Any,
        clock: Clock = SYSTEM_CLOCK,
        round_ms: int = 1_000,
        query_deadline_ms: int | None = None,
        ballot_lifetime_ms: int = 30_000,
        publish_timeout_ms: int | None = None,
        max_start_lag_ms: int | None = None,
        stream: str | RegionStream | None = RegionStream.OWN,
        on_ballot: Callable[[BallotReport], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        identity: IdentityTargets | None = None,
        identity_probe_every_ms: int | None = None,
        dnssec: ChainValidator | None = None,
        ballot_max_votes: int = L.MAX_VOTES_PER_BALLOT,
        ballot_max_bytes: int = L.MAX_PAYLOAD_BYTES,
    ) -> None:
        self.agent = check_id(agent, "agent id")
        # DNSSEC state of every vote: own validation up to trust anchors, AD/EDE of resolvers on
        # authenticated transports (no anchors: only the latter)
        self.dnssec = dnssec if dnssec is not None else ChainValidator()
        self.region = check_id(region, "region")
        self.subject = vote_subject(self.region, self.agent)
        if not isinstance(key, SigningKey):
            raise TypeError("key must be a SigningKey")
        self._key = key
        self._id_secret = ballot_id_secret(key)  # keyed Nats-Msg-Id of its ballots
        self.resolvers = tuple(resolvers)
        if not self.resolvers:
            raise ValueError("an agent needs at least one resolver")
        prepare(self.resolvers)
        self.names = questions(names, len(self.resolvers))
        timing = round_timing(round_ms, query_deadline_ms, publish_timeout_ms, max_start_lag_ms)
        self.round_ms = timing.round_ms
        self.query_deadline_ms = timing.query_deadline_ms
        self.publish_timeout_ms = timing.publish_timeout_ms
        self.max_start_lag_ms = timing.max_start_lag_ms
        if ballot_lifetime_ms <= 0:
            raise ValueError("ballot_lifetime_ms must be positive")
        self.ballot_lifetime_ms = ballot_lifetime_ms
        if not 1 <= ballot_max_votes <= L.MAX_VOTES_PER_BALLOT:
            raise ValueError(f"ballot_max_votes must be in 1..{L.MAX_VOTES_PER_BALLOT}")
        if not 1024 <= ballot_max_bytes <= L.MAX_PAYLOAD_BYTES:
            raise ValueError(f"ballot_max_bytes must be in 1024..{L.MAX_PAYLOAD_BYTES}")
        # D6: a round's votes split over bounded ballots, each verified and tallied on its own
        self.ballot_max_votes = ballot_max_votes
        self.ballot_max_bytes = ballot_max_bytes
        self.memo = AnswerMemo()  # unchanged UDP answers reuse their observation (udpfast)
        self.vote_memo = VoteMemo()  # ... and their vote (ballot)
        self._nc = nc
        self._js = nc.jetstream()
        # the stream a publish must land in (Nats-Expected-Stream); None: whichever holds the subject
        self.stream = votes_stream_name(self.region) if stream is RegionStream.OWN else stream
        self._clock = clock
        self._sleep = sleep
        self.on_ballot = on_ballot
        self.stats = AgentStats()
        self._stop = asyncio.Event()
        self._late: set[asyncio.Task[None]] = set()  # background retries of unacked ballots
        self._in_flight: set[asyncio.Future[None]] = set()  # rounds still publishing (run())
        # the (qname, qtype) of each query_all result, names-major like query_all's output
        self._questions = [q for q in self.names for _ in self.resolvers]
        self._log = get_logger("cctf.agent").bind(agent=self.agent, region=self.region, kid=key.kid)
        self.evidence_subject = evidence_subject(self.region, self.agent)
        self._evidence_secret = evidence_id_secret(key)
        collector = (
            None
            if identity is None
            else EvidenceCollector(
                identity,
                agent=self.agent,
                region=self.region,
                clock=clock,
                probe_every_ms=identity_probe_every_ms,
            )
        )
        self.evidence = collector if collector is not None and collector.subjects else None

    @classmethod
    def from_config(
        cls,
        config: AgentConfig,
        nc: Any,
        *,
        key: SigningKey | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_ballot: Callable[[BallotReport], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> ResolverAgent:
        """An agent from a validated config; the key is loaded (and checked) unless given."""
        return cls(
            agent=config.agent,
            region=config.region,
            key=config.load_key() if key is None else key,
            resolvers=config.resolvers,
            names=config.names,
            nc=nc,
            clock=clock,
            round_ms=config.round_ms,
            query_deadline_ms=config.query_deadline_ms,
            ballot_lifetime_ms=config.ballot_lifetime_ms,
            publish_timeout_ms=config.publish_timeout_ms,
            on_ballot=on_ballot,
            sleep=sleep,
            identity=config.identity,
            identity_probe_every_ms=config.identity_probe_every_ms,
            dnssec=ChainValidator(config.trust_anchors, config.validating_resolvers),
            ballot_max_votes=config.ballot_max_votes,
            ballot_max_bytes=config.ballot_max_bytes,
        )

    # ---- control

    def stop(self) -> None:
        """Ask :meth:`run` to return: waits end at once, a running round stops retrying its publish."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (through the injectable ``sleep``), returning early on :meth:`stop`."""
        if self._stop.is_set() or seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    # ---- the loop

    async def run(self, rounds: int | None = None, *, first_round: int | None = None) -> AgentStats:
        """Run ``rounds`` rounds (forever when ``None``) or until :meth:`stop`; returns the stats.

        The first round is the one starting at the next boundary after the call. With
        ``first_round``, the rounds are exactly ``first_round .. first_round + rounds - 1``: a round
        of that window whose boundary is missed is skipped (counted) and NOT made up after the
        window, so agents given the same ``first_round`` vote in the same rounds (the demo: a
        lagging agent would otherwise publish a round of its own after the others stopped)."""
        if rounds is not None and rounds < 0:
            raise ValueError("rounds must be >= 0")
        self._log.info(
            "agent.start",
            resolvers=[r.id for r in self.resolvers],
            names=len(self.names),
            round_ms=self.round_ms,
            query_deadline_ms=self.query_deadline_ms,
            subject=self.subject,
        )
        done = 0
        target = self._clock.now_ms() // self.round_ms + 1 if first_round is None else first_round
        end = None if rounds is None or first_round is None else first_round + rounds
        while not self._stop.is_set() and (rounds is None or done < rounds):
            if end is not None and target >= end:
                break
            now = self._clock.now_ms()
            start_ms = target * self.round_ms
            if now < start_ms:
                await self._pause((start_ms - now) / 1000)
                continue
            if now - start_ms > self.max_start_lag_ms:
                missed_to = now // self.round_ms + 1
                skipped = missed_to - target
                self.stats.rounds_skipped += skipped
                self._log.warning(
                    "rounds.skipped",
                    first=target,
                    last=missed_to - 1,
                    count=skipped,
                    late_ms=now - start_ms,
                )
                target = missed_to
                continue
            try:
                await self._start_round(target)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.round_errors += 1
                self._log.exception("round.error", round=target)
            done += 1
            target += 1
        await self._finish_rounds()
        await self._drop_late()
        self._log.info(
            "agent.stop",
            rounds=self.stats.rounds,
            published=self.stats.ballots_published,
            failed=self.stats.ballots_failed,
            skipped=self.stats.rounds_skipped,
        )
        return self.stats

    async def run_round(self, round_: int) -> BallotReport:
        """One round: query, build, seal, publish every part (retrying until the round's end);
        with identity targets, the round's evidence alongside (:meth:`_evidence_round`)."""
        evidence = self._start_evidence(round_)
        try:
            report = await self._send_ballots(await self._prepare_ballots(round_))
        except BaseException:
            await cancel_quietly(evidence)
            raise
        if evidence is not None:
            await evidence
        return report

    def _start_evidence(self, round_: int) -> asyncio.Future[None] | None:
        if self.evidence is None:
            return None
        start_ms = round_ * self.round_ms
        return asyncio.ensure_future(
            self._evidence_round(
                round_, start_ms + self.query_deadline_ms, start_ms + self.round_ms
            )
        )

    async def _start_round(self, round_: int) -> None:
        """:meth:`run_round` as :meth:`run` does it: returns once the round's ballots are sealed;
        publishing them (until acknowledged or the round's end), the report and the round's
        evidence go on in the background, so the loop is at the next boundary on time even when
        acknowledgements are slow (a JetStream R3 ack on a loaded machine can take most of a round:
        the loop then started every other round late and skipped it)."""
        evidence = self._start_evidence(round_)
        try:
            prepared = await self._prepare_ballots(round_)
        except BaseException:
            await cancel_quietly(evidence)
            raise

        async def finish() -> None:
            try:
                await self._send_ballots(prepared)
                if evidence is not None:
                    await evidence
            except asyncio.CancelledError:
                await cancel_quietly(evidence)
                raise
            except Exception:
                self.stats.round_errors += 1
                self._log.exception("round.error", round=round_)

        task = asyncio.ensure_future(finish())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _finish_rounds(self) -> None:
        """Wait for the rounds still publishing (each ends by its round's end, at once on stop)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _prepare_ballots(self, round_: int) -> Prepared:
        """Query, build and seal one round's ballots."""
        start_ms = round_ * self.round_ms
        query_end = start_ms + self.query_deadline_ms
        deadline_s = max(0.001, (query_end - self._clock.now_ms()) / 1000)
        observations = await query_all(
            self.resolvers, self.names, deadline_s=deadline_s, dnssec=self.dnssec, memo=self.memo
        )
        query_ms = float(self._clock.now_ms() - start_ms)
        observed: list[ObservedQuery] = [
            (qname, qtype, obs)
            for (qname, qtype), obs in zip(self._questions, observations, strict=True)
        ]
        now = self._clock.now_ms()
        ballots = build_ballots(
            self.agent,
            self.region,
            round_,
            observed,
            now,
            max_votes=self.ballot_max_votes,
            max_payload_bytes=self.ballot_max_bytes,
            memo=self.vote_memo,
        )
        sealed = [
            seal(
                self._key,
                self.subject,
                MessageType.BALLOT,
                encode(ballot),
                now_ms=now,
                lifetime_ms=self.ballot_lifetime_ms,
            )
            for ballot in ballots
        ]
        statuses: dict[str, int] = {}
        for ballot in ballots:
            for vote in ballot.votes:
                statuses[vote.status.value] = statuses.get(vote.status.value, 0) + 1
        votes = sum(len(b.votes) for b in ballots)
        return Prepared(round_, sealed, votes, statuses, query_ms)

    async def _send_ballots(self, prepared: Prepared) -> BallotReport:
        """Publish a round's sealed parts (retrying until the round's end), then account."""
        round_, sealed = prepared.round, prepared.sealed
        round_end = (round_ + 1) * self.round_ms
        results: list[PublishResult] = await asyncio.gather(
            *(
                self._publish(data, self._msg_id(round_, part), round_end)
                for part, data in enumerate(sealed)
            )
        )
        failed = [r for r in results if not r.ok]
        for part, (data, r) in enumerate(zip(sealed, results, strict=True)):
            if not r.ok and r.error not in NOT_RETRIED and not self._stop.is_set():
                self._retry_late(data, self._msg_id(round_, part), round_end)
        report = BallotReport(
            round=round_,
            votes=prepared.votes,
            ok=not failed,
            publish_ms=max(r.latency_ms for r in results),
            attempts=sum(r.attempts for r in results),
            duplicate=any(r.duplicate for r in results),
            error=failed[-1].error if failed else None,
            statuses=prepared.statuses,
            parts=len(results),
            parts_ok=len(results) - len(failed),
            query_ms=prepared.query_ms,
        )
        self._account(report)
        return report

    def _account(self, report: BallotReport) -> None:
        self.stats.add(report)
        log_report(self._log, report)
        if self.on_ballot is not None:
            try:
                self.on_ballot(report)
            except Exception:
                self._log.exception("on_ballot.error", round=report.round)

    def _retry_late(self, data: bytes, msg_id: str, round_end: int) -> None:
        """Keep publishing a ballot part the stream did not acknowledge by its round's end (e.g.
        during a stream-leader election: its live copy already reached the coordinators) until
        :data:`LATE_ACK_ROUNDS` rounds later, in the background."""

        async def retry() -> None:
            r = await self._publish(data, msg_id, round_end + LATE_ACK_ROUNDS * self.round_ms)
            if r.ok:
                self.stats.late_acks += 1

        task = asyncio.ensure_future(retry())
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _drop_late(self) -> None:
        await stop_tasks(list(self._late), 2.0, what="late ballot retry")

    def _count_failure(self, reason: PublishFailure, msg_id: str, attempt: int) -> None:
        self.stats.publish_failures[reason.value] += 1
        self._log.debug(
            "ballot.publish_attempt_failed", msg_id=msg_id, attempt=attempt, reason=reason.value
        )

    def _msg_id(self, round_: int, part: int) -> str:
        return ballot_msg_id(self.agent, round_, part, secret=self._id_secret)

    async def _evidence_round(self, round_: int, deadline_ms: int, round_end: int) -> None:
        """Observe, seal and publish the round's evidence; never raises (but cancellation)."""
        assert self.evidence is not None
        try:
            report = await publish_evidence(
                self.evidence,
                round_,
                deadline_ms=deadline_ms,
                round_end=round_end,
                key=self._key,
                secret=self._evidence_secret,
                lifetime_ms=self.ballot_lifetime_ms,
                clock=self._clock,
                publish=lambda data, msg_id, end: self._publish(
                    data, msg_id, end, subject=self.evidence_subject
                ),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.evidence.errors += 1
            self._log.exception("evidence.error", round=round_)
            return
        self.stats.evidence.add(report)
        self._log.info(
            "evidence.published" if report.ok else "evidence.failed", **report.log_fields()
        )

    async def _publish(
        self, data: bytes, msg_id: str, deadline_ms: int, *, subject: str | None = None
    ) -> PublishResult:
        """Publish one sealed part until acked or ``deadline_ms``; always the same bytes and id."""
        return await publish_until(
            self._js,
            self.subject if subject is None else subject,
            data,
            msg_id,
            stream=self.stream,
            deadline_ms=deadline_ms,
            attempt_timeout_ms=self.publish_timeout_ms,
            clock=self._clock,
            pause=self._pause,
            stopping=self._stop.is_set,
            on_failure=lambda reason, attempt: self._count_failure(reason, msg_id, attempt),
        )
