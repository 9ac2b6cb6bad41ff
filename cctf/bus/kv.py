"""JetStream key-value buckets: the thin adapter (nats-py stays in ``cctf.bus``) and the key encoding.

Buckets are the engine's (``nats.js.kv``): a stream ``KV_<bucket>`` on ``$KV.<bucket>.>`` with one
message kept per key (``history=1``), a bucket-wide ``max_age`` and, per message, ``Nats-TTL``
(nats-server >= 2.11): the engine forgets a value when it is of no use any more, even if nobody
deletes it. In a cluster the bucket is replicated like the streams (R3).

Who creates what: :func:`ensure_bucket` (create or keep) is run at set-up (``cctf nats up``, the
fabric's admin) next to ``ensure_streams``; the coordinator only binds (:meth:`Bucket.bind`: stream
info), reads (an ordered consumer, :meth:`Bucket.items`), puts and deletes: the grants of
:data:`cctf.bus.accounts.GRANTS` on the LKG bucket's stream and publish on ``$KV.CCTF_LKG.>``.

**Key encoding.** A KV key may only hold ``[-/_=.a-zA-Z0-9]`` and must neither start nor end with
``.`` (nor hold an empty token); the subject layer's ``~XX`` name tokens are not valid keys.
:func:`name_key` encodes a normalised DNS name (``cctf.bus_schemas.subjects.normalize_name``) as
dot-separated tokens, one per label, in the name's order, without the final dot:

* the bytes ``a-z``, ``0-9``, ``-`` and ``_`` of a label's UTF-8 form stand for themselves;
* every other byte is ``=`` followed by two upper-case hex digits (``*`` -> ``=2A``,
  ``é`` -> ``=C3=A9``, ``A`` -> ``=41``: normalised names are lower-case, so this is rare);
* the root name ``.`` is the single token ``=``.

It is injective (``=`` always starts an escape, and labels never hold ``.``), reversible
(:func:`name_from_key`) and at most ``3 * 253`` characters. Example:
``_dmarc.www.example.com.`` -> ``_dmarc.www.example.com``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from cctf import telemetry
from cctf.errors import CctfError

__all__ = [
    "LKG_BUCKET",
    "Bucket",
    "BucketSpec",
    "KvError",
    "check_key",
    "kv_stream_name",
    "lkg_bucket_spec",
    "name_from_key",
    "name_key",
]

#: The coordinators' Last-Known-Good state (``cctf.coordinator.lkgstate``).
LKG_BUCKET: Final = "CCTF_LKG"
LKG_MAX_VALUE_BYTES: Final = 64 * 1024
LKG_MAX_BYTES: Final = 64 * 1024 * 1024  # like each stream; about 60 000 keys of ~1 KiB
#: The bucket-wide bound: no value is kept longer than this (the longest staleness cap is 24 h).
LKG_MAX_AGE_S: Final = 24 * 3600.0

_KEY_RE: Final = re.compile(r"[-/_=.a-zA-Z0-9]+")
_PLAIN: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")
_ESC_RE: Final = re.compile(r"(?:[a-z0-9_-]|=[0-9A-F]{2})+")
_log = telemetry.get_logger("cctf.bus.kv")
_KV_OP: Final = "KV-Operation"
_MARKER_REASON: Final = "Nats-Marker-Reason"


class KvError(CctfError):
    """A bucket cannot be created, bound, read or written (one line, no secret)."""


def check_key(key: str) -> str:
    """``key`` if it is a valid KV key (``[-/_=.a-zA-Z0-9]``, no empty token), else ``KvError``."""
    if (
        not isinstance(key, str)
        or _KEY_RE.fullmatch(key) is None
        or key.startswith(".")
        or key.endswith(".")
        or ".." in key
    ):
        raise KvError(f"invalid KV key {key[:80]!r}" if isinstance(key, str) else "invalid KV key")
    return key


def name_key(qname: str) -> str:
    """The key tokens of a normalised DNS name (see the module docstring)."""
    if qname == ".":
        return "="
    if not qname.endswith("."):
        raise KvError(f"name {qname[:80]!r} is not normalised (no final dot)")
    out: list[str] = []
    for label in qname[:-1].split("."):
        if not label:
            raise KvError(f"name {qname[:80]!r} has an empty label")
        out.append("".join(chr(b) if b in _PLAIN else f"={b:02X}" for b in label.encode()))
    return ".".join(out)


def name_from_key(tokens: str) -> str:
    """Inverse of :func:`name_key`; ``KvError`` for anything it does not produce."""
    if tokens == "=":
        return "."
    labels: list[str] = []
    for token in tokens.split("."):
        if _ESC_RE.fullmatch(token) is None:
            raise KvError(f"invalid name key {tokens[:80]!r}")
        raw = bytearray()
        i = 0
        while i < len(token):
            if token[i] == "=":
                raw.append(int(token[i + 1 : i + 3], 16))
                i += 3
            else:
                raw.append(ord(token[i]))
                i += 1
        try:
            labels.append(raw.decode())
        except UnicodeDecodeError:
            raise KvError(f"name key {tokens[:80]!r} is not UTF-8") from None
    name = ".".join(labels) + "."
    if name_key(name) != tokens:  # an escaped plain byte, an escaped dot: not canonical
        raise KvError(f"name key {tokens[:80]!r} is not canonical")
    return name


def kv_stream_name(bucket: str) -> str:
    return f"KV_{bucket}"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    bucket: str
    description: str
    replicas: int = 1
    max_age_s: float = LKG_MAX_AGE_S
    max_value_bytes: int = LKG_MAX_VALUE_BYTES
    max_bytes: int = LKG_MAX_BYTES

    def config(self) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.bucket,
            description=self.description,
            max_value_size=self.max_value_bytes,
            history=1,
            ttl=self.max_age_s,
            max_bytes=self.max_bytes,
            storage=StorageType.FILE,
            replicas=self.replicas,
            direct=True,
        )


def lkg_bucket_spec(replicas: int = 1) -> BucketSpec:
    """``CCTF_LKG``: one value per (coordinator, name, qtype); R3 in a 3-node cluster."""
    return BucketSpec(LKG_BUCKET, "CCTF coordinators' Last-Known-Good state", replicas)


_TRANSIENT: Final = (
    nats.js.errors.ServiceUnavailableError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    asyncio.TimeoutError,
)


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, *, timeout_s: float = 30.0) -> None:
    """Create ``spec``'s bucket, or keep it if it exists (a user allowed to create streams).
    "Cluster not ready" errors are retried until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            await js.create_key_value(spec.config())
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == 10058:  # stream name already in use (another config): keep it
                _log.info("bucket_exists", bucket=spec.bucket, detail=str(exc.description))
                return
            raise KvError(f"could not create bucket {spec.bucket}: {exc.description}") from None
        except _TRANSIENT as exc:
            if time.monotonic() + delay >= deadline:
                raise KvError(f"could not create bucket {spec.bucket}: {exc!r}") from None
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)
        except nats.js.errors.APIError as exc:
            raise KvError(f"could not create bucket {spec.bucket}: {exc.description}") from None


