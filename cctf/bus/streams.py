"""JetStream stream definitions of CCTF and an idempotent, cluster-tolerant ``ensure_streams``.

* ``CCTF_VOTES_<REGION>`` (one per region) holds ``cctf.v1.vote.<region>.>`` and
  ``cctf.v1.evidence.<region>.>``: the ballots and the identity evidence of that region's agents, one
  subject per agent and kind (:func:`votes_stream_subjects`). The engine bounds it so that one region (or one agent)
  cannot crowd out the others:

  - **interest retention**: a ballot is kept until every consumer (the coordinators' durables) has
    acknowledged it, then removed. With *no* consumer a publish is still acknowledged (``PubAck``) but
    nothing is stored: ballots published before a coordinator created its durable are gone, which is
    what a coordinator starting with ``DeliverPolicy.NEW`` would skip anyway.
  - ``max_msgs_per_subject`` with ``discard_new_per_subject``: one agent subject holds at most
    :data:`VOTES_MAX_MSGS_PER_SUBJECT` unacknowledged ballots; further publishes on that subject are
    refused by the engine (``PubAck`` error 503 / err_code 10077 "maximum messages per subject
    exceeded"); the other agents' subjects are unaffected.
  - ``max_msgs``/``max_bytes`` with ``discard new``: a flooding region fills only its own stream
    (refused with err_code 10077 "maximum messages exceeded" / "maximum bytes exceeded"); other
    regions' streams keep accepting.
  - ``max_msg_size``: one ballot envelope plus headers; ``max_age`` drops what nobody consumed;
    ``deny_delete``/``deny_purge``: nobody removes ballots behind the coordinator's back.
  - duplicate window: publishers set ``Nats-Msg-Id``; a retried publish lands once.

* ``CCTF_VERDICTS_<REGION>`` holds ``cctf.v1.verdict.<region>.>``; direct get is enabled so
  clients can read the latest verdict of a subject without a consumer.
* ``CCTF_HEADS_<REGION>`` holds ``cctf.v1.head.<region>.>``: the signed log checkpoints of batch-
  signing coordinators (raw signed notes, wire-protocol.md §2, §3.2.1), one per subject, direct get
  (a client reads the exact head a verdict names), kept as long as verdicts, bounded bytes.
* ``CCTF_LOG`` (one for all logs, :func:`log_stream_config`) holds ``cctf.v1.log.<log-id>``: the
  durable transparency logs (one record per signed batch, :mod:`cctf.bus.logstream`); file storage,
  no max_age, large ``max_bytes`` with discard new (a full log refuses, never forgets), no delete
  or purge, direct get.
* ``CCTF_CONTROL`` (one for all regions) holds the signed safe-mode announcements
  (``cctf.v1.control.<region>``) and operator commands (``cctf.v1.operator.<region>``); limits
  retention, direct get (a region's state is its last announcement), no delete or purge.

``<REGION>`` is the region upper-cased with ``-`` replaced by ``_``.

TRANSITION: the coordinator consumes one durable per region; ``ensure_streams`` makes the per-region
streams (``votes_per_region=False`` still makes the old single ``CCTF_VOTES``: a test fixture for a
subject bound to the wrong stream; no role has permissions on it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final

import nats.errors
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BadRequestError, ServiceUnavailableError
from nats.js.manager import JetStreamManager

from cctf.bus.kv import KvError, ensure_bucket, lkg_bucket_spec
from cctf.bus.settle import wait_settled
from cctf.bus_schemas.limits import MAX_ENVELOPE_BYTES
from cctf.errors import CctfError
from cctf.ids import check_id

__all__ = [
    "CONTROL_STREAM",
    "HEADS_STREAM_PREFIX",
    "LOG_STREAM",
    "MIN_SERVER_VERSION",
    "PUBACK_LIMIT_ERR_CODE",
    "VERDICT_STREAM_PREFIX",
    "VOTES_STREAM",
    "VOTES_STREAM_PREFIX",
    "StreamSetupError",
    "check_server_version",
    "control_stream_config",
    "ensure_streams",
    "evidence_subjects",
    "heads_stream_config",
    "heads_stream_name",
    "heads_subjects",
    "log_stream_config",
    "stream_token",
    "verdict_stream_config",
    "verdict_stream_name",
    "verdict_stream_of",
    "verdict_subjects",
    "votes_stream_config",
    "votes_stream_name",
    "votes_stream_subjects",
    "votes_subjects",
]

_log = logging.getLogger(__name__)

VOTES_STREAM_PREFIX: Final = "CCTF_VOTES_"
VERDICT_STREAM_PREFIX: Final = "CCTF_VERDICTS_"
HEADS_STREAM_PREFIX: Final = "CCTF_HEADS_"

#: TRANSITION ONLY, do not use in new code: the old single vote stream (``cctf.v1.vote.>``), made by
#: ``ensure_streams(..., votes_per_region=False)`` for tests that read ballots back from a limits
#: stream. No role has permissions on it; it goes once those tests read the per-region streams.
VOTES_STREAM: Final = "CCTF_VOTES"
_TRANSITION_VOTES_SUBJECTS: Final = "cctf.v1.vote.>"

VOTES_MAX_AGE_S: Final = 300.0
VOTES_MAX_MSGS: Final = 16_384
VOTES_MAX_BYTES: Final = 64 * 1024 * 1024
VOTES_MAX_MSGS_PER_SUBJECT: Final = 256
#: One ballot envelope plus room for its headers.
VOTES_MAX_MSG_SIZE: Final = MAX_ENVELOPE_BYTES + 4096
#: Consumers on one vote stream: the coordinators' durables only.
VOTES_MAX_CONSUMERS: Final = 64
#: Consumers on one verdict stream: the clients' ephemeral ordered consumers.
VERDICTS_MAX_CONSUMERS: Final = 10_000
VERDICTS_MAX_AGE_S: Final = 24 * 3600.0
VERDICTS_MAX_BYTES: Final = 64 * 1024 * 1024
VERDICTS_MAX_MSGS_PER_SUBJECT: Final = 64
DUPLICATE_WINDOW_S: Final = 120.0
#: Heads (signed checkpoints, about 4.6 KB each, so ~14,000 per region): the recent ones, for live
#: verification; older heads are the durable log's (CCTF_LOG, its API).
HEADS_MAX_BYTES: Final = 64 * 1024 * 1024
HEADS_MAX_MSG_SIZE: Final = 16 * 1024 + 4096
#: The control stream: safe-mode announcements and operator commands of every region.
CONTROL_STREAM: Final = "CCTF_CONTROL"
CONTROL_SUBJECTS: Final = ("cctf.v1.control.>", "cctf.v1.operator.>")
CONTROL_MAX_AGE_S: Final = 7 * 24 * 3600.0
CONTROL_MAX_BYTES: Final = 64 * 1024 * 1024
CONTROL_MAX_MSGS_PER_SUBJECT: Final = 4096
CONTROL_MAX_CONSUMERS: Final = 10_000

#: The durable transparency logs (``cctf.v1.log.<log-id>``, :mod:`cctf.bus.logstream`).
LOG_STREAM: Final = "CCTF_LOG"
LOG_SUBJECTS: Final = "cctf.v1.log.>"
LOG_MAX_BYTES: Final = 256 * 1024 * 1024
#: One record (``cctf.translog.record.MAX_RECORD_BYTES``, 1 MiB - 8 KiB) plus its headers.
LOG_MAX_MSG_SIZE: Final = 1024 * 1024
LOG_MAX_CONSUMERS: Final = 10_000

#: ``PubAck`` error code of a publish refused by a stream limit with discard new (max messages, max
#: bytes, max messages per subject).
PUBACK_LIMIT_ERR_CODE: Final = 10077

# JetStream error codes that mean "the cluster is not ready yet" (retry) ...
_TRANSIENT_ERR_CODES = frozenset(
    {
        10004,  # JSClusterIncompleteErr: cluster still forming
        10005,  # JSClusterNoPeersErr: no suitable peers for placement
        10008,  # JSClusterNotAvailErr: JetStream system temporarily unavailable
        10009,  # JSClusterNotLeaderErr: JetStream cluster can not handle request
        10023,  # JSInsufficientResourcesErr: insufficient resources
        10040,  # JSClusterPeerNotMemberErr: peer not a member (yet)
    }
)
_TRANSIENT_WORDS = (
    "insufficient resources",
    "no suitable peers",
    "temporarily unavailable",
    "not current",
    "no leader",
    "no quorum",
    "not ready",
)
# ... and "a stream with this name exists with another config" (update it).
_ERR_STREAM_NAME_IN_USE = 10058


class StreamSetupError(CctfError, RuntimeError):
    """Streams could not be created or updated."""


#: The oldest nats-server that honours every bound of the vote streams (``discard_new_per_subject``
#: came in 2.10; an older server would silently create the stream without it).
MIN_SERVER_VERSION: Final = (2, 10, 0)


def check_server_version(version: tuple[int, int, int]) -> None:
    """Refuse (one line, :class:`StreamSetupError`) a server older than :data:`MIN_SERVER_VERSION`."""
    if tuple(version) < MIN_SERVER_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise StreamSetupError(
            f"nats-server {have} is too old for the CCTF streams (needs >= {need}: "
            "discard_new_per_subject)"
        )


def _region(region: str) -> str:
    return check_id(region, "region")


def stream_token(region: str) -> str:
    """The stream-name form of a region: upper-cased, ``-`` replaced by ``_`` (``eu-west`` ->
    ``EU_WEST``). Injective on valid regions (which hold no ``_``)."""
    return _region(region).upper().replace("-", "_")


def votes_stream_name(region: str) -> str:
    """``CCTF_VOTES_<REGION>``."""
    return VOTES_STREAM_PREFIX + stream_token(region)


def votes_subjects(region: str) -> str:
    """The subject filter of a region's vote stream: ``cctf.v1.vote.<region>.>``."""
    return f"cctf.v1.vote.{_region(region)}.>"


