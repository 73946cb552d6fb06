"""MigrationPolicy: rules an admin sets for the migrations of some workloads, as KubeVirt's.

Cluster-scoped. A policy selects migrations by the labels of their namespace
and of the workload (a pod's labels; a container's podman or docker labels);
an empty selector selects every migration, which makes a cluster default. When
several select one migration, the most specific wins: the one whose selectors
name the most labels, then the first by name. What it sets, and which policy
it was, is copied into the migration's ``status.policy`` when it is validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.meta import ObjectMeta
from ferry_api.transfer import MemoryTransfer

#: A Kubernetes quantity of bytes: 20Mi, 100M, 1Gi, 5000000.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$"
_FACTORS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(quantity: str) -> int:
    """``20Mi`` -> 20971520."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity)
    if match is None or match.group(2) not in _FACTORS:
        raise ValueError(f"{quantity!r} is not a quantity of bytes (e.g. 20Mi)")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


class LabelSelector(SpecModel):
    """Labels that must all be present with these values (a selector's matchLabels)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Every one of these labels, with this value."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels.items())


class PolicySelector(SpecModel):
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Labels of the migration's namespace."
    )
    workload_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Labels of the workload: a pod's labels, a container's labels.",
    )


class MigrationPolicySpec(SpecModel):
    """What applies to the migrations selected; every field is optional."""

    selector: PolicySelector = Field(
        default_factory=PolicySelector,
        description="Which migrations this policy governs; empty: all of them.",
    )
    parallel_outbound_migrations_per_node: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Migrations that may leave one node at once (KubeVirt: 2); more wait, "
        "before anything is frozen.",
    )
    parallel_migrations_per_cluster: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Migrations this policy governs that may run in the cluster at once "
        "(KubeVirt: 5); more wait, before anything is frozen.",
    )
    bandwidth_per_migration: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        description="Bytes per second one migration may send (its archive, or its pages to "
        "CRIU's page server), e.g. 20Mi; held by the source's helper and measured.",
    )
    progress_timeout_seconds: int | None = Field(
        default=None,
        ge=5,
        le=3600,
        description="Fail (and roll back) a migration whose transfer moved no byte and whose "
        "phase did not change for this long (KubeVirt's progressTimeout, 150 s).",
    )
    completion_timeout_per_gi_b_seconds: int | None = Field(
        default=None,
        alias="completionTimeoutPerGiBSeconds",
        ge=1,
        le=3600,
        description="A migration may take this many seconds per GiB of the workload's memory "
        "(at least one GiB counted; KubeVirt: 150); the shorter of this and its own "
        "timeoutSeconds applies.",
    )
    memory_transfer: MemoryTransfer | None = Field(
        default=None,
        description="memoryTransfer for the ContainerMigrations that do not set it. A default, "
        "not a demand: PageServer (or Auto) falls back to Archive where the migration cannot "
        "use it (docker, keepCheckpoint).",
    )


class MigrationPolicyStatus(StatusModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )


class MigrationPolicy(StatusModel):
    api_version: str = constants.API_VERSION
    kind: str = constants.MIGRATION_POLICY_KIND
    metadata: ObjectMeta
    spec: MigrationPolicySpec
    status: MigrationPolicyStatus = MigrationPolicyStatus()

    @property
    def specificity(self) -> int:
        selector = self.spec.selector
        return len(selector.namespace_selector.match_labels) + len(
            selector.workload_selector.match_labels
        )

    def selects(self, *, namespace_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        selector = self.spec.selector
        return selector.namespace_selector.matches(
            namespace_labels
        ) and selector.workload_selector.matches(labels)


def parse_migration_policy(body: Mapping[str, Any]) -> MigrationPolicy:
    return parse_body(MigrationPolicy, body, kind=constants.MIGRATION_POLICY_KIND)


def choose_policy(
    policies: list[MigrationPolicy],
    *,
    namespace_labels: Mapping[str, str],
    labels: Mapping[str, str],
) -> MigrationPolicy | None:
    """The policy that governs a migration: the most specific of those selecting it, then
    the first by name; None when none does."""
    selecting = [p for p in policies if p.selects(namespace_labels=namespace_labels, labels=labels)]
    if not selecting:
        return None
    return min(selecting, key=lambda p: (-p.specificity, p.metadata.name or ""))


class AppliedPolicy(StatusModel):
    """The MigrationPolicy that governed a migration, and what it set (in a migration's
    status)."""

    name: str = Field(description="The MigrationPolicy.")
    parallel_outbound_migrations_per_node: int | None = Field(
        default=None, description="Migrations that may leave the source node at once."
    )
    parallel_migrations_per_cluster: int | None = Field(
        default=None, description="Migrations that may run in the cluster at once."
    )
    bandwidth_bytes_per_second: int | None = Field(
        default=None, description="bandwidthPerMigration, in bytes per second."
    )
    progress_timeout_seconds: int | None = Field(
        default=None, description="Seconds without progress before the migration fails."
    )
    completion_timeout_seconds: int | None = Field(
        default=None,
        description="completionTimeoutPerGiBSeconds times the workload's memory in GiB "
        "(at least 1), when the policy sets it.",
    )
    memory_transfer: MemoryTransfer | None = Field(
        default=None, description="Its memoryTransfer, for a migration that sets none."
    )


DEFINITION = ResourceDefinition(
    kind=constants.MIGRATION_POLICY_KIND,
    list_kind=constants.MIGRATION_POLICY_LIST_KIND,
    plural=constants.MIGRATION_POLICY_PLURAL,
    singular=constants.MIGRATION_POLICY_SINGULAR,
    short_names=constants.MIGRATION_POLICY_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Cluster",
    description="MigrationPolicy sets limits for the migrations it selects (by namespace and "
    "workload labels; the most specific policy wins): migrations leaving a node at once, "
    "bandwidth per migration, a progress timeout and a completion timeout per GiB.",
    spec=MigrationPolicySpec,
    status=MigrationPolicyStatus,
    printer_columns=(
        PrinterColumn(
            name="Outbound-Per-Node",
            json_path=".spec.parallelOutboundMigrationsPerNode",
            type="integer",
            description="Migrations leaving one node at once.",
        ),
        PrinterColumn(
            name="Bandwidth",
            json_path=".spec.bandwidthPerMigration",
            type="string",
            description="Bytes per second per migration.",
        ),
        PrinterColumn(
            name="Progress-Timeout",
            json_path=".spec.progressTimeoutSeconds",
            type="integer",
            description="Seconds without progress before a migration fails.",
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
