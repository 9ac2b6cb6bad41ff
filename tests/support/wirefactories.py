"""Shared test factories for the wire contract.

Builds keys, trust configs, votes, ballots, verdicts and sealed envelopes with real cryptography, plus
hypothesis strategies for every message type. Everything is deterministic unless a nonce is left to
:func:`os.urandom` inside :func:`cctf.bus_schemas.envelope.seal`.

Keys are derived from a label (``make_key(SuiteId.HYBRID, "agent-a")``) and cached, so a test module
can ask for "the same" key many times without paying for key generation, and two modules get equal
keys for equal labels.

Typical use::

    world = make_world()                       # agents agent-us-east, agent-eu-west + coordinator
    agent = world.agent("us-east")
    ballot = make_ballot(agent.principal, agent.region, world.round)
    data = seal_ballot(agent, ballot, now_ms=world.clock.now_ms())
    assert world.verifier().verify(data, agent.subject) == ballot
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from hypothesis import strategies as st

from cctf.bus_schemas import limits as L
from cctf.bus_schemas.envelope import (
    Envelope,
    SigAuth,
    TimePolicy,
    encode_envelope,
    seal,
    tbs_bytes,
)
from cctf.bus_schemas.messages import (
    Ballot,
    DnssecState,
    MessageType,
    Outcome,
    ResolverVote,
    Transport,
    Verdict,
    VoterRecord,
    VoterState,
    VoteStatus,
    answer_digest,
    dnssec_states_for,
    encode,
)
from cctf.bus_schemas.subjects import verdict_subject, vote_subject
from cctf.clock import FakeClock
from cctf.coordinator.replay import ReplayCache
from cctf.coordinator.verify import BallotVerifier, RoundPolicy
from cctf.crypto.keys import SigningKey
from cctf.crypto.policy import SuitePolicy
from cctf.crypto.suites import COMPONENTS, SuiteId
from cctf.crypto.trust import Role, TrustConfig, TrustEntry

__all__ = [
    "LIFETIME_MS",
    "ROUND_MS",
    "START_MS",
    "FakeClock",
    "Identity",
    "World",
    "ballots",
    "flip_byte",
    "forge_envelope",
    "ids",
    "make_ballot",
    "make_identity",
    "make_key",
    "make_trust",
    "make_verdict",
    "make_vote",
    "make_world",
    "qnames",
    "qtypes",
    "raw_envelope",
    "round_at",
    "seal_ballot",
    "seal_message",
    "seal_verdict",
    "verdicts",
    "votes",
]

#: Default start of every :class:`FakeClock` built here (2023-11-14T22:13:20Z), a round boundary.
START_MS: Final = 1_700_000_000_000
#: Round length of the default :class:`RoundPolicy`.
ROUND_MS: Final = RoundPolicy().round_ms
#: Envelope lifetime used by the sealing helpers unless told otherwise (well below the maximum).
LIFETIME_MS: Final = 30_000

DEFAULT_ANSWER: Final = ("93.184.216.34",)


# --------------------------------------------------------------------------------------------- keys


@functools.cache
def make_key(suite: SuiteId = SuiteId.HYBRID, label: str = "default") -> SigningKey:
    """A deterministic signing key for ``(suite, label)``; cached, so equal arguments give one key.

    Component seeds are ``SHA-256("cctf-test-key/<label>/<component>")``: the Ed25519 seed does not
    depend on the suite, so ``make_key(ED25519, x)`` and ``make_key(HYBRID, x)`` share their Ed25519
    half (useful for cross-suite tests).
    """
    seeds = tuple(
        hashlib.sha256(f"cctf-test-key/{label}/{comp.value}".encode()).digest()
        for comp in COMPONENTS[suite]
    )
    return SigningKey(suite, seeds)


@dataclass(frozen=True)
class Identity:
    """A principal (agent or coordinator) with its signing key and its trust entry."""

    key: SigningKey
    entry: TrustEntry

    @property
    def kid(self) -> str:
        return self.key.kid

    @property
    def principal(self) -> str:
        return self.entry.principal

    @property
    def region(self) -> str:
        return self.entry.region

    @property
    def role(self) -> Role:
        return self.entry.role

    @property
    def suite(self) -> SuiteId:
        return self.key.suite

    @property
    def subject(self) -> str:
        """The identity's own vote subject ``cctf.v1.vote.<region>.<principal>``."""
        return vote_subject(self.region, self.principal)


