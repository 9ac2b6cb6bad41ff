"""The safe-mode state written through to the engine (wiring: ``cctf.coordinator.policystate``
records in the coordinators' state bucket ``CCTF_LKG``).

:meth:`PolicyStore.load` binds the bucket (made at set-up; created here if the user may) and reads
this coordinator's record back into a fresh :class:`~cctf.policy.engine.PolicyEngine`;
:meth:`PolicyStore.save` writes the engine's snapshot (latest wins: one key per coordinator). Write
failures are logged and counted, never raised: without the bucket safe mode works from memory only
(as before: lost on a restart). The start-up read is the stream leader's (complete: never a lagging
replica's view) and, when the bucket exists but cannot be read, retried then raised (fail closed).
"""

from __future__ import annotations

import asyncio
from typing import Final

from cctf import telemetry
from cctf.bus.connect import Connection, jetstream
from cctf.bus.kv import LKG_BUCKET, Bucket, KvError, ensure_bucket, lkg_bucket_spec
from cctf.coordinator.policystate import (
    STATE_LABEL,
    PolicyStateError,
    open_state,
    seal_state,
    state_key,
)
from cctf.crypto.keys import SigningKey
from cctf.policy.engine import PolicyEngine

__all__ = ["PolicyStore"]

_log = telemetry.get_logger("cctf.coordinator.policy")
_READ_ATTEMPTS: Final = 3
_READ_FIRST_S: Final = 0.2


class PolicyStore:
    def __init__(self, conn: Connection, coordinator: str, key: SigningKey) -> None:
        self._conn = conn
        self._coordinator = coordinator
        self._key = state_key(coordinator)
        self._secret = key.derive_secret(STATE_LABEL)
        self._bucket: Bucket | None = None
        self.loaded = 0  # scopes read back at start
        self.saves = 0
        self.errors = 0
        self._lock = asyncio.Lock()

    async def load(self, engine: PolicyEngine) -> int:
        """Bind the bucket and restore this coordinator's stored scopes into ``engine``."""
        js = jetstream(self._conn)
        try:
            try:
                bucket = await Bucket.bind(js, LKG_BUCKET)
            except KvError:
                await ensure_bucket(js, lkg_bucket_spec(1), timeout_s=5.0)
                bucket = await Bucket.bind(js, LKG_BUCKET)
        except KvError as exc:  # no bucket (and may not create it): memory only, logged
            self.errors += 1
            _log.warning("safe_mode_store_unavailable", error=str(exc)[:300])
            return 0
        self._bucket = bucket
        data = await self._read(bucket)
        if data is None:
            _log.info("safe_mode_state_loaded", coordinator=self._coordinator, scopes=0)
            return 0
        try:
            round_, saved_ms, scopes = open_state(self._secret, self._coordinator, data)
        except PolicyStateError as exc:
            self.errors += 1
            _log.warning("safe_mode_state_refused", coordinator=self._coordinator, error=str(exc))
            return 0
        self.loaded = engine.restore(round_, scopes)
        _log.info(
            "safe_mode_state_loaded",
            coordinator=self._coordinator,
            scopes=self.loaded,
            round=round_,
            saved_ms=saved_ms,
        )
        return self.loaded

    async def _read(self, bucket: Bucket) -> bytes | None:
        """The stored record as the stream's leader has it (``Bucket.get_latest``: a direct get
        may be answered by a lagging replica), retried (bounded), then ``KvError``: never start
        silently without the scopes an operator set."""
        delay = _READ_FIRST_S
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                return await bucket.get_latest(self._key)
            except KvError as exc:
                self.errors += 1
                if attempt == _READ_ATTEMPTS:
                    raise KvError(f"cannot read the safe-mode state back: {exc}") from None
                _log.warning("safe_mode_state_read_retry", attempt=attempt, error=str(exc)[:300])
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def save(self, engine: PolicyEngine, now_ms: int) -> bool:
        """Write the engine's current snapshot; ``False`` (counted, logged) when it fails."""
        if self._bucket is None:
            return False
        async with self._lock:  # one write at a time: the last one written is the latest state
            round_, scopes = engine.snapshot()
            data = seal_state(self._secret, self._coordinator, round_, now_ms, scopes)
            try:
                await self._bucket.put(self._key, data)
            except KvError as exc:
                self.errors += 1
                _log.warning("safe_mode_state_store_failed", error=str(exc)[:300])
                return False
            self.saves += 1
            return True
