"""A step stopped when it stops progressing (a MigrationPolicy's progressTimeoutSeconds).

Progress is whatever ``mark`` returns changing: for a migration, its phase and
its transfer's byte counts in status. A link that stalls without breaking
(SSH keepalives still answered) is noticed here, not by the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

#: How often the mark is read.
POLL_SECONDS = 1.0


async def watched(
    step: Awaitable[None],
    *,
    limit: float,
    mark: Callable[[], object],
    failure: Callable[[], BaseException],
) -> None:
    """Await ``step``; raise ``failure()`` (``step`` cancelled) once ``mark()`` has not
    changed for ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(step)
    seen, quiet_since = mark(), loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_SECONDS)
            if done:
                task.result()
                return
            if (now := mark()) != seen:
                seen, quiet_since = now, loop.time()
            elif loop.time() - quiet_since >= limit:
                raise failure()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
