"""The local cluster's nodes are Kubernetes nodes: kubelets run Ferry's chart, pods talk.

Nothing plays kubelet: ``helm install`` (hooks included) creates the
workloads, each node's kubelet runs them from the images ``make images``
built, and what a cluster admin does to a pod (delete it, roll the DaemonSet
to a new image) is what these tests do.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import deploy, helperlayer, imagebuild, images, kubenode
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    container_state,
    counted_without_restart,
    logged_counts,
    read_count,
    run_counter,
    sh,
    wait_counting,
)
from kubernetes import client
from support import create_migration, wait_migration

pytestmark = pytest.mark.e2e


def kubectl_json(config: ClusterConfig, *args: str) -> Any:
    return json.loads(ferry_pods.kubectl(config, *args, "-o", "json"))


def migrate_a_counter(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, name: str
) -> dict[str, Any]:
    node_a, node_b = ferry.node_specs()[:2]
    run_counter(node_a, name, labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node_a, name, above=2, timeout=60)
    create_migration(
        custom,
        namespace,
        name,
        {"source": {"node": node_a.name, "container": name}, "target": {"node": node_b.name}},
    )
    return wait_migration(custom, namespace, name, timeout=180, poll=0.3)


def test_the_kubelets_run_ferry_from_its_images_with_the_hooks_done(ferry: ClusterConfig) -> None:
    version = imagebuild.version(helperlayer.source_root())
    for node in ferry.node_specs():
        pod = kubectl_json(
            ferry, "get", "pod", deploy.helper_pod(ferry, node), "-n", deploy.NAMESPACE
        )
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] == node.name
        assert pod["status"]["containerStatuses"][0]["image"].endswith(
            f"ferry/node-helper:{version}"
        )
        # The kubelet's own process tree: the helper runs in the node, under containerd.
        assert ferry_pods.pid_in_node(node, ferry_pods.HELPER_COMMAND) is not None
        # Its NodeHelper belongs to the Node: deleting the Node deletes it.
        helper = kubectl_json(ferry, "get", "nodehelper", node.name)
        owner = kubectl_json(ferry, "get", "node", node.name)["metadata"]["uid"]
        assert [(o["kind"], o["uid"]) for o in helper["metadata"]["ownerReferences"]] == [
            ("Node", owner)
        ]
    operator = kubectl_json(ferry, "get", "pod", deploy.operator_pod(ferry), "-n", deploy.NAMESPACE)
    assert operator["status"]["phase"] == "Running"
    assert operator["status"]["containerStatuses"][0]["image"].endswith(f"ferry/operator:{version}")
    # The pre-install hook Job ran (its Secrets exist) and its pods were cleaned up.
    secrets = ferry_pods.kubectl(ferry, "get", "secrets", "-n", deploy.NAMESPACE, "-o", "name")
    assert f"secret/{deploy.RELEASE}-operator-ssh" in secrets.split()
    assert ferry_pods.kubectl(ferry, "get", "jobs", "-n", deploy.NAMESPACE, "-o", "name") == ""
    # `kubectl logs` reaches the kubelets.
    assert "serving SSH on" in deploy.logs(
        ferry, deploy.helper_pod(ferry, ferry.node_specs()[0]), tail=-1
    )


def test_a_deleted_helper_pod_is_recreated_and_the_next_migration_succeeds(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    old = deploy.helper_pod(ferry, node_a)
    ferry_pods.kubectl(ferry, "delete", "pod", old, "-n", deploy.NAMESPACE, "--wait=true")
    ferry_pods.wait_replaced_helper(ferry, node_a, old)

    name = "after-delete"
    status = migrate_a_counter(ferry, custom, namespace, name)
    assert status["phase"] == "Succeeded", status
    assert container_state(node_a, name) == ""
    assert counted_without_restart(logged_counts(node_b, name))
    sh(node_b, f"podman rm -f -t 0 {name}")


def _busybox_pod(name: str, node: NodeSpec, command: str, *, restart: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": restart,
            "containers": [
                {
                    "name": "main",
                    "image": images.BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command],
                }
            ],
        },
    }


def test_a_pod_on_one_node_reaches_a_pod_on_another(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    core = client.CoreV1Api(admin_api)
    word = uuid.uuid4().hex[:8]
    server = _busybox_pod(
        "server",
        node_a,
        f"while true; do echo {word} from $(hostname) | nc -l -p 8080; done",
        restart="Always",
    )
    core.create_namespaced_pod(namespace, server)
    deadline = time.monotonic() + 90
    while not (ip := core.read_namespaced_pod("server", namespace).status.pod_ip):
        assert time.monotonic() < deadline, "the server pod got no address"
        time.sleep(0.5)
    assert ip in [str(a) for a in node_a.pod_cidr], f"{ip} is not node-a's pod range"
    client_pod = _busybox_pod(
        "client",
        node_b,
        f"for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 3 {ip} 8080 && exit 0; sleep 1; done; exit 1",
        restart="Never",
    )
    core.create_namespaced_pod(namespace, client_pod)
    while (phase := core.read_namespaced_pod("client", namespace).status.phase) not in (
        "Succeeded",
        "Failed",
    ):
        assert time.monotonic() < deadline + 60, f"the client pod is still {phase}"
        time.sleep(0.5)
    said = core.read_namespaced_pod_log("client", namespace)
    assert phase == "Succeeded", said
    assert said.strip() == f"{word} from server"


def test_helm_upgrade_to_a_new_image_rolls_the_helpers_with_a_migration_in_flight(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """A changed image rolls the DaemonSet under a migration: it ends Succeeded, or Failed
    with the source running; either way exactly one copy counts on, from where it was."""
    node_a, node_b = ferry.node_specs()[:2]
    version = imagebuild.version(helperlayer.source_root())
    new_tag = f"{version}-rolled"
    for node in ferry.node_specs():
        kubenode.tag_image(
            node, f"docker.io/ferry/node-helper:{version}", f"docker.io/ferry/node-helper:{new_tag}"
        )
    name = "rolled"
    run_counter(node_a, name, labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=96 << 20)
    wait_counting(node_a, name, above=2, timeout=60)
    create_migration(
        custom,
        namespace,
        name,
        {
            "source": {"node": node_a.name, "container": name},
            "target": {"node": node_b.name},
            "compression": "none",
        },
    )
    wait_migration(
        custom,
        namespace,
        name,
        lambda s: s.get("phase") in ("Checkpointing", "Transferring", "Restoring"),
        poll=0.02,
    )
    try:
        deploy.install(ferry, extra={"nodeHelper.image.tag": new_tag})
        status = wait_migration(custom, namespace, name, timeout=300, poll=0.5)
        on_a, on_b = container_state(node_a, name), container_state(node_b, name)
        assert status["phase"] in ("Succeeded", "Failed"), status
        where = node_b if status["phase"] == "Succeeded" else node_a
        assert (on_a, on_b) == (("", "running") if where is node_b else ("running", "")), (
            status,
            on_a,
            on_b,
        )
        wait_counting(where, name, above=read_count(where, name), timeout=15)
        assert counted_without_restart(logged_counts(where, name)), "the process started over"
        for node in ferry.node_specs():
            pod = kubectl_json(
                ferry, "get", "pod", deploy.helper_pod(ferry, node), "-n", deploy.NAMESPACE
            )
            assert pod["spec"]["containers"][0]["image"].endswith(f":{new_tag}")
        sh(where, f"podman rm -f -t 0 {name}")
    finally:
        deploy.install(ferry)
        deploy.wait_for_helpers(ferry)
