"""Docker containers through Ferry's resources, on the real local cluster.

What a user checks: a docker counter moved by a ContainerMigration counts on
from where it was on the other node, in docker there, and is gone from the
source; a ContainerCheckpoint of it restores in place by a ContainerRestore;
and a node without docker is refused as a target before anything is frozen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from ferry_api import constants
from ferry_cluster import dockerd, images
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import container_state, counter_script, read_count, sh, wait_counting
from kubernetes import client
from support import (
    create_migration,
    create_resource,
    succeeded_reason,
    wait_migration,
    wait_resource_phase,
)

pytestmark = pytest.mark.e2e

COUNTER = counter_script()


def docker_counter(node: NodeSpec, name: str, namespace: str) -> int:
    """A counter under docker on ``node``, allowed to namespace ``namespace``; its value."""
    sh(node, f"docker rm -f {name} >/dev/null 2>&1; true")
    sh(
        node,
        f"docker run -d --name {name} --network host "
        f"--label {constants.NAMESPACE_LABEL}={namespace} {images.BUSYBOX_IMAGE} "
        f"sh -c '{COUNTER}'",
    )
    return wait_counting(node, name, above=3, timeout=30, runtime="docker")


def create(
    custom: client.CustomObjectsApi, namespace: str, plural: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Create a ContainerCheckpoint or ContainerRestore; its status once it is done."""
    create_resource(custom, namespace, plural, name, spec)
    return wait_resource_phase(
        custom, namespace, plural, name, phases=("Ready", "Succeeded", "Failed"), timeout=120
    )


def test_a_docker_counter_moves_to_another_node_and_counts_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_b, "docker rm -f dmove >/dev/null 2>&1; true")
    docker_counter(node_a, "dmove", namespace)
    create_migration(
        custom,
        namespace,
        "move-dmove",
        {"source": {"node": node_a.name, "container": "dmove"}, "target": {"node": node_b.name}},
    )
    status = wait_migration(custom, namespace, "move-dmove")
    assert (status["phase"], succeeded_reason(status)) == ("Succeeded", "Succeeded"), status
    assert status["runtime"] == "docker", "found in docker without being told"
    assert status["timings"]["downtimeSeconds"] > 0
    arrived = read_count(node_b, "dmove", runtime="docker")
    assert container_state(node_b, "dmove", runtime="docker") == "running"
    wait_counting(node_b, "dmove", above=arrived, timeout=30, runtime="docker")
    # Docker's log stays on the source: here it begins after the checkpointed value.
    logged = [int(v) for v in sh(node_b, "docker logs dmove").split()]
    assert logged[0] > 3, "the process started over"
    assert logged == list(range(logged[0], logged[0] + len(logged)))
    assert container_state(node_a, "dmove", runtime="docker") == "", (
        "the source is gone after a move"
    )
    sh(node_b, "docker rm -f dmove")