def make_identity(
    principal: str = "agent-a",
    region: str = "us-east",
    *,
    role: Role = Role.AGENT,
    suite: SuiteId = SuiteId.HYBRID,
    key: SigningKey | None = None,
) -> Identity:
    """An identity whose key defaults to ``make_key(suite, "<role>/<principal>/<region>")``."""
    if key is None:
        key = make_key(suite, f"{role.value}/{principal}/{region}")
    return Identity(key, TrustEntry(role, principal, region, key.public))


def make_trust(*members: Identity | TrustEntry) -> TrustConfig:
    """A trust config holding the given identities' (or raw entries') public keys."""
    return TrustConfig(m.entry if isinstance(m, Identity) else m for m in members)


# ----------------------------------------------------------------------------------------- messages


def round_at(now_ms: int, round_ms: int = ROUND_MS) -> int:
    """The round number at ``now_ms`` (``now_ms // round_ms``)."""
    return now_ms // round_ms


def make_vote(
    agent: str = "agent-a",
    region: str = "us-east",
    round: int = START_MS // ROUND_MS,
    *,
    qname: str = "example.com.",
    qtype: str = "A",
    resolver_id: str = "r1",
    transport: Transport = Transport.UDP,
    status: VoteStatus = VoteStatus.ANSWER,
    rcode: int = 0,
    answer: Sequence[str] | None = None,
    digest: bytes | None = None,
    ttl: int = 300,
    ad: bool = False,
    ede: Sequence[int] = (),
    observed_ms: int | None = None,
    dnssec: DnssecState = DnssecState.INDETERMINATE,
) -> ResolverVote:
    """A well-formed vote. ``answer`` defaults to one A record for ``answer`` votes and ``[]``
    otherwise; ``digest`` defaults to the correct answer digest (``b""`` unless status is answer)."""
    if answer is None:
        answer = DEFAULT_ANSWER if status is VoteStatus.ANSWER else ()
    if digest is None:
        digest = answer_digest(rcode, list(answer)) if status is VoteStatus.ANSWER else b""
    return ResolverVote(
        agent=agent,
        region=region,
        round=round,
        qname=qname,
        qtype=qtype,
        resolver_id=resolver_id,
        transport=transport,
        status=status,
        rcode=rcode,
        answer=tuple(answer),
        answer_digest=digest,
        ttl=ttl,
        ad=ad,
        ede=tuple(ede),
        observed_ms=round * ROUND_MS if observed_ms is None else observed_ms,
        dnssec=dnssec,
    )


def make_ballot(
    agent: str = "agent-a",
    region: str = "us-east",
    round: int = START_MS // ROUND_MS,
    *,
    votes: Iterable[ResolverVote] | None = None,
    resolvers: Sequence[str] = ("r1", "r2", "r3"),
    issued_ms: int | None = None,
) -> Ballot:
    """A ballot; by default one answer vote for ``example.com. A`` per resolver in ``resolvers``."""
    if votes is None:
        votes = [make_vote(agent, region, round, resolver_id=r) for r in resolvers]
    return Ballot(
        agent=agent,
        region=region,
        round=round,
        issued_ms=round * ROUND_MS if issued_ms is None else issued_ms,
        votes=list(votes),
    )


