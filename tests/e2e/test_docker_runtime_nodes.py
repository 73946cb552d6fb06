"""Docker Engine in the simulated nodes: what a docker runtime driver can rely on.

Every node runs dockerd (experimental, cgroupfs, runc, CRIU 4.2.1) with the
cluster's busybox loaded under one image ID, and docker's checkpoint/restore
brings back the same process: on the same node, and on another node into a
container recreated there with the checkpoint directory copied in (docker has
no export/import). docs/docker-notes.md has the commands and the errors.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from ferry_cluster import images
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.procs import CommandError
from ferry_cluster.workloads import counter_script, logged_counts, sh, wait_counting

pytestmark = pytest.mark.e2e

PREFIX = "dkr-"
COUNTER = counter_script()
# Docker 26.1.5: containerd keeps the blobs of `docker checkpoint create` until
# its garbage collector runs, and a restore uploading the same bytes first fails.
ALREADY_EXISTS = re.compile(r"content (sha256:[0-9a-f]{64}): already exists")


def docker_run_counter(node: NodeSpec, name: str) -> str:
    return sh(
        node,
        f"docker run -d --name {name} --network host {images.BUSYBOX_IMAGE} sh -c '{COUNTER}'",
    )


def checkpoint(node: NodeSpec, name: str, checkpoint_name: str) -> int:
    """``docker checkpoint create`` (the container stops); the last value it logged."""
    sh(node, f"docker checkpoint create {name} {checkpoint_name}")
    state = sh(node, f"docker inspect --format '{{{{.State.Status}}}}' {name}")
    assert state == "exited"
    return logged_counts(node, name, runtime="docker")[-1]


def start_from_checkpoint(node: NodeSpec, name: str, checkpoint_name: str) -> None:
    """``docker start --checkpoint``, removing the blob a restore may collide with first."""
    for _ in range(3):
        try:
            sh(node, f"docker start --checkpoint {checkpoint_name} {name}")
        except CommandError as error:
            collided = ALREADY_EXISTS.search(str(error))
            if collided is None:
                raise
            sh(node, f"ctr -n moby content rm {collided.group(1)}")
        else:
            return
    pytest.fail(f"{name} on {node.name}: restore kept colliding with containerd's content")


def assert_counts_on(node: NodeSpec, name: str, at_checkpoint: int) -> None:
    """Past the checkpointed value, and the log (which moves with the container) never restarted."""
    wait_counting(node, name, above=at_checkpoint, runtime="docker")
    values = logged_counts(node, name, runtime="docker")
    assert values == list(range(1, len(values) + 1)), "the process started over"


def clean(node: NodeSpec) -> None:
    sh(
        node,
        f"ids=$(docker ps -aq --filter name=^{PREFIX}); "
        '[ -z "$ids" ] || docker rm -f $ids >/dev/null',
    )


@pytest.fixture
def docker_nodes(local_cluster: ClusterConfig) -> Iterator[tuple[NodeSpec, NodeSpec]]:
    node_a, node_b = local_cluster.node_specs()[:2]
    for node in (node_a, node_b):
        clean(node)
    yield node_a, node_b
    for node in (node_a, node_b):
        clean(node)


def test_dockerd_answers_on_every_node_with_checkpointing_on(
    local_cluster: ClusterConfig,
) -> None:
    info = "{{.ServerVersion}} {{.ExperimentalBuild}} {{.CgroupDriver}} {{.DockerRootDir}}"
    for node in local_cluster.node_specs():
        version, experimental, driver, root = sh(node, f"docker info --format '{info}'").split()
        assert version.startswith("26."), f"{node.name}: docker {version}"
        assert (experimental, driver, root) == ("true", "cgroupfs", "/var/lib/docker")
        # Plain directories from the node's state: overlay cannot stack on the node's overlay.
        for directory in ("/var/lib/docker", "/var/lib/containerd"):
            fstype = sh(node, f"findmnt -n -o FSTYPE --target {directory}")
            assert fstype != "overlay", f"{node.name}: {directory} is on {fstype}"
        assert "Version: 4." in sh(node, "criu --version")


def test_busybox_has_one_image_id_in_docker_and_podman_on_every_node(
    local_cluster: ClusterConfig,
) -> None:
    ids = set()
    for node in local_cluster.node_specs():
        docker_id = sh(node, f"docker image inspect --format '{{{{.Id}}}}' {images.BUSYBOX_IMAGE}")
        podman_id = sh(node, f"podman image inspect --format '{{{{.Id}}}}' {images.BUSYBOX_IMAGE}")
        assert docker_id == f"sha256:{podman_id}"
        ids.add(docker_id)
    assert len(ids) == 1


def test_docker_checkpoint_and_start_continue_the_counter_on_the_same_node(
    docker_nodes: tuple[NodeSpec, NodeSpec],
) -> None:
    node, _ = docker_nodes
    name = f"{PREFIX}same"
    docker_run_counter(node, name)
    wait_counting(node, name, above=10, runtime="docker")

    at_checkpoint = checkpoint(node, name, "cp1")
    assert at_checkpoint > 10
    container = sh(node, f"docker inspect --format '{{{{.Id}}}}' {name}")
    listed = sh(node, f"ls /var/lib/docker/containers/{container}/checkpoints/cp1")
    assert "inventory.img" in listed.split()

    start_from_checkpoint(node, name, "cp1")
    assert_counts_on(node, name, at_checkpoint)


def test_docker_checkpoint_restores_on_another_node_in_a_recreated_container(
    docker_nodes: tuple[NodeSpec, NodeSpec],
) -> None:
    node_a, node_b = docker_nodes
    name = f"{PREFIX}moved"
    source = docker_run_counter(node_a, name)
    wait_counting(node_a, name, above=10, runtime="docker")
    at_checkpoint = checkpoint(node_a, name, "cp1")

    # Same image ID, command and network; the new container gets a new ID and cgroup.
    target = sh(
        node_b,
        f"docker create --name {name} --network host {images.BUSYBOX_IMAGE} sh -c '{COUNTER}'",
    )
    assert target != source
    shutil.copytree(
        node_a.docker_dir / "containers" / source / "checkpoints" / "cp1",
        node_b.docker_dir / "containers" / target / "checkpoints" / "cp1",
    )
    start_from_checkpoint(node_b, name, "cp1")

    # /tmp/count is in the writable layer, which did not move: its first value is the process's.
    assert wait_counting(node_b, name, above=0, runtime="docker") > at_checkpoint, (
        "the process started over"
    )
    # The log stays on node-a (json-file); node-b's picks up where node-a's ended.
    values = logged_counts(node_b, name, runtime="docker")
    assert values == list(range(at_checkpoint + 1, at_checkpoint + 1 + len(values)))
    # The restored process keeps the UTS namespace it was dumped with.
    assert sh(node_b, f"docker exec {name} hostname") == node_a.name
