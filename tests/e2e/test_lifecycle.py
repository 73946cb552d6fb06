"""``up`` is idempotent, recovers from a crash, and ``down`` leaves nothing behind.

Runs its own one-node cluster beside the shared one, with a container running
in the node, so teardown is proven against podman's conmon and the container's
processes too.
"""

from __future__ import annotations

import os
import signal

import pytest
from ferry_cluster import cluster, controlplane, images, nodes, procs
from ferry_cluster.config import ClusterConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def life() -> ClusterConfig:
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root")
    config = ClusterConfig(name="life", nodes=1)
    cluster.down(config)
    return config


def _pids(config: ClusterConfig) -> tuple[int | None, int | None, int | None]:
    return (
        procs.read_pid(controlplane.etcd_pid_file(config), controlplane.etcd_marker(config)),
        procs.read_pid(
            controlplane.apiserver_pid_file(config), controlplane.apiserver_marker(config)
        ),
        nodes.init_pid(config.node_specs()[0]),
    )


def test_up_is_idempotent_survives_a_crash_and_down_leaves_nothing(life: ClusterConfig) -> None:
    first = cluster.up(life)
    assert first.healthy
    node = life.node_specs()[0]
    nodes.run_in(
        node, ["podman", "run", "-d", "--name", "sleeper", images.BUSYBOX_IMAGE, "sleep", "1000"]
    )
    before = _pids(life)
    assert all(before)

    again = cluster.up(life)
    assert again.healthy
    assert _pids(life) == before, "a second up restarted a healthy cluster"

    # A crash: every process of the cluster killed at once, state left behind.
    for pid in before:
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    assert not cluster.status(life).healthy
    assert cluster.leftovers(life), "a crashed cluster should leave state for up to clean"

    recovered = cluster.up(life)
    assert recovered.healthy
    assert nodes.run_in(node, ["podman", "ps", "-q"]).stdout.strip() == ""

    nodes.run_in(
        node, ["podman", "run", "-d", "--name", "sleeper", images.BUSYBOX_IMAGE, "sleep", "1000"]
    )
    cluster.down(life)
    assert cluster.leftovers(life) == []
    assert not cluster.status(life).healthy

    # Up after down works.
    assert cluster.up(life).healthy
    cluster.down(life)
    assert cluster.leftovers(life) == []
