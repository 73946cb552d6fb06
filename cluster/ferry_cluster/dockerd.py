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
from pathlib import Path

from . import nodes
from .config import NodeSpec
from .procs import CommandError

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_LOG = "/var/log/containerd.log"
DOCKERD_LOG = "/var/log/dockerd.log"
READY_TIMEOUT = 60.0

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


def log_path(node: NodeSpec, log: str) -> Path:
    """Where the host finds a daemon's log (the node's overlay upper directory)."""
    return node.upper_dir / log.lstrip("/")


def _detach(node: NodeSpec, command: str, log: str) -> None:
    """Start ``command`` in ``node`` in its own session, output appended to ``log``."""
    nodes.run_in(node, ["sh", "-c", f"setsid -f {command} </dev/null >>{log} 2>&1"])


def _wait(node: NodeSpec, *, daemon: str, ready: str, log: str) -> None:
    """Until the shell test ``ready`` passes in ``node``; fail early if ``daemon`` exits."""
    tries = int(READY_TIMEOUT / 0.1)
    script = (
        f"i=0; until {ready}; do "
        f"pidof {daemon} >/dev/null || {{ echo '{daemon} exited' >&2; exit 1; }}; "
        f"i=$((i+1)); [ $i -lt {tries} ] || {{ echo 'timed out after {READY_TIMEOUT:.0f}s' >&2; "
        "exit 1; }; sleep 0.1; done"
    )
    result = nodes.run_in(node, ["sh", "-c", script], check=False, timeout=READY_TIMEOUT + 30)
    if result.returncode != 0:
        path = log_path(node, log)
        tail = path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
        raise RuntimeError(
            f"{daemon} did not come up on {node.name}: {result.stderr.strip()}; "
            f"its log ({path}) ends:\n{tail}"
        )


def start(node: NodeSpec) -> str:
    """Start containerd, then dockerd, in the running ``node``; dockerd's version once ready."""
    _detach(node, "containerd", CONTAINERD_LOG)
    _wait(node, daemon="containerd", ready=f"test -S {CONTAINERD_SOCKET}", log=CONTAINERD_LOG)
    _detach(node, "dockerd", DOCKERD_LOG)
    _wait(node, daemon="dockerd", ready="docker info >/dev/null 2>&1", log=DOCKERD_LOG)
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
