"""NodeEvacuation on the real cluster: a node emptied of what Ferry may move, two at a time.

What an admin checks after `kubectl ferry drain`: the node is cordoned; every
container and opted-in pod runs on another node, the same processes counting
on; never more than the limit left the node at once; a pod that fits no
other node is reported and still runs where it was.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import ferry_pods
import pytest
from counter_pods import COUNTER, pod_counts
from ferry_api import constants
from ferry_cluster import images, registry
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

pytestmark = pytest.mark.e2e

CONTAINERS = ("evac-a", "evac-b", "evac-c", "evac-d")
PODS = ("evac-pod-a", "evac-pod-b")
PINNED = "evac-pinned"


@pytest.fixture
def drained(ferry: ClusterConfig) -> Iterator[NodeSpec]:
    """A node that is not the operator's, made schedulable again afterwards."""
    operator = ferry_pods.operator_node(ferry)
    node = next(n for n in ferry.node_specs() if n != operator)
    yield node
    ferry_pods.kubectl(ferry, "uncordon", node.name)
    ferry_pods.kubectl(
        ferry, "delete", "nodeevacuation", f"drain-{node.name}", "--ignore-not-found", check=False
    )


def counter_pod(
    name: str, namespace: str, node: str, image: str, *, pinned: bool
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "counter", "image": image, "command": ["sh", "-c", COUNTER]}],
    }
    if pinned:  # fits this node only: no other node may take it
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
            "annotations": {constants.EVACUATION_ANNOTATION: constants.EVACUATION_MIGRATE},
        },
        "spec": spec,
    }


def wait_running(core: client.CoreV1Api, namespace: str, name: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if pod.status.phase == "Running" and statuses and all(s.ready for s in statuses):
            return
        assert time.monotonic() < deadline, f"{name}: {pod.status.phase}"
        time.sleep(0.3)


def most_at_once(spans: list[tuple[datetime.datetime, datetime.datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def span(status: dict[str, Any]) -> tuple[datetime.datetime, datetime.datetime]:
    times = [datetime.datetime.fromisoformat(t["time"]) for t in status["phaseTransitions"]]
    return min(times), max(times)


def test_a_drained_node_is_cordoned_and_emptied_two_at_a_time(
    ferry: ClusterConfig,
    admin_api: client.ApiClient,
    custom: client.CustomObjectsApi,
    namespace: str,
    drained: NodeSpec,
) -> None:
    core = client.CoreV1Api(admin_api)
    registry.ensure(ferry)
    image = registry.push(ferry, ferry.node_specs()[0], images.BUSYBOX_IMAGE, "ferry/busybox")
    node = drained
    for name in CONTAINERS:
        run_counter(node, name, labels={constants.NAMESPACE_LABEL: namespace})
    for name in (*PODS, PINNED):
        core.create_namespaced_pod(
            namespace, counter_pod(name, namespace, node.name, image, pinned=name == PINNED)
        )
    for name in CONTAINERS:
        wait_counting(node, name, above=3, timeout=60)
    for name in (*PODS, PINNED):
        wait_running(core, namespace, name)

    started = time.monotonic()
    drain = ferry_pods.kubectl_ferry(ferry, "drain", node.name, "--max-parallel", "2", timeout=600)
    took = time.monotonic() - started
    print(drain.stdout, drain.stderr, f"evacuation took {took:.1f}s", sep="\n")
    assert drain.returncode == 1, "one pod could not move: exit 1"
    assert f"pod {namespace}/{PINNED}: refused" in drain.stdout
    assert f"still runs on {node.name}" in drain.stdout

    body = custom.get_cluster_custom_object(
        constants.GROUP, constants.VERSION, constants.NODE_EVACUATION_PLURAL, f"drain-{node.name}"
    )
    status = body["status"]
    assert status["phase"] == "Incomplete", status
    # Ours (a pod another test left on the node, opted in too, may have moved with them).
    ours = [w for w in status["workloads"] if w["namespace"] == namespace]
    states = sorted(w["state"] for w in ours)
    assert states == ["Moved"] * 6 + ["Refused"], ours
    assert (
        ferry_pods.kubectl(ferry, "get", "node", node.name, "-o", "jsonpath={.spec.unschedulable}")
        == "true"
    )

    # Never more than two left the node at once.
    spans, one_by_one = [], 0.0
    for plural in (constants.CONTAINER_MIGRATION_PLURAL, constants.POD_MIGRATION_PLURAL):
        for child in custom.list_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            label_selector=f"{constants.EVACUATION_LABEL}=drain-{node.name}",
        )["items"]:
            spans.append(span(child["status"]))
            one_by_one += (child["status"].get("timings") or {}).get("totalSeconds") or 0.0
    print(
        f"evacuated in {took:.1f}s; its {len(spans)} migrations took {one_by_one:.1f}s "
        "added up (one after another)"
    )
    assert most_at_once(spans) <= 2, spans

    # Every container counts on elsewhere: the same process, no restart.
    for workload in ours:
        if workload["kind"] != "Container":
            continue
        assert workload["state"] == "Moved", workload
        target = next(n for n in ferry.node_specs() if n.name == workload["target"])
        name = workload["name"]
        assert container_state(node, name) == "", f"{name} is still on {node.name}"
        wait_counting(target, name, above=read_count(target, name), timeout=30)
        assert counted_without_restart(logged_counts(target, name)), name
        sh(target, f"podman rm -f -t 0 {name}")

    # The pods' replacements run elsewhere and count on; the pinned one runs where it was.
    for pod in core.list_namespaced_pod(namespace).items:
        source = (pod.metadata.annotations or {}).get(constants.MIGRATED_FROM_ANNOTATION)
        if source is None:
            continue
        assert pod.spec.node_name != node.name
        counts = pod_counts(core, namespace, pod.metadata.name)
        assert counts[:1] == [1]
        assert counts == list(range(1, len(counts) + 1)), "restarted or lost a count"
    moved_pods = [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name in PODS]
    assert moved_pods == [], "the source pods are gone"
    pinned = core.read_namespaced_pod(PINNED, namespace)
    assert pinned.spec.node_name == node.name
    assert pinned.status.phase == "Running"
    assert (pinned.status.container_statuses or [])[0].restart_count == 0
