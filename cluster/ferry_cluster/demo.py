"""``make demo``: the local cluster, two nodes, a running container moved by a ContainerMigration.

Brings the cluster up, deploys Ferry (CRDs, RBAC, a node-helper in each node,
the operator), starts a counter on node-a, applies a ContainerMigration with
kubectl, follows its phases as they happen, and shows the counter going on
from its value on node-b, with the downtime and timings from the status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from ferry_api import constants

from . import cluster, deploy
from .config import ClusterConfig
from .workloads import counted_without_restart, logged_counts, read_count, run_counter, sh

CONTAINER = "demo-counter"
NAMESPACE = "default"
MIGRATION = "move-demo-counter"
MANIFEST = f"""\
apiVersion: {constants.API_VERSION}
kind: {constants.CONTAINER_MIGRATION_KIND}
metadata:
  name: {MIGRATION}
  namespace: {NAMESPACE}
spec:
  source:
    node: node-a
    container: {CONTAINER}
  target:
    node: node-b
"""


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def follow(kubectl: list[str]) -> dict[str, Any]:
    """Print each phase as the status records it; return the final status."""
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(
            [*kubectl, "get", "containermigration", MIGRATION, "-n", NAMESPACE, "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        state = json.loads(out).get("status") or {}
        for transition in state.get("phaseTransitions") or []:
            key = f"{transition['phase']}@{transition['time']}"
            if key not in seen:
                seen.add(key)
                print(f"    {transition['time']}  {transition['phase']}")
        if state.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(0.2)
    return state


def print_timings(state: dict[str, Any]) -> None:
    say("timings (from the ContainerMigration's status)")
    timings = state.get("timings") or {}
    for key in (
        "checkpointSeconds",
        "transferSeconds",
        "restoreSeconds",
        "downtimeSeconds",
        "totalSeconds",
    ):
        print(f"    {key.removesuffix('Seconds'):10}  {timings.get(key, 0):6.3f} s")
    archive = state.get("archive") or {}
    print(
        f"    archive     {archive.get('bytes', 0) / 1024:.0f} KiB, sha256 "
        f"{str(archive.get('sha256', ''))[:16]}..."
    )


def main() -> int:
    config = ClusterConfig()
    status = cluster.up(config, say)
    kubectl = [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}"]
    say("deploying Ferry: its images into the nodes' containerd, then helm install (hooks too)")
    deploy.deploy(config, log=say)
    say("the nodes (each a kubelet and containerd), and what each can do")
    subprocess.run([*kubectl, "get", "nodes", "-o", "wide"], check=True)
    subprocess.run([*kubectl, "get", "nodehelpers"], check=True)
    say("Ferry's pods, run by the kubelets from the chart")
    subprocess.run([*kubectl, "get", "pods", "-n", deploy.NAMESPACE, "-o", "wide"], check=True)
    node_a, node_b = config.node_specs()[:2]

    subprocess.run(
        [
            *kubectl,
            "delete",
            "containermigration",
            MIGRATION,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
            "--wait",
        ],
        check=True,
        capture_output=True,
    )
    for node in (node_a, node_b):
        sh(node, f"podman rm -f -t 0 -i {CONTAINER}")
    say(f"starting a counter on {node_a.name} (labelled for namespace {NAMESPACE})")
    run_counter(node_a, CONTAINER, labels={constants.NAMESPACE_LABEL: NAMESPACE}, interval=0.2)
    time.sleep(3)
    print(f"    {node_a.name}: counter at {read_count(node_a, CONTAINER)}")

    say("kubectl apply -f - <<EOF")
    print(MANIFEST + "EOF")
    subprocess.run([*kubectl, "apply", "-f", "-"], input=MANIFEST, text=True, check=True)

    say("following the migration")
    state = follow(kubectl)
    subprocess.run([*kubectl, "get", "containermigrations", "-n", NAMESPACE], check=True)
    if state.get("phase") != "Succeeded":
        print(f"migration ended {state.get('phase')}: {state.get('message')}", file=sys.stderr)
        return 1

    logged = logged_counts(node_b, CONTAINER)
    unbroken = counted_without_restart(logged)
    print(
        f"    {node_b.name}: its log counts 1..{logged[-1]} "
        f"{'without a restart' if unbroken else 'WITH A RESTART'}"
    )
    for _ in range(3):
        time.sleep(1)
        print(f"    {node_b.name}: counter at {read_count(node_b, CONTAINER)}")
    print(
        f"    {node_a.name}: containers named {CONTAINER}: "
        f"{sh(node_a, f'podman ps -a -q --filter name=^{CONTAINER}$') or 'none'}"
    )

    print_timings(state)
    print(
        f"\nThe cluster stays up: KUBECONFIG={status.kubeconfig}; `make cluster-down` removes it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
