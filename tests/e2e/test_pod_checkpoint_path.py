"""Upstream's path for a pod's container, by hand, on the kubelet nodes: what PodMigration
(issue 17) automates, and the baseline it is to be measured against.

The kubelet checkpoints a running pod's container; the archive becomes a checkpoint
image in the other node's containerd; a pod there with that image goes on with the
same process: it counts on from where it was, and the command of its spec never runs.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from ferry_cluster import images, kubenode, podcheckpoint, registry
from ferry_cluster.config import ClusterConfig, NodeSpec
from kubernetes import client

pytestmark = pytest.mark.e2e

COUNTER = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"


def _pod(name: str, node: NodeSpec, image: str, command: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node.name,
            "containers": [
                {
                    "name": "counter",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", command],
                }
            ],
        },
    }


def _running(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    deadline = time.monotonic() + 90
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if pod.status.phase == "Running" and statuses and statuses[0].ready:
            return pod
        assert time.monotonic() < deadline, f"{name} is {pod.status.phase}: {statuses}"
        time.sleep(0.3)


def _counts(core: client.CoreV1Api, namespace: str, name: str) -> list[int]:
    log = core.read_namespaced_pod_log(name, namespace)
    return [int(line) for line in log.split() if line.isdigit()]


def _wait_more_counts(
    core: client.CoreV1Api, namespace: str, name: str, *, than: int, timeout: float = 30
) -> list[int]:
    """The pod's counts once its log has more than ``than`` of them: it is counting."""
    deadline = time.monotonic() + timeout
    while len(counts := _counts(core, namespace, name)) <= than:
        assert time.monotonic() < deadline, f"{name} stopped counting at {counts[-5:]}"
        time.sleep(0.2)
    return counts


def test_a_pods_container_checkpointed_by_its_kubelet_goes_on_in_a_pod_on_another_node(
    local_cluster: ClusterConfig, admin_api: client.ApiClient, namespace: str, tmp_path: Any
) -> None:
    node_a, node_b = local_cluster.node_specs()[:2]
    core = client.CoreV1Api(admin_api)
    registry.ensure(local_cluster)
    # From a registry, by digest: containerd's restore pulls the base image by what the
    # archive records, and an image imported without a registry records a bare ID.
    image = registry.push(local_cluster, node_a, images.BUSYBOX_IMAGE, "ferry/busybox")
    core.create_namespaced_pod(namespace, _pod("counter", node_a, image, COUNTER))
    _running(core, namespace, "counter")
    _wait_more_counts(core, namespace, "counter", than=9)

    archive = podcheckpoint.kubelet_checkpoint(
        local_cluster, node_a, namespace=namespace, pod="counter", container="counter"
    )
    assert archive.startswith(f"/var/lib/kubelet/checkpoints/checkpoint-counter_{namespace}-")
    reference = f"localhost/checkpoint/counter:{uuid.uuid4().hex[:8]}"
    layout = podcheckpoint.build_checkpoint_image(
        node_a, archive, container="counter", reference=reference, out=tmp_path / "image.tar"
    )
    kubenode.import_image(node_b, layout)
    core.delete_namespaced_pod("counter", namespace, grace_period_seconds=0)

    # A command that would print STARTED: the restore must not run it.
    restored_pod = _pod("restored", node_b, reference, "echo STARTED; sleep 3600")
    restored_pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    core.create_namespaced_pod(namespace, restored_pod)
    pod = _running(core, namespace, "restored")
    assert pod.status.container_statuses[0].restart_count == 0
    first = _counts(core, namespace, "restored")
    later = _wait_more_counts(core, namespace, "restored", than=len(first))
    log = core.read_namespaced_pod_log("restored", namespace)
    assert "STARTED" not in log, "the pod started its command instead of the checkpoint"
    assert later[-1] > first[-1] >= 10, (first[-5:], later[-5:])
    assert later[0] == 1, "the container's log carries over from node-a"
    assert len(later) > len(first), "and the restored process goes on counting"
