"""Which CRIU runs of this helper may overlap: all of them, except a page-server dump.

A page-server dump configures CRIU through ``/etc/criu/default.conf``, which
every CRIU run on the node reads while it exists (see :mod:`.pagestream`):
a checkpoint running then would send its pages to another migration's page
server, a restore would read page-server options it never asked for. So a
page-server dump runs alone (:meth:`CriuRuns.exclusive`): it waits for the
runs in flight, and runs asking to start meanwhile (:meth:`CriuRuns.shared`)
wait for it. Waiting dumps go first, so a steady stream of restores cannot
starve them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class CriuRuns:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """A CRIU run that may overlap with others, but not with a page-server dump."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: not self._exclusive and self._waiting_exclusive == 0
            )
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The only CRIU run of this helper while it lasts."""
        async with self._changed:
            self._waiting_exclusive += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and self._shared == 0)
            finally:
                self._waiting_exclusive -= 1
                # Shared runs held back for this one may go if it gave up waiting.
                self._changed.notify_all()
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()
