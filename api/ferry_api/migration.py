"""ContainerMigration: one request to move one running container to another node.

A migration is an action, not a desired state to converge on: once created,
its spec cannot change (a CEL rule in the CRD refuses it), and a second move is
a second resource. The spec therefore carries only what the user decides; all
that the operator learns (chosen target, timings, CRIU statistics) goes to
status, which is rebuilt from observation and never feeds back into spec.

These models are the single source of truth: ``crdgen`` derives the CRD from
them (so defaults, enums and limits here are what the API server enforces), and
the operator parses each body once, at the boundary, with
``parse_container_migration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.conditions import Conditions
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.diagnostics import FailureLogs
from ferry_api.meta import ObjectMeta
from ferry_api.migrationpolicy import AppliedPolicy
from ferry_api.runtime import Runtime
from ferry_api.transfer import AUTO_PAGE_SERVER_MIN_BYTES
from ferry_api.transfer import MemoryTransfer as MemoryTransfer  # noqa: PLC0414 - re-exported

#: A Kubernetes node name (DNS-1123 subdomain).
NODE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A podman/docker container name or ID.
CONTAINER_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"

NodeName = Annotated[str, Field(min_length=1, max_length=253, pattern=NODE_NAME_PATTERN)]

IMMUTABLE_SPEC_MESSAGE = "spec is immutable: a ContainerMigration is an action; create a new one"
SAME_NODE_MESSAGE = (
    "target.node must differ from source.node: a migration moves a container to another node"
)
KEPT_PAGES_MESSAGE = (
    "keepCheckpoint cannot be used with memoryTransfer: PageServer: the memory goes straight "
    "to the target's page server, so the archive kept would hold none; use memoryTransfer: "
    "Archive to keep a checkpoint"
)
RENAMED_TLS_MESSAGE = "pageServerTls is the former name of pageServerTLS: set pageServerTLS only"


class Phase(StrEnum):
    """Where a migration is; a summary for people and printer columns."""

    PENDING = "Pending"
    VALIDATING = "Validating"
    IMAGE_STAGING = "ImageStaging"
    CHECKPOINTING = "Checkpointing"
    TRANSFERRING = "Transferring"
    RESTORING = "Restoring"
    VERIFYING = "Verifying"
    ROLLING_BACK = "RollingBack"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        """True for the phases a migration never leaves."""
        return self in {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}


class Compression(StrEnum):
    """How the checkpoint archive is compressed on the wire."""

    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"


class SourceRef(SpecModel):
    """The container to move and the node it runs on now."""

    node: NodeName = Field(description="Name of the node the container runs on now.")
    container: str = Field(
        min_length=1,
        max_length=253,
        pattern=CONTAINER_PATTERN,
        description="Name or ID of the container in the node's runtime; it must carry the "
        f"label {constants.NAMESPACE_LABEL}=<this namespace>.",
    )


class TargetRef(SpecModel):
    """Where the container should go."""

    node: NodeName | None = Field(
        default=None,
        description="Name of the node to restore the container on; "
        "when empty the operator picks an eligible node.",
    )


class ContainerMigrationSpec(SpecModel):
    """What to move, where, and how; immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": IMMUTABLE_SPEC_MESSAGE},
                {
                    "rule": "!has(self.target) || !has(self.target.node)"
                    " || self.target.node != self.source.node",
                    "message": SAME_NODE_MESSAGE,
                    "fieldPath": ".target.node",
                },
                {
                    "rule": "!has(self.memoryTransfer) || self.memoryTransfer != 'PageServer'"
                    " || !has(self.keepCheckpoint) || !self.keepCheckpoint",
                    "message": KEPT_PAGES_MESSAGE,
                    "fieldPath": ".keepCheckpoint",
                },
                {
                    "rule": "!has(self.pageServerTLS) || !has(self.pageServerTls)",
                    "message": RENAMED_TLS_MESSAGE,
                    "fieldPath": ".pageServerTls",
                },
            ]
        }
    )

    source: SourceRef = Field(description="The container to move and the node it runs on now.")
    target: TargetRef | None = Field(
        default=None,
        description="Where the container should go; when absent the operator picks a node.",
    )
    leave_running: bool = Field(
        default=False,
        description="Keep the source container running after the checkpoint (a copy, not a move).",
    )
    tcp_established: bool = Field(
        default=False,
        description="Checkpoint and restore established TCP connections (CRIU "
        "--tcp-established). Refused at validation for now (TCPEstablishedAcrossNodes): a "
        "restored connection needs the container's address, which stays on the source "
        "node's network. Connections survive a ContainerCheckpoint restored on its own node.",
    )
    file_locks: bool = Field(
        default=False, description="Checkpoint and restore file locks (CRIU --file-locks)."
    )
    compression: Compression = Field(
        default=Compression.ZSTD, description="Compression of the checkpoint archive."
    )
    keep_checkpoint: bool = Field(
        default=False,
        description="Keep the checkpoint archive on the source node after the migration ends "
        "(Archive only), until this ContainerMigration is deleted (ttlSecondsAfterFinished "
        "deletes it): the archive goes with it.",
    )
    memory_transfer: MemoryTransfer | None = Field(
        default=None,
        description="How the memory reaches the target (default: the MigrationPolicy's "
        "memoryTransfer, else Archive). Archive: in the checkpoint archive, "
        "streamed over SSH after the dump. PageServer (podman only): straight from the dump "
        "to CRIU's page server on the target, so it is written once and the archive left to "
        "send is small; much less downtime for containers with a lot of memory, but a "
        "rollback then needs the target to give the memory back (see pageServerTLS). "
        f"Auto: PageServer for a podman container using {AUTO_PAGE_SERVER_MIN_BYTES >> 20} MiB "
        "of memory or more (as its cgroup counts it, tmpfs included; not with "
        "keepCheckpoint), else Archive; status.memoryTransfer says which.",
    )
    page_server_tls: bool | None = Field(
        default=None,
        validation_alias="pageServerTLS",
        serialization_alias="pageServerTLS",
        description="With memoryTransfer: PageServer, encrypt and authenticate the page "
        "server's link with TLS and a certificate made for this migration on each end "
        "(default: true). false sends the memory in clear and lets whoever connects first "
        "feed the page server: only for a node network you trust.",
    )
    deprecated_page_server_tls: bool | None = Field(
        default=None,
        alias="pageServerTls",
        description="Deprecated: the former name of pageServerTLS, still read in v1alpha1 "
        "(the API server warns); set pageServerTLS instead.",
    )
    timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Give up and roll back when the migration takes longer than this.",
    )
    runtime: Runtime | None = Field(
        default=None,
        description="Container runtime that runs the container (podman or docker); the target "
        "must have it too. Default: whichever runtime of the source node has the container "
        "(podman first).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=31_536_000,
        description="Delete the resource this long after it finished (Succeeded, Failed or "
        "Cancelled), as a Job's ttlSecondsAfterFinished; the container is not touched. "
        "Leave it out for resources a GitOps tool applies, or it creates them again.",
    )

    @model_validator(mode="after")
    def _follows_the_crd_rules(self) -> ContainerMigrationSpec:
        # The CRD's CEL rules, for bodies that did not pass the API server.
        if self.target is not None and self.target.node == self.source.node:
            raise ValueError(SAME_NODE_MESSAGE)
        if self.memory_transfer == MemoryTransfer.PAGE_SERVER and self.keep_checkpoint:
            raise ValueError(KEPT_PAGES_MESSAGE)
        if self.page_server_tls is not None and self.deprecated_page_server_tls is not None:
            raise ValueError(RENAMED_TLS_MESSAGE)
        return self

    @property
    def pages_over_tls(self) -> bool:
        """Whether the page server's link uses TLS: pageServerTLS, or its former name, or yes."""
        for value in (self.page_server_tls, self.deprecated_page_server_tls):
            if value is not None:
                return value
        return True


