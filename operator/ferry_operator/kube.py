"""The operator's reads and writes of the Kubernetes API (the only module that talks to it).

The official client is synchronous; each call runs in a worker thread so the
kopf event loop never blocks.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ferry_api import constants
from ferry_api.nodehelper import NodeHelper, parse_node_helper
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

#: Longest wait for one API request: a dead connection fails instead of hanging a step.
REQUEST_TIMEOUT_SECONDS = 15
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


def api_client() -> client.ApiClient:
    """A client from ``$KUBECONFIG`` when set (kubectl's rule), else the pod's in-cluster config."""
    if os.environ.get("KUBECONFIG"):
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def node_names(self) -> list[str]:
        nodes = await asyncio.to_thread(
            self.core.list_node, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        return [n.metadata.name for n in nodes.items if n.metadata and n.metadata.name]

    async def node_helpers(self) -> dict[str, NodeHelper]:
        listed = await asyncio.to_thread(
            self.custom.list_cluster_custom_object,
            constants.GROUP,
            constants.VERSION,
            constants.NODE_HELPER_PLURAL,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
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

    async def patch_migration_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self.patch_status(constants.CONTAINER_MIGRATION_PLURAL, namespace, name, status)

    async def delete_migration(self, namespace: str, name: str) -> None:
        await self.delete(constants.CONTAINER_MIGRATION_PLURAL, namespace, name)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge ``status`` into the status of one of our namespaced resources."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create one of our namespaced resources; False if one of that name exists."""
        try:
            await asyncio.to_thread(
                self.custom.create_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status == HTTP_CONFLICT:
                return False
            raise
        return True

    async def list_labelled(
        self, plural: str, namespace: str, *, selector: str
    ) -> list[dict[str, Any]]:
        listed = await asyncio.to_thread(
            self.custom.list_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            label_selector=selector,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        items = listed.get("items", []) if isinstance(listed, dict) else []
        return [item for item in items if isinstance(item, dict)]

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        """Delete one of our namespaced resources; one already gone is fine."""
        try:
            await asyncio.to_thread(
                self.custom.delete_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                name,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of our namespaced resources, or None if there is none of that name."""
        try:
            body = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                plural,
                name,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def put_config_map(self, namespace: str, name: str, body: client.V1ConfigMap) -> None:
        """Create the ConfigMap ``body`` named ``name``, or replace the one of that name."""
        try:
            await asyncio.to_thread(
                self.core.create_namespaced_config_map,
                namespace,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != HTTP_CONFLICT:
                raise
            await asyncio.to_thread(
                self.core.replace_namespaced_config_map,
                name,
                namespace,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )

    async def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete a ConfigMap; one already gone is fine."""
        try:
            await asyncio.to_thread(
                self.core.delete_namespaced_config_map,
                name,
                namespace,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise
