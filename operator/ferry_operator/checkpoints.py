"""ContainerCheckpoint and ContainerRestore: one kopf handler each, idempotent on the helpers.

Both follow the migration's rules: validate first (nothing on a node changes
until the request is known to be possible), write the phase before each step so
``kubectl get`` shows where it is, and end ``Failed`` with a reason and a
message that says what to change. A helper that cannot be reached is a
temporary error: kopf retries the handler, and the helpers' journal (keyed by
the resource's UID) answers a step that already ran, so nothing runs twice.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import kopf
from croniter import croniter
from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.checkpoint import (
    CheckpointImage,
    CheckpointPhase,
    ContainerCheckpoint,
    ContainerRestore,
    ContainerRestoreStatus,
    RestorePhase,
    StorageType,
    StoredImage,
    parse_container_checkpoint,
)
from ferry_api.conditions import Condition, Conditions, ConditionStatus, set_condition
from ferry_api.diagnostics import CheckpointSummary, FailureLogs
from ferry_api.meta import ObjectMeta
from ferry_api.migration import Archive, CriuStatistics
from ferry_api.nodehelper import NodeHelper
from ferry_api.runtime import Runtime
from ferry_helper.protocol import Operation, Peer, RemoteError
from pydantic import BaseModel

from . import failurelogs, validation
from .helperclient import HelperClient
from .kube import Kube
from .machine import TRANSPORT_FAILURES, peer_of
from .settings import Settings
from .validation import Refusal

log = logging.getLogger(__name__)

COND_READY = "Ready"
COND_SUCCEEDED = "Succeeded"
#: How long kopf waits before running a handler again after a helper was unreachable.
RETRY_DELAY_SECONDS = 10
#: The longest label value Kubernetes accepts.
MAX_LABEL_VALUE = 63


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _condition(
    conditions: Conditions,
    type_: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str,
    generation: int | None,
) -> Conditions:
    return set_condition(
        conditions,
        Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
        ),
        now=datetime.datetime.now(datetime.UTC),
    )


def _temporary(error: RemoteError) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{error.reason}: {error.message}", delay=RETRY_DELAY_SECONDS)


@dataclass(frozen=True)
class Cluster:
    """The nodes and their helpers, read once per handler run."""

    nodes: list[str]
    helpers: dict[str, NodeHelper]

    @classmethod
    async def read(cls, kube: Kube) -> Cluster:
        return cls(nodes=await kube.node_names(), helpers=await kube.node_helpers())


def _ready_helper(
    cluster: Cluster,
    settings: Settings,
    node: str,
    reason: str,
    *,
    runtime: Runtime | None = None,
) -> tuple[NodeHelper, Peer]:
    """The node's helper, ready; with ``runtime`` (when known) among the node's runtimes."""
    if node not in cluster.nodes:
        raise Refusal(
            reason=f"{reason}NodeNotFound",
            message=f"there is no node {node!r}; nodes: {', '.join(sorted(cluster.nodes))}",
        )
    helper = cluster.helpers.get(node)
    problem = validation.helper_problem(
        helper,
        node=node,
        runtime=None,
        now=datetime.datetime.now(datetime.UTC),
        stale_seconds=settings.helper_stale_seconds,
    )
    if problem or helper is None:
        raise Refusal(reason=f"{reason}NotReady", message=problem or "no helper")
    if runtime is not None and Runtime(runtime.value) not in {
        r.name for r in helper.status.runtimes
    }:
        raise Refusal(
            reason="IncompatibleRuntime",
            message=f"the checkpoint was made by {runtime.value}, and node {node} has no "
            f"{runtime.value}: a checkpoint restores only into the runtime that made it",
        )
    return helper, peer_of(helper)


def _summary(contents: Any, helper: NodeHelper, runtime: Runtime) -> CheckpointSummary | None:
    """What the helper read from the checkpoint's images, with what its node runs."""
    if not isinstance(contents, dict):
        return None  # an archive or image the helper could not read
    made_by = next((r for r in helper.status.runtimes if r.name.value == runtime.value), None)
    criu = helper.status.criu
    return CheckpointSummary.model_validate(
        {
            **contents,
            "runtime": made_by,
            "criuVersion": criu.version if criu else None,
            "kernel": helper.status.kernel,
        }
    )


