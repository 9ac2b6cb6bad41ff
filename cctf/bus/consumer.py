"""The coordinator's durable pull consumers: one per region vote stream (the only nats-py use).

:class:`RegionConsumer` binds (creating or updating) the durable consumer ``<durable>-<region>`` on the
region's vote stream with engine bounds (``ack_wait``, ``max_ack_pending``, ``max_deliver``), fetches
bounded batches and hands out :class:`Delivery` objects whose four settle calls are the JetStream
acknowledgement kinds: ``ack``, ``term(reason)`` (``+TERM <reason>``: never redelivered, the reason
shows in the server's advisory), ``nak`` (redeliver soon) and ``in_progress`` (``+WPI``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cctf.bus import streams
from cctf.bus.connect import Connection
from cctf.errors import CctfError

__all__ = ["BusError", "ConsumerSpec", "Delivery", "RegionConsumer", "votes_stream_for"]

_MAX_REASON: Final = 200


class BusError(CctfError):
    """A bus operation failed (the message says which; the caller retries with backoff)."""


def votes_stream_for(region: str) -> tuple[str, str]:
    """``(stream, filter subject)`` holding ``region``'s ballots."""
    return streams.votes_stream_name(region), streams.votes_subjects(region)


def region_filters(region: str) -> list[str]:
    """The subjects a coordinator's durable consumes of ``region``'s vote stream: its ballots and
    its identity evidence (``streams.votes_stream_subjects``)."""
    return streams.votes_stream_subjects(region)


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    region: str
    ack_wait_s: float
    max_ack_pending: int
    max_deliver: int
    description: str = "CCTF coordinator"

    @property
    def name(self) -> str:
        return f"{self.durable}-{self.region}"


class Delivery:
    """One delivered vote message and its settle calls (each settles at most once)."""

    __slots__ = ("_conn", "_msg", "data", "num_delivered", "region", "seq", "subject")

    def __init__(self, conn: Connection, msg: Msg, region: str) -> None:
        self._conn = conn
        self._msg = msg
        self.region = region
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        try:
            meta = msg.metadata
            self.seq: int = int(meta.sequence.stream)
            self.num_delivered: int = int(meta.num_delivered)
        except Exception:  # not a JetStream delivery: cannot happen on a pull consumer
            self.seq = -1
            self.num_delivered = 1

    @property
    def token(self) -> tuple[str, int]:
        return (self.region, self.seq)

    async def ack(self) -> None:
        await self._msg.ack()

    async def term(self, reason: str) -> None:
        reply = self._msg.reply
        if not reply:
            return
        await self._conn.publish(reply, b"+TERM " + reason[:_MAX_REASON].encode("utf-8", "replace"))

    async def nak(self, delay_s: float | None = None) -> None:
        await self._msg.nak(delay=delay_s)

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class RegionConsumer:
    def __init__(self, conn: Connection, spec: ConsumerSpec) -> None:
        self._conn = conn
        self.spec = spec
        self.stream, self.filter = votes_stream_for(spec.region)
        self.filters = region_filters(spec.region)
        self._js: Any = conn.jetstream()
        self._psub: Any = None

    def _config(self) -> ConsumerConfig:
        s = self.spec
        return ConsumerConfig(
            durable_name=s.name,
            description=f"{s.description} ({s.region})",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            max_deliver=s.max_deliver,
            filter_subjects=list(self.filters),
        )

    async def bind(self) -> None:
        """Look the durable consumer up, create or update it, bind a pull subscription."""
        wanted = self._config()
        name = self.spec.name
        try:
            try:
                info = await self._js.consumer_info(self.stream, name, timeout=2.0)
            except nats.js.errors.NotFoundError:
                await self._js.add_consumer(self.stream, wanted)
            else:
                have = info.config
                filters = list(
                    have.filter_subjects or ([have.filter_subject] if have.filter_subject else [])
                )
                if (have.ack_wait, have.max_ack_pending, have.max_deliver, filters) != (
                    wanted.ack_wait,
                    wanted.max_ack_pending,
                    wanted.max_deliver,
                    wanted.filter_subjects,
                ):  # e.g. a durable of a version that consumed ballots only: now evidence too
                    await self._js.add_consumer(self.stream, wanted)  # update of the same durable
            old = self._psub
            self._psub = await self._js.pull_subscribe_bind(durable=name, stream=self.stream)
        except Exception as exc:
            raise BusError(
                f"cannot bind consumer {name!r} on stream {self.stream}: {exc!r}"
            ) from exc
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()

    async def fetch(self, batch: int, timeout_s: float) -> list[Delivery]:
        """Up to ``batch`` deliveries ([] when none arrived within ``timeout_s``)."""
        if self._psub is None:
            await self.bind()
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout_s)
        except TimeoutError:  # includes nats' FetchTimeoutError
            return []
        except asyncio.CancelledError:
            raise
        except nats.js.errors.NotFoundError as exc:
            self._psub = None  # deleted: bind again next time
            raise BusError(f"consumer {self.spec.name!r} vanished: {exc!r}") from exc
        except Exception as exc:
            raise BusError(f"fetch from {self.spec.name!r} failed: {exc!r}") from exc
        conn, region = self._conn, self.spec.region
        return [Delivery(conn, m, region) for m in msgs]

    async def num_ack_pending(self) -> int:
        try:
            info = await self._js.consumer_info(self.stream, self.spec.name, timeout=2.0)
        except Exception as exc:
            raise BusError(f"consumer info of {self.spec.name!r} failed: {exc!r}") from exc
        return int(info.num_ack_pending)

    async def close(self) -> None:
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None
