"""``ttlSecondsAfterFinished``: deleting a finished resource once its time is up, as Jobs are.

Only the resource goes; what it did on the nodes (a moved or restored
container) stays. A daemon waits out the rest of the TTL; an operator restart
waits again from ``completionTime``, so the TTL is kept across restarts.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable

import kopf

from .status import Events


async def delete_when_expired(
    *,
    ttl_seconds: int | None,
    finished: datetime.datetime | None,
    stopped: kopf.DaemonStopped,
    events: Events,
    delete: Callable[[], Awaitable[None]],
) -> None:
    """Wait until ``finished`` + ``ttl_seconds``, then ``delete``; nothing without a TTL."""
    if ttl_seconds is None:
        return
    now = datetime.datetime.now(datetime.UTC)
    remaining = ((finished or now) + datetime.timedelta(seconds=ttl_seconds) - now).total_seconds()
    if remaining > 0:
        await stopped.wait(remaining)
    if stopped:
        return  # deleted meanwhile, or the operator stops: a restart waits again
    events.normal(
        "Expired", f"deleting it {ttl_seconds}s after it finished (ttlSecondsAfterFinished)"
    )
    await delete()
