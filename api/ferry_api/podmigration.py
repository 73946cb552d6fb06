"""PodMigration: one request to move one running Pod, every container of it, to another node.

The pod's containers are checkpointed by the source node's kubelet, shipped
over the helpers' SSH streams, and restored by the target's containerd from
checkpoint images into a replacement pod, which takes the source's place (and
its owner: the same ReplicaSet) once it runs and is ready. Like a
ContainerMigration it is an action: its spec cannot change, and what the
operator learns goes to status, which shares its pieces (phases, timings,
failures) with ContainerMigration's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AwareDatetime, ConfigDict, Field

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.conditions import Conditions
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.diagnostics import FailureLogs
from ferry_api.meta import ObjectMeta
from ferry_api.migration import (
    NODE_NAME_PATTERN,
    Archive,
    CriuStatistics,
    Failure,
    Phase,
    PhaseTransition,
    Progress,
    TargetRef,
    Timings,
)
from ferry_api.migrationpolicy import AppliedPolicy

PodName = Annotated[str, Field(min_length=1, max_length=253, pattern=NODE_NAME_PATTERN)]

IMMUTABLE_SPEC_MESSAGE = "spec is immutable: a PodMigration is an action; create a new one"


class PodMigrationSpec(SpecModel):
    """Which pod to move and where; immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": IMMUTABLE_SPEC_MESSAGE},
            ]
        }
    )

    pod_name: PodName = Field(
        description="Name of the pod to move, in this PodMigration's namespace. It must be "
        "Running, owned by nothing or by a ReplicaSet (a Deployment's pods), and use no "
        "volume whose data stays on its node (emptyDir, hostPath, PersistentVolumeClaim)."
    )
    target: TargetRef | None = Field(
        default=None,
        description="Where the pod should go; when absent the operator picks a node the pod "
        "may run on (its nodeSelector, required node affinity and tolerations; not cordoned; "
        "room for its requests) whose helper can restore pods.",
    )
    timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Give up and roll back when the migration takes longer than this.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=31_536_000,
        description="Delete the resource this long after it finished (Succeeded, Failed or "
        "Cancelled), as a Job's ttlSecondsAfterFinished; the pods are not touched.",
    )


class PodMigrationStatus(StatusModel):
    """What the operator observed; rebuilt from observation, never read as a plan."""

    phase: Phase | None = Field(
        default=None, description="Where the migration is: a summary of its conditions."
    )
    conditions: Conditions = ()
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    source_node: str | None = Field(default=None, description="Node the pod ran on.")
    source_pod_uid: str | None = Field(
        default=None,
        validation_alias="sourcePodUID",
        serialization_alias="sourcePodUID",
        description="UID of the pod moved (a pod of the same name made later "
        "is another pod, and is not touched).",
    )
    deprecated_source_pod_uid: str | None = Field(
        default=None,
        alias="sourcePodUid",
        description="Deprecated: sourcePodUID's former name, read from migrations written "
        "before it; no longer written.",
    )
    target_node: str | None = Field(
        default=None, description="Node the pod is restored on (chosen or given)."
    )
    target_pod: str | None = Field(
        default=None, description="Name of the replacement pod on the target node."
    )
    containers: tuple[str, ...] = Field(
        default=(), description="The pod's containers, checkpointed and restored together."
    )
    policy: AppliedPolicy | None = Field(
        default=None,
        description="The MigrationPolicy that governs this migration and what it set.",
    )
    start_time: AwareDatetime | None = Field(
        default=None, description="When the operator started the migration."
    )
    completion_time: AwareDatetime | None = Field(
        default=None, description="When the migration reached a final phase."
    )
    freeze_time: AwareDatetime | None = Field(
        default=None,
        description="When the pod's containers were frozen: the downtime counts from here.",
    )
    failure: Failure | None = Field(
        default=None, description="The first failure, kept while the migration rolls back."
    )
    phase_transitions: tuple[PhaseTransition, ...] = Field(
        default=(), description="Every phase entered, with its time, oldest first."
    )
    timings: Timings | None = Field(
        default=None,
        description="Measured step durations; downtimeSeconds runs from the freeze until "
        "the replacement pod is Ready (what the pod's clients see).",
    )
    archive: Archive | None = Field(
        default=None, description="The checkpoint archives sent (all containers, one stream)."
    )
    criu_statistics: CriuStatistics | None = Field(
        default=None, description="Statistics CRIU reported for the dumps; times in microseconds."
    )
    progress: Progress | None = Field(default=None, description="Progress of the transfer.")
    message: str | None = Field(
        default=None, description="The latest human-readable news, e.g. why it failed."
    )
    failure_logs: FailureLogs | None = Field(
        default=None, description="Where the full logs of the failed step are, when one failed."
    )

    @property
    def moved_pod_uid(self) -> str | None:
        """The source pod's UID, under its name or its former one."""
        return self.source_pod_uid or self.deprecated_source_pod_uid


class PodMigration(StatusModel):
    """A PodMigration as the operator handles it: metadata, spec and status."""

    api_version: str = constants.API_VERSION
    kind: str = constants.POD_MIGRATION_KIND
    metadata: ObjectMeta
    spec: PodMigrationSpec
    status: PodMigrationStatus = PodMigrationStatus()


def parse_pod_migration(body: Mapping[str, Any]) -> PodMigration:
    """Parse a raw PodMigration body into frozen models (``InvalidResourceError`` if wrong)."""
    return parse_body(PodMigration, body, kind=constants.POD_MIGRATION_KIND)


DEFINITION = ResourceDefinition(
    kind=constants.POD_MIGRATION_KIND,
    list_kind=constants.POD_MIGRATION_LIST_KIND,
    plural=constants.POD_MIGRATION_PLURAL,
    singular=constants.POD_MIGRATION_SINGULAR,
    short_names=constants.POD_MIGRATION_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Namespaced",
    description="PodMigration moves one running Pod, all its containers with their memory "
    "and processes, to another node: checkpointed through the source kubelet, restored by "
    "the target's containerd into a replacement pod that takes the source's place and "
    "owner. It is an action: the spec cannot change; create a new one to move again.",
    spec=PodMigrationSpec,
    status=PodMigrationStatus,
    printer_columns=(
        PrinterColumn(
            name="Phase", json_path=".status.phase", type="string", description="Current phase."
        ),
        PrinterColumn(
            name="Pod", json_path=".spec.podName", type="string", description="Pod moved."
        ),
        PrinterColumn(
            name="Source",
            json_path=".status.sourceNode",
            type="string",
            description="Node the pod ran on.",
        ),
        PrinterColumn(
            name="Target",
            json_path=".status.targetNode",
            type="string",
            description="Node the pod is restored on.",
        ),
        PrinterColumn(
            name="New-Pod",
            json_path=".status.targetPod",
            type="string",
            description="The replacement pod.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Succeeded")].reason',
            type="string",
            description="Why it ended as it did (its Succeeded condition's reason).",
        ),
        PrinterColumn(
            name="Downtime",
            json_path=".status.timings.downtimeSeconds",
            type="number",
            description="Seconds from the freeze to the replacement pod Ready.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Succeeded")].reason',
            type="string",
            description="Why it ended as it did.",
            priority=1,
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
