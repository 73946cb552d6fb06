"""The heartbeat: publish this node's capabilities in its NodeHelper status.

This is the only module of the helper that talks to the Kubernetes API (an
import-linter contract holds it to that): it makes the API client, from
``KUBECONFIG`` when set (the local cluster's processes) or from the pod's
ServiceAccount, and publishes what :mod:`.probe` found.

The NodeHelper is cluster-scoped and named after the node, and owned by the
Node (the garbage collector deletes it with the Node). The helper creates it
when missing, gives one made before it an owner, and then only patches its
status subresource, so its RBAC can be: get nodes, get/create/patch
nodehelpers, patch nodehelpers/status (an admission policy holds each helper
to its own node's).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from typing import Any

from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.conditions import Condition, ConditionStatus, set_condition
from ferry_api.nodehelper import NodeHelperStatus
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409

#: A request the API server does not answer in this long is dropped and retried
#: at the next heartbeat on a fresh connection; without it, a connection that
#: died with a cut link hangs the heartbeat for minutes.
REQUEST_TIMEOUT_SECONDS = 10


def api_client() -> client.ApiClient:
    """A client of the API server: ``KUBECONFIG``'s if set, else the pod's ServiceAccount."""
    if os.environ.get("KUBECONFIG"):
        api: client.ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            os.environ["KUBECONFIG"]
        )
        return api
    kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


@contextlib.contextmanager
def publisher(*, node: str) -> Iterator[Publisher]:
    """A :class:`Publisher` for ``node``, its API client closed when done."""
    with api_client() as api:
        yield Publisher(api, node=node)


class Publisher:
    def __init__(self, api: client.ApiClient, *, node: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.node = node
        self._conditions: tuple[Condition, ...] = ()

    def _owner(self) -> dict[str, Any] | None:
        """An owner reference to this node's Node; None if there is no such Node."""
        try:
            node = self.core.read_node(self.node, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise
            return None
        uid = node.metadata.uid if node.metadata is not None else None
        if not uid:
            return None
        return {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid}

    def _ensure(self) -> None:
        found: object
        try:
            found = self.custom.get_cluster_custom_object(
                constants.GROUP,
                constants.VERSION,
                constants.NODE_HELPER_PLURAL,
                self.node,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise
            found = None
        if isinstance(found, dict):
            if not (found.get("metadata") or {}).get("ownerReferences") and (
                owner := self._owner()
            ):
                self.custom.patch_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    constants.NODE_HELPER_PLURAL,
                    self.node,
                    {"metadata": {"ownerReferences": [owner]}},
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            return
        owner = self._owner()
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.NODE_HELPER_KIND,
            "metadata": {"name": self.node, **({"ownerReferences": [owner]} if owner else {})},
        }
        try:
            self.custom.create_cluster_custom_object(
                constants.GROUP,
                constants.VERSION,
                constants.NODE_HELPER_PLURAL,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as create_error:
            if create_error.status != HTTP_CONFLICT:
                raise

    def _patch(self, status: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            constants.GROUP,
            constants.VERSION,
            constants.NODE_HELPER_PLURAL,
            self.node,
            {"status": status},
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def status_body(self, status: NodeHelperStatus, *, now: datetime.datetime) -> dict[str, Any]:
        self._conditions = set_condition(
            self._conditions,
            Condition(
                type=constants.CONDITION_READY,
                status=ConditionStatus.TRUE,
                reason="HelperRunning",
                message="the helper's SSH server is serving",
            ),
            now=now,
        )
        published = status.model_copy(
            update={"heartbeat_time": now, "conditions": self._conditions}
        )
        body = to_wire(published)
        # A merge patch keeps what it does not mention: what the node no longer has (its
        # CRI socket gone, CRIU removed) is sent as null, so the status stops claiming it.
        every = published.model_dump(mode="json", by_alias=True)
        body.update({key: None for key, value in every.items() if value is None})
        return body

    async def publish(self, status: NodeHelperStatus) -> None:
        body = self.status_body(
            status, now=datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        )
        await asyncio.to_thread(self._ensure)
        await asyncio.to_thread(self._patch, body)