class _Step:
    """What handling one of these resources needs: where it is, its body, the clients."""

    plural: ClassVar[str]
    kind: ClassVar[str]

    def __init__(
        self,
        *,
        metadata: ObjectMeta,
        body: kopf.Body,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
    ) -> None:
        self.body = body
        self.kube = kube
        self.helpers = helpers
        self.settings = settings
        self.generation = metadata.generation
        self.uid = metadata.uid or ""
        self.namespace = metadata.namespace or ""
        self.name = metadata.name or ""
        #: The helpers this resource has asked for something, whose logs tell of a failure.
        self.peers: list[Peer] = []

    async def _patch(self, status: BaseModel) -> None:
        await self.kube.patch_status(self.plural, self.namespace, self.name, to_wire(status))

    async def _failure_logs(self) -> FailureLogs | None:
        """Copy the helpers' logs of this resource's failed steps into its ConfigMap."""
        if not self.peers:
            return None
        return await failurelogs.collect(
            kube=self.kube,
            helpers=self.helpers,
            owner=failurelogs.Owner(
                kind=self.kind, name=self.name, namespace=self.namespace, uid=self.uid
            ),
            peers=self.peers,
        )

    def _with_logs_hint(self, message: str, logs: FailureLogs | None) -> str:
        if logs is None:
            return message
        kind = self.kind.removeprefix("Container").lower()
        return f"{message} (full logs: kubectl ferry logs --kind {kind} {self.name})"


# -- ContainerCheckpoint ---------------------------------------------------------


class CheckpointTaker(_Step):
    plural = constants.CONTAINER_CHECKPOINT_PLURAL
    kind = constants.CONTAINER_CHECKPOINT_KIND

    def __init__(self, *, resource: ContainerCheckpoint, **clients: Any) -> None:
        super().__init__(metadata=resource.metadata, **clients)
        self.resource = resource
        self.status = resource.status

    async def _write(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)
        await self._patch(self.status)

    async def _end(self, phase: CheckpointPhase, reason: str, message: str) -> None:
        ready = ConditionStatus.TRUE if phase == CheckpointPhase.READY else ConditionStatus.FALSE
        logs = await self._failure_logs() if phase == CheckpointPhase.FAILED else None
        conditions = _condition(
            self.status.conditions,
            COND_READY,
            ready,
            reason=reason,
            message=message,
            generation=self.generation,
        )
        await self._write(
            phase=phase,
            message=self._with_logs_hint(message, logs),
            conditions=conditions,
            failure_logs=logs,
        )
        kind = "Normal" if phase == CheckpointPhase.READY else "Warning"
        kopf.event(self.body, type=kind, reason=reason, message=message)

    def _image_reference(self) -> str | None:
        """``repository:<name>-<uid>`` for registry storage; None for the node's store."""
        storage = self.resource.spec.storage
        if storage.type != StorageType.REGISTRY:
            return None
        # A tag holds at most 128 characters; a name may have 253.
        return f"{storage.repository}:{self.name[:110]}-{self.uid[:8]}"

    async def run(self) -> None:
        if self.status.phase in (
            CheckpointPhase.READY,
            CheckpointPhase.FAILED,
            CheckpointPhase.SCHEDULED,
        ):
            return
        spec = self.resource.spec
        if spec.schedule and len(self.name) > MAX_LABEL_VALUE:
            await self._end(
                CheckpointPhase.FAILED,
                "NameTooLong",
                f"a schedule's name labels its checkpoints ({constants.SCHEDULE_LABEL}), "
                f"so it may have at most {MAX_LABEL_VALUE} characters",
            )
            return
        if spec.schedule:
            await self._write(
                phase=CheckpointPhase.SCHEDULED,
                observed_generation=self.generation,
                message=f"checkpoints {spec.source.container} on {spec.source.node} at "
                f"{spec.schedule!r}, keeping the newest {spec.keep}",
            )
            return
        try:
            await self._write(
                phase=CheckpointPhase.CHECKPOINTING,
                node=spec.source.node,
                observed_generation=self.generation,
                message=f"checkpointing {spec.source.container} on {spec.source.node}",
            )
            helper, peer = _ready_helper(
                await Cluster.read(self.kube), self.settings, spec.source.node, "Source"
            )
            self.peers.append(peer)
            asked = spec.runtime.value if spec.runtime else None
            info = await self.helpers.inspect(peer, spec.source.container, runtime=asked)
            checked = validation.check_container(
                spec,
                info,
                namespace=self.namespace,
                allow_any_namespace=self.settings.allow_any_namespace,
                uid=self.uid,
            )
            runtime = Runtime(str(checked.get("runtime") or "podman"))
            if spec.storage.type == StorageType.REGISTRY and runtime != Runtime.PODMAN:
                raise Refusal(
                    reason="RegistryNeedsPodman",
                    message=f"{spec.source.container} runs in {runtime.value}; checkpoint "
                    "images are podman's, so store a docker container's checkpoint on its "
                    "node (storage.type: Node)",
                )
            await self._write(runtime=runtime)
            result = await self.helpers.call(
                peer,
                Operation.STORE_CHECKPOINT,
                {
                    "uid": self.uid,
                    "container": spec.source.container,
                    "leave_running": spec.leave_running,
                    "tcp_established": spec.tcp_established,
                    "file_locks": spec.file_locks,
                    "compression": spec.compression.value,
                    "image_reference": self._image_reference(),
                    "runtime": runtime.value,
                },
            )
        except Refusal as refusal:
            await self._end(CheckpointPhase.FAILED, refusal.reason, refusal.message)
            return
        except RemoteError as error:
            if error.reason in TRANSPORT_FAILURES:
                raise _temporary(error) from None
            await self._end(CheckpointPhase.FAILED, error.reason, error.message)
            return
        stored: dict[str, Any] = {}
        if result.get("checkpointImage"):
            stored["checkpoint_image"] = CheckpointImage(
                reference=str(result["checkpointImage"]),
                digest=str(result["digest"]),
                bytes=result.get("sizeBytes"),
            )
            where = f"pushed to {result['checkpointImage']}"
        else:
            stored["archive"] = Archive(
                bytes=int(result["sizeBytes"]),
                sha256=str(result["sha256"]),
                compression=spec.compression,
            )
            where = f"{result['sizeBytes']} bytes stored on {spec.source.node}"
        await self._write(
            container_name=str(result["containerName"]),
            image=StoredImage(id=str(result["imageId"]), name=str(result["imageName"] or "")),
            checkpoint_time=_now(),
            checkpoint_seconds=float(result["seconds"]),
            criu_statistics=CriuStatistics.model_validate(result.get("statistics") or {}),
            summary=_summary(result.get("contents"), helper, runtime),
            **stored,
        )
        await self._end(CheckpointPhase.READY, "Stored", where)


