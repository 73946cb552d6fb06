"""Names that the operator, the node-helpers, the CRDs and the chart must agree on.

They live in one module so that a rename is one edit: the CRD generator, the
kopf handlers and the helpers all import them, and nothing spells
``"ferry.dev"`` twice.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "ferry.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

#: The category ``kubectl get ferry`` lists.
CATEGORY: Final = "ferry"

CONTAINER_MIGRATION_KIND: Final = "ContainerMigration"
CONTAINER_MIGRATION_LIST_KIND: Final = "ContainerMigrationList"
CONTAINER_MIGRATION_PLURAL: Final = "containermigrations"
CONTAINER_MIGRATION_SINGULAR: Final = "containermigration"
CONTAINER_MIGRATION_SHORT_NAMES: Final = ("cmig",)

NODE_HELPER_KIND: Final = "NodeHelper"
NODE_HELPER_LIST_KIND: Final = "NodeHelperList"
NODE_HELPER_PLURAL: Final = "nodehelpers"
NODE_HELPER_SINGULAR: Final = "nodehelper"
NODE_HELPER_SHORT_NAMES: Final = ("nh",)

#: Namespace authorization: a container is reachable from the namespace N only
#: if it carries this label with the value N (a podman/docker container label,
#: not a Kubernetes one).
NAMESPACE_LABEL: Final = f"{GROUP}/namespace"

#: The label on each ContainerCheckpoint a schedule made, naming the schedule.
SCHEDULE_LABEL: Final = f"{GROUP}/schedule"

CHECKPOINT_SCHEDULE_KIND: Final = "ContainerCheckpointSchedule"
CHECKPOINT_SCHEDULE_LIST_KIND: Final = "ContainerCheckpointScheduleList"
CHECKPOINT_SCHEDULE_PLURAL: Final = "containercheckpointschedules"
CHECKPOINT_SCHEDULE_SINGULAR: Final = "containercheckpointschedule"
CHECKPOINT_SCHEDULE_SHORT_NAMES: Final = ("ccs",)

#: The finalizer that holds a ContainerMigration until its rollback or cleanup
#: on the nodes is done.
MIGRATION_FINALIZER: Final = f"{GROUP}/migration-cleanup"

#: The condition type a NodeHelper publishes about itself.
CONDITION_READY: Final = "Ready"

CONTAINER_CHECKPOINT_KIND: Final = "ContainerCheckpoint"
CONTAINER_CHECKPOINT_LIST_KIND: Final = "ContainerCheckpointList"
CONTAINER_CHECKPOINT_PLURAL: Final = "containercheckpoints"
CONTAINER_CHECKPOINT_SINGULAR: Final = "containercheckpoint"
CONTAINER_CHECKPOINT_SHORT_NAMES: Final = ("ccp",)

CONTAINER_RESTORE_KIND: Final = "ContainerRestore"
CONTAINER_RESTORE_LIST_KIND: Final = "ContainerRestoreList"
CONTAINER_RESTORE_PLURAL: Final = "containerrestores"
CONTAINER_RESTORE_SINGULAR: Final = "containerrestore"
CONTAINER_RESTORE_SHORT_NAMES: Final = ("crs",)

POD_MIGRATION_KIND: Final = "PodMigration"
POD_MIGRATION_LIST_KIND: Final = "PodMigrationList"
POD_MIGRATION_PLURAL: Final = "podmigrations"
POD_MIGRATION_SINGULAR: Final = "podmigration"
POD_MIGRATION_SHORT_NAMES: Final = ("pmig",)

#: On a replacement pod: the UID of the PodMigration that made it (its rollback removes
#: only a pod carrying its own UID).
POD_MIGRATION_UID_LABEL: Final = f"{GROUP}/pod-migration-uid"
#: On a replacement pod: the pod it replaces (namespace/name).
MIGRATED_FROM_ANNOTATION: Final = f"{GROUP}/migrated-from"

NODE_EVACUATION_KIND: Final = "NodeEvacuation"
NODE_EVACUATION_LIST_KIND: Final = "NodeEvacuationList"
NODE_EVACUATION_PLURAL: Final = "nodeevacuations"
NODE_EVACUATION_SINGULAR: Final = "nodeevacuation"
NODE_EVACUATION_SHORT_NAMES: Final = ("nev",)
#: On the migrations a NodeEvacuation makes: its name.
EVACUATION_LABEL: Final = f"{GROUP}/evacuation"
#: On a pod: ``migrate`` lets a NodeEvacuation (and so ``kubectl drain``) move it, and
#: keeps it where it is if it cannot move; ``migrate-or-evict`` lets an eviction of a pod
#: that could not move go ahead. Pods are not moved otherwise.
EVACUATION_ANNOTATION: Final = f"{GROUP}/evacuation"
EVACUATION_MIGRATE: Final = "migrate"
EVACUATION_MIGRATE_OR_EVICT: Final = "migrate-or-evict"
EVACUATION_CHOICES: Final = (EVACUATION_MIGRATE, EVACUATION_MIGRATE_OR_EVICT)
#: On a NodeEvacuation: what made it (``eviction``: the eviction webhook, for a drain).
EVACUATION_TRIGGER_LABEL: Final = f"{GROUP}/evacuation-trigger"

MIGRATION_POLICY_KIND: Final = "MigrationPolicy"
MIGRATION_POLICY_LIST_KIND: Final = "MigrationPolicyList"
MIGRATION_POLICY_PLURAL: Final = "migrationpolicies"
MIGRATION_POLICY_SINGULAR: Final = "migrationpolicy"
MIGRATION_POLICY_SHORT_NAMES: Final = ("mpol",)