def _to_milliseconds(seconds: float) -> float:
    return round(seconds, 3)


#: A duration in seconds, kept to the millisecond so ``kubectl get`` prints it short.
Seconds = Annotated[float, Field(ge=0), AfterValidator(_to_milliseconds)]


class PhaseTransition(StatusModel):
    """When the migration entered a phase."""

    phase: Phase = Field(description="The phase entered.")
    time: AwareDatetime = Field(description="When it was entered.")


class Timings(StatusModel):
    """Measured durations of the migration's steps, in seconds."""

    checkpoint_seconds: Seconds | None = Field(
        default=None,
        description="Checkpointing the container on the source node (with memoryTransfer: "
        "PageServer, sending its memory to the target too).",
    )
    transfer_seconds: Seconds | None = Field(
        default=None, description="Sending the checkpoint archive to the target node."
    )
    restore_seconds: Seconds | None = Field(
        default=None, description="Restoring the container on the target node."
    )
    downtime_seconds: Seconds | None = Field(
        default=None,
        description="From the freeze on the source to the container running on the target.",
    )
    transfer_bytes_per_second: float | None = Field(
        default=None,
        ge=0,
        description="The rate the source's helper measured on the stream to the target (the "
        "archive; with a page server and a bandwidth limit, the memory): what a "
        "MigrationPolicy's bandwidthPerMigration held it to.",
    )
    total_seconds: Seconds | None = Field(
        default=None, description="From the start of the migration to its end."
    )


