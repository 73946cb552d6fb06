"""A transfer's progress in status, and a step stopped when it stops progressing.

:class:`ProgressWrites` keeps every report of a transfer in the status model
(what ``kubectl ferry watch`` draws, and what a MigrationPolicy's
progressTimeoutSeconds watches) and writes it at most every second.
:func:`watched` stops a step once ``mark`` (for a migration: its phase and its
transfer's byte counts) stops changing: a link that stalls without breaking
(SSH keepalives still answered) is noticed here, not by the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ferry_api.migration import Progress
from ferry_wire.migration import TransferProgress

from .status import StatusRecorder

#: How often the mark is read.
POLL_SECONDS = 1.0
#: How often a transfer's progress is written to status.
WRITE_INTERVAL = 1.0


class ProgressWrites:
    """The ``on_progress`` of a send: every report into status, written now and then."""

    def __init__(self, record: StatusRecorder[Any]) -> None:
        self.record = record
        self._written = 0.0

    async def __call__(self, progress: TransferProgress) -> None:
        self.record.update(
            progress=Progress(bytes_sent=progress.bytes_sent, bytes_total=progress.bytes_total)
        )
        now = asyncio.get_running_loop().time()
        if now - self._written >= WRITE_INTERVAL:
            self._written = now
            await self.record.write()


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
