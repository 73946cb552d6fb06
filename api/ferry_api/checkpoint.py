"""ContainerCheckpoint and ContainerRestore: checkpoints that outlive the moment they were taken.

A ContainerCheckpoint dumps a running container (leaving it running by
default) and keeps the archive where it was taken, in the node-helper's
private store, until the resource is deleted. A ContainerRestore starts a
container from a Ready checkpoint, on the checkpoint's node or another one
(the archive and, when missing, the image are shipped there first), under the
original name or a new one. Both are actions: their spec cannot change.

Uses: rolling a container back to a known state (restore on its own node,
after removing the running one or under another name), and starting a copy
from a warmed-up state elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from croniter import croniter
from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.conditions import Conditions
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.diagnostics import CheckpointSummary, FailureLogs
from ferry_api.meta import ObjectMeta
from ferry_api.migration import (
    CONTAINER_PATTERN,
    Archive,
    Compression,
    CriuStatistics,
    NodeName,
    Seconds,
    SourceRef,
)
from ferry_api.runtime import Runtime

IMMUTABLE_CHECKPOINT_MESSAGE = (
    "spec is immutable: a ContainerCheckpoint is an action; create a new one"
)
IMMUTABLE_RESTORE_MESSAGE = "spec is immutable: a ContainerRestore is an action; create a new one"


class CheckpointPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    CHECKPOINTING = "Checkpointing"
    READY = "Ready"
    FAILED = "Failed"


class StorageType(StrEnum):
    NODE = "Node"
    REGISTRY = "Registry"


REPOSITORY_PATTERN = r"^[a-zA-Z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$"
REGISTRY_NEEDS_REPOSITORY = "storage.repository is required when storage.type is Registry"


class CheckpointStorage(SpecModel):
    """Where the checkpoint is kept."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type != 'Registry' || has(self.repository)",
                    "message": REGISTRY_NEEDS_REPOSITORY,
                }
            ]
        }
    )

    type: StorageType = Field(
        default=StorageType.NODE,
        description="Node: an archive in the node-helper's store on the container's node "
        "(restorable anywhere, shipped over SSH). Registry: a checkpoint image (podman's "
        "checkpoint annotations) pushed to storage.repository, which any node can pull.",
    )
    repository: str | None = Field(
        default=None,
        max_length=255,
        pattern=REPOSITORY_PATTERN,
        description="Registry repository (host[:port]/path) for type Registry; the image is "
        "tagged with the checkpoint's name and UID. The helpers' credentials come from the "
        "chart's nodeHelper.registryAuthSecret.",
    )

    @model_validator(mode="after")
    def _registry_has_a_repository(self) -> CheckpointStorage:
        if self.type == StorageType.REGISTRY and not self.repository:
            raise ValueError(REGISTRY_NEEDS_REPOSITORY)
        return self


class CheckpointTemplateSpec(SpecModel):
    """What to checkpoint and how: a ContainerCheckpoint's spec, and a schedule's template."""

    source: SourceRef = Field(description="The container to checkpoint and the node it runs on.")
    leave_running: bool = Field(
        default=True,
        description="Keep the container running after the checkpoint (off: it is stopped).",
    )
    tcp_established: bool = Field(
        default=False,
        description="Checkpoint established TCP connections (CRIU --tcp-established). They "
        "can be restored only where the container's address is: on this node (a restore "
        "elsewhere fails: the address does not move between nodes).",
    )
    file_locks: bool = Field(
        default=False, description="Checkpoint file locks (CRIU --file-locks)."
    )
    compression: Compression = Field(
        default=Compression.ZSTD, description="Compression of the stored archive."
    )
    runtime: Runtime | None = Field(
        default=None,
        description="Container runtime that runs the container (podman or docker). Default: "
        "whichever runtime of the node has it (podman first). Registry storage needs podman.",
    )
    # A factory, not a default object: the CRD then carries no default holding
    # ``repository: null``, which the API server refuses.
    storage: CheckpointStorage = Field(
        default_factory=CheckpointStorage,
        description="Where the checkpoint is kept; absent: on the container's node.",
    )


