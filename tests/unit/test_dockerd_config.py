"""The Docker Engine configuration a node starts with (written before the node exists)."""

from __future__ import annotations

import json
from pathlib import Path

from ferry_cluster import dockerd, nodes
from ferry_cluster.config import ClusterConfig


def test_daemon_config_checkpoints_and_leaves_the_host_alone(tmp_path: Path) -> None:
    node = ClusterConfig(name="unit", state_root=tmp_path).node_specs()[0]
    dockerd.write_config(node)
    daemon = json.loads((node.upper_dir / "etc/docker/daemon.json").read_text())
    assert daemon["experimental"] is True  # `docker checkpoint` is experimental
    assert daemon["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert daemon["containerd"] == dockerd.CONTAINERD_SOCKET
    assert (daemon["bridge"], daemon["iptables"], daemon["ip6tables"]) == ("none", False, False)
    assert daemon["storage-driver"] == "overlay2"
    containerd = (node.upper_dir / "etc/containerd/config.toml").read_text()
    assert "io.containerd.grpc.v1.cri" in containerd


def test_docker_storage_is_beside_podmans_in_the_node_state() -> None:
    node = ClusterConfig(name="unit").node_specs()[0]
    assert node.docker_dir.parent == node.containers_dir.parent == node.state_dir
    assert node.containerd_dir.parent == node.state_dir
    assert nodes.log_path(node, dockerd.DOCKERD_LOG) == node.upper_dir / "var/log/dockerd.log"