async def delete_stored(resource: ContainerCheckpoint, kube: Kube, helpers: HelperClient) -> None:
    """Remove what a checkpoint stored: its archive on its node, or its image in the registry.

    A registry image can be deleted by any ready helper; an archive only by
    its node's, and a node (or helper) that is gone has nothing left to delete.
    """
    node = resource.status.node
    image = resource.status.checkpoint_image
    request: dict[str, Any] = {"uid": resource.metadata.uid}
    if image is not None and image.reference:
        request |= {"image_reference": image.reference, "digest": image.digest}
    all_helpers = await kube.node_helpers()
    candidates = [h for n, h in all_helpers.items() if n == node]
    if "image_reference" in request:
        candidates += [h for n, h in sorted(all_helpers.items()) if n != node]
    for helper in candidates:
        try:
            await helpers.call(peer_of(helper), Operation.DELETE_STORED, request)
        except RemoteError as error:
            if error.reason in TRANSPORT_FAILURES:
                if helper is not candidates[-1]:
                    continue
                raise _temporary(error) from None
            raise kopf.PermanentError(f"{error.reason}: {error.message}") from None
        except Refusal:
            continue  # a helper that published no address
        return
    if node:
        log.warning("checkpoint %s: no helper can delete it; nothing left", resource.metadata.name)


# -- schedules -------------------------------------------------------------------