class ContainerCheckpointSpec(CheckpointTemplateSpec):
    """What to checkpoint and how; immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": IMMUTABLE_CHECKPOINT_MESSAGE}
            ]
        }
    )

    schedule: str | None = Field(
        default=None,
        max_length=100,
        description="Deprecated: use a ContainerCheckpointSchedule (its keep can change, it can "
        "be suspended, and deleting it keeps its checkpoints). Cron schedule (five fields, "
        "as a CronJob's; an optional sixth, leading field gives seconds). With it this "
        "resource checkpoints nothing itself: at each time it creates a ContainerCheckpoint "
        f"<name>-<time> with this spec, labelled {constants.SCHEDULE_LABEL}=<name>, owned by "
        "it, and keeps the newest `keep` of them.",
    )
    keep: int = Field(
        default=3,
        ge=1,
        le=100,
        description="With schedule: how many of its checkpoints to keep; older ones are deleted.",
    )

    @model_validator(mode="after")
    def _schedule_is_cron(self) -> ContainerCheckpointSpec:
        if self.schedule is not None and not is_valid_schedule(self.schedule):
            raise ValueError(
                f"schedule {self.schedule!r} is not a cron expression of 5 fields "
                "(or 6, seconds first)"
            )
        return self


def is_valid_schedule(schedule: str) -> bool:
    fields = schedule.split()
    return len(fields) in (5, 6) and croniter.is_valid(
        schedule, second_at_beginning=len(fields) == 6
    )


class StoredImage(StatusModel):
    """The image the checkpointed container runs, needed wherever it is restored."""

    id: str | None = Field(default=None, description="Image ID.")
    name: str | None = Field(default=None, description="Image name, when it has one.")


class CheckpointImage(StatusModel):
    """A checkpoint kept as an image in a registry."""

    reference: str | None = Field(default=None, description="Image reference (with its tag).")
    digest: str | None = Field(default=None, description="Manifest digest the registry gave it.")
    bytes: int | None = Field(
        default=None, ge=0, description="Size of the image (checkpoint and rootfs changes)."
    )


class ArchiveEncryption(StatusModel):
    """How a stored archive is encrypted at rest (the chart's checkpoints.encryption)."""

    algorithm: str = Field(description="AES-256-GCM-STREAM-1MiB: AES-256-GCM over 1 MiB chunks.")
    key_name: str = Field(description="The key's name in the helpers' checkpoint-keys Secret.")
    key_id: str | None = Field(
        default=None,
        validation_alias="keyID",
        serialization_alias="keyID",
        pattern=r"^[0-9a-f]{16}$",
        description="The key's id (an HMAC of the key, revealing nothing of it): a node that "
        "lacks this key refuses the restore (CheckpointKeyMissing).",
    )
    deprecated_key_id: str | None = Field(
        default=None,
        alias="keyId",
        description="Deprecated: keyID's former name, on checkpoints written before it.",
    )
    seconds: Seconds | None = Field(
        default=None, description="How long encrypting the archive took, after the dump."
    )


class ContainerCheckpointStatus(StatusModel):
    """Where the checkpoint is and what it holds."""

    phase: CheckpointPhase | None = Field(default=None, description="Where the checkpoint is.")
    conditions: Conditions = ()
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    node: str | None = Field(default=None, description="Node whose helper stores the archive.")
    container_name: str | None = Field(
        default=None, description="Name the container had when it was checkpointed."
    )
    runtime: Runtime | None = Field(
        default=None, description="The runtime the container ran in (a restore uses the same)."
    )
    image: StoredImage | None = Field(default=None, description="The container's image.")
    size_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Bytes stored, wherever: the archive on its node, or the registry image.",
    )
    archive: Archive | None = Field(
        default=None,
        description="The stored archive (type Node); its sha256 (of the encrypted file when "
        "encrypted) is checked before any restore (CheckpointTampered).",
    )
    encryption: ArchiveEncryption | None = Field(
        default=None, description="Set when the archive is stored encrypted."
    )
    checkpoint_image: CheckpointImage | None = Field(
        default=None, description="The pushed checkpoint image (type Registry)."
    )
    checkpoint_time: AwareDatetime | None = Field(
        default=None, description="When the container was checkpointed."
    )
    checkpoint_seconds: Seconds | None = Field(
        default=None, description="How long the checkpoint took."
    )
    criu_statistics: CriuStatistics | None = Field(
        default=None, description="Statistics CRIU reported for the dump (microseconds)."
    )
    summary: CheckpointSummary | None = Field(
        default=None, description="What the checkpoint holds and what made it."
    )
    message: str | None = Field(default=None, description="The latest news, e.g. why it failed.")
    failure_logs: FailureLogs | None = Field(
        default=None, description="Where the full logs of the failed step are, when one failed."
    )
    last_schedule_time: AwareDatetime | None = Field(
        default=None, description="With schedule: when it last made a checkpoint."
    )
    checkpoints: tuple[str, ...] = Field(
        default=(), description="With schedule: the checkpoints it keeps, newest first."
    )