class Archive(StatusModel):
    """The checkpoint archive that was sent."""

    bytes: int | None = Field(default=None, ge=0, description="Size of the archive in bytes.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the archive, checked by the target before the restore.",
    )
    compression: Compression | None = Field(default=None, description="Compression of the archive.")


class CriuStatistics(StatusModel):
    """Statistics CRIU reported for the dump and the restore (podman --print-stats).

    Times are in microseconds, as CRIU reports them. Counters CRIU adds later are
    kept too, with their names in camelCase.
    """

    model_config = ConfigDict(extra="allow")

    __pydantic_extra__: dict[str, int] = Field(init=False)

    freezing_time: int | None = Field(
        default=None, ge=0, description="Microseconds spent freezing the processes."
    )
    frozen_time: int | None = Field(
        default=None, ge=0, description="Microseconds the processes stayed frozen on the source."
    )
    memdump_time: int | None = Field(
        default=None, ge=0, description="Microseconds spent dumping memory."
    )
    memwrite_time: int | None = Field(
        default=None, ge=0, description="Microseconds spent writing memory pages out."
    )
    pages_scanned: int | None = Field(
        default=None, ge=0, description="Memory pages scanned during the dump."
    )
    pages_written: int | None = Field(
        default=None, ge=0, description="Memory pages written to the checkpoint."
    )
    forking_time: int | None = Field(
        default=None, ge=0, description="Microseconds spent recreating the process tree."
    )
    restore_time: int | None = Field(
        default=None, ge=0, description="Microseconds the restore took in CRIU."
    )

    @model_validator(mode="before")
    @classmethod
    def _camel_case_keys(cls, data: Any) -> Any:
        # CRIU names its counters in snake_case; the wire is camelCase for known
        # and unknown counters alike.
        if isinstance(data, Mapping):
            return {(to_camel(k) if "_" in k else k): v for k, v in data.items()}
        return data


class Failure(StatusModel):
    """Why a migration failed, as first observed: kept through its rollback."""

    reason: str = Field(
        min_length=1, description="One CamelCase word, e.g. RestoreFailed or Timeout."
    )
    message: str = Field(default="", description="What happened and, where known, what to do.")


class Progress(StatusModel):
    """How far the transfer of the checkpoint archive is."""

    bytes_sent: int | None = Field(default=None, ge=0, description="Bytes sent so far.")
    bytes_total: int | None = Field(
        default=None, ge=0, description="Bytes to send in all, when known."
    )


