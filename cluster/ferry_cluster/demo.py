"""``make demo``: the local cluster, two nodes, a running container moved between them.

At this stage the move is the seed's manual procedure (checkpoint with export,
copy, restore with import) run on the real simulated nodes; the operator will
do the same declaratively. The downtime printed is the time from the freeze to
the container running again on the other node.
"""

from __future__ import annotations

import subprocess
import sys
import time

from . import cluster, images, nodes
from .config import ClusterConfig, NodeSpec

CONTAINER = "demo-counter"
ARCHIVE = f"/run/{CONTAINER}.tar.gz"  # the node's private tmpfs
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo $i; sleep 0.2; done"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def sh(node: NodeSpec, script: str) -> str:
    return nodes.run_in(node, ["sh", "-c", script]).stdout.strip()


def count(node: NodeSpec) -> int:
    return int(sh(node, f"podman exec {CONTAINER} cat /tmp/count"))


def main() -> int:
    config = ClusterConfig()
    status = cluster.up(config, say)
    kubectl = [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}"]
    say("the cluster's nodes, as Kubernetes sees them")
    subprocess.run([*kubectl, "get", "nodes", "-o", "wide"], check=True)
    node_a, node_b = (n for n in config.node_specs() if n.name in {"node-a", "node-b"})

    for node in (node_a, node_b):
        sh(node, f"podman rm -f -i {CONTAINER}; rm -f {ARCHIVE}")
    say(f"starting a counter on {node_a.name}")
    sh(node_a, f"podman run -d --name {CONTAINER} {images.BUSYBOX_IMAGE} sh -c '{COUNTER}'")
    time.sleep(3)
    print(f"    {node_a.name}: counter at {count(node_a)}")

    say(f"checkpointing on {node_a.name} (CRIU freezes and dumps the process)")
    frozen = time.monotonic()
    sh(node_a, f"podman container checkpoint --export {ARCHIVE} {CONTAINER}")
    checkpointed = time.monotonic()
    last = int(sh(node_a, f"podman logs {CONTAINER} | tail -n 1"))
    size = int(sh(node_a, f"stat -c %s {ARCHIVE}"))
    print(f"    frozen at {last}; archive {size / 1024:.0f} KiB")

    say(f"copying the archive {node_a.name} -> {node_b.name}")
    data = nodes.host_path(node_a, f"{ARCHIVE}").read_bytes()
    nodes.host_path(node_b, f"{ARCHIVE}").write_bytes(data)
    copied = time.monotonic()

    say(f"restoring on {node_b.name}")
    sh(node_b, f"podman container restore --import {ARCHIVE}")
    restored = time.monotonic()
    sh(node_a, f"podman rm -f {CONTAINER}")
    for _ in range(3):
        time.sleep(1)
        print(f"    {node_b.name}: counter at {count(node_b)} (was {last} when frozen)")

    say("timings")
    print(f"    checkpoint  {checkpointed - frozen:6.2f} s")
    print(f"    copy        {copied - checkpointed:6.2f} s")
    print(f"    restore     {restored - copied:6.2f} s")
    print(
        f"    downtime    {restored - frozen:6.2f} s  (frozen on {node_a.name} -> running on "
        f"{node_b.name})"
    )
    print(
        f"\nThe cluster stays up: KUBECONFIG={status.kubeconfig}; "
        f"`ferry-cluster exec node-b -- podman ps`; `make cluster-down` to remove it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
