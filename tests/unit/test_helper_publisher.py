"""What a helper writes into its NodeHelper's status at each heartbeat."""

from __future__ import annotations

import datetime
from typing import Any

from ferry_api.nodehelper import CriInfo, NodeHelperStatus
from ferry_helper.publisher import Publisher
from kubernetes import client
from kubernetes.client.exceptions import ApiException

NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


def test_what_the_node_no_longer_has_is_sent_as_null_so_the_merge_patch_drops_it() -> None:
    publisher = Publisher(client.ApiClient(), node="node-a")
    had = publisher.status_body(
        NodeHelperStatus(node_name="node-a", cri=CriInfo(runtime="containerd", version="2.1.9")),
        now=NOW,
    )
    assert had["cri"] == {"runtime": "containerd", "version": "2.1.9", "checkpointImages": False}
    lost = publisher.status_body(NodeHelperStatus(node_name="node-a"), now=NOW)
    assert lost["cri"] is None, "a merge patch keeps a field it is not told to delete"
    assert lost["criu"] is None
    assert lost["nodeName"] == "node-a"
    assert lost["conditions"][0]["type"] == "Ready"


class Api:
    """The API server as a helper's publisher sees it: its Node, and NodeHelpers."""

    def __init__(self, helpers: dict[str, dict[str, Any]], nodes: dict[str, str]) -> None:
        self.helpers, self.nodes = helpers, nodes
        self.patches: list[dict[str, Any]] = []

    def read_node(self, name: str, **_: Any) -> client.V1Node:
        if name not in self.nodes:
            raise ApiException(status=404)
        return client.V1Node(metadata=client.V1ObjectMeta(name=name, uid=self.nodes[name]))

    def get_cluster_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
        name = args[-1]
        if name not in self.helpers:
            raise ApiException(status=404)
        return self.helpers[name]

    def create_cluster_custom_object(self, *args: Any, **_: Any) -> None:
        body = args[-1]
        self.helpers[body["metadata"]["name"]] = body

    def patch_cluster_custom_object(self, *args: Any, **_: Any) -> None:
        name, patch = args[-2], args[-1]
        self.patches.append(patch)
        self.helpers[name]["metadata"].update(patch["metadata"])


def publisher_on(api: Api, node: str) -> Publisher:
    publisher = Publisher(client.ApiClient(), node=node)
    publisher.custom = api  # type: ignore[assignment]
    publisher.core = api  # type: ignore[assignment]
    return publisher


def test_a_nodehelper_is_owned_by_its_node_and_goes_with_it() -> None:
    api = Api({}, {"node-a": "uid-a"})
    publisher_on(api, "node-a")._ensure()
    owner = {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-a"}
    assert api.helpers["node-a"]["metadata"]["ownerReferences"] == [owner]
    # One made before owners were set gets its owner once; then it is left alone.
    api.helpers["node-b"] = {"metadata": {"name": "node-b"}}
    api.nodes["node-b"] = "uid-b"
    publisher_on(api, "node-b")._ensure()
    publisher_on(api, "node-b")._ensure()
    assert len(api.patches) == 1
    assert api.helpers["node-b"]["metadata"]["ownerReferences"][0]["uid"] == "uid-b"
    # No Node of that name (a helper run beside the cluster): made without an owner.
    publisher_on(api, "node-z")._ensure()
    assert "ownerReferences" not in api.helpers["node-z"]["metadata"]