def _is_marker(headers: dict[str, str] | None) -> bool:
    """A delete or purge marker (``KV-Operation``), or a server-placed expiry marker."""
    if not headers:
        return False
    return headers.get(_KV_OP) in ("DEL", "PURGE") or _MARKER_REASON in headers


def _apply(bucket: str, found: dict[str, bytes], key: str, value: bytes | None, limit: int) -> None:
    """One read message: a value replaces, a marker (``None``) removes; at most ``limit`` keys."""
    if value is None:
        found.pop(key, None)
        return
    found[key] = value
    if len(found) > limit:
        raise KvError(f"read {bucket}: more than {limit} keys")


class Bucket:
    """One bound bucket. Every method raises :class:`KvError` (one line) on failure."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self._kv = kv
        self._js = js
        self.name = bucket

    @classmethod
    async def bind(cls, js: JetStreamContext, bucket: str) -> Bucket:
        """Bind an existing bucket (``js``: ``cctf.bus.connect.jetstream(conn)``)."""
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            raise KvError(f"bucket {bucket} does not exist (cctf nats up creates it)") from None
        except Exception as exc:
            raise KvError(f"cannot bind bucket {bucket}: {exc!r}"[:300]) from None
        return cls(kv, js, bucket)

    async def put(self, key: str, value: bytes, *, ttl_s: int | None = None) -> int:
        """Store ``value`` under ``key``; ``ttl_s``: the engine removes it after that many seconds
        (``Nats-TTL``). Returns the revision."""
        check_key(key)
        try:
            if ttl_s is None:
                return int(await self._kv.put(key, value))
            ack = await self._js.publish(f"$KV.{self.name}.{key}", value, msg_ttl=max(1, ttl_s))
            return int(ack.seq)
        except Exception as exc:
            raise KvError(f"put {key[:80]} in {self.name}: {exc!r}"[:300]) from None

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await self._kv.delete(key)
        except Exception as exc:
            raise KvError(f"delete {key[:80]} in {self.name}: {exc!r}"[:300]) from None

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except Exception as exc:
            raise KvError(f"get {key[:80]} in {self.name}: {exc!r}"[:300]) from None
        return entry.value

    async def get_latest(self, key: str) -> bytes | None:
        """Like :meth:`get`, answered by the stream's leader (``STREAM.MSG.GET``), never by a
        replica that may lag (a direct get may be): the read to trust at start-up."""
        check_key(key)
        try:
            msg = await self._js.get_msg(kv_stream_name(self.name), subject=self._subject(key))
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            raise KvError(f"get {key[:80]} in {self.name}: {exc!r}"[:300]) from None
        return None if _is_marker(msg.headers) else (msg.data or b"")

    def _subject(self, key: str) -> str:
        return f"$KV.{self.name}.{key}"

    async def items(
        self, prefix: str = "", *, limit: int, timeout_s: float = 10.0
    ) -> list[tuple[str, bytes]]:
        """Every live ``(key, value)`` whose key starts with ``prefix.`` (all when empty), at most
        ``limit`` (more: ``KvError``), complete by construction.

        1. An ordered consumer (the engine's watch, last value per key) reads the bucket fast, up
           to the last stream sequence ``M`` it delivered. In a cluster that consumer may be
           served by a replica that lags the leader (an R1 consumer is placed on any peer of the
           stream): it may miss the newest writes, or deliver a value already replaced or deleted.
        2. So the stream's LEADER is then asked (``STREAM.MSG.GET`` ``next_by_subj``, which only it
           answers) for every message of the prefix after ``M``, and each is applied on top (a
           value replaces, a delete or purge marker removes): with one message kept per key, that
           tail holds at most one message per key. What the replica delivered up to ``M`` is the
           leader's stream up to ``M`` (replicas apply in order), so the result is the leader's
           view: nothing acknowledged before the read started is missed.

        Any failure or the deadline: ``KvError`` (never a silently partial result)."""
        pattern = f"{check_key(prefix)}.>" if prefix else ">"
        deadline = time.monotonic() + timeout_s
        found, last_seq = await self._watch_all(pattern, limit, deadline, timeout_s)
        await self._leader_tail(pattern, found, last_seq, limit, deadline, timeout_s)
        return list(found.items())

    async def _watch_all(
        self, pattern: str, limit: int, deadline: float, timeout_s: float
    ) -> tuple[dict[str, bytes], int]:
        """Step 1: ``{key: value}`` and the last stream sequence delivered (markers included)."""
        found: dict[str, bytes] = {}
        last_seq = 0
        try:
            watcher = await self._kv.watch(pattern)
        except Exception as exc:
            raise KvError(f"read {self.name}: {exc!r}"[:300]) from None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KvError(f"read {self.name}: not done within {timeout_s:.0f}s")
                try:
                    entry = await watcher.updates(timeout=left)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    raise KvError(f"read {self.name}: not done within {timeout_s:.0f}s") from None
                if entry is None:
                    return found, last_seq
                last_seq = max(last_seq, int(entry.revision or 0))
                live = entry.value is not None and entry.operation is None
                _apply(self.name, found, entry.key, entry.value if live else None, limit)
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception as exc:  # the consumer is ephemeral: the server removes it anyway
                _log.info("watch_stop_failed", bucket=self.name, error=repr(exc)[:200])

    async def _leader_tail(
        self,
        pattern: str,
        found: dict[str, bytes],
        last_seq: int,
        limit: int,
        deadline: float,
        timeout_s: float,
    ) -> None:
        """Step 2: apply every message of ``pattern`` the leader has after ``last_seq``."""
        stream = kv_stream_name(self.name)
        subjects = self._subject(pattern)
        strip = len(self._subject(""))
        seq = last_seq + 1
        applied = 0
        while True:
            if time.monotonic() > deadline:
                raise KvError(f"read {self.name}: not done within {timeout_s:.0f}s")
            try:
                msg = await self._js.get_msg(stream, seq=seq, subject=subjects, next=True)
            except nats.js.errors.NotFoundError:
                if applied:
                    _log.info("kv_read_caught_up", bucket=self.name, from_leader=applied)
                return
            except Exception as exc:
                raise KvError(f"read {self.name} from the stream leader: {exc!r}"[:300]) from None
            if msg.seq is None or msg.seq < seq or msg.subject is None:
                raise KvError(f"read {self.name}: the stream leader answered out of order")
            applied += 1
            value = None if _is_marker(msg.headers) else (msg.data or b"")
            _apply(self.name, found, msg.subject[strip:], value, limit)
            seq = msg.seq + 1
