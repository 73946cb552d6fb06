"""``kubectl drain`` on the real cluster: pods that opt in are live-migrated, not evicted.

What an admin checks after a plain ``kubectl drain``: the drain ended; the pod
annotated ``ferry.dev/evacuation: migrate`` runs on another node as the same
process (restart count 0, its count goes on, one STARTED), while a pod without
the annotation was evicted and started afresh; a pod that cannot move makes the
drain fail with the reason and still runs on the node, until its annotation
says ``migrate-or-evict``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import ferry_pods
import pytest
from counter_pods import COUNTER, counting, running_pod
from ferry_api import constants
from ferry_cluster import cluster, images, procs, registry
from ferry_cluster.config import ClusterConfig, NodeSpec
from kubernetes import client

pytestmark = pytest.mark.e2e

TEST_LABEL = "ferry-test/drain"


@pytest.fixture(scope="module")
def image(ferry: ClusterConfig) -> str:
    registry.ensure(ferry)
    return registry.push(ferry, ferry.node_specs()[0], images.BUSYBOX_IMAGE, "ferry/busybox")


@pytest.fixture
def drained(ferry: ClusterConfig, custom: client.CustomObjectsApi) -> Iterator[NodeSpec]:
    """A node that is not the operator's; schedulable again and its evacuations gone after."""
    operator = ferry_pods.operator_node(ferry)
    node = next(n for n in ferry.node_specs() if n != operator)
    yield node
    ferry_pods.kubectl(ferry, "uncordon", node.name)
    for body in custom.list_cluster_custom_object(
        constants.GROUP, constants.VERSION, constants.NODE_EVACUATION_PLURAL
    )["items"]:
        if body["spec"]["nodeName"] == node.name:
            ferry_pods.kubectl(
                ferry, "delete", "nodeevacuation", body["metadata"]["name"], check=False
            )


def deployment(
    name: str, namespace: str, node: str, image: str, *, opt: str | None, pinned: bool = False
) -> dict[str, Any]:
    labels = {"app": name, TEST_LABEL: namespace}
    annotations = {constants.EVACUATION_ANNOTATION: opt} if opt else {}
    placement: dict[str, Any]
    if pinned:  # fits this node only: no other node may take it
        placement = {"nodeSelector": {"kubernetes.io/hostname": node}}
    else:
        term = {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]
        }
        placement = {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": term}
                    ]
                }
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "counter", "image": image, "command": ["sh", "-c", COUNTER]}
                    ],
                    **placement,
                },
            },
        },
    }


def drain(
    ferry: ClusterConfig, node: str, namespace: str, timeout: str
) -> subprocess.CompletedProcess[str]:
    """Plain ``kubectl drain``, limited to this test's pods (others' pods stay put)."""
    return procs.run(
        [
            *cluster.kubectl(ferry),
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            f"--pod-selector={TEST_LABEL}={namespace}",
            f"--timeout={timeout}",
        ],
        check=False,
        timeout=600,
    )


