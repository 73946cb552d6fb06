"""``ferry-operator uninstall-cleanup``: let a Helm uninstall finish without losing data.

Run by the chart's pre-delete hook while the operator still runs. What is in
flight is ended the way a user ends it: a ContainerMigration or PodMigration
before its final phase is deleted (its cancel: the operator rolls back, the
source runs on), and a ContainerCheckpoint or ContainerRestore still working
is waited for. Then the operator's finalizer is taken off every Ferry object
left, so nothing hangs on a finalizer nobody will clear, and what users keep
stays: stored ContainerCheckpoints (their archives on the nodes, their images
in registries), schedules and the records of finished migrations and restores.
The operator is stopped first (``--operator-deployment``: scaled to 0), since a
running kopf puts its finalizer straight back; the next install's operator
adopts them again the same way.

``--delete-checkpoints`` (the chart's ``uninstall.deleteCheckpoints``) also
deletes every ContainerCheckpoint and ContainerRestore, and with a checkpoint
what it stored: the old behaviour, for an uninstall meant to leave nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ferry_api import constants
from ferry_api.migration import Phase

from .kube import Kube


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    #: Phases in which nothing is in flight any more (an absent phase is in flight).
    settled: frozenset[str]
    #: Deleting one in flight cancels it (the operator rolls back).
    cancellable: bool
    #: Whether it has phases at all (a schedule has none: nothing of it is ever in flight).
    phased: bool = True


MIGRATION_SETTLED = frozenset(phase.value for phase in Phase if phase.is_final)
#: Every kind the operator holds with its finalizer, in the order they are
#: handled: a restore goes before the checkpoints it reads.
KINDS: tuple[Kind, ...] = (
    # An evacuation in flight is cancelled first: its migrations go with it.
    Kind(
        constants.NODE_EVACUATION_KIND,
        constants.NODE_EVACUATION_PLURAL,
        frozenset({"Succeeded", "Incomplete"}),
        cancellable=True,
    ),
    Kind(
        constants.CONTAINER_MIGRATION_KIND,
        constants.CONTAINER_MIGRATION_PLURAL,
        MIGRATION_SETTLED,
        cancellable=True,
    ),
    Kind(
        constants.POD_MIGRATION_KIND,
        constants.POD_MIGRATION_PLURAL,
        MIGRATION_SETTLED,
        cancellable=True,
    ),
    Kind(
        constants.CONTAINER_RESTORE_KIND,
        constants.CONTAINER_RESTORE_PLURAL,
        frozenset({"Succeeded", "Failed"}),
        cancellable=False,
    ),
    Kind(
        constants.CONTAINER_CHECKPOINT_KIND,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        frozenset({"Ready", "Failed", "Scheduled"}),
        cancellable=False,
    ),
    # A schedule's runs are ContainerCheckpoints (above); the schedule itself only waits.
    Kind(
        constants.CHECKPOINT_SCHEDULE_KIND,
        constants.CHECKPOINT_SCHEDULE_PLURAL,
        frozenset(),
        cancellable=False,
        phased=False,
    ),
)
#: Deleted with --delete-checkpoints: every object of these kinds, settled or not.
DELETED_WHEN_ASKED = frozenset(
    {
        constants.CONTAINER_RESTORE_KIND,
        constants.CONTAINER_CHECKPOINT_KIND,
        constants.CHECKPOINT_SCHEDULE_KIND,
    }
)
POLL_SECONDS = 1.0


async def _stop(kube: Kube, namespace: str, name: str, *, until: float) -> list[str]:
    """Scale the operator's Deployment to 0 and wait until none of its pods is left."""
    selector = await kube.scale_deployment(namespace, name, 0)
    if selector is None:
        return [f"no Deployment {namespace}/{name}: no operator to stop"]
    while pods := await kube.pod_names(namespace, selector):
        if time.monotonic() > until:
            return [f"stopped {namespace}/{name}, but {', '.join(pods)} still ran"]
        await asyncio.sleep(POLL_SECONDS)
    return [f"stopped the operator ({namespace}/{name} scaled to 0)"]


def _in_flight(kind: Kind, item: dict[str, Any]) -> bool:
    return kind.phased and (item.get("status") or {}).get("phase") not in kind.settled


def _named(kind: Kind, item: dict[str, Any]) -> str:
    meta = item["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{kind.name} {where}{meta['name']}"


async def _items(kube: Kube) -> list[tuple[Kind, dict[str, Any]]]:
    return [(kind, item) for kind in KINDS for item in await kube.list_everywhere(kind.plural)]


async def cleanup(
    kube: Kube,
    *,
    grace_seconds: float,
    delete_checkpoints: bool = False,
    operator: tuple[str, str] | None = None,
) -> list[str]:
    """Cancel or wait for what is in flight, stop the ``operator`` Deployment (namespace,
    name), then release every object left; what was done.

    The operator must be gone before the finalizers are taken off: a running kopf
    puts its finalizer straight back on every object its handlers serve.
    """
    done = []
    for kind, item in await _items(kube):
        meta = item["metadata"]
        deleted = delete_checkpoints and kind.name in DELETED_WHEN_ASKED
        if deleted or (kind.cancellable and _in_flight(kind, item)):
            await kube.delete(kind.plural, meta.get("namespace", ""), meta["name"])
            what = "deleted" if deleted else "cancelled (deleted; the operator rolls it back)"
            done.append(f"{what}: {_named(kind, item)}")
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        busy = [
            (kind, item)
            for kind, item in await _items(kube)
            if _in_flight(kind, item) or item["metadata"].get("deletionTimestamp")
        ]
        if not busy:
            break
        await asyncio.sleep(POLL_SECONDS)
    if operator is not None:
        done += await _stop(kube, *operator, until=deadline + grace_seconds)
    for kind, item in await _items(kube):
        meta = item["metadata"]
        finalizers = meta.get("finalizers") or []
        if constants.MIGRATION_FINALIZER not in finalizers:
            continue
        kept = [f for f in finalizers if f != constants.MIGRATION_FINALIZER]
        await kube.set_finalizers(kind.plural, meta.get("namespace", ""), meta["name"], kept)
        state = "still in flight after the timeout" if _in_flight(kind, item) else "kept"
        done.append(f"released ({state}): {_named(kind, item)}")
    return done
