"""Checkpoints kept for later (ContainerCheckpoint) and restores from them (ContainerRestore).

``store-checkpoint`` dumps like a migration's checkpoint (:mod:`.archives`)
into this node's store, keyed by the checkpoint's UID, or, given an image
reference, pushes a checkpoint image to a registry (the checkpoint-image
capability: ``RegistryNeedsPodman`` for a runtime without it). A restore is
keyed by the restore's UID, like a migration, and restores from the store
(``restore-stored``), from a registry (``restore-image``), or on another node
after ``send-stored`` streamed the archive there. ``delete-stored`` removes
the archive, and the image from its registry (podman cannot delete from a
registry: :mod:`ferry_helper.registry` asks it directly).

The store's journal keeps the reply under ``stored``, and an archive's
checkpoint also under ``checkpoint``, which is what sending reads.

On a node with checkpoint keys the archive is sealed once dumped and
summarized, and both records name the sealed file; an image is refused there
before anything is dumped. Before a restore or a send the archive is hashed
against the digest the operator recorded and this node's own record, and a
sealed one is opened into the restore's staging area only for the restore
(see :mod:`.sealed`). A checkpoint image given with its digest is pulled by it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tarfile
from pathlib import Path

from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Checkpointed, Restored, Sent
from ferry_wire.stored import (
    CheckpointContents,
    Deleted,
    DeleteStoredRequest,
    RestoreImageRequest,
    RestoreStoredRequest,
    SendStoredRequest,
    StoreCheckpointRequest,
    Stored,
)

from .. import criu_images, registry
from ..checkpoint_keys import Key
from ..drivers.errors import RuntimeCommandError
from ..drivers.records import ContainerInfo
from .archives import Archives
from .context import Channel, NodeContext
from .restores import Restores
from .sealed import SealedArchives

logger = logging.getLogger(__name__)


class StoredCheckpoints:
    def __init__(
        self,
        context: NodeContext,
        *,
        archives: Archives,
        restores: Restores,
        sealed: SealedArchives,
    ) -> None:
        self.context = context
        self.store = context.store
        self.archives = archives
        self.restores = restores
        self.sealed = sealed

    async def store_checkpoint(self, request: StoreCheckpointRequest, _: Channel) -> Stored:
        """A checkpoint kept here (a ContainerCheckpoint), with what a restore elsewhere needs."""
        if (done := self.store.recorded_model(request.uid, "stored", Stored)) is not None:
            return done
        if request.image_reference:
            # Refused before anything else.
            self.sealed.refuse_images()
            self.context.checkpoint_images(request.runtime)
        # Read before the dump: a key that is missing or no key refuses before the freeze.
        key = None if request.image_reference else self.sealed.active_key()
        info = await self.context.driver(request.runtime).inspect(request.container)
        if info is None:
            raise RemoteError(
                Reason.CONTAINER_NOT_FOUND,
                f"no container {request.container!r} on node {self.context.node}",
            )
        try:
            if request.image_reference:
                stored = await self._dump_image(request, request.image_reference, info)
            else:
                stored = await self._dump_archive(request, info, key)
        finally:
            self.context.staging.release(request.uid)  # kept, but no longer holding it
        self.store.record_model(request.uid, "stored", stored)
        return stored

    async def _dump_archive(
        self, request: StoreCheckpointRequest, info: ContainerInfo, key: Key | None
    ) -> Stored:
        """Checkpoint into this node's store; sealed with ``key`` once summarized."""
        dumped = await self.archives.dump(request, info.id, self.store)
        archive = self.store.archive(request.uid)
        contents = await self._contents(archive)
        sealed = await self.sealed.seal(archive, key) if key is not None else None
        if sealed is not None:
            # What is stored, and sent, is the sealed file.
            dumped = dumped.model_copy(
                update={"size_bytes": sealed.size_bytes, "sha256": sealed.sha256}
            )
        # Under both names: "checkpoint" is what sending reads.
        self.store.record_model(request.uid, "checkpoint", dumped)
        return Stored(
            seconds=dumped.seconds,
            statistics=dumped.statistics,
            size_bytes=dumped.size_bytes,
            sha256=dumped.sha256,
            contents=contents,
            container_name=info.name,
            image_id=info.image_id,
            image_name=info.image_name,
            sealing=sealed.sealing if sealed is not None else None,
            seal_seconds=sealed.seconds if sealed is not None else None,
        )

    @staticmethod
    async def _contents(archive: Path) -> CheckpointContents | None:
        """What the archive holds (processes, memory, sockets), or None if it cannot be read."""
        try:
            contents = await asyncio.to_thread(criu_images.summarize_archive, archive)
        except (OSError, tarfile.TarError, ValueError) as error:
            logger.warning("cannot summarize %s: %s", archive, error)
            return None
        return CheckpointContents.model_validate(dataclasses.asdict(contents))

    async def _dump_image(
        self, request: StoreCheckpointRequest, reference: str, info: ContainerInfo
    ) -> Stored:
        """Checkpoint into an image pushed to ``reference`` (claimed as a dump is)."""
        driver = self.context.checkpoint_images(request.runtime)
        options = self.archives.claim(request, info.id)
        try:
            async with self.context.criu_runs.shared():
                pushed = await driver.checkpoint_image(
                    request.container, reference, options, authfile=self.context.registry_authfile
                )
        except RuntimeCommandError as error:
            raise self.context.failed(
                Reason.CHECKPOINT_FAILED, request.uid, "checkpoint", error
            ) from None
        contents = pushed.contents
        return Stored(
            seconds=pushed.seconds,
            statistics=pushed.statistics.reported(),
            size_bytes=pushed.size_bytes,
            checkpoint_image=pushed.reference,
            digest=pushed.digest,
            contents=(
                CheckpointContents.model_validate(dataclasses.asdict(contents))
                if contents is not None
                else None
            ),
            container_name=info.name,
            image_id=info.image_id,
            image_name=info.image_name,
        )

    async def restore_image(self, request: RestoreImageRequest, _: Channel) -> Restored:
        """Restore, as restore ``uid``, from a checkpoint image in a registry."""
        if (done := self.restores.recorded(request.uid)) is not None:
            return done
        driver = self.context.checkpoint_images(request.runtime)
        # Pinned by its digest: the registry cannot hand over other content (podman checks
        # what it pulls by digest).
        reference = (
            registry.pinned(request.reference, request.digest)
            if request.digest
            else request.reference
        )
        return await self.restores.run(
            request,
            lambda: driver.restore_image(
                reference,
                name=request.name,
                tcp_established=request.tcp_established,
                file_locks=request.file_locks,
                authfile=self.context.registry_authfile,
            ),
        )

    async def restore_stored(self, request: RestoreStoredRequest, _: Channel) -> Restored:
        if (done := self.restores.recorded(request.uid)) is not None:
            return done
        archive = self.store.archive(request.checkpoint_uid)
        stored = self._stored(request.checkpoint_uid)
        if not archive.exists():
            raise RemoteError(
                Reason.CHECKPOINT_NOT_STORED,
                f"no stored checkpoint {request.checkpoint_uid} on {self.context.node}",
            )
        await self._verify(request.checkpoint_uid, archive, request.sha256, stored)
        plain = self.context.staging.opened_archive(request.uid)
        async with self.sealed.opened(archive, plain) as restorable:
            return await self.restores.archive(request, restorable)

    async def send_stored(self, request: SendStoredRequest, channel: Channel) -> Sent:
        stored = self._stored(request.checkpoint_uid)
        archive = self.store.archive(request.checkpoint_uid)
        if archive.exists():  # else: NoCheckpoint, from the send
            await self._verify(request.checkpoint_uid, archive, request.sha256, stored)
        return await self.archives.send(
            self.store,
            request.checkpoint_uid,
            into=request.uid,
            target=request.target,
            key=request.credential,
            channel=channel,
            bandwidth=request.bandwidth_bytes_per_second,
        )

    def _stored(self, uid: str) -> Stored:
        """The journaled reply of stored checkpoint ``uid``; ``CheckpointNotStored`` if none."""
        stored = self.store.recorded_model(uid, "stored", Stored)
        if stored is None:
            raise RemoteError(
                Reason.CHECKPOINT_NOT_STORED, f"no stored checkpoint {uid} on {self.context.node}"
            )
        return stored

    async def _verify(self, uid: str, archive: Path, sha256: str | None, stored: Stored) -> None:
        """``CheckpointTampered`` unless the archive is what the operator and this node
        recorded when it was stored."""
        checkpoint = self.store.recorded_model(uid, "checkpoint", Checkpointed)
        await self.sealed.verify(
            archive,
            f"stored checkpoint {uid}",
            [
                (sha256, "recorded in the ContainerCheckpoint's status"),
                (stored.sha256, "recorded by this node"),
                (checkpoint.sha256 if checkpoint is not None else None, "recorded by this node"),
            ],
        )

    async def delete_stored(self, request: DeleteStoredRequest, _: Channel) -> Deleted:
        stored = self.store.recorded_model(request.uid, "stored", Stored)
        reference = request.image_reference or (stored.checkpoint_image if stored else None)
        digest = request.digest or (stored.digest if stored else None)
        if reference and digest:
            try:
                await asyncio.to_thread(
                    registry.delete_manifest,
                    reference,
                    digest,
                    authfile=self.context.registry_authfile,
                )
            except registry.RegistryError as error:
                raise RemoteError(Reason.REGISTRY_DELETE_FAILED, str(error)) from None
        self.context.staging.release(request.uid)
        self.store.remove(request.uid)
        return Deleted(deleted=stored is not None)
