"""``TrustClient.check`` under a k-of-m coordinator policy (a thin adapter over
:func:`cctf.client.coordquorum.combine`; see :mod:`cctf.client.sdk`, *k-of-m coordinators*)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from cctf.bus.reader import ReadError, last_message
from cctf.bus.streams import verdict_stream_name
from cctf.bus_schemas.envelope import Rejected
from cctf.bus_schemas.messages import Verdict
from cctf.bus_schemas.subjects import verdict_subject
from cctf.client.coordquorum import CoordinatorPolicy, combine
from cctf.client.errors import FetchError, NoVerdict, VerdictRejected
from cctf.client.headfeed import verify_fetching

if TYPE_CHECKING:  # the client calls this; this calls back into the client
    from cctf.client.sdk import TrustClient
    from cctf.client.verify import CheckedVerdict

__all__ = ["check_quorum"]


async def check_quorum(
    client: TrustClient, name: str, qtype: str, policy: CoordinatorPolicy
) -> Verdict:
    """``TrustClient.check`` under a k-of-m policy: the last verdict of each configured coordinator
    (its own subject, docs/wire-protocol.md §5.4), each verified fully, combined by
    :func:`cctf.client.coordquorum.combine`."""
    subjects = [verdict_subject(client.region, name, qtype, c) for c in policy.of]
    stream = verdict_stream_name(client.region)
    raws = await asyncio.gather(
        *(last_message(client.nc, stream, s, request_timeout_s=client._timeout) for s in subjects),
        return_exceptions=True,
    )
    checked: list[CheckedVerdict] = []
    errors = 0
    for subject, raw in zip(subjects, raws, strict=True):
        if isinstance(raw, BaseException):
            if not isinstance(raw, ReadError):
                raise raw
            errors += 1
        elif raw is not None:
            with contextlib.suppress(Rejected):  # counted and logged by _verify
                checked.append(
                    await verify_fetching(
                        client,
                        client.region,
                        raw,
                        subject,
                        max_age_ms=client.max_age_ms,
                        cache=False,
                    )
                )
    subject = verdict_subject(client.region, name, qtype)
    if errors == len(subjects):
        raise FetchError(f"no coordinator's verdict could be read for {subject}")
    try:
        used = combine(policy, [c.verdict for c in checked])
    except Rejected as exc:
        if not checked and errors == 0:
            raise NoVerdict(subject) from None
        client._count_rejected(exc.reason.value, client.region, subject, exc.detail)
        if (newer := client.cached(name, qtype)) is not None:
            return newer
        raise VerdictRejected(subject, exc) from exc
    client._remember(client.region, next(c for c in checked if c.verdict is used.verdict))
    return used.verdict
