"""``ferry-operator uninstall-cleanup``: let a Helm uninstall finish.

Run by the chart's pre-delete hook while the operator still runs: every
ContainerMigration, PodMigration, ContainerRestore and ContainerCheckpoint is deleted, so the
operator rolls back those in flight, cleans up after them on the nodes and
releases its finalizer. Whatever still holds the finalizer after the timeout
(the operator gone already, say) has it removed, so nothing is left stuck.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ferry_api import constants

from .kube import Kube

#: (kind, plural) of every resource the operator holds with its finalizer, in
#: the order they are deleted: a restore goes before the checkpoints it reads.
KINDS: tuple[tuple[str, str], ...] = (
    (constants.CONTAINER_MIGRATION_KIND, constants.CONTAINER_MIGRATION_PLURAL),
    (constants.POD_MIGRATION_KIND, constants.POD_MIGRATION_PLURAL),
    (constants.CONTAINER_RESTORE_KIND, constants.CONTAINER_RESTORE_PLURAL),
    (constants.CONTAINER_CHECKPOINT_KIND, constants.CONTAINER_CHECKPOINT_PLURAL),
)
POLL_SECONDS = 1.0


async def _all_items(kube: Kube) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (kind, plural, item)
        for kind, plural in KINDS
        for item in await kube.list_everywhere(plural)
    ]


async def cleanup(kube: Kube, *, grace_seconds: float) -> list[str]:
    done = []
    for kind, plural, item in await _all_items(kube):
        meta = item["metadata"]
        await kube.delete(plural, meta["namespace"], meta["name"])
        done.append(f"deleted {kind} {meta['namespace']}/{meta['name']}")
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not await _all_items(kube):
            break
        await asyncio.sleep(POLL_SECONDS)
    for kind, plural, item in await _all_items(kube):
        meta = item["metadata"]
        kept = [f for f in meta.get("finalizers", []) if f != constants.MIGRATION_FINALIZER]
        await kube.set_finalizers(plural, meta["namespace"], meta["name"], kept)
        done.append(f"removed the finalizer of {kind} {meta['namespace']}/{meta['name']}")
    return done