def evidence_subjects(region: str) -> str:
    """The evidence subjects of a region, also held by its vote stream:
    ``cctf.v1.evidence.<region>.>``."""
    return f"cctf.v1.evidence.{_region(region)}.>"


def votes_stream_subjects(region: str) -> list[str]:
    """Every subject a region's vote stream holds: its ballots, then its evidence."""
    return [votes_subjects(region), evidence_subjects(region)]


def votes_stream_config(region: str, replicas: int = 1) -> StreamConfig:
    """``CCTF_VOTES_<REGION>``: one region's ballots and evidence, bounded by the engine (see module
    doc); the per-subject bounds apply to each agent's ballot subject and evidence subject apart."""
    return StreamConfig(
        name=votes_stream_name(region),
        description=(
            f"CCTF ballots and evidence of region {region}"
            f" (cctf.v1.vote.{region}.<agent>, cctf.v1.evidence.{region}.<agent>)"
        ),
        subjects=votes_stream_subjects(region),
        retention=RetentionPolicy.INTEREST,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=VOTES_MAX_MSG_SIZE,
        max_consumers=VOTES_MAX_CONSUMERS,
        max_age=VOTES_MAX_AGE_S,
        max_msgs=VOTES_MAX_MSGS,
        max_bytes=VOTES_MAX_BYTES,
        max_msgs_per_subject=VOTES_MAX_MSGS_PER_SUBJECT,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        deny_delete=True,
        deny_purge=True,
    )


