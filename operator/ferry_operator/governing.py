"""The MigrationPolicy that governs a migration, resolved once, at its validation.

Policies are read from the API server, the namespace's labels with them; the
most specific policy selecting the migration wins (see
:func:`ferry_api.migrationpolicy.choose_policy`). What it sets is copied into
the migration's ``status.policy``, so a policy changed later does not change a
migration under way, and a restarted operator enforces what was applied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from ferry_api import constants
from ferry_api.migrationpolicy import (
    AppliedPolicy,
    MigrationPolicy,
    choose_policy,
    parse_migration_policy,
    quantity_bytes,
)

from .kube import Kube

log = logging.getLogger(__name__)

GIB = 1 << 30


def applied(policy: MigrationPolicy, memory_bytes: int | None) -> AppliedPolicy:
    """What ``policy`` sets for a workload using ``memory_bytes``."""
    spec = policy.spec
    per_gib = spec.completion_timeout_per_gi_b_seconds
    gib = max(1.0, (memory_bytes or 0) / GIB)
    return AppliedPolicy(
        name=policy.metadata.name or "",
        parallel_outbound_migrations_per_node=spec.parallel_outbound_migrations_per_node,
        parallel_migrations_per_cluster=spec.parallel_migrations_per_cluster,
        bandwidth_bytes_per_second=(
            quantity_bytes(spec.bandwidth_per_migration) if spec.bandwidth_per_migration else None
        ),
        progress_timeout_seconds=spec.progress_timeout_seconds,
        completion_timeout_seconds=math.ceil(per_gib * gib) if per_gib is not None else None,
        memory_transfer=spec.memory_transfer,
    )


async def policies(kube: Kube) -> list[MigrationPolicy]:
    found = []
    for body in await kube.list_everywhere(constants.MIGRATION_POLICY_PLURAL):
        try:
            found.append(parse_migration_policy(body))
        except ValueError as error:  # the API server's schema makes this rare
            log.warning("ignoring a MigrationPolicy: %s", error)
    return found


async def governing(
    kube: Kube, *, namespace: str, labels: Mapping[str, str], memory_bytes: int | None
) -> AppliedPolicy | None:
    """The policy governing a migration in ``namespace`` of a workload with ``labels``."""
    found = await policies(kube)
    if not found:
        return None
    chosen = choose_policy(
        found, namespace_labels=await kube.namespace_labels(namespace), labels=labels
    )
    return applied(chosen, memory_bytes) if chosen is not None else None