def test_a_docker_checkpoint_restores_in_place(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    docker_counter(node, "dsnap", namespace)
    status = create(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "dsnap-cp",
        {"source": {"node": node.name, "container": "dsnap"}, "leaveRunning": False},
    )
    assert status["phase"] == "Ready", status
    assert status["runtime"] == "docker"
    assert status["summary"]["runtime"]["name"] == "docker", status["summary"]
    assert status["summary"]["processes"] >= 2, status["summary"]
    at_checkpoint = int(sh(node, "docker cp dsnap:/tmp/count - | tar -xO"))
    assert container_state(node, "dsnap", runtime="docker") == "exited", (
        "leaveRunning: false stops it"
    )
    sh(node, "docker rm -f dsnap")

    done = create(
        custom,
        namespace,
        constants.CONTAINER_RESTORE_PLURAL,
        "dsnap-rs",
        {"checkpointRef": {"name": "dsnap-cp"}},
    )
    assert done["phase"] == "Succeeded", done
    assert (done["node"], done["containerName"]) == (node.name, "dsnap")
    assert container_state(node, "dsnap", runtime="docker") == "running"
    value = read_count(node, "dsnap", runtime="docker")
    assert at_checkpoint <= value < at_checkpoint + 100, (at_checkpoint, value)
    wait_counting(node, "dsnap", above=value, timeout=30, runtime="docker")
    sh(node, "docker rm -f dsnap")


@pytest.fixture
def node_c_without_docker(ferry: ClusterConfig, custom: client.CustomObjectsApi) -> Iterator[str]:
    """node-c with its dockerd stopped, once its helper has reported so; started again after."""
    node_c = ferry.node_specs()[2]
    sh(node_c, "pkill -x dockerd; while pidof dockerd >/dev/null; do sleep 0.1; done")
    try:
        deadline = time.monotonic() + 60
        while "docker" in runtimes_of(custom, node_c.name):
            assert time.monotonic() < deadline, "node-c's helper still reports docker"
            time.sleep(0.5)
        yield node_c.name
    finally:
        dockerd.start(node_c)
        deadline = time.monotonic() + 60
        while "docker" not in runtimes_of(custom, node_c.name):
            assert time.monotonic() < deadline, "node-c's helper never reported docker again"
            time.sleep(0.5)


def runtimes_of(custom: client.CustomObjectsApi, node: str) -> list[str]:
    helper = custom.get_cluster_custom_object(
        constants.GROUP, constants.VERSION, constants.NODE_HELPER_PLURAL, node
    )
    return [r["name"] for r in (helper.get("status") or {}).get("runtimes", [])]


def test_a_node_without_docker_is_refused_before_anything_freezes(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    namespace: str,
    node_c_without_docker: str,
) -> None:
    node_a = ferry.node_specs()[0]
    docker_counter(node_a, "dstay", namespace)
    create_migration(
        custom,
        namespace,
        "move-dstay",
        {
            "source": {"node": node_a.name, "container": "dstay"},
            "target": {"node": node_c_without_docker},
        },
    )
    status = wait_migration(custom, namespace, "move-dstay")
    assert (status["phase"], succeeded_reason(status)) == ("Failed", "IncompatibleRuntime")
    assert f"node {node_c_without_docker} has no docker" in status["message"], status["message"]
    assert not any(t["phase"] == "Checkpointing" for t in status["phaseTransitions"])
    before = read_count(node_a, "dstay", runtime="docker")
    wait_counting(node_a, "dstay", above=before, timeout=30, runtime="docker")
    sh(node_a, "docker rm -f dstay")


def test_a_failed_docker_restore_rolls_back_and_the_source_counts_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    # A file held open on a bind mount only node-a has: CRIU cannot reopen it on node-b.
    sh(node_a, "mkdir -p /srv/dbound-only-here")
    sh(node_b, "rm -rf /srv/dbound-only-here; docker rm -f dbound >/dev/null 2>&1; true")
    sh(node_a, "docker rm -f dbound >/dev/null 2>&1; true")
    sh(
        node_a,
        f"docker run -d --name dbound --network host -v /srv/dbound-only-here:/data "
        f"--label {constants.NAMESPACE_LABEL}={namespace} {images.BUSYBOX_IMAGE} "
        f"sh -c 'exec 3>>/data/log; {COUNTER}'",
    )
    wait_counting(node_a, "dbound", above=3, timeout=30, runtime="docker")
    create_migration(
        custom,
        namespace,
        "move-dbound",
        {"source": {"node": node_a.name, "container": "dbound"}, "target": {"node": node_b.name}},
    )
    status = wait_migration(custom, namespace, "move-dbound")
    assert (status["phase"], succeeded_reason(status)) == ("Failed", "RestoreFailed"), status
    assert "data/log" in status["message"], "CRIU's line names the file it could not open"
    assert any(t["phase"] == "RollingBack" for t in status["phaseTransitions"])
    # The source is back, the same process, counting on; nothing is left on the target.
    assert container_state(node_a, "dbound", runtime="docker") == "running"
    wait_counting(
        node_a,
        "dbound",
        above=read_count(node_a, "dbound", runtime="docker"),
        timeout=30,
        runtime="docker",
    )
    logged = [int(v) for v in sh(node_a, "docker logs dbound").split()]
    assert logged == list(range(1, len(logged) + 1)), "the process started over"
    assert container_state(node_b, "dbound", runtime="docker") == ""
    sh(node_a, "docker rm -f dbound; rm -rf /srv/dbound-only-here")
