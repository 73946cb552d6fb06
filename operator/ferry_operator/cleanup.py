"""``ferry-operator uninstall-cleanup``: let a Helm uninstall finish.

Run by the chart's pre-delete hook while the operator still runs: every
ContainerMigration, ContainerRestore and ContainerCheckpoint is deleted, so the
operator rolls back those in flight, cleans up after them on the nodes and
releases its finalizer. Whatever still holds the finalizer after the timeout
(the operator gone already, say) has it removed, so nothing is left stuck.
"""

from __future__ import annotations

import time
from typing import Any

from ferry_api import constants
from kubernetes import client
from kubernetes.client.exceptions import ApiException

#: (kind, plural) of every resource the operator holds with its finalizer, in
#: the order they are deleted: a restore goes before the checkpoints it reads.
KINDS: tuple[tuple[str, str], ...] = (
    (constants.CONTAINER_MIGRATION_KIND, constants.CONTAINER_MIGRATION_PLURAL),
    (constants.CONTAINER_RESTORE_KIND, constants.CONTAINER_RESTORE_PLURAL),
    (constants.CONTAINER_CHECKPOINT_KIND, constants.CONTAINER_CHECKPOINT_PLURAL),
)


def _items(custom: client.CustomObjectsApi, plural: str) -> list[dict[str, Any]]:
    try:
        listed = custom.list_cluster_custom_object(constants.GROUP, constants.VERSION, plural)
    except ApiException as e:
        if e.status == 404:  # its CRD is not installed: nothing of that kind to clean
            return []
        raise
    items = listed.get("items", []) if isinstance(listed, dict) else []
    return [i for i in items if isinstance(i, dict)]


def _all_items(custom: client.CustomObjectsApi) -> list[tuple[str, str, dict[str, Any]]]:
    return [(kind, plural, item) for kind, plural in KINDS for item in _items(custom, plural)]


def cleanup(custom: client.CustomObjectsApi, *, timeout: float) -> list[str]:
    done = []
    for kind, plural, item in _all_items(custom):
        meta = item["metadata"]
        custom.delete_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            meta["namespace"],
            plural,
            meta["name"],
        )
        done.append(f"deleted {kind} {meta['namespace']}/{meta['name']}")
    deadline = time.monotonic() + timeout
    while _all_items(custom) and time.monotonic() < deadline:
        time.sleep(1)
    for kind, plural, item in _all_items(custom):
        meta = item["metadata"]
        kept = [f for f in meta.get("finalizers", []) if f != constants.MIGRATION_FINALIZER]
        custom.patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            meta["namespace"],
            plural,
            meta["name"],
            {"metadata": {"finalizers": kept}},
        )
        done.append(f"removed the finalizer of {kind} {meta['namespace']}/{meta['name']}")
    return done