def next_run(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first time ``schedule`` names after ``after`` (a sixth field: seconds, first)."""
    six = len(schedule.split()) == 6
    found: datetime.datetime = croniter(schedule, after, second_at_beginning=six).get_next(
        datetime.datetime
    )
    return found


def to_prune(children: list[dict[str, Any]], keep: int) -> list[str]:
    """Names of the checkpoints past the newest ``keep``, by creation time then name."""
    ordered = sorted(
        children,
        key=lambda c: (c["metadata"].get("creationTimestamp", ""), c["metadata"]["name"]),
        reverse=True,
    )
    return [c["metadata"]["name"] for c in ordered[keep:]]


class Scheduler:
    """A scheduled ContainerCheckpoint: one child checkpoint per run, the newest ``keep`` kept.

    Like a CronJob's Jobs, the children carry an owner reference to it (a real
    cluster's garbage collector removes them with it) and a label naming it; the
    delete handler also removes them itself, so nothing depends on a
    controller-manager. A missed run is not made up: the next one is due from
    the last run, or from the creation, so an operator that was down makes one
    checkpoint on return, not a burst.
    """

    def __init__(self, *, resource: ContainerCheckpoint, kube: Kube) -> None:
        self.resource = resource
        self.kube = kube
        self.namespace = resource.metadata.namespace or ""
        self.name = resource.metadata.name or ""

    def _child(self, now: datetime.datetime) -> dict[str, Any]:
        spec = self.resource.spec
        child_spec = to_wire(spec.model_copy(update={"schedule": None}))
        child_spec.pop("keep", None)
        return {
            "apiVersion": constants.API_VERSION,
            "kind": constants.CONTAINER_CHECKPOINT_KIND,
            "metadata": {
                "name": f"{self.name[:230]}-{now:%Y%m%d%H%M%S}",
                "labels": {constants.SCHEDULE_LABEL: self.name},
                "ownerReferences": [
                    {
                        "apiVersion": constants.API_VERSION,
                        "kind": constants.CONTAINER_CHECKPOINT_KIND,
                        "name": self.name,
                        "uid": self.resource.metadata.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": child_spec,
        }

    async def children(self) -> list[dict[str, Any]]:
        return await self.kube.list_labelled(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            self.namespace,
            selector=f"{constants.SCHEDULE_LABEL}={self.name}",
        )

    def due(
        self, now: datetime.datetime, *, ran: datetime.datetime | None = None
    ) -> datetime.datetime:
        """When the next checkpoint is due: after the last run (``ran``, or the one status
        records, whichever is later), or after the creation."""
        recorded = self.resource.status.last_schedule_time
        runs = [t for t in (ran, recorded) if t is not None]
        since = max(runs) if runs else (self.resource.metadata.creation_timestamp or now)
        return next_run(self.resource.spec.schedule or "", since)

    async def run(self, now: datetime.datetime) -> None:
        """Make this run's checkpoint, prune past ``keep``, record the run in status."""
        spec = self.resource.spec
        child = self._child(now)
        await self.kube.create(constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, child)
        children = await self.children()
        pruned = to_prune(children, spec.keep)
        for name in pruned:
            await self.kube.delete(constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, name)
        kept = [c["metadata"]["name"] for c in children if c["metadata"]["name"] not in pruned]
        await self.kube.patch_status(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            self.namespace,
            self.name,
            {
                "lastScheduleTime": now.isoformat().replace("+00:00", "Z"),
                "checkpoints": sorted(kept, reverse=True),
            },
        )

    async def delete_children(self) -> None:
        for child in await self.children():
            await self.kube.delete(
                constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, child["metadata"]["name"]
            )


# -- ContainerRestore ------------------------------------------------------------


class Restorer(_Step):
    plural = constants.CONTAINER_RESTORE_PLURAL
    kind = constants.CONTAINER_RESTORE_KIND

    def __init__(self, *, resource: ContainerRestore, **clients: Any) -> None:
        super().__init__(metadata=resource.metadata, **clients)
        self.resource = resource
        self.status: ContainerRestoreStatus = resource.status
        #: The runtime of the checkpoint, known once it is read.
        self.runtime = Runtime.PODMAN

    async def _write(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)
        await self._patch(self.status)

    async def _enter(self, phase: RestorePhase, message: str) -> None:
        await self._write(phase=phase, message=message, observed_generation=self.generation)
        kopf.event(self.body, type="Normal", reason=phase.value, message=message)

    async def _end(self, phase: RestorePhase, reason: str, message: str) -> None:
        ok = ConditionStatus.TRUE if phase == RestorePhase.SUCCEEDED else ConditionStatus.FALSE
        logs = await self._failure_logs() if phase == RestorePhase.FAILED else None
        conditions = _condition(
            self.status.conditions,
            COND_SUCCEEDED,
            ok,
            reason=reason,
            message=message,
            generation=self.generation,
        )
        await self._write(
            phase=phase,
            message=self._with_logs_hint(message, logs),
            conditions=conditions,
            completion_time=_now(),
            failure_logs=logs,
        )
        kind = "Normal" if phase == RestorePhase.SUCCEEDED else "Warning"
        kopf.event(self.body, type=kind, reason=reason, message=message)

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
                delay=RETRY_DELAY_SECONDS,
            )
        return checkpoint

    async def run(self) -> None:
        if self.status.phase in (RestorePhase.SUCCEEDED, RestorePhase.FAILED):
            return
        try:
            await self._enter(RestorePhase.VALIDATING, "checking the checkpoint and the node")
            await self._restore()
        except Refusal as refusal:
            await self._end(RestorePhase.FAILED, refusal.reason, refusal.message)
        except RemoteError as error:
            if error.reason in TRANSPORT_FAILURES:
                raise _temporary(error) from None
            await self._end(RestorePhase.FAILED, error.reason, error.message)

    async def _restore(self) -> None:
        spec = self.resource.spec
        checkpoint = await self._checkpoint()
        stored_on = checkpoint.status.node or ""
        node = spec.node or stored_on
        name = spec.name or checkpoint.status.container_name or ""
        image = checkpoint.status.checkpoint_image
        self.runtime = checkpoint.status.runtime or Runtime.PODMAN
        cluster = await Cluster.read(self.kube)
        target_helper, target = _ready_helper(
            cluster, self.settings, node, "Target", runtime=self.runtime
        )
        if image is not None and image.reference:
            # In a registry: the checkpoint's own node need not be up at all.
            source_helper = cluster.helpers.get(stored_on)
        else:
            source_helper, _ = _ready_helper(cluster, self.settings, stored_on, "Checkpoint")
        if node != stored_on and source_helper is not None:
            validation.check_compatible(source_helper, target_helper)
        self.peers.append(target)
        validation.check_target_free(
            name, node, await self.helpers.inspect(target, name, runtime=self.runtime.value)
        )
        await self._write(node=node, container_name=name)
        request = {
            "uid": self.uid,
            "name": name,
            "tcp_established": spec.tcp_established,
            "file_locks": spec.file_locks,
            "runtime": self.runtime.value,
        }
        if image is not None and image.reference:
            await self._enter(
                RestorePhase.RESTORING, f"pulling {image.reference} and restoring {name} on {node}"
            )
            result = await self._restore_or_clean(
                target, Operation.RESTORE_IMAGE, {**request, "reference": image.reference}
            )
        elif node == stored_on:
            await self._enter(RestorePhase.RESTORING, f"restoring {name} on {node}")
            result = await self.helpers.call(
                target,
                Operation.RESTORE_STORED,
                {**request, "checkpoint_uid": checkpoint.metadata.uid},
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
            result = await self._restore_or_clean(target, Operation.RESTORE, request)
        await self.helpers.call(target, Operation.CLEANUP, {"uid": self.uid})
        await self._write(
            container_id=str(result["containerId"]), restore_seconds=float(result["seconds"])
        )
        await self._end(
            RestorePhase.SUCCEEDED,
            "Restored",
            f"{name} runs on {node} ({result['containerId'][:12]})",
        )

    async def _restore_or_clean(
        self, target: Peer, operation: Operation, request: dict[str, Any]
    ) -> dict[str, Any]:
        """Run the restore; if it fails, remove what it left on the target before saying so."""
        try:
            return await self.helpers.call(target, operation, request)
        except RemoteError as error:
            if error.reason not in TRANSPORT_FAILURES:
                await self.helpers.call(
                    target,
                    Operation.CLEANUP,
                    {"uid": self.uid, "remove_restored": True, "runtime": self.runtime.value},
                )
            raise

    async def _ship(self, checkpoint: ContainerCheckpoint, source: Peer, target: Peer) -> None:
        """The image (when the target lacks it) and the archive, under one per-restore key."""
        credential = await self.helpers.grant_stream(
            target, uid=self.uid, ttl_seconds=self.resource.spec.timeout_seconds
        )
        image = checkpoint.status.image or StoredImage()
        if image.id:
            present = await self.helpers.call(
                target, Operation.IMAGE_HAS, {"image_id": image.id, "runtime": self.runtime.value}
            )
            if not present.get("present"):
                await self.helpers.send_image(
                    source,
                    target,
                    uid=self.uid,
                    image_id=image.id,
                    image_name=image.name or "",
                    credential=credential,
                    runtime=self.runtime.value,
                )
        sent = await self.helpers.call(
            source,
            Operation.SEND_STORED,
            {
                "uid": self.uid,
                "checkpoint_uid": checkpoint.metadata.uid,
                "target": target.model_dump(),
                "credential": credential,
            },
        )
        await self._write(transfer_seconds=float(sent["seconds"]))