def make_verdict(
    qname: str = "example.com.",
    qtype: str = "A",
    round: int = START_MS // ROUND_MS,
    *,
    outcome: Outcome = Outcome.TRUSTED,
    rcode: int = 0,
    answer: Sequence[str] | None = None,
    voters: Sequence[VoterRecord] | None = None,
    k: int = 2,
    n: int = 3,
    vote_digests: Sequence[bytes] = (),
    decided_early: bool = False,
    issued_ms: int | None = None,
    expires_ms: int | None = None,
    coordinator: str = "coord-a",
    seq: int = 1,
    dnssec: DnssecState = DnssecState.INDETERMINATE,
    basis_round: int | None = None,
    basis_ms: int | None = None,
) -> Verdict:
    """A verdict; for TRUSTED the answer defaults to one A record and ``n`` agreeing voters."""
    trusted = outcome is Outcome.TRUSTED
    if answer is None:
        answer = DEFAULT_ANSWER if trusted else ()
    digest = answer_digest(rcode, list(answer)) if trusted else b""
    if voters is None:
        state = VoterState.AGREE if trusted else VoterState.UNAVAILABLE
        voters = [VoterRecord(f"agent-a/r{i}", state, digest) for i in range(1, n + 1)]
    issued = round * ROUND_MS if issued_ms is None else issued_ms
    return Verdict(
        qname=qname,
        qtype=qtype,
        round=round,
        outcome=outcome,
        rcode=rcode if trusted else 0,
        answer=tuple(answer),
        answer_digest=digest,
        voters=tuple(voters),
        k=k,
        n=n,
        vote_digests=tuple(vote_digests),
        decided_early=decided_early,
        issued_ms=issued,
        expires_ms=issued + LIFETIME_MS if expires_ms is None else expires_ms,
        coordinator=coordinator,
        seq=seq,
        dnssec=dnssec,
        basis_round=round if basis_round is None else basis_round,
        basis_ms=issued if basis_ms is None else basis_ms,
    )


# ---------------------------------------------------------------------------------------- envelopes


def seal_message(
    key: SigningKey,
    subject: str,
    msg: Ballot | Verdict,
    *,
    now_ms: int,
    lifetime_ms: int = LIFETIME_MS,
    nonce: bytes | None = None,
) -> bytes:
    """:func:`seal` a ballot or verdict (the message type follows the struct)."""
    msg_type = MessageType.BALLOT if isinstance(msg, Ballot) else MessageType.VERDICT
    return seal(
        key, subject, msg_type, encode(msg), now_ms=now_ms, lifetime_ms=lifetime_ms, nonce=nonce
    )


def seal_ballot(
    signer: Identity,
    ballot: Ballot | None = None,
    *,
    now_ms: int,
    subject: str | None = None,
    lifetime_ms: int = LIFETIME_MS,
    nonce: bytes | None = None,
) -> bytes:
    """Seal ``ballot`` (default: the signer's own ballot for the round at ``now_ms``) on ``subject``
    (default: the signer's own vote subject)."""
    if ballot is None:
        ballot = make_ballot(signer.principal, signer.region, round_at(now_ms))
    return seal_message(
        signer.key,
        signer.subject if subject is None else subject,
        ballot,
        now_ms=now_ms,
        lifetime_ms=lifetime_ms,
        nonce=nonce,
    )


def seal_verdict(
    signer: Identity,
    verdict: Verdict,
    *,
    now_ms: int,
    subject: str | None = None,
    lifetime_ms: int = LIFETIME_MS,
    nonce: bytes | None = None,
) -> bytes:
    """Seal ``verdict`` on ``subject`` (default: ``verdict_subject(signer.region, qname, qtype)``)."""
    if subject is None:
        subject = verdict_subject(signer.region, verdict.qname, verdict.qtype)
    return seal_message(
        signer.key, subject, verdict, now_ms=now_ms, lifetime_ms=lifetime_ms, nonce=nonce
    )


