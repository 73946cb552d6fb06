"""A container restored on its target node, whatever it is restored from.

A migration's ``restore`` (an archive received, or the pages a page server
received), a ContainerRestore's ``restore-stored`` (an archive in this node's
store) and ``restore-image`` (a checkpoint image pulled from a registry) differ
only in how the runtime is asked to start the container. What they share is
here: the intent journaled before the runtime starts, so a helper that dies
mid-restore finds the container it made afterwards (:meth:`Restores.restored_copy`)
and adopts it instead of restoring twice; the check that the container runs;
the reply journaled, so a repeated request answers what the first one did.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ferry_api.runtime import Runtime
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Restored, RestoreOptions

from ..drivers.errors import RuntimeCommandError
from ..drivers.records import RestoreResult
from ..staging import JournalEntry
from .context import NodeContext


class RestoreStarted(JournalEntry):
    """Noted before the runtime starts a restore: the name it restores as, since when."""

    name: str
    #: This node's clock when the restore began; a container of that name created since is ours.
    since: float | None = None
    runtime: Runtime = Runtime.PODMAN
    #: Journaled by an earlier helper instead of ``since``: the container that was there.
    preexisting: str | None = None


class Restores:
    def __init__(self, context: NodeContext) -> None:
        self.context = context

    async def archive(self, request: RestoreOptions, archive: Path) -> Restored:
        """Restore ``archive`` as the request asks, with the driver of its runtime."""
        driver = self.context.driver(request.runtime)
        return await self.run(
            request,
            lambda: driver.restore(
                archive,
                name=request.name,
                tcp_established=request.tcp_established,
                file_locks=request.file_locks,
            ),
        )

    async def run(
        self,
        request: RestoreOptions,
        start: Callable[[], Awaitable[RestoreResult]],
        *,
        pages_bytes: int | None = None,
    ) -> Restored:
        """Restore with ``start`` for restore (or migration) ``request.uid``, once."""
        staging = self.context.staging
        driver = self.context.driver(request.runtime)
        # Written before the runtime starts: if this helper dies mid-restore, the runtime
        # may still finish, and a later cleanup must know which container is ours: one of
        # that name created since. (No inspect here: it would cost the frozen container
        # about 0.1 s.)
        if staging.recorded(request.uid, "restore-started") is None:
            started = RestoreStarted(name=request.name, since=time.time(), runtime=request.runtime)
            staging.record_model(request.uid, "restore-started", started)
        elif (ours := await self.restored_copy(request.uid)) is not None:
            return await self._adopt(request, ours)
        try:
            async with self.context.criu_runs.shared():
                result = await start()
        except RuntimeCommandError as error:
            raise self.context.failed(
                Reason.RESTORE_FAILED, request.uid, "restore", error
            ) from None
        info = await driver.inspect(result.container_id)
        if info is None or not info.running:
            raise RemoteError(
                Reason.RESTORED_CONTAINER_NOT_RUNNING,
                f"container {request.name} was restored but is not running",
            )
        restored = Restored(
            container_id=result.container_id,
            name=result.name,
            seconds=result.seconds,
            statistics=result.statistics.reported(),
            pages_bytes=pages_bytes,
        )
        staging.record_model(request.uid, "restore", restored)
        return restored

    async def _adopt(self, request: RestoreOptions, container_id: str) -> Restored:
        """A restore repeated after this helper died mid-way: the runtime had finished it."""
        info = await self.context.driver(request.runtime).inspect(container_id)
        if info is None or not info.running:
            raise RemoteError(
                Reason.RESTORED_CONTAINER_NOT_RUNNING,
                f"container {request.name} was restored but is not running",
            )
        restored = Restored(container_id=info.id, name=info.name, seconds=0.0)
        self.context.staging.record_model(request.uid, "restore", restored)
        return restored

    def recorded(self, uid: str) -> Restored | None:
        """What the restore of ``uid`` answered here, if it finished."""
        return self.context.staging.recorded_model(uid, "restore", Restored)

    async def restored_copy(self, uid: str) -> str | None:
        """The ID of the container migration (or restore) ``uid`` restored here, if any.

        The journal's ``restore`` reply names it; without one (the helper died
        while the runtime restored), a container with the intended name created
        since the restore began is the migration's (this node's own clock on
        both sides).
        """
        if (restored := self.recorded(uid)) is not None:
            return restored.container_id
        intent = self.context.staging.recorded_model(uid, "restore-started", RestoreStarted)
        if intent is None:
            return None
        info = await self.context.driver(intent.runtime).inspect(intent.name)
        if info is None:
            return None
        if intent.since is not None:
            return info.id if info.created >= intent.since else None
        # Journaled by an earlier helper: it noted the container that was there.
        return None if info.id == intent.preexisting else info.id
