"""``ferry-operator uninstall-cleanup``: let a Helm uninstall finish.

Run by the chart's pre-delete hook while the operator still runs: every
ContainerMigration is deleted, so the operator rolls back those in flight and
releases its finalizer. Whatever still holds the finalizer after the timeout
(the operator gone already, say) has it removed, so nothing is left stuck.
"""

from __future__ import annotations

import time
from typing import Any

from ferry_api import constants
from kubernetes import client


def _items(custom: client.CustomObjectsApi) -> list[dict[str, Any]]:
    listed = custom.list_cluster_custom_object(
        constants.GROUP, constants.VERSION, constants.CONTAINER_MIGRATION_PLURAL
    )
    items = listed.get("items", []) if isinstance(listed, dict) else []
    return [i for i in items if isinstance(i, dict)]


def cleanup(custom: client.CustomObjectsApi, *, timeout: float) -> list[str]:
    done = []
    for item in _items(custom):
        meta = item["metadata"]
        custom.delete_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            meta["namespace"],
            constants.CONTAINER_MIGRATION_PLURAL,
            meta["name"],
        )
        done.append(f"deleted {meta['namespace']}/{meta['name']}")
    deadline = time.monotonic() + timeout
    while _items(custom) and time.monotonic() < deadline:
        time.sleep(1)
    for item in _items(custom):
        meta = item["metadata"]
        kept = [f for f in meta.get("finalizers", []) if f != constants.MIGRATION_FINALIZER]
        custom.patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            meta["namespace"],
            constants.CONTAINER_MIGRATION_PLURAL,
            meta["name"],
            {"metadata": {"finalizers": kept}},
        )
        done.append(f"removed the finalizer of {meta['namespace']}/{meta['name']}")
    return done
