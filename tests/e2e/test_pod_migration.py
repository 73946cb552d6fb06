"""PodMigration on the kubelet nodes: a Deployment's pod, a two-container pod, bad input.

What a user checks: the counter held in memory goes on from where it was in a pod on
another node (restart count 0, the spec's command never ran again, its log carries
over), the Deployment ends with its replica count and the source pod is gone; a pod
Ferry must not move is refused with its reason and keeps running untouched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from counter_pods import COUNTER, counting, running_pod
from ferry_api import constants
from ferry_cluster import cluster, deploy, images, kubenode, nodes, registry
from ferry_cluster.config import ClusterConfig
from kubernetes import client

from tests.support import create_resource, succeeded_reason, wait_resource_phase

pytestmark = pytest.mark.e2e

PLURAL = constants.POD_MIGRATION_PLURAL


@pytest.fixture(scope="module")
def image(ferry: ClusterConfig) -> str:
    """busybox from the cluster's registry, by digest: containerd's restore pulls the base
    image the archive names, so it must come from somewhere the target can pull."""
    registry.ensure(ferry)
    return registry.push(ferry, ferry.node_specs()[0], images.BUSYBOX_IMAGE, "ferry/busybox")


@pytest.fixture
def core(admin_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(admin_api)


@pytest.fixture
def apps(admin_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(admin_api)


def _container(name: str, image: str) -> dict[str, Any]:
    return {"name": name, "image": image, "command": ["sh", "-c", COUNTER]}


def _gone(core: client.CoreV1Api, namespace: str, pod: str) -> None:
    """Until ``pod`` is deleted (its frozen processes were killed: a few seconds at most)."""
    deadline = time.monotonic() + 30
    while core.list_namespaced_pod(namespace, field_selector=f"metadata.name={pod}").items:
        assert time.monotonic() < deadline, f"{pod} is still there"
        time.sleep(0.2)


def _move(
    custom: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    create_resource(custom, namespace, PLURAL, name, spec)
    return wait_resource_phase(
        custom, namespace, PLURAL, name, phases=("Succeeded", "Failed", "Cancelled")
    )


@pytest.fixture
def deployment(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, image: str
) -> Iterator[client.V1Pod]:
    labels = {"app": "counter"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "counter"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [_container("counter", image)],
                    },
                },
            },
        },
    )
    yield running_pod(core, namespace, "app=counter")
    apps.delete_namespaced_deployment("counter", namespace)


def test_a_deployments_pod_moves_to_another_node_and_counts_on(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    deployment: client.V1Pod,
) -> None:
    source = deployment
    before = counting(core, namespace, source.metadata.name, "counter", above=10)

    status = _move(custom, namespace, "move-counter", {"podName": source.metadata.name})

    assert status["phase"] == "Succeeded", status
    assert status["sourceNode"] == source.spec.node_name
    target = status["targetNode"]
    assert target != source.spec.node_name
    moved = running_pod(core, namespace, "app=counter")
    assert moved.metadata.name == status["targetPod"]
    assert moved.spec.node_name == target
    assert moved.metadata.owner_references[0].kind == "ReplicaSet", "adopted by its ReplicaSet"
    assert moved.status.container_statuses[0].restart_count == 0
    after = counting(core, namespace, moved.metadata.name, "counter", above=before[-1] + 5)
    log = core.read_namespaced_pod_log(moved.metadata.name, namespace)
    assert log.count("STARTED") == 1, "the command ran again: a restart, not a restore"
    assert after[: len(before)] == before, "the log carries over from the source"
    assert after == list(range(1, len(after) + 1)), "no count lost or repeated"
    assert status["timings"]["downtimeSeconds"] > 0
    _gone(core, namespace, source.metadata.name)
    # The ReplicaSet settled on its count: no fresh pod was started beside the copy.
    time.sleep(2)
    pods = core.list_namespaced_pod(namespace, label_selector="app=counter").items
    assert [p.metadata.name for p in pods] == [moved.metadata.name]
    scale = apps.read_namespaced_deployment("counter", namespace)
    assert (scale.status.replicas, scale.status.ready_replicas) == (1, 1)


def test_a_two_container_pod_moves_whole(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    image: str,
) -> None:
    node_a, node_b = (n.name for n in ferry.node_specs()[:2])
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pair", "labels": {"app": "pair"}},
            "spec": {
                "nodeName": node_a,
                "containers": [_container("left", image), _container("right", image)],
            },
        },
    )
    running_pod(core, namespace, "app=pair")
    left = counting(core, namespace, "pair", "left", above=5)
    right = counting(core, namespace, "pair", "right", above=5)

    status = _move(custom, namespace, "move-pair", {"podName": "pair", "target": {"node": node_b}})

    assert status["phase"] == "Succeeded", status
    assert status["containers"] == ["left", "right"]
    moved = running_pod(core, namespace, "app=pair")
    assert (moved.metadata.name, moved.spec.node_name) == (status["targetPod"], node_b)
    for name, seen in (("left", left), ("right", right)):
        counts = counting(core, namespace, moved.metadata.name, name, above=seen[-1] + 3)
        assert counts == list(range(1, len(counts) + 1)), f"{name} counted on"
    assert all(s.restart_count == 0 for s in moved.status.container_statuses)


def test_pods_ferry_must_not_move_are_refused_and_keep_running(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    image: str,
) -> None:
    status = _move(custom, namespace, "move-nothing", {"podName": "no-such-pod"})
    assert (status["phase"], succeeded_reason(status)) == ("Failed", "PodNotFound")

    apps.create_namespaced_stateful_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [_container("db", image)]},
                },
            },
        },
    )
    pod = running_pod(core, namespace, "app=db")
    seen = counting(core, namespace, pod.metadata.name, "db", above=3)

    status = _move(custom, namespace, "move-db", {"podName": pod.metadata.name})

    assert (status["phase"], succeeded_reason(status)) == ("Failed", "UnsupportedOwner")
    assert "StatefulSet db" in status["message"]
    assert "freezeTime" not in status, "refused before anything froze"
    counting(core, namespace, pod.metadata.name, "db", above=seen[-1] + 3)
    still = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert still.status.container_statuses[0].restart_count == 0


def test_a_pod_that_cannot_restore_on_the_target_rolls_back_and_counts_on(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """An image imported into node-a alone (no registry): node-b's containerd cannot pull
    the base image the archive names, so the restore fails after the freeze."""
    node_a, node_b = ferry.node_specs()[:2]
    # busybox, under an image ID of its own: no other test can have put it on node-b.
    unique = uuid.uuid4().hex[:8]
    local = images.write_docker_archive(
        tmp_path / "busybox.tar",
        layer=images.busybox_layer(cluster.ensure_rootfs() / "usr/bin/busybox"),
        reference=f"localhost/ferry/only-on-node-a:{unique}",
        cmd=["/bin/sh"],
        env=["PATH=/bin:/usr/bin", f"FERRY_TEST_IMAGE={unique}"],
    )
    kubenode.import_image(node_a, local.path)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "local", "labels": {"app": "local"}},
        "spec": {
            "nodeName": node_a.name,
            "containers": [{**_container("counter", local.reference), "imagePullPolicy": "Never"}],
        },
    }
    core.create_namespaced_pod(namespace, body)
    source = running_pod(core, namespace, "app=local")
    seen = counting(core, namespace, "local", "counter", above=5)

    status = _move(
        custom,
        namespace,
        "move-local",
        {"podName": "local", "target": {"node": node_b.name}, "timeoutSeconds": 120},
    )

    assert (status["phase"], succeeded_reason(status)) == ("Failed", "ReplacementNotRunning")
    assert "registry the target can pull from" in status["message"], "what to do is said"
    assert "freezeTime" in status, "it failed after the freeze: a rollback, not a refusal"
    assert "RollingBack" in [t["phase"] for t in status["phaseTransitions"]]
    still = core.read_namespaced_pod("local", namespace)
    assert still.metadata.uid == source.metadata.uid, "the source pod is the same pod"
    assert still.status.container_statuses[0].restart_count == 0
    counts = counting(core, namespace, "local", "counter", above=seen[-1] + 5)
    assert counts == list(range(1, len(counts) + 1)), "it counts on, thawed, nothing lost"
    made = core.list_namespaced_pod(
        namespace, label_selector=f"{constants.POD_MIGRATION_UID_LABEL}"
    ).items
    assert [p.metadata.name for p in made if p.metadata.deletion_timestamp is None] == []
    listed = nodes.run_in(node_b, kubenode.ctr("images", "ls", "-q")).stdout
    assert f"{namespace}-local-counter" not in listed, "its checkpoint image was removed"


def test_a_pod_holding_a_tcp_connection_fails_cleanly_and_counts_on(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    image: str,
) -> None:
    """Across nodes a pod gets a new address, so its connections cannot move; the kubelet's
    checkpoint (no --tcp-established) refuses them, and the pod goes on where it was."""
    node_a, node_b = (n.name for n in ferry.node_specs()[:2])
    talk = "sleep 600 | nc -l -p 9000 >/dev/null & sleep 0.3; sleep 600 | nc 127.0.0.1 9000 & "
    container = {"name": "talker", "image": image, "command": ["sh", "-c", talk + COUNTER]}
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "talker", "labels": {"app": "talker"}},
            "spec": {"nodeName": node_a, "containers": [container]},
        },
    )
    source = running_pod(core, namespace, "app=talker")
    seen = counting(core, namespace, "talker", "talker", above=5)

    status = _move(
        custom, namespace, "move-talker", {"podName": "talker", "target": {"node": node_b}}
    )

    assert (status["phase"], succeeded_reason(status)) == ("Failed", "KubeletCheckpointFailed")
    assert "Connected TCP socket" in status["message"], "CRIU's own words, from its log"
    assert "cannot follow it" in status["message"], "and what to do"
    still = core.read_namespaced_pod("talker", namespace)
    assert still.metadata.uid == source.metadata.uid
    assert still.status.container_statuses[0].restart_count == 0
    counting(core, namespace, "talker", "talker", above=seen[-1] + 5)


def _cri_of(custom: client.CustomObjectsApi) -> dict[str, Any]:
    listed = custom.list_cluster_custom_object(
        constants.GROUP, constants.VERSION, constants.NODE_HELPER_PLURAL
    )
    return {h["metadata"]["name"]: (h.get("status") or {}).get("cri") for h in listed["items"]}


def _until_cri(
    custom: client.CustomObjectsApi, has: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not has(found := _cri_of(custom)):
        assert time.monotonic() < deadline, found
        time.sleep(0.5)


def test_a_target_without_containerds_checkpoint_support_is_refused_before_the_freeze(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    image: str,
) -> None:
    """node-b's helper is pointed at a containerd socket it does not have (as on a node whose
    runtime is not containerd): its NodeHelper stops reporting ``status.cri``, and a pod
    migration to it is refused with that reason, nothing frozen."""
    node_a, node_b, node_c = ferry.node_specs()[:3]
    alias = "/run/ferry-test-cri.sock"
    for node in (node_a, node_c):
        nodes.run_in(node, ["ln", "-sf", kubenode.CRI_SOCKET, alias])
    deploy.install(ferry, extra={"nodeHelper.cri.socket": alias})
    try:
        _until_cri(custom, lambda cri: cri.get(node_b.name) is None and bool(cri.get(node_a.name)))
        core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "stay", "labels": {"app": "stay"}},
                "spec": {"nodeName": node_a.name, "containers": [_container("counter", image)]},
            },
        )
        running_pod(core, namespace, "app=stay")
        seen = counting(core, namespace, "stay", "counter", above=3)

        status = _move(
            custom, namespace, "move-stay", {"podName": "stay", "target": {"node": node_b.name}}
        )

        assert (status["phase"], succeeded_reason(status)) == ("Failed", "TargetUnfit")
        assert f"the node-helper on {node_b.name} reaches no CRI runtime" in status["message"]
        assert "freezeTime" not in status, "refused before anything froze"
        counts = counting(core, namespace, "stay", "counter", above=seen[-1] + 3)
        assert counts == list(range(1, len(counts) + 1))
    finally:
        deploy.install(ferry)
        _until_cri(custom, lambda cri: all(cri.get(n.name) for n in ferry.node_specs()))
