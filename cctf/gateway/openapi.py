"""The gateway's published OpenAPI document (``docs/openapi.json``).

``python -m cctf.gateway.openapi [FILE]`` writes it (default: stdout); a test checks that the
published file equals the app's document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from cctf.bus_schemas.messages import Verdict
from cctf.client.identity import CredentialDecision, WorkloadDecision
from cctf.gateway.app import create_app

__all__ = ["openapi_document"]


class _NoBackend:
    """A backend that answers nothing (the document needs only the routes)."""

    region = "-"

    def connected(self) -> bool:
        return False

    def _never(self) -> NoReturn:
        raise RuntimeError("the OpenAPI document's app serves no requests")

    async def verdict(self, name: str, qtype: str) -> Verdict:
        self._never()

    async def validate_certificate(self, chain_pem: str) -> CredentialDecision:
        self._never()

    async def validate_token(self, token: str, audience: str) -> CredentialDecision:
        self._never()

    async def workload(
        self, spiffe_id: str, *, token: str | None = None, chain: str | None = None
    ) -> WorkloadDecision:
        self._never()


def openapi_document() -> dict[str, Any]:
    return create_app(_NoBackend()).openapi()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