def verdict_stream_name(region: str) -> str:
    """``CCTF_VERDICTS_<REGION>``: region upper-cased, ``-`` replaced by ``_``."""
    return VERDICT_STREAM_PREFIX + stream_token(region)


def verdict_subjects(region: str) -> str:
    """The subject filter of a region's verdict stream: ``cctf.v1.verdict.<region>.>``."""
    return f"cctf.v1.verdict.{_region(region)}.>"


def heads_stream_name(region: str) -> str:
    """``CCTF_HEADS_<REGION>``."""
    return HEADS_STREAM_PREFIX + stream_token(region)


def heads_subjects(region: str) -> str:
    """The subject filter of a region's heads stream: ``cctf.v1.head.<region>.>``."""
    return f"cctf.v1.head.{_region(region)}.>"


def heads_stream_config(region: str, replicas: int = 1) -> StreamConfig:
    """``CCTF_HEADS_<REGION>``: one message per head subject (a head never changes), direct get."""
    return StreamConfig(
        name=heads_stream_name(region),
        description=f"CCTF signed log heads (checkpoints) for region {region}",
        subjects=[heads_subjects(region)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=HEADS_MAX_MSG_SIZE,
        max_consumers=VERDICTS_MAX_CONSUMERS,
        max_age=VERDICTS_MAX_AGE_S,
        max_bytes=HEADS_MAX_BYTES,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )


def _transition_votes_config(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=VOTES_STREAM,
        description="TRANSITION: every region's ballots in one stream (use CCTF_VOTES_<REGION>)",
        subjects=[_TRANSITION_VOTES_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=1 << 20,
        max_age=3600.0,
        max_bytes=256 * 1024 * 1024,
        discard=DiscardPolicy.OLD,
    )


def verdict_stream_config(region: str, replicas: int = 1) -> StreamConfig:
    """``CCTF_VERDICTS_<REGION>``: the last verdicts per subject, readable by direct get."""
    return StreamConfig(
        name=verdict_stream_name(region),
        description=f"CCTF signed verdicts for region {region}",
        subjects=[verdict_subjects(region)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=VOTES_MAX_MSG_SIZE,
        max_consumers=VERDICTS_MAX_CONSUMERS,
        max_age=VERDICTS_MAX_AGE_S,
        max_bytes=VERDICTS_MAX_BYTES,
        max_msgs_per_subject=VERDICTS_MAX_MSGS_PER_SUBJECT,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )


def control_stream_config(replicas: int = 1) -> StreamConfig:
    """``CCTF_CONTROL``: safe-mode announcements and operator commands, kept a week."""
    return StreamConfig(
        name=CONTROL_STREAM,
        description="CCTF signed safe-mode announcements and operator commands",
        subjects=list(CONTROL_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=VOTES_MAX_MSG_SIZE,
        max_consumers=CONTROL_MAX_CONSUMERS,
        max_age=CONTROL_MAX_AGE_S,
        max_bytes=CONTROL_MAX_BYTES,
        max_msgs_per_subject=CONTROL_MAX_MSGS_PER_SUBJECT,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
    )


def log_stream_config(replicas: int = 1) -> StreamConfig:
    """``CCTF_LOG``: every durable log, never aged out; full = refuse new records (discard new)."""
    return StreamConfig(
        name=LOG_STREAM,
        description="CCTF transparency logs (one LogBatch record per signed head)",
        subjects=[LOG_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=LOG_MAX_MSG_SIZE,
        max_consumers=LOG_MAX_CONSUMERS,
        max_bytes=LOG_MAX_BYTES,
        discard=DiscardPolicy.NEW,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
    )


def _is_transient(exc: BaseException) -> bool:
    if isinstance(
        exc,
        ServiceUnavailableError
        | nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.ConnectionReconnectingError
        | asyncio.TimeoutError,
    ):
        return True
    if isinstance(exc, APIError):
        if exc.err_code in _TRANSIENT_ERR_CODES:
            return True
        desc = (exc.description or "").lower()
        return any(word in desc for word in _TRANSIENT_WORDS)
    return False


async def _create_or_update(js: JetStreamManager, config: StreamConfig) -> StreamInfo:
    try:
        info: StreamInfo = await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _ERR_STREAM_NAME_IN_USE:
            raise
        _log.info("stream %s exists with another config; updating it", config.name)
        info = await js.update_stream(config)
    return info


async def ensure_streams(
    js: JetStreamManager,
    regions: Sequence[str],
    replicas: int,
    *,
    timeout_s: float = 30.0,
    votes_per_region: bool = True,
) -> dict[str, StreamInfo]:
    """Create (or update to the current definition) the vote, verdict and heads stream of every
    region, the control stream and the log stream.

    ``js`` is a JetStream context or manager of a user allowed to create streams (``admin``).
    Errors meaning "cluster not ready" (no suitable peers, insufficient resources, 503, request
    timeouts) are retried until ``timeout_s``; then, or on any other error, ``StreamSetupError``.
    It returns once every stream has its leader and every online replica is current
    (``cctf.bus.settle``): a publish through any node right after finds the stream.
    ``votes_per_region=False`` (TRANSITION only, for tests that read ballots back from a limits
    stream) creates the old single ``CCTF_VOTES`` instead of the ``CCTF_VOTES_<REGION>`` streams
    (their subjects overlap, so it is one or the other). The coordinator consumes the per-region
    streams (one durable per region, ``cctf.bus.consumer``).
    Returns stream name -> ``StreamInfo``. With a JetStream context (not a bare manager) the
    coordinators' LKG bucket ``CCTF_LKG`` is created too (``cctf.bus.kv``, same replicas; not in
    the result).
    """
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    nc = getattr(js, "_nc", None)  # nats-py keeps the connection there (no public accessor)
    server = getattr(nc, "connected_server_version", None)
    if server is not None and (server.major, server.minor) != (0, 0):  # 0.0.0: not known yet
        check_server_version((server.major, server.minor, server.patch))
    regions = [_region(r) for r in regions]
    if not regions:
        raise ValueError("at least one region is needed")
    if len(set(regions)) != len(regions):
        raise ValueError("duplicate region")
    if votes_per_region:
        configs = [votes_stream_config(r, replicas) for r in regions]
    else:
        configs = [_transition_votes_config(replicas)]
    configs += [verdict_stream_config(r, replicas) for r in regions]
    configs += [heads_stream_config(r, replicas) for r in regions]
    configs.append(control_stream_config(replicas))
    configs.append(log_stream_config(replicas))
    deadline = time.monotonic() + timeout_s
    result: dict[str, StreamInfo] = {}
    for config in configs:
        assert config.name is not None
        delay = 0.1
        attempts = 0
        while True:
            attempts += 1
            try:
                remaining = max(0.1, deadline - time.monotonic())
                result[config.name] = await asyncio.wait_for(
                    _create_or_update(js, config), timeout=remaining
                )
                break
            except Exception as exc:
                if not _is_transient(exc):
                    raise StreamSetupError(
                        f"could not create or update stream {config.name}: {exc}"
                    ) from exc
                if time.monotonic() + delay >= deadline:
                    raise StreamSetupError(
                        f"could not create stream {config.name} within {timeout_s:.1f}s "
                        f"({attempts} attempts, cluster not ready?): {exc}"
                    ) from exc
                _log.info("stream %s not created yet (%s); retrying", config.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
    names = list(result)
    if isinstance(js, JetStreamContext):
        spec = lkg_bucket_spec(replicas)
        try:
            await ensure_bucket(js, spec, timeout_s=max(0.1, deadline - time.monotonic()))
        except KvError as exc:
            raise StreamSetupError(str(exc)) from exc
        names.append(f"KV_{spec.bucket}")  # a bucket is a stream too
    for name in names:  # every replica in place: the first publish finds it on any node
        try:
            await wait_settled(js, name, replicas, deadline)
        except TimeoutError as exc:
            raise StreamSetupError(f"{exc} within {timeout_s:.1f}s") from exc
    return result


def verdict_stream_of(subject: str) -> str | None:
    """The one stream that may store a verdict (``Nats-Expected-Stream``): its region's."""
    parts = subject.split(".", 4)
    return verdict_stream_name(parts[3]) if len(parts) > 4 else None
