"""A pod migration's steps on its two nodes (see ``ferry_wire.pods``).

Source: ``pod-checkpoint`` claims each container for the migration (one dump
at a time, as a container's checkpoint does), freezes its task in the node's
CRI containerd, has the node's kubelet checkpoint it, and bundles the
kubelet's archives into the migration's staging archive: the ordinary
``send`` streams that on, and the target's ``receive`` verifies it. The
containers stay frozen: ``pod-thaw`` (the rollback) resumes them, the
source pod's deletion ends them (``pod-thaw`` with ``kill``: they die as they
thaw, running nothing more). ``finish-source`` with ``removeContainer:
false`` ends the migration here (claims and staging), as for a container.

Target: ``pod-images`` makes a checkpoint image of each container's archive
in the received bundle and imports it into the node's CRI containerd.
``cleanup`` with ``removeRestored`` removes those images again.

Which tasks this migration froze, and which images it imported, are
journaled before the freeze or the import: a helper that dies half-way
still thaws or removes exactly those, and nothing it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from pathlib import Path

from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Checkpointed
from ferry_wire.pods import (
    PodCheckpointRequest,
    PodContainer,
    PodImages,
    PodImagesRequest,
    PodThawed,
    PodThawRequest,
)

from .. import node_tools, pod_bundle, sealing
from ..archive_check import UnsafeArchive
from ..cri import PAUSED, RUNNING, CriCommandError, Ctr
from ..kubelet import Kubelet, KubeletError
from ..staging import JournalEntry
from .context import Channel, NodeContext

#: Longest image name (before the tag) a reference may have here.
MAX_NAME = 200


class PodFrozen(JournalEntry):
    """The tasks this migration froze (noted before each freeze)."""

    container_ids: tuple[str, ...] = ()


class PodImagesImported(JournalEntry):
    """The images this migration imports (noted before each import)."""

    references: tuple[str, ...] = ()


def checkpoint_reference(namespace: str, pod: str, container: str, uid: str) -> str:
    """The checkpoint image's reference: ``localhost/ferry-checkpoint/<ns>-<pod>-<c>:<uid8>``.

    Kubernetes names are lower-case DNS names, valid path components as they
    are; a name too long for a reference is cut and made unique by its hash.
    """
    name = f"{namespace}-{pod}-{container}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = re.sub(r"[.-]+$", "", name[: MAX_NAME - 13]) + "-" + digest
    return f"localhost/ferry-checkpoint/{name}:{uid[:8]}"


class PodSteps:
    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.staging = context.staging

    def _cri(self) -> Ctr:
        if self.context.cri is None or not self.context.cri.present():
            raise RemoteError(
                Reason.CRI_UNAVAILABLE, f"node {self.context.node} has no CRI containerd to drive"
            )
        return self.context.cri

    def _kubelet(self) -> Kubelet:
        if self.context.kubelet is None:
            raise RemoteError(
                Reason.KUBELET_CHECKPOINT_FAILED, f"node {self.context.node} has no kubelet"
            )
        return self.context.kubelet

    # -- source ---------------------------------------------------------------

    async def checkpoint(self, request: PodCheckpointRequest, _: Channel) -> Checkpointed:
        done = self.staging.recorded_model(request.uid, "checkpoint", Checkpointed)
        if done is not None:
            return done
        ctr, kubelet = self._cri(), self._kubelet()
        self._claim(request)
        started = time.monotonic()
        archives: list[tuple[str, Path]] = []
        try:
            await self._freeze(request, ctr)
            for container in request.containers:
                written = await kubelet.checkpoint(
                    request.namespace, request.pod, container.name, request.timeout_seconds
                )
                archives.append((container.name, node_tools.node_path(Path(written))))
            blob = await asyncio.to_thread(
                pod_bundle.bundle, archives, self.staging.archive(request.uid)
            )
            statistics = await asyncio.to_thread(
                lambda: pod_bundle.summed([pod_bundle.statistics(path) for _name, path in archives])
            )
        except (KubeletError, CriCommandError, OSError) as error:
            reason = (
                Reason.KUBELET_CHECKPOINT_FAILED
                if isinstance(error, KubeletError)
                else Reason.CRI_UNAVAILABLE
            )
            await self._undo(request)
            raise RemoteError(reason, f"on node {self.context.node}: {error}") from None
        except BaseException:
            await self._undo(request)
            raise
        finally:
            for _name, kubelets_archive in archives:
                with contextlib.suppress(OSError):
                    kubelets_archive.unlink(missing_ok=True)
        checkpointed = Checkpointed(
            size_bytes=blob.size,
            sha256=blob.digest.removeprefix("sha256:"),
            seconds=time.monotonic() - started,
            statistics=statistics.reported(),
            container_id=request.containers[0].container_id,
        )
        self.staging.record_model(request.uid, "checkpoint", checkpointed)
        return checkpointed

    def _claim(self, request: PodCheckpointRequest) -> None:
        for container in request.containers:
            holder = self.staging.claim(container.container_id, request.uid)
            if holder is not None:
                self.staging.release(request.uid)
                raise RemoteError(
                    Reason.CONTAINER_BUSY,
                    f"container {container.name!r} of pod {request.namespace}/{request.pod} is "
                    f"being migrated by migration {holder}; wait for it to finish",
                )

    def _frozen(self, uid: str) -> PodFrozen:
        return self.staging.recorded_model(uid, "pod-frozen", PodFrozen) or PodFrozen()

    async def _freeze(self, request: PodCheckpointRequest, ctr: Ctr) -> None:
        tasks = await ctr.tasks()
        for container in request.containers:
            status = tasks.get(container.container_id)
            if status is None:
                raise CriCommandError(
                    f"container {container.name!r} ({container.container_id[:12]}) has no task "
                    "in the CRI containerd"
                )
            if status != RUNNING:
                continue  # frozen already (by this migration, asked again), or not running
            frozen = self._frozen(request.uid)
            ids = (*frozen.container_ids, container.container_id)
            self.staging.record_model(request.uid, "pod-frozen", PodFrozen(container_ids=ids))
            await ctr.pause(container.container_id)

    async def _thaw(
        self, uid: str, containers: tuple[PodContainer, ...], ctr: Ctr, *, kill: bool = False
    ) -> list[str]:
        """Resume the tasks ``uid`` froze and that are still frozen; the names resumed.

        With ``kill`` they are sent SIGKILL first, so they die as they thaw, before
        running another instruction of their own.
        """
        frozen = self._frozen(uid).container_ids
        if not frozen:
            return []
        tasks = await ctr.tasks()
        names = {c.container_id: c.name for c in containers}
        resumed = []
        for container_id in frozen:
            if tasks.get(container_id) != PAUSED:
                continue  # running again, or gone: nothing of ours to thaw
            if kill:
                await ctr.kill(container_id)
                # The runtime may have thawed it itself to kill it: then it is gone.
                with contextlib.suppress(CriCommandError):
                    await ctr.resume(container_id)
            else:
                await ctr.resume(container_id)
            resumed.append(names.get(container_id, container_id))
        self.staging.forget(uid, "pod-frozen")
        return resumed

    async def _undo(self, request: PodCheckpointRequest) -> None:
        """After a failed checkpoint: the pod runs again, the claims and the bundle go."""
        if self.context.cri is not None:
            with contextlib.suppress(CriCommandError):
                await self._thaw(request.uid, request.containers, self.context.cri)
        self.staging.release(request.uid)
        self.staging.archive(request.uid).unlink(missing_ok=True)

    async def thaw(self, request: PodThawRequest, _: Channel) -> PodThawed:
        # Closed first: a pod-checkpoint still on its way must not freeze the pod again.
        self.context.close(request.uid)
        resumed: list[str] = []
        if self._frozen(request.uid).container_ids:
            try:
                resumed = await self._thaw(
                    request.uid, request.containers, self._cri(), kill=request.kill
                )
            except CriCommandError as error:
                raise RemoteError(
                    Reason.CRI_UNAVAILABLE, f"on node {self.context.node}: {error}"
                ) from None
        self.staging.release(request.uid)
        self.staging.remove(request.uid)
        return PodThawed(resumed=tuple(resumed))

    # -- target ---------------------------------------------------------------

    async def images(self, request: PodImagesRequest, _: Channel) -> PodImages:
        if (done := self.staging.recorded_model(request.uid, "pod-images", PodImages)) is not None:
            return done
        archive = self.staging.archive(request.uid)
        if self.staging.recorded(request.uid, "receive") is None or not archive.exists():
            raise RemoteError(
                Reason.NO_ARCHIVE, f"no verified archive of migration {request.uid} here"
            )
        if await asyncio.to_thread(sealing.is_sealed, archive):
            # Let in unread by the receive's check (see archive_check.UnlessSealed): a pod's
            # bundle never is sealed.
            raise RemoteError(Reason.UNSAFE_ARCHIVE, "a pod's bundle is never sealed")
        ctr = self._cri()
        started = time.monotonic()
        references = {
            name: checkpoint_reference(request.namespace, request.pod, name, request.uid)
            for name in request.containers
        }
        self.staging.record_model(
            request.uid,
            "pod-images-imported",
            PodImagesImported(references=tuple(references.values())),
        )
        for container, reference in references.items():
            # In the staging directory: the state directory is the same path in the node.
            layout = self.staging.directory(request.uid) / f"image-{container}.tar"
            try:
                await asyncio.to_thread(
                    pod_bundle.write_image, archive, container, layout, reference=reference
                )
                await ctr.import_image(layout)
            except UnsafeArchive as error:
                raise RemoteError(Reason.UNSAFE_ARCHIVE, f"{container}: {error}") from None
            except (KeyError, OSError, CriCommandError) as error:
                message = f"{container} on node {self.context.node}: {error}"
                raise RemoteError(Reason.CHECKPOINT_IMAGE_FAILED, message) from None
            finally:
                layout.unlink(missing_ok=True)
        images = PodImages(images=references, seconds=time.monotonic() - started)
        self.staging.record_model(request.uid, "pod-images", images)
        return images

    async def remove_images(self, uid: str) -> set[str]:
        """Remove the checkpoint images migration ``uid`` imported here; those removed."""
        imported = self.staging.recorded_model(uid, "pod-images-imported", PodImagesImported)
        if imported is None or not imported.references:
            return set()
        try:
            return await self._cri().remove_images(set(imported.references))
        except CriCommandError as error:
            raise RemoteError(
                Reason.CRI_UNAVAILABLE, f"on node {self.context.node}: {error}"
            ) from None
