"""Docker Engine inside a simulated node: containerd and dockerd, as a node's init would run them.

There is no systemd in a node, so the harness starts both daemons when the
node comes up, each detached inside the node (its PID 1, catatonit, reaps them)
and logging to a file under ``/var/log`` in the node, which is the node's
overlay upper directory on the host. They die with the node like every other
process in it.

dockerd runs in experimental mode (``docker checkpoint`` needs it), with the
cgroupfs driver (no systemd), without touching any firewall or bridge
(``--network host`` is how containers run here, as podman's do), on the
classic overlay2 image store so an image loaded from one docker-archive has the
same ID on every node. Its data root and containerd's are plain directories
bound from the node's state directory (see node-init.sh).
"""

from __future__ import annotations

import json

from . import nodes
from .config import NodeSpec
from .procs import CommandError

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_LOG = "/var/log/containerd.log"
DOCKERD_LOG = "/var/log/dockerd.log"

DAEMON_JSON: dict[str, object] = {
    "experimental": True,
    "exec-opts": ["native.cgroupdriver=cgroupfs"],
    "containerd": CONTAINERD_SOCKET,
    "storage-driver": "overlay2",
    "bridge": "none",
    "iptables": False,
    "ip6tables": False,
    "ip-forward": False,
    "ip-masq": False,
    "log-driver": "json-file",
}

# Docker drives containerd itself; Kubernetes' CRI plugin would only look for CNI and log errors.
CONTAINERD_TOML = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
"""


def write_config(node: NodeSpec) -> None:
    """daemon.json and containerd's config.toml, in the node's upper layer before it starts."""
    docker = node.upper_dir / "etc/docker"
    docker.mkdir(parents=True, exist_ok=True)
    (docker / "daemon.json").write_text(json.dumps(DAEMON_JSON, indent=2) + "\n")
    containerd = node.upper_dir / "etc/containerd"
    containerd.mkdir(parents=True, exist_ok=True)
    (containerd / "config.toml").write_text(CONTAINERD_TOML)


def start(node: NodeSpec) -> str:
    """Start containerd, then dockerd, in the running ``node``; dockerd's version once ready."""
    nodes.detach(node, "containerd", CONTAINERD_LOG)
    nodes.wait_until(
        node, daemon="containerd", ready=f"test -S {CONTAINERD_SOCKET}", log=CONTAINERD_LOG
    )
    nodes.detach(node, "dockerd", DOCKERD_LOG)
    nodes.wait_until(node, daemon="dockerd", ready="docker info >/dev/null 2>&1", log=DOCKERD_LOG)
    return server_version(node)


def server_version(node: NodeSpec) -> str:
    return nodes.run_in(
        node, ["docker", "version", "--format", "{{.Server.Version}}"]
    ).stdout.strip()


def load_image(node: NodeSpec, archive: str, *, image_id: str | None = None) -> None:
    """``docker load`` a docker-archive already inside the node; check its ID when given."""
    output = nodes.run_in(node, ["docker", "load", "-q", "-i", archive]).stdout.strip()
    if image_id is None:
        return
    # `docker load -q` prints "Loaded image: REF" (or "Loaded image ID: sha256:..." untagged).
    reference = output.splitlines()[-1].split(": ", 1)[-1]
    loaded = nodes.run_in(
        node, ["docker", "image", "inspect", "--format", "{{.Id}}", reference]
    ).stdout.strip()
    if loaded != f"sha256:{image_id}":
        raise CommandError(
            f"docker on {node.name} loaded {archive} as {loaded}, not sha256:{image_id}"
        )