def forge_envelope(
    key: SigningKey,
    subject: str,
    payload: bytes,
    *,
    now_ms: int,
    lifetime_ms: int = LIFETIME_MS,
    msg_type: str = MessageType.BALLOT.value,
    v: int = 1,
    suite: str | None = None,
    kid: str | None = None,
    iat: int | None = None,
    exp: int | None = None,
    nonce: bytes = b"\x07" * L.NONCE_BYTES,
    sigs: Sequence[bytes] | None = None,
) -> bytes:
    """An envelope with any header field overridden, *correctly signed* by ``key`` over exactly those
    fields (so each test isolates the one check it targets). ``suite``/``kid`` default to the key's;
    ``iat``/``exp`` to ``now_ms`` and ``now_ms + lifetime_ms``; ``sigs`` replaces the signatures."""
    suite = key.suite.value if suite is None else suite
    kid = key.kid if kid is None else kid
    iat = now_ms if iat is None else iat
    exp = iat + lifetime_ms if exp is None else exp
    if sigs is None:
        tbs = tbs_bytes(
            v=v,
            type=msg_type,
            subject=subject,
            suite=suite,
            kid=kid,
            iat=iat,
            exp=exp,
            nonce=nonce,
            payload=payload,
        )
        sigs = key.sign(tbs)
    env = Envelope(
        v=v,
        type=msg_type,
        suite=suite,
        kid=kid,
        iat=iat,
        exp=exp,
        nonce=nonce,
        payload=payload,
        auth=SigAuth(list(sigs)),
    )
    return encode_envelope(env)


def raw_envelope(data: bytes, **replace: Any) -> bytes:
    """Re-encode the envelope ``data`` as a plain MessagePack array with fields replaced by name
    (``v``, ``type``, ``suite``, ``kid``, ``iat``, ``exp``, ``nonce``, ``payload``, ``auth``), bypassing
    all type constraints: e.g. ``raw_envelope(data, auth=["merkle", []])``. No re-signing."""
    fields = list(msgspec.msgpack.decode(data))
    names = ["v", "type", "suite", "kid", "iat", "exp", "nonce", "payload", "auth"]
    for name, value in replace.items():
        fields[names.index(name)] = value
    return msgspec.msgpack.encode(fields)


def flip_byte(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    """``data`` with the byte at ``position`` XOR-ed with ``mask`` (non-zero)."""
    if not 0 < mask <= 0xFF:
        raise ValueError("mask must be in 1..255")
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


# -------------------------------------------------------------------------------------------- world


@dataclass
class World:
    """A small fabric: one agent per region, one coordinator, their trust config and a clock."""

    clock: FakeClock
    agents: dict[str, Identity]  # region -> agent
    coordinator: Identity
    extra: list[Identity] = field(default_factory=list)  # trusted identities beyond the above

    @property
    def trust(self) -> TrustConfig:
        return make_trust(*self.agents.values(), self.coordinator, *self.extra)

    @property
    def round(self) -> int:
        return round_at(self.clock.now_ms())

    def agent(self, region: str) -> Identity:
        return self.agents[region]

    def verifier(
        self,
        *,
        policy: SuitePolicy | None = None,
        rounds: RoundPolicy | None = None,
        times: TimePolicy | None = None,
        replay: ReplayCache | None = None,
    ) -> BallotVerifier:
        """A fresh :class:`BallotVerifier` (own replay cache) over this world's trust and clock."""
        return BallotVerifier(
            trust=self.trust,
            clock=self.clock,
            policy=SuitePolicy() if policy is None else policy,
            rounds=RoundPolicy() if rounds is None else rounds,
            times=TimePolicy() if times is None else times,
            replay=ReplayCache() if replay is None else replay,
        )

    def ballot(self, region: str, **kwargs: Any) -> Ballot:
        """The region's agent's ballot for the current round (``make_ballot`` keyword arguments)."""
        agent = self.agents[region]
        return make_ballot(agent.principal, agent.region, self.round, **kwargs)

    def sealed(self, region: str, ballot: Ballot | None = None, **kwargs: Any) -> bytes:
        """The region's agent's ballot (default :meth:`ballot`) sealed now on its own subject."""
        agent = self.agents[region]
        if ballot is None:
            ballot = self.ballot(region)
        return seal_ballot(agent, ballot, now_ms=self.clock.now_ms(), **kwargs)


def make_world(
    regions: Sequence[str] = ("us-east", "eu-west"),
    *,
    suite: SuiteId = SuiteId.HYBRID,
    coordinator_region: str = "us-east",
    start_ms: int = START_MS,
) -> World:
    """Agents ``agent-<region>`` for each region and coordinator ``coord-<coordinator_region>``."""
    agents = {r: make_identity(f"agent-{r}", r, suite=suite) for r in regions}
    coordinator = make_identity(
        f"coord-{coordinator_region}", coordinator_region, role=Role.COORDINATOR, suite=suite
    )
    return World(FakeClock(start_ms), agents, coordinator)


# ------------------------------------------------------------------------------ hypothesis strategies

#: Region / agent / resolver / coordinator ids: ``[a-z0-9][a-z0-9-]{0,31}``.
ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
#: Any text a ``QName`` field accepts (1..254 code points, no surrogates).
qnames = st.text(min_size=1, max_size=L.MAX_QNAME_CHARS)
qtypes = st.from_regex(r"[A-Z][A-Z0-9]{0,9}", fullmatch=True)
_uints = st.integers(0, 2**63 - 1)
_answers = st.lists(st.text(max_size=40), max_size=4)
_opt_digests = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32), st.binary(max_size=32))


