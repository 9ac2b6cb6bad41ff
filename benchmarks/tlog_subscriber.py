"""The bench's subscriber for batch-signed verdicts (authenticator ``"tlog"``).

Until the SDK verifies ``"tlog"`` (the verifier side of issue #9), the batch-signing benchmark
verifies with this small verifier written from wire-protocol.md §3.2.1: it holds a core subscription
on the region's head subjects (heads are published before their verdicts), verifies each head's note
ONCE (both hybrid halves, origin ``cctf/v1/log/<kid>``) and caches its root; verdicts come from an
ordered JetStream consumer of the verdict stream (as the SDK's ``TrustClient.stream`` reads them),
and each is checked: strict decode, the coordinator's kid, step 7 (subject listed, head known
— fetched by direct get when not seen live —, root equal, inclusion proof), step 8 (time window),
the payload decoded as a ``Verdict`` whose coordinator is the key's principal and whose subject
matches its name. Accepted verdicts go to ``on_verdict`` (the bench's ``Collector``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from nats.js.api import DeliverPolicy

from cctf.bus.streams import (
    heads_stream_name,
    heads_subjects,
    verdict_stream_name,
    verdict_subjects,
)
from cctf.bus_schemas.envelope import Rejected, TlogAuth, decode_envelope, envelope_log_entry
from cctf.bus_schemas.heads import head_subject, log_origin, parse_head_subject
from cctf.bus_schemas.messages import Verdict, decode_verdict
from cctf.bus_schemas.subjects import verdict_subject
from cctf.crypto.keys import PublicKeySet
from cctf.translog.errors import TranslogError
from cctf.translog.merkle import leaf_hash, verify_inclusion
from cctf.translog.note import NoteVerifier, open_checkpoint

MAX_HEADS = 4096
MAX_SKEW_MS = 5_000


class TlogSubscriber:
    def __init__(
        self,
        nc: Any,
        public: PublicKeySet,
        coordinator: str,
        region: str,
        on_verdict: Callable[[Verdict], None],
    ) -> None:
        self._nc = nc
        self._kid = public.kid
        self._origin = log_origin(public.kid)
        self._notes = NoteVerifier(self._origin, public)
        self._coordinator = coordinator
        self._region = region
        self._on_verdict = on_verdict
        self._roots: dict[int, bytes] = {}
        self._waiting: dict[int, list[tuple[str, bytes]]] = {}
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.heads_verified = 0
        self.heads_fetched = 0
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subs.append(await self._nc.subscribe(heads_subjects(self._region), cb=self._on_head))
        js = self._nc.jetstream()
        self._subs.append(
            await js.subscribe(
                verdict_subjects(self._region),
                stream=verdict_stream_name(self._region),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                cb=self._on_msg,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1 << 30,
            )
        )
        await self._nc.flush()

    async def aclose(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()

    # ---- heads

    def _add_head(self, subject: str, data: bytes) -> None:
        try:
            parsed = parse_head_subject(subject)
            if parsed.coordinator != self._coordinator or parsed.size in self._roots:
                return
            cp = open_checkpoint(data, self._notes, self._origin)  # once per size
        except (ValueError, TranslogError):
            self.rejected["bad_head"] += 1
            return
        if cp.size != parsed.size:
            self.rejected["bad_head"] += 1
            return
        self.heads_verified += 1
        if len(self._roots) >= MAX_HEADS:
            self._roots.pop(next(iter(self._roots)))
        self._roots[cp.size] = cp.root_hash
        for subj, d in self._waiting.pop(cp.size, []):
            self._verify(subj, d)

    async def _on_head(self, msg: Any) -> None:
        self._add_head(msg.subject, msg.data)

    async def _fetch_head(self, size: int) -> None:
        await asyncio.sleep(0.2)  # the live copy normally arrives first
        if size in self._roots or size not in self._waiting:
            return
        subject = head_subject(self._region, self._coordinator, size)
        try:
            msg = await self._nc.jetstream().get_last_msg(heads_stream_name(self._region), subject)
            self.heads_fetched += 1
            self._add_head(subject, msg.data)
        except Exception:
            pass
        for _ in self._waiting.pop(size, []):
            self.rejected["head_unknown"] += 1

    # ---- verdicts

    async def _on_msg(self, msg: Any) -> None:
        self._verify(msg.subject, msg.data)

    def _verify(self, subject: str, data: bytes) -> None:
        try:
            env = decode_envelope(data)
        except Rejected as exc:
            self.rejected[exc.reason.value] += 1
            return
        auth = env.auth
        if not isinstance(auth, TlogAuth) or env.kid != self._kid:
            self.rejected["unknown_key" if env.kid != self._kid else "auth_kind"] += 1
            return
        if subject not in auth.subjects:
            self.rejected["subject"] += 1
            return
        root = self._roots.get(auth.head.size)
        if root is None:
            first = auth.head.size not in self._waiting
            self._waiting.setdefault(auth.head.size, []).append((subject, data))
            if first:
                task = asyncio.ensure_future(self._fetch_head(auth.head.size))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if root != auth.head.root:
            self.rejected["head_mismatch"] += 1
            return
        try:
            verify_inclusion(
                leaf_hash(envelope_log_entry(env)), auth.index, auth.head.size, auth.proof, root
            )
        except TranslogError:
            self.rejected["proof"] += 1
            return
        now = time.time_ns() // 1_000_000
        if env.iat > now + MAX_SKEW_MS or now >= env.exp:
            self.rejected["expired"] += 1
            return
        try:
            verdict = decode_verdict(env.payload)
        except Exception:
            self.rejected["malformed"] += 1
            return
        if verdict.coordinator != self._coordinator or subject != verdict_subject(
            self._region, verdict.qname, verdict.qtype
        ):
            self.rejected["subject"] += 1
            return
        self.accepted += 1
        self._on_verdict(verdict)
