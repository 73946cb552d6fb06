"""The operator's reads and writes of the Kubernetes API: the only module that talks to it.

The official client is synchronous; each call runs in a worker thread so the
kopf event loop never blocks. Every failure leaves this module as an
:class:`~.policy.ApiError` carrying the HTTP status (None when the API server
gave no answer), which :mod:`.policy` classifies; nothing else in the operator
knows the client's exception types.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from ferry_api import constants
from ferry_api.nodehelper import NodeHelper, parse_node_helper
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from .policy import ApiError

#: Longest wait for one API request: a dead connection fails instead of hanging a step.
REQUEST_TIMEOUT_SECONDS = 15
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_UNPROCESSABLE = 422


class NotOurs(ApiError):
    """An object of the name Ferry writes exists and is not Ferry's: left untouched."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTP_CONFLICT, message)


def _pointer(key: str) -> str:
    """``key`` as one JSON-pointer token (RFC 6901): ``a.b/c`` -> ``a.b~1c``."""
    return key.replace("~", "~0").replace("/", "~1")


T = TypeVar("T")


def api_client() -> client.ApiClient:
    """A client from ``$KUBECONFIG`` when set (kubectl's rule), else the pod's in-cluster config."""
    if os.environ.get("KUBECONFIG"):
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function`` in a worker thread, its failures as ApiError."""
    try:
        return await asyncio.to_thread(
            function, *args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs
        )
    except ApiException as error:
        raise ApiError(error.status, f"{error.status} {error.reason}: {_detail(error)}") from None
    except (HTTPError, OSError, TimeoutError) as error:
        raise ApiError(None, f"{type(error).__name__}: {error}") from None


def _detail(error: ApiException) -> str:
    """The API server's own message (its Status body), else the HTTP reason."""
    body = error.body
    if isinstance(body, (bytes, str)):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        try:
            message = json.loads(text).get("message")
        except (ValueError, AttributeError):
            message = None
        if isinstance(message, str):
            return message
    return str(error.reason)


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _plain(self, obj: object) -> dict[str, Any]:
        """A client model as the API's own JSON (camelCase dicts)."""
        data = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return data if isinstance(data, dict) else {}

    # -- nodes and helpers

    async def node_names(self) -> list[str]:
        nodes = await _call(self.core.list_node)
        return [n.metadata.name for n in nodes.items if n.metadata and n.metadata.name]

    async def nodes(self) -> list[dict[str, Any]]:
        """Every Node as the API serves it (labels, taints, unschedulable, allocatable)."""
        nodes = await _call(self.core.list_node)
        return [self._plain(n) for n in nodes.items]

    async def node_helpers(self) -> dict[str, NodeHelper]:
        listed = await _call(
            self.custom.list_cluster_custom_object,
            constants.GROUP,
            constants.VERSION,
            constants.NODE_HELPER_PLURAL,
        )
        if not isinstance(listed, dict):
            return {}
        helpers = {}
        for item in listed.get("items", []):
            try:
                helper = parse_node_helper(item)
            except ValueError:
                continue  # a helper publishing garbage is as good as none
            if helper.metadata.name:
                helpers[helper.metadata.name] = helper
        return helpers

    # -- Ferry's namespaced resources

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge ``status`` into the status of one of our resources (namespace "": one of
        the cluster-scoped ones)."""
        if not namespace:
            await _call(
                self.custom.patch_cluster_custom_object_status,
                constants.GROUP,
                constants.VERSION,
                plural,
                name,
                {"status": status},
            )
            return
        await _call(
            self.custom.patch_namespaced_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            name,
            {"status": status},
        )

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create one of our namespaced resources; False if one of that name exists."""
        try:
            await _call(
                self.custom.create_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                body,
            )
        except ApiError as error:
            if error.status == HTTP_CONFLICT:
                return False
            raise
        return True

    async def list_labelled(
        self, plural: str, namespace: str, *, selector: str
    ) -> list[dict[str, Any]]:
        listed = await _call(
            self.custom.list_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            label_selector=selector,
        )
        items = listed.get("items", []) if isinstance(listed, dict) else []
        return [item for item in items if isinstance(item, dict)]

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        """Every resource of ``plural`` in every namespace; none if its CRD is not installed."""
        try:
            listed = await _call(
                self.custom.list_cluster_custom_object, constants.GROUP, constants.VERSION, plural
            )
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return []
            raise
        items = listed.get("items", []) if isinstance(listed, dict) else []
        return [item for item in items if isinstance(item, dict)]

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        """Delete one of our resources (namespace "": a cluster-scoped one); one already gone
        is fine."""
        try:
            if not namespace:
                await _call(
                    self.custom.delete_cluster_custom_object,
                    constants.GROUP,
                    constants.VERSION,
                    plural,
                    name,
                )
                return
            await _call(
                self.custom.delete_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                name,
            )
        except ApiError as error:
            if error.status != HTTP_NOT_FOUND:
                raise

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of our namespaced resources, or None if there is none of that name."""
        try:
            body = await _call(
                self.custom.get_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                name,
            )
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def set_finalizers(
        self, plural: str, namespace: str, name: str, finalizers: list[str]
    ) -> None:
        if not namespace:
            await _call(
                self.custom.patch_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                plural,
                name,
                {"metadata": {"finalizers": finalizers}},
            )
            return
        await _call(
            self.custom.patch_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            name,
            {"metadata": {"finalizers": finalizers}},
        )

    # -- the operator's own Deployment (stopped by the uninstall hook)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> str | None:
        """Set a Deployment's replicas; its pods' label selector, or None if it is gone."""
        try:
            deployment = await _call(
                self.apps.patch_namespaced_deployment,
                name,
                namespace,
                {"spec": {"replicas": replicas}},
            )
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        labels = deployment.spec.selector.match_labels or {}
        return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))

    async def pod_names(self, namespace: str, selector: str) -> list[str]:
        """Names of the pods ``selector`` matches, terminating ones included."""
        listed = await _call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        return [p.metadata.name for p in listed.items if p.metadata and p.metadata.name]

    # -- pods a PodMigration moves, and their ReplicaSets

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod (the API's JSON), or None if there is none of that name."""
        try:
            return self._plain(await _call(self.core.read_namespaced_pod, name, namespace))
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        """A namespace's labels (a MigrationPolicy's namespaceSelector reads them)."""
        found = await _call(self.core.read_namespace, namespace)
        return dict(found.metadata.labels or {}) if found.metadata else {}

    async def cordon(self, node: str) -> bool:
        """Mark ``node`` unschedulable (kubectl cordon); False if it already was."""
        current = await _call(self.core.read_node, node)
        if current.spec is not None and current.spec.unschedulable:
            return False
        await _call(self.core.patch_node, node, {"spec": {"unschedulable": True}})
        return True

    async def running_pods(self) -> list[dict[str, Any]]:
        """Every pod not finished, in every namespace (what holds its node's resources)."""
        listed = await _call(
            self.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        return [self._plain(p) for p in listed.items]

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a pod; False if one of that name exists."""
        try:
            await _call(self.core.create_namespaced_pod, namespace, body)
        except ApiError as error:
            if error.status == HTTP_CONFLICT:
                return False
            raise
        return True

    async def patch_pod_metadata(
        self,
        namespace: str,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        """Merge labels and annotations into a pod's metadata."""
        metadata: dict[str, Any] = {}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        await _call(self.core.patch_namespaced_pod, name, namespace, {"metadata": metadata})

    async def delete_pod(
        self, namespace: str, name: str, *, uid: str, grace_seconds: int | None = None
    ) -> None:
        """Delete the pod ``name`` if it is still the one with ``uid``; gone is fine."""
        body = client.V1DeleteOptions(
            grace_period_seconds=grace_seconds, preconditions=client.V1Preconditions(uid=uid)
        )
        try:
            await _call(self.core.delete_namespaced_pod, name, namespace, body=body)
        except ApiError as error:
            if error.status not in (HTTP_NOT_FOUND, HTTP_CONFLICT):
                raise

    async def replica_set(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await _call(self.apps.read_namespaced_replica_set, name, namespace))
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise

    # -- ConfigMaps (failure logs) and Secrets (SSH identities)

    async def put_config_map(
        self,
        namespace: str,
        name: str,
        *,
        labels: dict[str, str],
        owner: dict[str, str],
        binary_data: dict[str, str],
    ) -> None:
        """Create the ConfigMap ``name`` owned by ``owner``, or overwrite the one of that name
        if it carries the same ``labels`` (Ferry's): the check and the write are one JSON
        patch, whose ``test`` operations the API server applies first. A ConfigMap of that
        name that is not Ferry's raises :class:`NotOurs` and is left as it is."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "binaryData": binary_data,
        }
        try:
            await _call(self.core.create_namespaced_config_map, namespace, body)
        except ApiError as error:
            if error.status != HTTP_CONFLICT:
                raise
        else:
            return
        ours = [
            {"op": "test", "path": f"/metadata/labels/{_pointer(key)}", "value": value}
            for key, value in labels.items()
        ]
        write = [
            {"op": "replace", "path": "/metadata/ownerReferences", "value": [owner]},
            {"op": "add", "path": "/binaryData", "value": binary_data},
        ]
        try:
            await _call(self.core.patch_namespaced_config_map, name, namespace, ours + write)
        except ApiError as error:
            if error.status in (HTTP_UNPROCESSABLE, HTTP_FORBIDDEN):
                raise NotOurs(
                    f"ConfigMap {namespace}/{name} exists and is not Ferry's "
                    f"(no label {', '.join(labels)}); it was left as it is"
                ) from None
            raise

    async def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete a ConfigMap; one already gone is fine."""
        try:
            await _call(self.core.delete_namespaced_config_map, name, namespace)
        except ApiError as error:
            if error.status != HTTP_NOT_FOUND:
                raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None if there is none of that name."""
        try:
            secret = await _call(self.core.read_namespaced_secret, name, namespace)
        except ApiError as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    async def create_secret(
        self, namespace: str, name: str, data: dict[str, bytes], *, labels: dict[str, str]
    ) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "type": "Opaque",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        await _call(self.core.create_namespaced_secret, namespace, body)

    async def patch_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> None:
        """Set ``data``'s keys in a Secret, keeping the others."""
        patch = {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        await _call(self.core.patch_namespaced_secret, name, namespace, patch)
