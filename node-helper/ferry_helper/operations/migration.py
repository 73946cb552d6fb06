"""A migration's steps on its two nodes, in the order the operator asks for them.

Source: ``checkpoint`` (frozen into an archive, or its memory to the target's
page server), ``send`` (the archive streamed to the target), and at the end
``finish-source`` (the target runs its copy) or ``rollback`` (it does not: the
source back from its checkpoint). Target: ``receive`` (a peer operation: the
archive, checked while it arrives), ``restore``, and ``cleanup`` when the
migration ends without its copy (a pod's migration: its checkpoint images
too, see :mod:`.pods`).

Every step that changes the node answers from the journal when it already ran
(an operator restarted mid-step asks again) instead of freezing twice. A
rollback or a finish closes the migration here: a step still on its way is
refused afterwards (``MigrationClosed``, see :mod:`.dispatcher`).

A ContainerRestore on another node than its checkpoint's is a migration
without the freeze: ``send-stored`` streams the stored archive into this
node's ``receive``, and ``restore`` restores it. That archive may be sealed:
it is then opened (and checked) first, see :mod:`.sealed`.
"""

from __future__ import annotations

from ferry_wire import Reason, RemoteError
from ferry_wire.migration import (
    Checkpointed,
    CheckpointRequest,
    CleanedUp,
    CleanupRequest,
    FinishSourceRequest,
    Received,
    ReceiveRequest,
    Restored,
    RestoreRequest,
    RollbackRequest,
    RolledBack,
    SendRequest,
    Sent,
    SourceFinished,
)

from ..archive_check import UnlessSealed
from ..drivers.errors import RuntimeCommandError
from ..drivers.records import RestoreResult
from ..transfer import receive_file
from .archives import Archives
from .context import Channel, NodeContext
from .pages import PageSteps
from .pods import PodSteps
from .restores import Restores
from .sealed import SealedArchives


class MigrationSteps:
    def __init__(
        self,
        context: NodeContext,
        *,
        archives: Archives,
        restores: Restores,
        pages: PageSteps,
        pods: PodSteps,
        sealed: SealedArchives,
    ) -> None:
        self.context = context
        self.staging = context.staging
        self.archives = archives
        self.restores = restores
        self.pages = pages
        self.pods = pods
        self.sealed = sealed

    # -- source ---------------------------------------------------------------

    async def checkpoint(self, request: CheckpointRequest, _: Channel) -> Checkpointed:
        done = self.staging.recorded_model(request.uid, "checkpoint", Checkpointed)
        if done is not None:
            return done
        container_id = await self.archives.container_id(request.container, request.runtime)
        checkpointed = await self.archives.dump(
            request,
            container_id,
            self.staging,
            page_server=request.page_server,
            bandwidth=request.bandwidth_bytes_per_second,
        )
        self.staging.record_model(request.uid, "checkpoint", checkpointed)
        return checkpointed

    async def send(self, request: SendRequest, channel: Channel) -> Sent:
        if (done := self.staging.recorded_model(request.uid, "send", Sent)) is not None:
            return done
        sent = await self.archives.send(
            self.staging,
            request.uid,
            into=request.uid,
            target=request.target,
            key=request.credential,
            channel=channel,
            bandwidth=request.bandwidth_bytes_per_second,
        )
        self.staging.record_model(request.uid, "send", sent)
        return sent

    async def rollback(self, request: RollbackRequest, _: Channel) -> RolledBack:
        # Closed first: a checkpoint request still on its way must not freeze
        # the source again after it is back.
        self.context.close(request.uid)
        driver = self.context.driver(request.runtime)
        info = await driver.inspect(request.container)
        if info is not None and info.running:
            return RolledBack(container_id=info.id, already_running=True)
        if info is not None and self.staging.holder(info.id) != request.uid:
            # Not frozen by this migration (another one holds it, or nobody
            # does): bringing it back is not this rollback's to do.
            return RolledBack(container_id=info.id, not_frozen_by_this_migration=True)
        # In place first (the container keeps its own checkpoint images); the
        # archive, when there is one, is the driver's fallback.
        archive = self.staging.archive(request.uid)
        try:
            result: RestoreResult
            async with self.context.criu_runs.shared():
                dumped = self.pages.dumped_to_page_server(request.uid)
                if dumped is not None:
                    # Its memory is in the container's checkpoint directory only.
                    pages_driver = self.context.page_server(dumped.runtime)
                    result = await pages_driver.rollback_from_pages(
                        request.container, archive, file_locks=request.file_locks
                    )
                else:
                    result = await driver.rollback(
                        request.container, archive, file_locks=request.file_locks
                    )
        except RuntimeCommandError as error:
            raise self.context.failed(
                Reason.ROLLBACK_FAILED, request.uid, "rollback", error
            ) from None
        return RolledBack(container_id=result.container_id, seconds=result.seconds)

    async def finish_source(self, request: FinishSourceRequest, _: Channel) -> SourceFinished:
        if request.remove_container:
            await self.context.driver(request.runtime).remove(request.container)
        self.context.close(request.uid)
        self.staging.release(request.uid)
        self.staging.remove(request.uid, keep_archive=request.keep_checkpoint)
        return SourceFinished(removed_container=request.remove_container)

    # -- target ---------------------------------------------------------------

    async def receive(self, request: ReceiveRequest, channel: Channel) -> Received:
        archive = self.staging.archive(request.uid)
        await receive_file(
            channel.reader("receive"),
            archive,
            size=request.size_bytes,
            sha256=request.sha256,
            # A sealed archive (a stored checkpoint) is checked once opened, in restore.
            check=UnlessSealed(),
        )
        received = Received(size_bytes=request.size_bytes, sha256=request.sha256)
        self.staging.record_model(request.uid, "receive", received)
        return received

    async def restore(self, request: RestoreRequest, _: Channel) -> Restored:
        if (done := self.restores.recorded(request.uid)) is not None:
            return done
        received = self.staging.recorded(request.uid, "receive")
        archive = self.staging.archive(request.uid)
        if received is None or not archive.exists():
            raise RemoteError(
                Reason.NO_ARCHIVE, f"no verified archive of migration {request.uid} here"
            )
        opened = self.staging.opened_archive(request.uid)
        async with self.sealed.opened(archive, opened, check=True) as restorable:
            if not request.onto_pages:
                return await self.restores.archive(request, restorable)
            driver = self.context.page_server(request.runtime)
            pages = await self.pages.received(request.uid)
            return await self.restores.run(
                request,
                lambda: driver.restore_onto_pages(
                    restorable,
                    tcp_established=request.tcp_established,
                    file_locks=request.file_locks,
                ),
                pages_bytes=pages,
            )

    async def cleanup(self, request: CleanupRequest, _: Channel) -> CleanedUp:
        removed = ""
        if request.remove_restored:
            removed = await self.restores.restored_copy(request.uid) or ""
            if removed:
                await self.context.driver(request.runtime).remove(removed)
            # A pod's migration: the checkpoint images its replacement would have run from.
            await self.pods.remove_images(request.uid)
        restored = self.restores.recorded(request.uid)
        await self.pages.close(request.uid, restored.container_id if restored else None)
        self.context.close(request.uid)
        self.staging.release(request.uid)
        self.staging.remove(request.uid, keep_archive=request.keep_checkpoint)
        return CleanedUp(removed_container=removed)
