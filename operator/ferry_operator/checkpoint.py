"""ContainerCheckpoint: one checkpoint kept for later, on its node or in a registry.

A single step, so a kopf create handler: validate first (nothing on a node
changes until the request is known to be possible), write the phase before the
step so ``kubectl get`` shows where it is, and end ``Ready`` or ``Failed`` with
a reason and a message that says what to change. Errors follow the one policy
(:mod:`.policy`): a helper not heard is kopf's ``TemporaryError`` (the helper's
journal, keyed by the checkpoint's UID, answers the repeated step), anything
else ends ``Failed``.
"""

from __future__ import annotations

import logging

import kopf
from ferry_api import constants
from ferry_api.checkpoint import (
    ArchiveEncryption,
    CheckpointImage,
    CheckpointPhase,
    ContainerCheckpoint,
    ContainerCheckpointStatus,
    StorageType,
    StoredImage,
)
from ferry_api.diagnostics import CheckpointSummary
from ferry_api.migration import Archive
from ferry_api.nodehelper import NodeHelper
from ferry_api.runtime import Runtime
from ferry_wire import RemoteError
from ferry_wire.containers import InspectRequest
from ferry_wire.stored import CheckpointContents, DeleteStoredRequest, StoreCheckpointRequest

from . import validation
from .helperclient import HelperClient
from .kube import Kube
from .onestep import OneStep
from .peers import Cluster, peer_of, ready_helper
from .policy import CHECKPOINT_RETRY_SECONDS, Kind, Refusal, for_handler, kind_of
from .settings import Settings
from .status import Clock, Events, utc_now

log = logging.getLogger(__name__)

COND_READY = "Ready"
#: The longest label value Kubernetes accepts.
MAX_LABEL_VALUE = 63


def summary(
    contents: CheckpointContents | None, helper: NodeHelper, runtime: Runtime
) -> CheckpointSummary | None:
    """What the helper read from the checkpoint's images, with what its node runs."""
    if contents is None:
        return None  # an archive or image the helper could not read
    criu = helper.status.criu
    return CheckpointSummary(
        processes=contents.processes,
        threads=contents.threads,
        memory_bytes=contents.memory_bytes,
        open_files=contents.open_files,
        sockets=contents.sockets,
        runtime=next((r for r in helper.status.runtimes if r.name == runtime), None),
        criu_version=criu.version if criu else None,
        kernel=helper.status.kernel,
    )


