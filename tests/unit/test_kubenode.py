"""What each node's containerd, kubelet and kube-proxy are told (kubenode.py), and the
helper's wrappers for the node's own tools (node_tools.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ferry_cluster import kubenode
from ferry_cluster.config import ClusterConfig
from ferry_helper import node_tools
from ferry_helper.settings import Settings


def test_each_node_hands_out_pod_addresses_from_its_own_range() -> None:
    config = ClusterConfig(name="test", nodes=3)
    subnets = [
        kubenode.cni_conflist(n)["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]  # type: ignore[index]
        for n in config.node_specs()
    ]
    assert subnets == [str(n.pod_cidr) for n in config.node_specs()]
    assert len(set(subnets)) == 3


def test_the_kubelet_uses_the_cri_containerd_and_authorizes_through_the_api_server() -> None:
    node = ClusterConfig().node_specs()[0]
    kubelet = kubenode.kubelet_config(node)
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{kubenode.CRI_SOCKET}"
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["authorization"] == {"mode": "Webhook"}
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]
    assert kubelet["address"] == str(node.address)
    assert kubenode.CRI_SOCKET not in ("/run/containerd/containerd.sock",), "docker's own"
    assert f'sandbox = "{kubenode.PAUSE_IMAGE}"' in kubenode.CONTAINERD_TOML


def test_kube_proxy_knows_the_clusters_pod_network() -> None:
    config = ClusterConfig(name="life")
    proxy = kubenode.kube_proxy_config(config, config.node_specs()[1])
    assert proxy["clusterCIDR"] == str(config.pod_network)
    assert proxy["hostnameOverride"] == "node-b"
    assert proxy["mode"] == "iptables"


def test_wrappers_are_made_for_the_tools_the_node_has_and_come_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_tools, "node_has", lambda tool: tool != "podman")
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    stale = tmp_path / "podman"
    stale.write_text("left from an earlier start")
    monkeypatch.setattr(node_tools.tempfile, "tempdir", None)
    monkeypatch.setattr(node_tools, "_active", False)
    scratch = tmp_path / "scratch"
    assert node_tools.install(tmp_path, scratch) == ["docker", "criu"]
    assert not stale.exists(), "a tool the node lost must not stay wrapped"
    wrapper = (tmp_path / "docker").read_text()
    assert "nsenter --target=1 --mount --cgroup" in wrapper
    assert "cgroup.procs" in wrapper
    assert (tmp_path / "docker").stat().st_mode & stat.S_IXUSR
    assert os.environ["PATH"] == f"{tmp_path}:/usr/bin"
    # What the helper hands podman (a --digestfile, say) must exist in the node too.
    assert node_tools.tempfile.mkdtemp().startswith(f"{scratch}/")
    # and a mount podman makes there is read through the node's root.
    assert node_tools.node_path(Path("/var/lib/containers/x")) == Path(
        "/proc/1/root/var/lib/containers/x"
    )


def test_a_secret_file_is_copied_where_the_node_sees_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "auth.json"
    secret.parent.mkdir()
    secret.write_text('{"auths": {}}')
    state = tmp_path / "state"
    copy = node_tools.node_visible(secret, state)
    assert copy is not None
    assert copy.parent.parent == state
    assert copy.read_text() == '{"auths": {}}'
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert node_tools.node_visible(None, state) is None


def test_an_unknown_node_tools_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="FERRY_NODE_TOOLS"):
        Settings.from_env({"FERRY_NODE_NAME": "n", "FERRY_NODE_TOOLS": "chroot"})
    assert Settings.from_env({"FERRY_NODE_NAME": "n"}).node_tools == ""


def test_a_node_path_follows_the_nodes_symlinks_inside_the_nodes_root(tmp_path: Path) -> None:
    root = tmp_path / "node"
    (root / "run/containerd").mkdir(parents=True)
    (root / "run/containerd/containerd.sock").touch()
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")  # absolute: the node's /run, not the helper's
    (root / "run/cri.sock").symlink_to("containerd/containerd.sock")
    (root / "run/loop").symlink_to("/run/loop")
    found = node_tools.within(root, Path("/var/run/containerd/containerd.sock"))
    assert found == root / "run/containerd/containerd.sock"
    assert node_tools.within(root, Path("/run/cri.sock")).exists()
    assert node_tools.within(root, Path("/run/../../etc")) == root / "etc", "never above root"
    with pytest.raises(OSError, match="too many symlinks"):
        node_tools.within(root, Path("/run/loop/x"))
