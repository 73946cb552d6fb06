"""Helpers shared by the test tiers."""

from __future__ import annotations

import base64
import datetime
import gzip
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ferry_api import constants
from ferry_api.diagnostics import LOG_KEY_SUFFIX
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def retry_while_status(call: Callable[[], T], status: int, *, timeout: float = 30) -> T:
    """Call until it stops failing with HTTP ``status`` (a grant or CRD becoming effective)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiException as error:
            if error.status != status or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


#: Ferry's namespaced resources: plural -> kind.
KINDS = {
    constants.CONTAINER_MIGRATION_PLURAL: constants.CONTAINER_MIGRATION_KIND,
    constants.CONTAINER_CHECKPOINT_PLURAL: constants.CONTAINER_CHECKPOINT_KIND,
    constants.CONTAINER_RESTORE_PLURAL: constants.CONTAINER_RESTORE_KIND,
    constants.POD_MIGRATION_PLURAL: constants.POD_MIGRATION_KIND,
    constants.CHECKPOINT_SCHEDULE_PLURAL: constants.CHECKPOINT_SCHEDULE_KIND,
}


def create_resource(
    custom: CustomObjectsApi,
    namespace: str,
    plural: str,
    name: str,
    spec: dict[str, Any],
    *,
    finalizers: list[str] | None = None,
) -> None:
    """Create one of Ferry's resources (named by its plural) as ``kubectl apply`` would."""
    metadata: dict[str, Any] = {"name": name}
    if finalizers:
        metadata["finalizers"] = finalizers
    custom.create_namespaced_custom_object(
        constants.GROUP,
        constants.VERSION,
        namespace,
        plural,
        {
            "apiVersion": constants.API_VERSION,
            "kind": KINDS[plural],
            "metadata": metadata,
            "spec": spec,
        },
    )


def create_migration(
    custom: CustomObjectsApi,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    *,
    finalizers: list[str] | None = None,
) -> None:
    """Create a ContainerMigration as ``kubectl apply`` would."""
    create_resource(
        custom,
        namespace,
        constants.CONTAINER_MIGRATION_PLURAL,
        name,
        spec,
        finalizers=finalizers,
    )


def get_resource(
    custom: CustomObjectsApi, namespace: str, plural: str, name: str
) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, plural, name
    )
    return cast(dict[str, Any], body)


def wait_resource_phase(
    custom: CustomObjectsApi,
    namespace: str,
    plural: str,
    name: str,
    *,
    phases: tuple[str, ...],
    timeout: float = 180,
) -> dict[str, Any]:
    """Until the resource's phase is one of ``phases``; its status then."""
    deadline = time.monotonic() + timeout
    while (status := get_resource(custom, namespace, plural, name).get("status") or {}).get(
        "phase"
    ) not in phases:
        assert time.monotonic() < deadline, f"{plural}/{name}: {status}"
        time.sleep(0.2)
    return status


def take_checkpoint(
    custom: CustomObjectsApi,
    namespace: str,
    name: str,
    node: str,
    container: str,
    **spec: Any,
) -> dict[str, Any]:
    """A ContainerCheckpoint of ``container`` on ``node``, waited for to Ready or Failed."""
    plural = constants.CONTAINER_CHECKPOINT_PLURAL
    create_resource(
        custom,
        namespace,
        plural,
        name,
        {"source": {"node": node, "container": container}, **spec},
    )
    return wait_resource_phase(custom, namespace, plural, name, phases=("Ready", "Failed"))


def restore_checkpoint(
    custom: CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """A ContainerRestore of ``spec``, waited for to Succeeded or Failed."""
    plural = constants.CONTAINER_RESTORE_PLURAL
    create_resource(custom, namespace, plural, name, spec)
    return wait_resource_phase(custom, namespace, plural, name, phases=("Succeeded", "Failed"))


FINAL_PHASES = ("Succeeded", "Failed", "Cancelled")


def migration_status(custom: CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL, name
    )
    status: dict[str, Any] = body.get("status") or {}
    return status


def wait_migration(
    custom: CustomObjectsApi,
    namespace: str,
    name: str,
    until: Callable[[dict[str, Any]], bool] = lambda s: s.get("phase") in FINAL_PHASES,
    *,
    timeout: float = 180,
    poll: float = 0.05,
) -> dict[str, Any]:
    """Poll the migration's status until ``until`` holds (by default: a final phase)."""
    deadline = time.monotonic() + timeout
    while not until(status := migration_status(custom, namespace, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace}/{name} never got there: {status}")
        time.sleep(poll)
    return status


def succeeded_reason(status: dict[str, Any]) -> str:
    """The reason of the ``Succeeded`` condition: why a migration ended as it did."""
    return str(next(c["reason"] for c in status["conditions"] if c["type"] == "Succeeded"))


def config_map_files(api: ApiClient, namespace: str, name: str) -> dict[str, str]:
    """The failure logs in ConfigMap ``name``: file name -> text (gunzipped binaryData)."""
    config_map = CoreV1Api(api).read_namespaced_config_map(name, namespace)
    return {
        key.removesuffix(LOG_KEY_SUFFIX): gzip.decompress(base64.b64decode(value)).decode()
        for key, value in (config_map.binary_data or {}).items()
    }


def wait_heartbeat_after(custom: CustomObjectsApi, node: Any, moment: datetime.datetime) -> None:
    """Until ``node``'s helper has published a heartbeat after ``moment`` (it recovered): a
    later test must not find it stale after a fault (a cut or stalled link)."""
    deadline = time.monotonic() + 60
    while True:
        helper = custom.get_cluster_custom_object(
            constants.GROUP, constants.VERSION, constants.NODE_HELPER_PLURAL, node.name
        )
        beat = (helper.get("status") or {}).get("heartbeatTime")
        if beat and datetime.datetime.fromisoformat(beat) > moment:
            return
        assert time.monotonic() < deadline, f"{node.name}'s helper is silent since {beat}"
        time.sleep(0.5)
