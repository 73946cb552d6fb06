"""ContainerRestore: a stored checkpoint brought back as a running container, on any node.

Three ways, by where the checkpoint is and where it should run:

* on its own node: ``restore-stored`` from the node's store;
* from a registry: ``restore-image`` pulls the checkpoint image (its node need
  not be up at all);
* on another node: a migration without the freeze. The same pieces as a
  ContainerMigration's, in the same order: a stream key granted on the
  target, the image shipped with its ID when the target lacks it, the archive
  streamed and checked, the restore (cleaned up if it fails).

A single step, so a kopf create handler, under the one error policy
(:mod:`.policy`): a helper not heard is kopf's ``TemporaryError`` (the helpers'
journals, keyed by the restore's UID, answer a repeated step), anything else
ends ``Failed``.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import kopf
from ferry_api import constants
from ferry_api.checkpoint import (
    CheckpointPhase,
    ContainerCheckpoint,
    ContainerRestore,
    ContainerRestoreStatus,
    RestorePhase,
    StoredImage,
    parse_container_checkpoint,
)
from ferry_api.runtime import Runtime
from ferry_wire import Peer, RemoteError
from ferry_wire.containers import InspectRequest
from ferry_wire.migration import CleanupRequest, Restored, RestoreOptions, RestoreRequest
from ferry_wire.stored import RestoreImageRequest, RestoreStoredRequest, SendStoredRequest

from . import validation
from .helperclient import HelperClient
from .kube import Kube
from .onestep import OneStep
from .peers import Cluster, peer_of, ready_helper
from .policy import HANDLER_RETRY_SECONDS, Kind, Refusal, for_handler, kind_of
from .settings import Settings
from .status import Clock, Events, utc_now

COND_SUCCEEDED = "Succeeded"
RestoreT = TypeVar("RestoreT", bound=RestoreOptions)


class Restorer(OneStep[ContainerRestoreStatus]):
    kind = constants.CONTAINER_RESTORE_KIND
    plural = constants.CONTAINER_RESTORE_PLURAL

    def __init__(
        self,
        *,
        resource: ContainerRestore,
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
        #: The runtime of the checkpoint, known once it is read.
        self.runtime = Runtime.PODMAN

    async def _enter(self, phase: RestorePhase, message: str) -> None:
        started = self.record.status.start_time or self.record.clock().replace(microsecond=0)
        await self.write(
            phase=phase,
            message=message,
            observed_generation=self.record.generation,
            start_time=started,
        )
        self.events.normal(phase.value, message)

    async def _end(self, phase: RestorePhase, reason: str, message: str) -> None:
        await self.end(
            ok=phase == RestorePhase.SUCCEEDED,
            condition=COND_SUCCEEDED,
            phase=phase,
            reason=reason,
            message=message,
            completion_time=self.record.clock().replace(microsecond=0),
        )

    async def run(self) -> None:
        """The restore, within ``spec.timeoutSeconds`` from the handler's first start (over
        kopf's retries and operator restarts)."""
        if self.record.status.phase in (RestorePhase.SUCCEEDED, RestorePhase.FAILED):
            return
        left = self.resource.spec.timeout_seconds - self.elapsed_seconds
        try:
            if left <= 0:
                raise self._timeout()
            async with asyncio.timeout(left) as deadline:
                await self._enter(RestorePhase.VALIDATING, "checking the checkpoint and the node")
                await self._restore()
        except kopf.TemporaryError as error:
            if left > HANDLER_RETRY_SECONDS:
                raise
            await self._end(RestorePhase.FAILED, "Timeout", f"{self._timeout()}: {error}")
        except TimeoutError:
            if not deadline.expired():
                raise
            await self._timed_out()
        except Exception as error:
            # A transient error leaves as kopf's TemporaryError while time is left.
            failure = for_handler(error, retry_left=left)
            await self._end(RestorePhase.FAILED, failure.reason, failure.message)

    def _timeout(self) -> Refusal:
        seconds = self.resource.spec.timeout_seconds
        return Refusal(
            reason="Timeout",
            message=f"the restore did not finish within {seconds}s (spec.timeoutSeconds)",
        )

    async def _timed_out(self) -> None:
        """Past the deadline: what the target may have started goes, then Failed."""
        message = self._timeout().message
        node = self.record.status.node
        if self.peers:
            try:
                await self.helpers.call(
                    self.peers[0],
                    CleanupRequest(uid=self.uid, runtime=self.runtime, remove_restored=True),
                )
            except Exception as error:  # said, and the container name stays taken
                message += f"; removing what it started on {node} failed too: {error}"
        await self._end(RestorePhase.FAILED, "Timeout", message)

    async def _checkpoint(self) -> ContainerCheckpoint:
        ref = self.resource.spec.checkpoint_ref.name
        body = await self.kube.get(constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, ref)
        if body is None:
            raise Refusal(
                reason="CheckpointNotFound",
                message=f"there is no ContainerCheckpoint {ref!r} in namespace {self.namespace}",
            )
        checkpoint = parse_container_checkpoint(body)
        phase = checkpoint.status.phase
        if phase == CheckpointPhase.FAILED:
            raise Refusal(
                reason="CheckpointFailed",
                message=f"ContainerCheckpoint {ref!r} failed: {checkpoint.status.message}",
            )
        if phase != CheckpointPhase.READY:
            raise kopf.TemporaryError(
                f"ContainerCheckpoint {ref!r} is {phase or 'Pending'}, not Ready yet",
                delay=HANDLER_RETRY_SECONDS,
            )
        return checkpoint

    async def _restore(self) -> None:
        spec = self.resource.spec
        checkpoint = await self._checkpoint()
        stored_on = checkpoint.status.node or ""
        node = spec.node or stored_on
        name = spec.name or checkpoint.status.container_name or ""
        image = checkpoint.status.checkpoint_image
        in_registry = image is not None and bool(image.reference)
        self.runtime = checkpoint.status.runtime or Runtime.PODMAN
        cluster = await Cluster.read(self.kube)
        now, stale = self.record.clock(), self.settings.helper_stale_seconds
        target_helper, target = ready_helper(
            cluster, node, "Target", stale_seconds=stale, now=now, runtime=self.runtime
        )
        if in_registry:
            # In a registry: the checkpoint's own node need not be up at all.
            source_helper = cluster.helpers.get(stored_on)
        else:
            source_helper, _ = ready_helper(
                cluster, stored_on, "Checkpoint", stale_seconds=stale, now=now
            )
        if node != stored_on and source_helper is not None:
            validation.check_compatible(source_helper, target_helper)
        self.peers.append(target)
        validation.check_target_free(
            name,
            node,
            await self.helpers.inspect(
                target, InspectRequest(container=name, runtime=self.runtime)
            ),
        )
        await self.write(node=node, container_name=name)

        def asking(model: type[RestoreT], **more: Any) -> RestoreT:
            """A restore request of ``model`` with this restore's name and CRIU options."""
            return model(
                uid=self.uid,
                name=name,
                runtime=self.runtime,
                tcp_established=spec.tcp_established,
                file_locks=spec.file_locks,
                **more,
            )

        if in_registry and image is not None and image.reference:
            await self._enter(
                RestorePhase.RESTORING, f"pulling {image.reference} and restoring {name} on {node}"
            )
            result = await self._restore_or_clean(
                target,
                asking(RestoreImageRequest, reference=image.reference, digest=image.digest or None),
            )
        elif node == stored_on:
            await self._enter(RestorePhase.RESTORING, f"restoring {name} on {node}")
            result = await self.helpers.call(
                target,
                asking(
                    RestoreStoredRequest,
                    checkpoint_uid=checkpoint.metadata.uid or "",
                    sha256=_recorded_sha256(checkpoint),
                ),
            )
        else:
            await self._enter(
                RestorePhase.TRANSFERRING, f"shipping the checkpoint from {stored_on} to {node}"
            )
            if source_helper is None:  # node storage checked its helper above
                raise Refusal(reason="CheckpointNotReady", message=f"no helper on {stored_on}")
            source = peer_of(source_helper)
            self.peers.append(source)
            await self._ship(checkpoint, source, target)
            await self._enter(RestorePhase.RESTORING, f"restoring {name} on {node}")
            result = await self._restore_or_clean(target, asking(RestoreRequest))
        await self.helpers.call(target, CleanupRequest(uid=self.uid, runtime=self.runtime))
        await self.write(container_id=result.container_id, restore_seconds=result.seconds)
        await self._end(
            RestorePhase.SUCCEEDED,
            "Restored",
            f"{name} runs on {node} ({result.container_id[:12]})",
        )

    async def _restore_or_clean(
        self, target: Peer, request: RestoreRequest | RestoreImageRequest
    ) -> Restored:
        """Run the restore; if it fails, remove what it left on the target before saying so."""
        try:
            return await self.helpers.call(target, request)
        except RemoteError as error:
            if kind_of(error) is not Kind.TRANSIENT:
                await self.helpers.call(
                    target, CleanupRequest(uid=self.uid, runtime=self.runtime, remove_restored=True)
                )
            raise

    async def _ship(self, checkpoint: ContainerCheckpoint, source: Peer, target: Peer) -> None:
        """The image (when the target lacks it) and the archive, under one per-restore key."""
        credential = await self.helpers.grant_stream(
            target, uid=self.uid, ttl_seconds=self.resource.spec.timeout_seconds
        )

        async def granted() -> str:
            return credential

        image = checkpoint.status.image or StoredImage()
        if image.id:
            await self.helpers.ship_image(
                source,
                target,
                uid=self.uid,
                image_id=image.id,
                image_name=image.name or "",
                runtime=self.runtime,
                credential=granted,
            )
        sent = await self.helpers.call(
            source,
            SendStoredRequest(
                uid=self.uid,
                checkpoint_uid=checkpoint.metadata.uid or "",
                target=target,
                credential=credential,
                sha256=_recorded_sha256(checkpoint),
            ),
        )
        await self.write(transfer_seconds=sent.seconds)


def _recorded_sha256(checkpoint: ContainerCheckpoint) -> str | None:
    """The archive's digest as the API server holds it: the helper checks the stored file
    against it before a restore or a send (``CheckpointTampered``)."""
    archive = checkpoint.status.archive
    return archive.sha256 if archive is not None else None