class CheckpointTaker(OneStep[ContainerCheckpointStatus]):
    kind = constants.CONTAINER_CHECKPOINT_KIND
    plural = constants.CONTAINER_CHECKPOINT_PLURAL

    def __init__(
        self,
        *,
        resource: ContainerCheckpoint,
        events: Events,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
        clock: Clock = utc_now,
        elapsed_seconds: float = 0.0,
    ) -> None:
        super().__init__(
            metadata=resource.metadata,
            status=resource.status,
            events=events,
            kube=kube,
            helpers=helpers,
            settings=settings,
            clock=clock,
            elapsed_seconds=elapsed_seconds,
        )
        self.resource = resource

    async def _end(self, phase: CheckpointPhase, reason: str, message: str) -> None:
        ok = phase == CheckpointPhase.READY
        await self.end(ok=ok, condition=COND_READY, phase=phase, reason=reason, message=message)

    def _image_reference(self) -> str | None:
        """``repository:<name>-<uid>`` for registry storage; None for the node's store."""
        storage = self.resource.spec.storage
        if storage.type != StorageType.REGISTRY:
            return None
        # A tag holds at most 128 characters; a name may have 253.
        return f"{storage.repository}:{self.name[:110]}-{self.uid[:8]}"

    async def run(self) -> None:
        status, spec = self.record.status, self.resource.spec
        if status.phase in (
            CheckpointPhase.READY,
            CheckpointPhase.FAILED,
            CheckpointPhase.SCHEDULED,
        ):
            return
        if spec.schedule and len(self.name) > MAX_LABEL_VALUE:
            await self._end(
                CheckpointPhase.FAILED,
                "NameTooLong",
                f"a schedule's name labels its checkpoints ({constants.SCHEDULE_LABEL}), "
                f"so it may have at most {MAX_LABEL_VALUE} characters",
            )
            return
        if spec.schedule:
            await self.write(
                phase=CheckpointPhase.SCHEDULED,
                observed_generation=self.record.generation,
                message=f"checkpoints {spec.source.container} on {spec.source.node} at "
                f"{spec.schedule!r}, keeping the newest {spec.keep}",
            )
            return
        try:
            await self._take()
        except Exception as error:
            # A transient error leaves as kopf's TemporaryError, until the retries' bound.
            failure = for_handler(error, retry_left=CHECKPOINT_RETRY_SECONDS - self.elapsed_seconds)
            await self._end(CheckpointPhase.FAILED, failure.reason, failure.message)

    async def _take(self) -> None:
        spec = self.resource.spec
        repository = spec.storage.repository or ""
        if spec.storage.type == StorageType.REGISTRY and not self.settings.registry_allowed(
            repository
        ):
            raise Refusal(
                reason="RegistryNotAllowed",
                message=f"{repository!r} is not among the registries checkpoints may be "
                f"pushed to ({', '.join(self.settings.allowed_registries)}; the chart's "
                "storage.allowedRegistries)",
            )
        await self.write(
            phase=CheckpointPhase.CHECKPOINTING,
            node=spec.source.node,
            observed_generation=self.record.generation,
            message=f"checkpointing {spec.source.container} on {spec.source.node}",
        )
        helper, peer = ready_helper(
            await Cluster.read(self.kube),
            spec.source.node,
            "Source",
            stale_seconds=self.settings.helper_stale_seconds,
            now=self.record.clock(),
        )
        self.peers.append(peer)
        info = await self.helpers.inspect(
            peer, InspectRequest(container=spec.source.container, runtime=spec.runtime)
        )
        checked = validation.check_container(
            spec,
            info,
            namespace=self.namespace,
            allow_any_namespace=self.settings.allow_any_namespace,
            uid=self.uid,
        )
        runtime = checked.runtime
        if spec.storage.type == StorageType.REGISTRY and runtime != Runtime.PODMAN:
            raise Refusal(
                reason="RegistryNeedsPodman",
                message=f"{spec.source.container} runs in {runtime.value}; checkpoint "
                "images are podman's, so store a docker container's checkpoint on its "
                "node (storage.type: Node)",
            )
        await self.write(runtime=runtime)
        stored = await self.helpers.call(
            peer,
            StoreCheckpointRequest(
                uid=self.uid,
                container=spec.source.container,
                runtime=runtime,
                leave_running=spec.leave_running,
                tcp_established=spec.tcp_established,
                file_locks=spec.file_locks,
                compression=spec.compression,
                image_reference=self._image_reference(),
            ),
        )
        if stored.checkpoint_image:
            where = f"pushed to {stored.checkpoint_image}"
            self.record.update(
                checkpoint_image=CheckpointImage(
                    reference=stored.checkpoint_image,
                    digest=stored.digest or "",
                    bytes=stored.size_bytes,
                ),
                size_bytes=stored.size_bytes,
            )
        else:
            where = f"{stored.size_bytes} bytes stored on {spec.source.node}"
            self.record.update(
                size_bytes=stored.size_bytes,
                archive=Archive(
                    bytes=stored.size_bytes, sha256=stored.sha256, compression=spec.compression
                ),
                encryption=(
                    ArchiveEncryption(
                        algorithm=stored.sealing.algorithm,
                        key_name=stored.sealing.key_name,
                        key_id=stored.sealing.key_id,
                        seconds=stored.seal_seconds,
                    )
                    if stored.sealing is not None
                    else None
                ),
            )
            if stored.sealing is not None:
                where += f", encrypted with key {stored.sealing.key_name!r}"
        await self.write(
            container_name=stored.container_name,
            image=StoredImage(id=stored.image_id, name=stored.image_name),
            checkpoint_time=self.record.clock().replace(microsecond=0),
            checkpoint_seconds=stored.seconds,
            criu_statistics=stored.statistics,
            summary=summary(stored.contents, helper, runtime),
        )
        await self._end(CheckpointPhase.READY, "Stored", where)


async def delete_stored(resource: ContainerCheckpoint, kube: Kube, helpers: HelperClient) -> None:
    """Remove what a checkpoint stored: its archive on its node, or its image in the registry.

    A registry image can be deleted by any ready helper; an archive only by
    its node's, and a node (or helper) that is gone has nothing left to delete.
    """
    node = resource.status.node
    image = resource.status.checkpoint_image
    request = DeleteStoredRequest(uid=resource.metadata.uid or "")
    if image is not None and image.reference:
        request = request.model_copy(
            update={"image_reference": image.reference, "digest": image.digest}
        )
    all_helpers = await kube.node_helpers()
    candidates = [h for n, h in all_helpers.items() if n == node]
    if request.image_reference:
        candidates += [h for n, h in sorted(all_helpers.items()) if n != node]
    for helper in candidates:
        try:
            await helpers.call(peer_of(helper), request)
        except Refusal:
            continue  # a helper that published no address
        except RemoteError as error:
            if kind_of(error) is Kind.TRANSIENT and helper is not candidates[-1]:
                continue
            failure = for_handler(error)  # transient on the last one: kopf tries again
            raise kopf.PermanentError(str(failure)) from None
        return
    if node:
        log.warning("checkpoint %s: no helper can delete it; nothing left", resource.metadata.name)
