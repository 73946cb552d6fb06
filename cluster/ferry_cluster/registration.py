"""Register each simulated node as a ``Node`` object, as a kubelet would.

There is no kubelet: the harness writes the Node's labels, addresses, node info
and a Ready condition once, at ``up``. Nothing evicts anything here (no
controller-manager), so the condition stays as written.
"""

from __future__ import annotations

import datetime
import platform
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .config import ClusterConfig, NodeSpec

SIMULATED_LABEL = "ferry.dev/simulated-node"
HTTP_NOT_FOUND = 404


def node_labels(config: ClusterConfig, node: NodeSpec) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        SIMULATED_LABEL: config.name,
    }


def node_status(node: NodeSpec, *, runtime_version: str, now: datetime.datetime) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "addresses": [
            {"type": "InternalIP", "address": str(node.address)},
            {"type": "Hostname", "address": node.name},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "SimulatedNodeRunning",
                "message": "simulated by ferry-cluster; no kubelet runs here",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "osImage": "Debian GNU/Linux 13 (trixie)",
            "kernelVersion": platform.release(),
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": "",
            "kubeProxyVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def register(
    api: client.CoreV1Api, config: ClusterConfig, node: NodeSpec, *, runtime_version: str
) -> None:
    metadata = client.V1ObjectMeta(name=node.name, labels=node_labels(config, node))
    try:
        api.read_node(node.name)
        api.patch_node(node.name, {"metadata": {"labels": metadata.labels}})
    except ApiException as error:
        if error.status != HTTP_NOT_FOUND:
            raise
        api.create_node(client.V1Node(metadata=metadata))
    status = node_status(
        node, runtime_version=runtime_version, now=datetime.datetime.now(datetime.UTC)
    )
    api.patch_node_status(node.name, {"status": status})


def unregister_missing(api: client.CoreV1Api, config: ClusterConfig) -> None:
    """Delete Node objects of this cluster's nodes that no longer exist (a smaller ``up``)."""
    wanted = {n.name for n in config.node_specs()}
    nodes = api.list_node(label_selector=f"{SIMULATED_LABEL}={config.name}")
    for item in nodes.items:
        name = item.metadata.name if item.metadata else None
        if name and name not in wanted:
            api.delete_node(name)
