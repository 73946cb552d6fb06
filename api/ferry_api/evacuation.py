"""NodeEvacuation: every workload Ferry may move off one node, moved, within limits.

What `kubectl drain` is to pods, a NodeEvacuation is to live migration: the
node is cordoned, and each container (carrying ``ferry.dev/namespace``) and
each pod (annotated ``ferry.dev/evacuation: migrate``) on it gets a
ContainerMigration or PodMigration in its namespace, labelled with the
evacuation's name and owned by it, never more at once than ``maxParallel``.
A target that refuses a workload before anything is frozen is not the end:
the next fitting node is tried. A workload that cannot move anywhere is
reported and keeps running where it is (a migration never leaves its source
stopped). The status lists every workload with what became of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, ConfigDict, Field

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.conditions import Conditions
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.meta import ObjectMeta
from ferry_api.migration import NodeName

IMMUTABLE_SPEC_MESSAGE = "spec is immutable: a NodeEvacuation is an action; create a new one"


class NodeEvacuationSpec(SpecModel):
    """Which node to empty, and how many workloads may leave it at once."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": IMMUTABLE_SPEC_MESSAGE},
            ]
        }
    )

    node_name: NodeName = Field(description="The node to evacuate.")
    cordon: bool = Field(
        default=True,
        description="Mark the node unschedulable first, so nothing new lands there "
        "(kubectl cordon); it stays cordoned afterwards, as after kubectl drain.",
    )
    max_parallel: int | None = Field(
        default=None,
        ge=1,
        le=50,
        description="Migrations out of the node at once; default: the MigrationPolicy's "
        "parallelOutboundMigrationsPerNode, else 2.",
    )
    containers: bool = Field(
        default=True,
        description="Move the node's podman and docker containers that carry the label "
        "ferry.dev/namespace (each migrated in that namespace).",
    )
    pods: bool = Field(
        default=True,
        description="Move the node's pods annotated ferry.dev/evacuation: migrate.",
    )
    timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Each migration's timeoutSeconds.",
    )


class EvacuationPhase(StrEnum):
    PENDING = "Pending"
    EVACUATING = "Evacuating"
    #: Every workload moved.
    SUCCEEDED = "Succeeded"
    #: Some moved, some did not (refused or failed): those still run on the node.
    INCOMPLETE = "Incomplete"


class WorkloadState(StrEnum):
    PENDING = "Pending"
    MIGRATING = "Migrating"
    MOVED = "Moved"
    #: No node would take it (every fitting target refused it before the freeze).
    REFUSED = "Refused"
    #: Its migration failed after the freeze and rolled back: it runs on the node.
    FAILED = "Failed"


class WorkloadKind(StrEnum):
    CONTAINER = "Container"
    POD = "Pod"


class EvacuatedWorkload(StatusModel):
    """One workload of the node, and what became of it."""

    kind: WorkloadKind = Field(description="Container (podman or docker) or Pod.")
    namespace: str = Field(description="Namespace of its migration.")
    name: str = Field(description="The container's or the pod's name.")
    state: WorkloadState = Field(description="Where its move is.")
    migration: str | None = Field(
        default=None, description="Its current (or last) ContainerMigration or PodMigration."
    )
    target: str | None = Field(default=None, description="Where it went, or is going.")
    tried: tuple[str, ...] = Field(
        default=(), description="Targets that refused it before the freeze."
    )
    reason: str | None = Field(default=None, description="Why it was refused or failed.")
    message: str | None = Field(default=None, description="What its migration said.")
    downtime_seconds: float | None = Field(
        default=None, description="Its migration's downtime, once moved."
    )


class NodeEvacuationStatus(StatusModel):
    phase: EvacuationPhase | None = Field(default=None, description="Where the evacuation is.")
    conditions: Conditions = ()
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    max_parallel: int | None = Field(
        default=None, description="The limit in force (spec, policy or default)."
    )
    workloads: tuple[EvacuatedWorkload, ...] = Field(
        default=(), description="Every workload found on the node when it began."
    )
    moved: int = Field(default=0, ge=0, description="Workloads moved.")
    refused: int = Field(default=0, ge=0, description="Workloads no node would take.")
    failed: int = Field(default=0, ge=0, description="Workloads whose migration failed.")
    start_time: AwareDatetime | None = Field(default=None, description="When it began.")
    completion_time: AwareDatetime | None = Field(
        default=None, description="When every workload's move had ended."
    )
    message: str | None = Field(default=None, description="The latest news.")


class NodeEvacuation(StatusModel):
    api_version: str = constants.API_VERSION
    kind: str = constants.NODE_EVACUATION_KIND
    metadata: ObjectMeta
    spec: NodeEvacuationSpec
    status: NodeEvacuationStatus = NodeEvacuationStatus()


def parse_node_evacuation(body: Mapping[str, Any]) -> NodeEvacuation:
    return parse_body(NodeEvacuation, body, kind=constants.NODE_EVACUATION_KIND)


DEFINITION = ResourceDefinition(
    kind=constants.NODE_EVACUATION_KIND,
    list_kind=constants.NODE_EVACUATION_LIST_KIND,
    plural=constants.NODE_EVACUATION_PLURAL,
    singular=constants.NODE_EVACUATION_SINGULAR,
    short_names=constants.NODE_EVACUATION_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Cluster",
    description="NodeEvacuation cordons a node and live-migrates every workload Ferry may "
    "move off it (containers labelled ferry.dev/namespace, pods annotated "
    "ferry.dev/evacuation: migrate), at most maxParallel at once, trying the next fitting "
    "node when one refuses. What cannot move keeps running and is reported.",
    spec=NodeEvacuationSpec,
    status=NodeEvacuationStatus,
    printer_columns=(
        PrinterColumn(
            name="Node", json_path=".spec.nodeName", type="string", description="Node emptied."
        ),
        PrinterColumn(
            name="Phase", json_path=".status.phase", type="string", description="Current phase."
        ),
        PrinterColumn(
            name="Moved", json_path=".status.moved", type="integer", description="Moved."
        ),
        PrinterColumn(
            name="Refused",
            json_path=".status.refused",
            type="integer",
            description="No node would take them.",
        ),
        PrinterColumn(
            name="Failed",
            json_path=".status.failed",
            type="integer",
            description="Their migration failed (they run on the node).",
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