def test_kubectl_drain_live_migrates_the_pods_that_opted_in_and_evicts_the_rest(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    namespace: str,
    drained: NodeSpec,
    image: str,
) -> None:
    core, apps = client.CoreV1Api(custom.api_client), client.AppsV1Api(custom.api_client)
    node = drained.name
    apps.create_namespaced_deployment(
        namespace, deployment("moved", namespace, node, image, opt=constants.EVACUATION_MIGRATE)
    )
    apps.create_namespaced_deployment(
        namespace, deployment("evicted", namespace, node, image, opt=None)
    )
    moved, evicted = (
        running_pod(core, namespace, "app=moved"),
        running_pod(core, namespace, "app=evicted"),
    )
    assert (moved.spec.node_name, evicted.spec.node_name) == (node, node)
    before = counting(core, namespace, moved.metadata.name, above=10)

    started = time.monotonic()
    result = drain(ferry, node, namespace, "300s")
    took = time.monotonic() - started
    print(result.stdout, result.stderr, f"drain took {took:.1f}s", sep="\n")
    assert result.returncode == 0, result.stderr
    assert "live-migrates this pod instead of evicting it" in result.stderr
    assert f"node/{node} drained" in result.stdout

    # The opted-in pod: the same process on another node, counting on.
    copy = running_pod(core, namespace, "app=moved")
    assert copy.metadata.name != moved.metadata.name
    assert copy.spec.node_name != node
    assert (copy.metadata.annotations or {}).get(constants.MIGRATED_FROM_ANNOTATION)
    assert copy.status.container_statuses[0].restart_count == 0
    after = counting(core, namespace, copy.metadata.name, above=before[-1] + 5)
    assert after[: len(before)] == before, "the log carries over"
    assert after == list(range(1, len(after) + 1)), "no count lost or repeated"
    log = core.read_namespaced_pod_log(copy.metadata.name, namespace)
    assert log.count("STARTED") == 1, "a restart, not a live migration"

    # The other pod was evicted: started afresh elsewhere by its ReplicaSet.
    fresh = running_pod(core, namespace, "app=evicted")
    assert fresh.metadata.name != evicted.metadata.name
    assert fresh.spec.node_name != node
    assert constants.MIGRATED_FROM_ANNOTATION not in (fresh.metadata.annotations or {})

    # The record of it: a NodeEvacuation the eviction started, the pod moved.
    made = [
        body
        for body in custom.list_cluster_custom_object(
            constants.GROUP,
            constants.VERSION,
            constants.NODE_EVACUATION_PLURAL,
            label_selector=f"{constants.EVACUATION_TRIGGER_LABEL}=eviction",
        )["items"]
        if body["spec"]["nodeName"] == node
    ]
    assert len(made) == 1, [b["metadata"]["name"] for b in made]
    ours = [w for w in made[0]["status"]["workloads"] if w["namespace"] == namespace]
    assert [(w["name"], w["state"]) for w in ours] == [(moved.metadata.name, "Moved")], ours
    downtime = ours[0]["downtimeSeconds"]
    print(f"drain {took:.1f}s; the pod's downtime {downtime:.2f}s")


def test_a_pod_that_cannot_move_stops_the_drain_and_runs_on_until_it_may_be_evicted(
    ferry: ClusterConfig,
    admin_api: client.ApiClient,
    namespace: str,
    drained: NodeSpec,
    image: str,
) -> None:
    core, apps = client.CoreV1Api(admin_api), client.AppsV1Api(admin_api)
    node = drained.name
    apps.create_namespaced_deployment(
        namespace,
        deployment("pinned", namespace, node, image, opt=constants.EVACUATION_MIGRATE, pinned=True),
    )
    pinned = running_pod(core, namespace, "app=pinned")
    before = counting(core, namespace, pinned.metadata.name, above=5)

    result = drain(ferry, node, namespace, "120s")
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode != 0, "the drain cannot complete"
    assert "could not live-migrate this pod" in result.stderr
    assert f"keeps running on {node}" in result.stderr
    still = core.read_namespaced_pod(pinned.metadata.name, namespace)
    assert (still.spec.node_name, still.status.phase) == (node, "Running")
    assert still.status.container_statuses[0].restart_count == 0
    counting(core, namespace, pinned.metadata.name, above=before[-1] + 5)

    # The owner says an eviction is acceptable when a move is not: the next drain evicts it.
    core.patch_namespaced_pod(
        pinned.metadata.name,
        namespace,
        {"metadata": {"annotations": {constants.EVACUATION_ANNOTATION: "migrate-or-evict"}}},
    )
    again = drain(ferry, node, namespace, "120s")
    print(again.stdout, again.stderr, sep="\n")
    assert again.returncode == 0, again.stderr
    assert f"pod/{pinned.metadata.name} evicted" in again.stdout