class ContainerMigrationStatus(StatusModel):
    """What the operator observed; rebuilt from observation, never read as a plan."""

    phase: Phase | None = Field(
        default=None, description="Where the migration is: a summary of its conditions."
    )
    conditions: Conditions = ()
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    source_node: str | None = Field(
        default=None, description="Node the container was checkpointed on."
    )
    target_node: str | None = Field(
        default=None, description="Node the container is restored on (chosen or given)."
    )
    start_time: AwareDatetime | None = Field(
        default=None, description="When the operator started the migration."
    )
    completion_time: AwareDatetime | None = Field(
        default=None, description="When the migration reached a final phase."
    )
    freeze_time: AwareDatetime | None = Field(
        default=None,
        description="When the source container was frozen (its checkpoint began): the "
        "downtime counts from here, also across an operator restart.",
    )
    failure: Failure | None = Field(
        default=None,
        description="The first failure, kept while the migration rolls back; the final "
        "Succeeded condition carries its reason.",
    )
    phase_transitions: tuple[PhaseTransition, ...] = Field(
        default=(), description="Every phase entered, with its time, oldest first."
    )
    timings: Timings | None = Field(default=None, description="Measured step durations.")
    archive: Archive | None = Field(default=None, description="The checkpoint archive sent.")
    memory_transfer: MemoryTransfer | None = Field(
        default=None,
        description="How the memory moves (Archive or PageServer): spec.memoryTransfer, or "
        "what Auto chose at validation.",
    )
    memory_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Memory the container used at validation, as its runtime reports it.",
    )
    policy: AppliedPolicy | None = Field(
        default=None,
        description="The MigrationPolicy that governs this migration and what it set.",
    )
    pages_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Bytes of memory pages the target's page server received "
        "(memoryTransfer: PageServer).",
    )
    criu_statistics: CriuStatistics | None = Field(
        default=None,
        description="Statistics CRIU reported for the dump and the restore; times in "
        "microseconds. Counters not listed here are kept too, named in camelCase.",
    )
    progress: Progress | None = Field(default=None, description="Progress of the transfer.")
    runtime: Runtime | None = Field(
        default=None, description="The runtime the container was found in, on both nodes."
    )
    message: str | None = Field(
        default=None, description="The latest human-readable news, e.g. why it failed."
    )
    failure_logs: FailureLogs | None = Field(
        default=None, description="Where the full logs of the failed step are, when one failed."
    )


class ContainerMigration(StatusModel):
    """A ContainerMigration as the operator handles it: metadata, spec and status."""

    api_version: str = constants.API_VERSION
    kind: str = constants.CONTAINER_MIGRATION_KIND
    metadata: ObjectMeta
    spec: ContainerMigrationSpec
    status: ContainerMigrationStatus = ContainerMigrationStatus()


def parse_container_migration(body: Mapping[str, Any]) -> ContainerMigration:
    """Parse a raw ContainerMigration body (kopf's ``body``) into frozen models.

    Raises ``InvalidResourceError`` (a ``ValueError``) naming each wrong field.
    """
    return parse_body(ContainerMigration, body, kind=constants.CONTAINER_MIGRATION_KIND)


DEFINITION = ResourceDefinition(
    kind=constants.CONTAINER_MIGRATION_KIND,
    list_kind=constants.CONTAINER_MIGRATION_LIST_KIND,
    plural=constants.CONTAINER_MIGRATION_PLURAL,
    singular=constants.CONTAINER_MIGRATION_SINGULAR,
    short_names=constants.CONTAINER_MIGRATION_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Namespaced",
    description="ContainerMigration moves one running container (podman, with CRIU) from "
    "its node to another, keeping its memory, processes and files. It is an action: "
    "the spec cannot change; create a new one to move the container again.",
    spec=ContainerMigrationSpec,
    status=ContainerMigrationStatus,
    printer_columns=(
        PrinterColumn(
            name="Phase", json_path=".status.phase", type="string", description="Current phase."
        ),
        PrinterColumn(
            name="Source",
            json_path=".spec.source.node",
            type="string",
            description="Node the container runs on now.",
        ),
        PrinterColumn(
            name="Target",
            json_path=".status.targetNode",
            type="string",
            description="Node the container is restored on.",
        ),
        PrinterColumn(
            name="Container",
            json_path=".spec.source.container",
            type="string",
            description="Container moved.",
            priority=1,
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
            description="Seconds from the freeze to running on the target.",
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