@st.composite
def votes(draw: st.DrawFn, *, consistent: bool = False) -> ResolverVote:
    """Any vote that strict decoding accepts. With ``consistent=True`` the answer digest is the
    correct one for the status (what an honest agent sends)."""
    status = draw(st.sampled_from(VoteStatus))
    rcode = draw(st.integers(0, 4095))
    answer = draw(_answers)
    if consistent:
        digest = answer_digest(rcode, answer) if status is VoteStatus.ANSWER else b""
    else:
        digest = draw(_opt_digests)
    return ResolverVote(
        agent=draw(ids),
        region=draw(ids),
        round=draw(_uints),
        qname=draw(qnames),
        qtype=draw(qtypes),
        resolver_id=draw(ids),
        transport=draw(st.sampled_from(Transport)),
        status=status,
        rcode=rcode,
        answer=tuple(answer),
        answer_digest=digest,
        ttl=draw(st.integers(0, 2**31 - 1)),
        ad=draw(st.booleans()),
        ede=tuple(draw(st.lists(st.integers(0, 65535), max_size=L.MAX_EDE_CODES))),
        observed_ms=draw(_uints),
        dnssec=draw(
            st.sampled_from(dnssec_states_for(status) if consistent else list(DnssecState))
        ),
    )


@st.composite
def ballots(draw: st.DrawFn, *, max_votes: int = 4) -> Ballot:
    """Any ballot that strict decoding accepts (its votes need not match its header)."""
    return Ballot(
        agent=draw(ids),
        region=draw(ids),
        round=draw(_uints),
        issued_ms=draw(_uints),
        votes=draw(st.lists(votes(), max_size=max_votes)),
    )


@st.composite
def verdicts(draw: st.DrawFn, *, max_voters: int = 5) -> Verdict:
    """Any verdict that strict decoding accepts."""
    records = st.builds(
        VoterRecord,
        voter=st.text(max_size=2 * L.MAX_ID_CHARS + 1),
        state=st.sampled_from(VoterState),
        answer_digest=_opt_digests,
    )
    return Verdict(
        qname=draw(qnames),
        qtype=draw(qtypes),
        round=draw(_uints),
        outcome=draw(st.sampled_from(Outcome)),
        rcode=draw(st.integers(0, 4095)),
        answer=tuple(draw(_answers)),
        answer_digest=draw(_opt_digests),
        voters=tuple(draw(st.lists(records, max_size=max_voters))),
        k=draw(st.integers(1, L.MAX_VOTERS)),
        n=draw(st.integers(1, L.MAX_VOTERS)),
        vote_digests=tuple(
            draw(st.lists(st.binary(min_size=32, max_size=32), max_size=max_voters))
        ),
        decided_early=draw(st.booleans()),
        issued_ms=draw(_uints),
        expires_ms=draw(_uints),
        coordinator=draw(ids),
        seq=draw(_uints),
        dnssec=draw(st.sampled_from(DnssecState)),
        basis_round=draw(_uints),
        basis_ms=draw(_uints),
    )
