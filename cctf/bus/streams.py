"""JetStream stream definitions of CCTF and an idempotent, cluster-tolerant ``ensure_streams``.

* ``CCTF_VOTES`` holds ``cctf.v1.vote.>`` (ballots from every region's agents). Publishers set
  ``Nats-Msg-Id``; the duplicate window makes a retried publish land once.
* ``CCTF_VERDICTS_<REGION>`` holds ``cctf.v1.verdict.<region>.>``; direct get is enabled so
  clients can read the latest verdict of a subject without a consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import nats.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, BadRequestError, ServiceUnavailableError
from nats.js.manager import JetStreamManager

from cctf.bus.accounts import MAX_PAYLOAD_BYTES, validate_region

__all__ = [
    "VERDICT_STREAM_PREFIX",
    "VOTES_STREAM",
    "VOTES_SUBJECTS",
    "StreamSetupError",
    "ensure_streams",
    "verdict_stream_config",
    "verdict_stream_name",
    "verdict_subjects",
    "votes_stream_config",
]

_log = logging.getLogger(__name__)

VOTES_STREAM = "CCTF_VOTES"
VOTES_SUBJECTS = "cctf.v1.vote.>"
VERDICT_STREAM_PREFIX = "CCTF_VERDICTS_"

VOTES_MAX_AGE_S = 3600.0
VOTES_MAX_BYTES = 256 * 1024 * 1024
VERDICTS_MAX_AGE_S = 24 * 3600.0
VERDICTS_MAX_BYTES = 64 * 1024 * 1024
VERDICTS_MAX_MSGS_PER_SUBJECT = 64
DUPLICATE_WINDOW_S = 120.0

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


class StreamSetupError(RuntimeError):
    """Streams could not be created or updated."""


def votes_stream_config(replicas: int = 1) -> StreamConfig:
    """``CCTF_VOTES``: all regions' ballots, file storage, deduplicated by ``Nats-Msg-Id``."""
    return StreamConfig(
        name=VOTES_STREAM,
        description="CCTF ballots from resolver agents (cctf.v1.vote.<region>.<agent>)",
        subjects=[VOTES_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=MAX_PAYLOAD_BYTES,
        max_age=VOTES_MAX_AGE_S,
        max_bytes=VOTES_MAX_BYTES,
        discard=DiscardPolicy.OLD,
    )


def verdict_stream_name(region: str) -> str:
    """``CCTF_VERDICTS_<REGION>``: region upper-cased, ``-`` replaced by ``_``."""
    return VERDICT_STREAM_PREFIX + validate_region(region).upper().replace("-", "_")


def verdict_subjects(region: str) -> str:
    """The subject filter of a region's verdict stream: ``cctf.v1.verdict.<region>.>``."""
    return f"cctf.v1.verdict.{validate_region(region)}.>"


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
        max_msg_size=MAX_PAYLOAD_BYTES,
        max_age=VERDICTS_MAX_AGE_S,
        max_bytes=VERDICTS_MAX_BYTES,
        max_msgs_per_subject=VERDICTS_MAX_MSGS_PER_SUBJECT,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
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
) -> dict[str, StreamInfo]:
    """Create (or update to the current definition) ``CCTF_VOTES`` and every verdict stream.

    ``js`` is a JetStream context or manager of a user allowed to create streams (``admin``).
    Errors meaning "cluster not ready" (no suitable peers, insufficient resources, 503, request
    timeouts) are retried until ``timeout_s``; then, or on any other error, ``StreamSetupError``.
    Returns stream name -> ``StreamInfo``.
    """
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    configs = [votes_stream_config(replicas)]
    configs += [verdict_stream_config(r, replicas) for r in regions]
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
    return result
