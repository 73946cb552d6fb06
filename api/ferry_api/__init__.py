"""Ferry's API: the models of every custom resource, shared by operator and helper.

These pydantic models are the single source of truth: the CRDs in ``crds/`` are
generated from them (``python -m ferry_api.crdgen``), and the operator and the
node-helpers parse every body once, at the boundary, into these frozen models.
Importing this package touches nothing outside the process.
"""

from ferry_api.base import InvalidResourceError, to_wire
from ferry_api.conditions import Condition, ConditionStatus, find_condition, set_condition
from ferry_api.migration import (
    Compression,
    ContainerMigration,
    ContainerMigrationSpec,
    ContainerMigrationStatus,
    Phase,
    parse_container_migration,
)
from ferry_api.nodehelper import NodeHelper, NodeHelperStatus, parse_node_helper
from ferry_api.runtime import Runtime

__all__ = [
    "Compression",
    "Condition",
    "ConditionStatus",
    "ContainerMigration",
    "ContainerMigrationSpec",
    "ContainerMigrationStatus",
    "InvalidResourceError",
    "NodeHelper",
    "NodeHelperStatus",
    "Phase",
    "Runtime",
    "find_condition",
    "parse_container_migration",
    "parse_node_helper",
    "set_condition",
    "to_wire",
]
