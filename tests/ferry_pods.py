"""Ferry's own pods on the local cluster, handled as a cluster admin would handle them.

The kubelets run the operator and the helpers from the chart; a test that
needs one of them dead kills its process in the node (the kubelet restarts
the container) or, to keep a helper away for a while, taints its node so the
DaemonSet's pod is evicted and not recreated until the taint goes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ferry_cluster import cluster, deploy, nodes, procs
from ferry_cluster.config import ClusterConfig, NodeSpec

HELPER_COMMAND = "/opt/ferry/bin/ferry-helper"
OPERATOR_COMMAND = "/opt/ferry/bin/ferry-operator"
DOWN_TAINT = "ferry.dev/test-helper-down"


def kubectl(config: ClusterConfig, *args: str, check: bool = True) -> str:
    return procs.run([*cluster.kubectl(config), *args], check=check).stdout.strip()


def _pod(config: ClusterConfig, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        kubectl(config, "get", "pod", name, "-n", deploy.NAMESPACE, "-o", "json")
    )
    return pod


def _ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return all(s.get("ready") for s in statuses)


def restarts(config: ClusterConfig, pod: str) -> int:
    statuses = _pod(config, pod).get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def pid_in_node(node: NodeSpec, command: str) -> int | None:
    """The oldest process of ``command`` in ``node`` (its PID namespace numbers it)."""
    found = nodes.run_in(node, ["pgrep", "-o", "-f", command], check=False).stdout.strip()
    return int(found) if found else None


def operator_node(config: ClusterConfig) -> NodeSpec:
    name = _pod(config, deploy.operator_pod(config))["spec"]["nodeName"]
    return next(n for n in config.node_specs() if n.name == name)


def _wait_restarted(config: ClusterConfig, pod: str, before: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if restarts(config, pod) > before and _ready(_pod(config, pod)):
            return
        assert time.monotonic() < deadline, f"{pod} was not restarted in {timeout:.0f}s"
        time.sleep(0.3)


def kill_helper(config: ClusterConfig, node: NodeSpec, *, timeout: float = 90) -> None:
    """SIGKILL ``node``'s helper; return once the kubelet has it running again."""
    pod = deploy.helper_pod(config, node)
    before = restarts(config, pod)
    pid = pid_in_node(node, HELPER_COMMAND)
    assert pid is not None, f"no helper runs on {node.name}"
    nodes.run_in(node, ["kill", "-KILL", str(pid)])
    _wait_restarted(config, pod, before, timeout)


def kill_operator(config: ClusterConfig, *, timeout: float = 90) -> None:
    """SIGKILL the operator; return once the kubelet has it running again."""
    pod = deploy.operator_pod(config)
    node = operator_node(config)
    before = restarts(config, pod)
    pid = pid_in_node(node, OPERATOR_COMMAND)
    assert pid is not None, "no operator runs"
    nodes.run_in(node, ["kill", "-KILL", str(pid)])
    _wait_restarted(config, pod, before, timeout)


@contextlib.contextmanager
def helper_down(config: ClusterConfig, node: NodeSpec, *, timeout: float = 90) -> Iterator[None]:
    """``node``'s helper killed and kept away (a NoExecute taint) until the block ends."""
    pod = deploy.helper_pod(config, node)
    kubectl(config, "taint", "node", node.name, f"{DOWN_TAINT}=:NoExecute", "--overwrite")
    try:
        pid = pid_in_node(node, HELPER_COMMAND)
        if pid is not None:
            nodes.run_in(node, ["kill", "-KILL", str(pid)], check=False)
        kubectl(
            config, "wait", "--for=delete", f"pod/{pod}", "-n", deploy.NAMESPACE, "--timeout=60s"
        )
        yield
    finally:
        kubectl(config, "taint", "node", node.name, f"{DOWN_TAINT}:NoExecute-", check=False)
        wait_replaced_helper(config, node, pod, timeout=timeout)


def wait_replaced_helper(
    config: ClusterConfig, node: NodeSpec, old: str, *, timeout: float = 90
) -> str:
    """Until the DaemonSet runs a helper pod other than ``old`` on ``node``, ready; its name."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(RuntimeError, AssertionError):
            new = deploy.helper_pod(config, node)
            if new != old and _ready(_pod(config, new)):
                return new
        assert time.monotonic() < deadline, f"no new helper pod became ready on {node.name}"
        time.sleep(0.5)


def operator_private_key(config: ClusterConfig) -> str:
    """The operator's SSH key, from the Secret the keygen hook made (what its pod mounts)."""
    secret = json.loads(
        kubectl(
            config,
            "get",
            "secret",
            f"{deploy.RELEASE}-operator-ssh",
            "-n",
            deploy.NAMESPACE,
            "-o",
            "json",
        )
    )
    return base64.b64decode(secret["data"]["operator"]).decode()


def operator_token(config: ClusterConfig) -> str:
    """The ServiceAccount token the kubelet projected into the operator's pod."""
    return _projected_token(operator_node(config), OPERATOR_COMMAND)


def helper_token(node: NodeSpec) -> str:
    """The ServiceAccount token the kubelet projected into ``node``'s helper pod."""
    return _projected_token(node, HELPER_COMMAND)


def _projected_token(node: NodeSpec, command: str) -> str:
    pid = pid_in_node(node, command)
    assert pid is not None, f"{command} does not run on {node.name}"
    # Debian's /var/run is a link to /run, which would resolve in the host's root here.
    for mounted in ("run", "var/run"):
        token = nodes.host_path(
            node, f"/proc/{pid}/root/{mounted}/secrets/kubernetes.io/serviceaccount/token"
        )
        if token.exists():
            return token.read_text()
    raise AssertionError(f"{command}'s pod has no ServiceAccount token mounted")


def operator_metrics_url(config: ClusterConfig) -> str:
    """The operator's Prometheus endpoint, on its pod's address (the host routes pods)."""
    pod = _pod(config, deploy.operator_pod(config))
    ports = {
        p.get("name"): p["containerPort"] for p in pod["spec"]["containers"][0].get("ports", [])
    }
    return f"http://{pod['status']['podIP']}:{ports['metrics']}/metrics"


def all_logs(config: ClusterConfig) -> list[str]:
    """The operator's and every helper's log, as ``kubectl logs`` gives them."""
    names = [
        deploy.operator_pod(config),
        *(deploy.helper_pod(config, n) for n in config.node_specs()),
    ]
    return [deploy.logs(config, name, tail=-1) for name in names]


def kubectl_ferry(
    config: ClusterConfig, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``kubectl ferry ARGS`` with the admin's kubeconfig and the plugin on PATH."""
    plugin_dir = Path(sys.executable).parent
    assert (plugin_dir / "kubectl-ferry").is_file(), "the package installs kubectl-ferry"
    env = {
        **os.environ,
        "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(config.admin_kubeconfig),
    }
    return subprocess.run(
        [str(config.bin_dir / "kubectl"), "ferry", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
