"""Suite policy: the anti-downgrade rule.

A policy names the weakest suite it accepts. A coordinator that requires ``hybrid-ed25519-ml-dsa-65``
rejects an ``ed25519``-only message even when its signature is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from cctf.crypto.errors import SuiteError
from cctf.crypto.suites import RANK, SuiteId, parse_suite


@dataclass(frozen=True)
class SuitePolicy:
    minimum: SuiteId = SuiteId.HYBRID

    @classmethod
    def parse(cls, value: str) -> SuitePolicy:
        return cls(parse_suite(value))

    def check(self, suite: str) -> SuiteId:
        """Return the parsed suite, or raise :class:`SuiteError` if unknown or below the minimum."""
        parsed = parse_suite(suite)
        if RANK[parsed] < RANK[self.minimum]:
            raise SuiteError(
                f"suite {parsed.value} is below the required minimum {self.minimum.value} (downgrade)"
            )
        return parsed