class ContainerCheckpoint(StatusModel):
    api_version: str = constants.API_VERSION
    kind: str = constants.CONTAINER_CHECKPOINT_KIND
    metadata: ObjectMeta
    spec: ContainerCheckpointSpec
    status: ContainerCheckpointStatus = ContainerCheckpointStatus()


def parse_container_checkpoint(body: Mapping[str, Any]) -> ContainerCheckpoint:
    return parse_body(ContainerCheckpoint, body, kind=constants.CONTAINER_CHECKPOINT_KIND)


class RestorePhase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    TRANSFERRING = "Transferring"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class CheckpointRef(SpecModel):
    """A ContainerCheckpoint in the restore's own namespace."""

    name: str = Field(min_length=1, max_length=253, description="Its metadata.name.")


class ContainerRestoreSpec(SpecModel):
    """Which checkpoint to start a container from, where, and under which name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": IMMUTABLE_RESTORE_MESSAGE}
            ]
        }
    )

    checkpoint_ref: CheckpointRef = Field(description="The Ready checkpoint to restore.")
    node: NodeName | None = Field(
        default=None, description="Node to restore on; default: the checkpoint's node."
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=CONTAINER_PATTERN,
        description="Name of the restored container; default: the name it was checkpointed "
        "with. The node must have no container of that name.",
    )
    tcp_established: bool = Field(
        default=False,
        description="Restore established TCP connections (CRIU --tcp-established): on the "
        "node they were checkpointed on only (they need the container's old address).",
    )
    file_locks: bool = Field(default=False, description="Restore file locks (CRIU --file-locks).")
    timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="Give up when the restore takes longer."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=31_536_000,
        description="Delete the resource this long after it finished (Succeeded or Failed), "
        "as a Job's ttlSecondsAfterFinished; the restored container is not touched.",
    )


class ContainerRestoreStatus(StatusModel):
    phase: RestorePhase | None = Field(default=None, description="Where the restore is.")
    conditions: Conditions = ()
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    node: str | None = Field(default=None, description="Node the container is restored on.")
    container_name: str | None = Field(default=None, description="Name of the restored container.")
    container_id: str | None = Field(
        default=None,
        description="ID of the restored container.",
        validation_alias="containerID",
        serialization_alias="containerID",
    )
    deprecated_container_id: str | None = Field(
        default=None,
        alias="containerId",
        description="Deprecated: containerID's former name, on restores written before it.",
    )
    transfer_seconds: Seconds | None = Field(
        default=None, description="Shipping the archive to another node, when it was needed."
    )
    restore_seconds: Seconds | None = Field(default=None, description="The restore itself.")
    start_time: AwareDatetime | None = Field(
        default=None, description="When the operator began the restore."
    )
    completion_time: AwareDatetime | None = Field(
        default=None, description="When the restore reached a final phase."
    )
    message: str | None = Field(default=None, description="The latest news, e.g. why it failed.")
    failure_logs: FailureLogs | None = Field(
        default=None, description="Where the full logs of the failed step are, when one failed."
    )


class ContainerRestore(StatusModel):
    api_version: str = constants.API_VERSION
    kind: str = constants.CONTAINER_RESTORE_KIND
    metadata: ObjectMeta
    spec: ContainerRestoreSpec
    status: ContainerRestoreStatus = ContainerRestoreStatus()


def parse_container_restore(body: Mapping[str, Any]) -> ContainerRestore:
    return parse_body(ContainerRestore, body, kind=constants.CONTAINER_RESTORE_KIND)


_AGE = PrinterColumn(
    name="Age",
    json_path=".metadata.creationTimestamp",
    type="date",
    description="Time since creation.",
)

CHECKPOINT_DEFINITION = ResourceDefinition(
    kind=constants.CONTAINER_CHECKPOINT_KIND,
    list_kind=constants.CONTAINER_CHECKPOINT_LIST_KIND,
    plural=constants.CONTAINER_CHECKPOINT_PLURAL,
    singular=constants.CONTAINER_CHECKPOINT_SINGULAR,
    short_names=constants.CONTAINER_CHECKPOINT_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Namespaced",
    description="ContainerCheckpoint dumps a running container with CRIU (leaving it running "
    "by default) and keeps the archive on its node until the resource is deleted; "
    "ContainerRestore starts containers from it.",
    spec=ContainerCheckpointSpec,
    status=ContainerCheckpointStatus,
    printer_columns=(
        PrinterColumn(name="Phase", json_path=".status.phase", type="string", description="Phase."),
        PrinterColumn(
            name="Node", json_path=".spec.source.node", type="string", description="Stored on."
        ),
        PrinterColumn(
            name="Container",
            json_path=".spec.source.container",
            type="string",
            description="Container checkpointed.",
        ),
        PrinterColumn(
            name="Bytes",
            json_path=".status.sizeBytes",
            type="integer",
            description="Size stored: the archive on its node, or the registry image.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Ready")].reason',
            type="string",
            description="Why it ended as it did (its Ready condition's reason).",
        ),
        _AGE,
    ),
)

RESTORE_DEFINITION = ResourceDefinition(
    kind=constants.CONTAINER_RESTORE_KIND,
    list_kind=constants.CONTAINER_RESTORE_LIST_KIND,
    plural=constants.CONTAINER_RESTORE_PLURAL,
    singular=constants.CONTAINER_RESTORE_SINGULAR,
    short_names=constants.CONTAINER_RESTORE_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Namespaced",
    description="ContainerRestore starts a container from a Ready ContainerCheckpoint, on the "
    "checkpoint's node or another one. It is an action: the spec cannot change.",
    spec=ContainerRestoreSpec,
    status=ContainerRestoreStatus,
    printer_columns=(
        PrinterColumn(name="Phase", json_path=".status.phase", type="string", description="Phase."),
        PrinterColumn(
            name="Checkpoint",
            json_path=".spec.checkpointRef.name",
            type="string",
            description="Checkpoint restored.",
        ),
        PrinterColumn(
            name="Node", json_path=".status.node", type="string", description="Restored on."
        ),
        PrinterColumn(
            name="Container",
            json_path=".status.containerName",
            type="string",
            description="Restored container.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Succeeded")].reason',
            type="string",
            description="Why it ended as it did (its Succeeded condition's reason).",
        ),
        _AGE,
    ),
)
